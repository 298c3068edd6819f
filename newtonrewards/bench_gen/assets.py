"""The procedural object catalogue and its split into train and held-out assets (disjoint, as NewtonBench requires).

An asset is a (shape, texture, colour) triple named "shape-texture-colour". Sizes are sampled per clip.
"""

from __future__ import annotations

SHAPES = ("sphere", "cube", "box", "cylinder")
TEXTURES = ("solid", "checker", "stripes", "dots", "marble")
COLORS = {
    "red": (0.80, 0.12, 0.10),
    "orange": (0.90, 0.45, 0.08),
    "yellow": (0.92, 0.80, 0.15),
    "green": (0.15, 0.62, 0.22),
    "teal": (0.08, 0.55, 0.58),
    "blue": (0.12, 0.28, 0.82),
    "purple": (0.50, 0.20, 0.70),
    "white": (0.88, 0.88, 0.86),
}
TEXTURE_WORDS = {"solid": "", "checker": "checkered", "stripes": "striped", "dots": "polka-dot", "marble": "marbled"}
SHAPE_WORDS = {"sphere": "ball", "cube": "cube", "box": "box", "cylinder": "cylinder"}

# Ramps need objects that slide, not roll; after a throw lands, the object slides to a stop, so throws use
# flat-based shapes too. Only free fall (which lands with no horizontal speed) uses spheres.
SHAPES_FOR_PRIMITIVE = {
    "free_fall": SHAPES,
    "horizontal_throw": ("cube", "box", "cylinder"),
    "parabolic_throw": ("cube", "box", "cylinder"),
    "ramp_down": ("cube", "box", "cylinder"),
    "ramp_up": ("cube", "box", "cylinder"),
    # extended primitives: a ball rolls, bounces or swings; colliding blocks meet face to face
    "rolling_ramp": ("sphere",),
    "bounce": ("sphere",),
    "pendulum": ("sphere",),
    "collision": ("cube", "box"),
}

HELD_OUT_SPLITS = ("test", "ood-height", "ood-speed", "ood-friction", "ood-gravity")


def asset_id(shape: str, texture: str, color: str) -> str:
    return f"{shape}-{texture}-{color}"


def is_held_out(shape: str, texture: str, color: str) -> bool:
    """One (texture, colour) combination in five is reserved for the held-out splits, for every shape."""
    t, c, s = TEXTURES.index(texture), list(COLORS).index(color), SHAPES.index(shape)
    return (t * len(COLORS) + c + 3 * s) % 5 == 2


def assets_for(split: str, primitive: str) -> list[tuple[str, str, str]]:
    """The (shape, texture, colour) triples a clip of `split` and `primitive` may use, in a fixed order."""
    held_out = split in HELD_OUT_SPLITS
    return [
        (s, t, c)
        for s in SHAPES_FOR_PRIMITIVE[primitive]
        for t in TEXTURES
        for c in COLORS
        if is_held_out(s, t, c) == held_out
    ]


def describe(shape: str, texture: str, color: str) -> str:
    """'red checkered cube' -- the words a prompt uses for an asset."""
    words = [color, TEXTURE_WORDS[texture], SHAPE_WORDS[shape]]
    return " ".join(w for w in words if w)
