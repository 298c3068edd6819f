"""The Blender side of `--renderer blender`: a long-lived child process run by Blender's own Python (bpy).

    NR_BLENDER_PYTHON=~/.local/share/newtonrewards/blender-venv/bin/python   # scripts/install_blender.sh
    $NR_BLENDER_PYTHON newtonrewards/bench_gen/renderers/blender_worker.py   # reads requests on stdin

bpy pins numpy<2 and exists for CPython 3.11 only, so this file imports nothing from newtonrewards: it is run as a
script, by path, in its own interpreter (`blender.py` starts one per worker process and keeps it). Protocol: one
JSON request per line on stdin (the scene as plain lists, built by `blender.scene_request`), one JSON reply per line
on stdout (`{"ok": true, "seconds": s, "timings": {stage: s}}` or `{"error": "..."}`); Blender's own chatter goes
to stderr. Each request is rendered into an .npz at the request's `out` path:

    rgb    uint8   [T, H, W, 3]        the beauty render (Cycles path tracing, EEVEE or Workbench), top row first
    index  uint8   [T, sH, sW]         object index pass (Object.pass_index = the request's `index`: instance id,
                                       or a scenery surface's own value), one point sample per subsample centre
                                       of an s x s grid per pixel (s = supersample)
    depth  float32 [T, sH, sW]         Z pass: depth along the optical axis, m; +inf for sky
    flow   float32 [T-1, 2, sH, sW]    forward flow from the Vector pass (its next-frame half, negated; y flipped to
                                       +y down), in pixels of the 1x image

The ground-truth layers come from a second Cycles render per frame at s times the resolution with one sample, a
0.01 px box filter and no bounces, so each subsample is a point sample at exactly the raster renderer's subsample
centre; `blender.py` reduces them to pixels with the raster renderer's rules.
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
import tempfile
import time
import traceback

_PROTOCOL = os.fdopen(os.dup(1), "w", buffering=1)  # replies; Blender's prints on fd 1 now go to stderr
os.dup2(2, 1)

import bpy  # noqa: E402  (before bmesh and mathutils, which bpy provides)
import bmesh  # noqa: E402
import numpy as np  # noqa: E402
from mathutils import Matrix, Quaternion, Vector  # noqa: E402

SENSOR_WIDTH = 36.0  # mm; any value works, the lens follows from fx
SKY_DEPTH = 1e9  # m: Cycles writes 1e10 into the Z pass where a ray hits nothing
GROUND_SIZE = 20000.0  # m: the ground plane's side; its edge lies < 0.1 px below the raster's infinite horizon
SEGMENTS = 96  # sphere and cylinder facets around: the silhouette lies within r (1 - cos(pi / 96)) = 0.05% of r
HAZE_DISTANCE = 120.0  # m, as the raster renderer's aerial perspective


def srgb_to_linear(c):
    """Display colour (the raster renderer's albedos read as sRGB) to Blender's scene-linear RGB."""
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    return tuple(np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)) + (1.0,)


class Nodes:
    """A few lines per shader graph: `n.math("MULTIPLY", a, 2.0)` links sockets and sets constants alike."""

    def __init__(self, tree):
        self.tree = tree
        self.tree.nodes.clear()

    def new(self, kind: str, **props):
        node = self.tree.nodes.new(kind)
        for k, v in props.items():
            setattr(node, k, v)
        return node

    def feed(self, socket, value) -> None:
        if hasattr(value, "is_output") or hasattr(value, "links"):
            self.tree.links.new(value, socket)
        else:
            socket.default_value = value

    def math(self, op: str, *args):
        node = self.new("ShaderNodeMath", operation=op)
        for k, a in enumerate(args):
            self.feed(node.inputs[k], a)
        return node.outputs[0]

    def vmath(self, op: str, *args, out: int = 0):
        node = self.new("ShaderNodeVectorMath", operation=op)
        for k, a in enumerate(args):
            self.feed(node.inputs[3 if op == "SCALE" and k == 1 else k], a)
        return node.outputs["Value" if op in ("DOT_PRODUCT", "LENGTH") else "Vector"]

    def xyz(self, vector):
        node = self.new("ShaderNodeSeparateXYZ")
        self.feed(node.inputs[0], vector)
        return node.outputs[0], node.outputs[1], node.outputs[2]

    def smoothstep(self, e0: float, e1: float, x):
        node = self.new("ShaderNodeMapRange", interpolation_type="SMOOTHSTEP", clamp=True)
        self.feed(node.inputs["Value"], x)
        node.inputs["From Min"].default_value, node.inputs["From Max"].default_value = e0, e1
        node.inputs["To Min"].default_value, node.inputs["To Max"].default_value = 0.0, 1.0
        return node.outputs[0]

    def mix(self, a, b, fac):
        node = self.new("ShaderNodeMix", data_type="RGBA", clamp_factor=True)
        self.feed(node.inputs["Factor"], fac)
        self.feed(node.inputs["A"], a)
        self.feed(node.inputs["B"], b)
        return node.outputs["Result"]

    def noise(self, vector, scale: float, detail: float = 2.0):
        node = self.new("ShaderNodeTexNoise", noise_dimensions="2D")
        self.feed(node.inputs["Vector"], vector)
        node.inputs["Scale"].default_value, node.inputs["Detail"].default_value = scale, detail
        return node.outputs["Fac"]

    def principled(self, color, roughness: float, metallic: float = 0.0):
        bsdf = self.new("ShaderNodeBsdfPrincipled")
        self.feed(bsdf.inputs["Base Color"], color)
        bsdf.inputs["Roughness"].default_value = roughness
        bsdf.inputs["Metallic"].default_value = metallic
        return bsdf.outputs[0]

    def output(self, shader) -> None:
        out = self.new("ShaderNodeOutputMaterial")
        self.feed(out.inputs["Surface"], shader)


def object_material(name: str, m: dict, shape: str):
    """Principled BSDF whose base colour follows the raster renderer's object textures in object space (metres)."""
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    n = Nodes(mat.node_tree)
    coords = n.new("ShaderNodeTexCoord")
    p, normal = coords.outputs["Object"], coords.outputs["Normal"]
    c, second, s, tex = srgb_to_linear(m["color"]), srgb_to_linear(m["second"]), float(m["size"]), m["texture"]
    if shape in ("cube", "box"):  # lattice patterns lie flat on each face: drop the face's normal axis
        flat = n.vmath("SUBTRACT", (1.0, 1.0, 1.0), n.vmath("ABSOLUTE", normal))
        face = n.vmath("MULTIPLY", p, flat)
    else:
        face = p
    if tex == "solid":
        color = c
    elif tex == "checker":
        cells = n.xyz(n.vmath("FLOOR", n.vmath("DIVIDE", face, (s, s, s))))
        parity = n.math("ABSOLUTE", n.math("MODULO", n.math("ADD", n.math("ADD", cells[0], cells[1]), cells[2]), 2.0))
        color = n.mix(c, second, parity)
    elif tex == "stripes":
        z = n.xyz(face)[2]
        color = n.mix(c, second, n.smoothstep(-0.15, 0.15, n.math("SINE", n.math("MULTIPLY", z, math.pi / (0.5 * s)))))
    elif tex == "dots":
        cell = 0.8 * s
        q = n.vmath("ADD", n.vmath("DIVIDE", face, (cell, cell, cell)), (0.5, 0.5, 0.5))
        d = n.vmath("LENGTH", n.vmath("SUBTRACT", n.vmath("FRACTION", q), (0.5, 0.5, 0.5)))
        color = n.mix(c, second, n.math("SUBTRACT", 1.0, n.smoothstep(0.26, 0.32, d)))
    elif tex == "marble":
        noise = 0.0
        for w in m["waves"]:
            term = n.math("SINE", n.math("ADD", n.vmath("DOT_PRODUCT", p, tuple(w[:3])), float(w[3])))
            noise = term if isinstance(noise, float) else n.math("ADD", noise, term)
        x = n.xyz(p)[0]
        arg = n.math("ADD", n.math("MULTIPLY", x, 4.0 / s), n.math("MULTIPLY", noise, 2.5 / 3.0))
        vein = n.math("SUBTRACT", 1.0, n.smoothstep(0.0, 0.3, n.math("ABSOLUTE", n.math("SINE", arg))))
        color = n.mix(c, second, n.math("MULTIPLY", vein, 0.8))
    else:
        raise ValueError(f"unknown object texture {tex!r}")
    n.output(n.principled(color, m.get("roughness", 0.4)))
    mat.diffuse_color = c  # Workbench's flat colour
    return mat


def hazed(n: Nodes, shader, horizon):
    """Aerial perspective: the surface fades into the horizon colour with distance, as in the raster renderer."""
    camera = n.new("ShaderNodeCameraData")
    fade = n.math("EXPONENT", n.math("DIVIDE", camera.outputs["View Distance"], -HAZE_DISTANCE))
    haze = n.math("SUBTRACT", 1.0, fade)
    emission = n.new("ShaderNodeEmission")
    emission.inputs["Color"].default_value = horizon
    mix = n.new("ShaderNodeMixShader")
    n.feed(mix.inputs[0], haze)
    n.feed(mix.inputs[1], shader)
    n.feed(mix.inputs[2], emission.outputs[0])
    return mix.outputs[0]


def ground_material(g: dict, horizon):
    """The raster renderer's five ground textures, approximated with Blender's procedural noise and brick textures."""
    mat = bpy.data.materials.new("ground")
    mat.use_nodes = True
    n = Nodes(mat.node_tree)
    p = n.new("ShaderNodeTexCoord").outputs["Object"]
    a, b, s, tex = srgb_to_linear(g["color_a"]), srgb_to_linear(g["color_b"]), float(g["scale"]), g["texture"]

    def centred(scale):  # zero-mean noise in about [-0.5, 0.5] repeating every 1/scale m
        return n.math("SUBTRACT", n.noise(p, scale), 0.5)

    if tex in ("tiles", "wood"):
        width, height = (s, s) if tex == "tiles" else (4.0 * s, 0.5 * s)
        brick = n.new("ShaderNodeTexBrick", offset=0.0 if tex == "tiles" else 0.37, offset_frequency=2)
        n.feed(brick.inputs["Vector"], p)
        brick.inputs["Color1"].default_value, brick.inputs["Color2"].default_value = a, b
        brick.inputs["Mortar"].default_value = tuple(0.45 * (np.array(a) + np.array(b)) / 2)
        brick.inputs["Scale"].default_value = 1.0
        brick.inputs["Mortar Size"].default_value = (0.03 if tex == "tiles" else 0.015) * min(width, height)
        brick.inputs["Brick Width"].default_value, brick.inputs["Row Height"].default_value = width, height
        grain = n.math("ADD", 1.0, n.math("MULTIPLY", centred(1.0 / (1.2 * s)), 0.5 if tex == "wood" else 0.3))
        color = n.vmath("SCALE", brick.outputs["Color"], grain)
    else:
        coarse = {"grass": 16.0, "sand": 10.0, "asphalt": 8.0}[tex]
        fine = {"grass": 0.15, "sand": 0.1, "asphalt": 0.05}[tex]
        m = n.math("ADD", n.math("ADD", 0.5, n.math("MULTIPLY", centred(1.0 / (coarse * s)), 1.2)),
                   n.math("MULTIPLY", centred(1.0 / (fine * s)), 0.6))  # fmt: skip
        grain = n.math("ADD", 0.95, n.math("MULTIPLY", centred(1.0 / (fine * s)), 0.3))
        color = n.vmath("SCALE", n.mix(a, b, m), grain)
    n.output(hazed(n, n.principled(color, 0.9), horizon))
    mat.diffuse_color = tuple((np.array(a) + np.array(b)) / 2)
    return mat


RAMP_LOOK = {"wood": (0.65, 0.0), "metal": (0.35, 0.7), "painted": (0.45, 0.0)}  # (roughness, metallic)


def ramp_material(r: dict):
    mat = bpy.data.materials.new("ramp")
    mat.use_nodes = True
    n = Nodes(mat.node_tree)
    p = n.new("ShaderNodeTexCoord").outputs["Object"]
    base = srgb_to_linear(r["color"])
    shade = n.math("ADD", 0.9, n.math("MULTIPLY", n.math("SUBTRACT", n.noise(p, 2.0, 4.0), 0.5), 0.3))
    roughness, metallic = RAMP_LOOK.get(r["texture"], (0.5, 0.0))
    n.output(n.principled(n.vmath("SCALE", base[:3], shade), roughness, metallic))
    mat.diffuse_color = base
    return mat


def world_sky(light: dict, strength: float):
    """Procedural sky: the raster renderer's vertical gradient from the horizon colour to the top colour, seen by the
    camera as is and lighting the scene at `strength` (the spec's ambient share)."""
    world = bpy.data.worlds.new("sky")
    world.use_nodes = True
    n = Nodes(world.node_tree)
    z = n.xyz(n.vmath("NORMALIZE", n.new("ShaderNodeTexCoord").outputs["Generated"]))[2]
    fac = n.math("POWER", n.smoothstep(0.0, 0.55, z), 0.8)
    background = n.new("ShaderNodeBackground")
    horizon, top = srgb_to_linear(light["sky_horizon"]), srgb_to_linear(light["sky_top"])
    n.feed(background.inputs["Color"], n.mix(horizon, top, fac))
    camera_ray = n.new("ShaderNodeLightPath").outputs["Is Camera Ray"]  # seen at full strength, lights at `strength`
    n.feed(background.inputs["Strength"], n.math("ADD", strength, n.math("MULTIPLY", camera_ray, 1.0 - strength)))
    out = n.new("ShaderNodeOutputWorld")
    n.feed(out.inputs["Surface"], background.outputs[0])
    world.cycles.sampling_method = "MANUAL"  # the automatic 1024 px importance map costs 1.1 s per render call
    world.cycles.sample_map_resolution = 64  # a smooth gradient needs little
    return world


def shape_mesh(name: str, shape: str, half) -> bpy.types.Mesh:
    """A mesh of the shape at its real size, centred at the origin (object coordinates are metres)."""
    hx, hy, hz = (float(v) for v in half)
    bm = bmesh.new()
    if shape == "sphere":
        bmesh.ops.create_uvsphere(bm, u_segments=SEGMENTS, v_segments=SEGMENTS // 2, radius=hx)
        for f in bm.faces:
            f.smooth = True
    elif shape in ("cube", "box"):
        bmesh.ops.create_cube(bm, size=1.0, matrix=Matrix.Diagonal((2 * hx, 2 * hy, 2 * hz, 1.0)))
    elif shape == "cylinder":
        bmesh.ops.create_cone(bm, cap_ends=True, segments=SEGMENTS, radius1=hx, radius2=hx, depth=2 * hz)
        for f in bm.faces:
            f.smooth = abs(f.normal.z) < 0.5
        for e in bm.edges:  # the rims stay sharp: smooth sides, flat caps
            e.smooth = all(abs(f.normal.z) < 0.5 for f in e.link_faces)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    mesh = bpy.data.meshes.new(name)
    bm.to_mesh(mesh)
    bm.free()
    return mesh


def add_object(name: str, mesh, material, pass_index: int):
    obj = bpy.data.objects.new(name, mesh)
    mesh.materials.append(material)
    obj.pass_index = pass_index
    bpy.context.scene.collection.objects.link(obj)
    return obj


class Scene:
    """Build one clip's scene from a request: camera, sun and sky, ground, ramp, distractors, moving parts."""

    def __init__(self, req: dict):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        self.req = req
        self.scene = bpy.context.scene
        self.T = int(req["num_frames"])
        self._camera(req["camera"])
        self._light(req["light"])
        horizon = srgb_to_linear(req["light"]["sky_horizon"])
        ground = add_object("ground", self._plane(), ground_material(req["ground"], horizon), 0)
        ground.location = (req["camera"]["position"][0], 0.0, 0.0)
        if req.get("ramp") is not None:
            self._ramp(req["ramp"])
        for k, d in enumerate(req["distractors"]):
            obj = add_object(f"distractor{k}", shape_mesh(f"d{k}", d["shape"], d["half"]),
                             object_material(f"d{k}", d["material"], d["shape"]), d["index"])  # fmt: skip
            obj.matrix_world = pose(d["rotation"], d["position"])
        for k, part in enumerate(req["parts"]):
            self._part(k, part)

    def _camera(self, c: dict) -> None:
        """The spec's pinhole camera exactly: lens from fx, principal point by lens shift, looking along +y."""
        W, H = int(self.req["width"]), int(self.req["height"])
        cam = bpy.data.cameras.new("camera")
        cam.sensor_fit = "HORIZONTAL"
        cam.sensor_width = SENSOR_WIDTH
        cam.lens = float(c["fx"]) * SENSOR_WIDTH / W
        # A lens shifted by (shift_x, shift_y) x W moves the principal point to W/2 - shift_x W from the left and
        # H/2 - shift_y W from the bottom (pixel-edge units); the spec's pixel centres lie at integers (a pixel's
        # left edge at -0.5) and its rows run downwards.
        cam.shift_x = (W / 2 - float(c["cx"]) - 0.5) / W
        cam.shift_y = (float(c["cy"]) + 0.5 - H / 2) / W
        cam.clip_start, cam.clip_end = 0.01, 1e5
        obj = bpy.data.objects.new("camera", cam)
        obj.matrix_world = Matrix.Translation(Vector(c["position"])) @ Matrix.Rotation(math.pi / 2, 4, "X")
        self.scene.collection.objects.link(obj)
        self.scene.camera = obj
        r = self.scene.render
        r.pixel_aspect_x, r.pixel_aspect_y = 1.0, float(c["fx"]) / float(c["fy"])
        if r.pixel_aspect_y < 1.0:  # Blender wants both >= 1
            r.pixel_aspect_x, r.pixel_aspect_y = 1.0 / r.pixel_aspect_y, 1.0

    def _light(self, light: dict) -> None:
        sun = bpy.data.lights.new("sun", "SUN")
        sun.energy = float(light["sun"]) * self.req["sun_scale"]
        sun.angle = 2.0 * float(light["shadow_softness"])
        sun.color = (1.0, 0.97, 0.92)
        obj = bpy.data.objects.new("sun", sun)
        obj.rotation_mode = "QUATERNION"
        obj.rotation_quaternion = Vector(light["direction"]).to_track_quat("Z", "Y")
        self.scene.collection.objects.link(obj)
        self.scene.world = world_sky(light, float(light["ambient"]) * self.req["sky_scale"])

    def _plane(self):
        mesh = bpy.data.meshes.new("ground")
        h = GROUND_SIZE / 2
        mesh.from_pydata([(-h, -h, 0), (h, -h, 0), (h, h, 0), (-h, h, 0)], [], [(0, 1, 2, 3)])
        return mesh

    def _ramp(self, r: dict) -> None:
        """The prism from its six vertices (raster_scene.ramp_polytope's order: y = -w/2 first, then +w/2)."""
        v = [tuple(p) for p in r["vertices"]]
        faces = [(0, 1, 2), (3, 5, 4), (0, 3, 4, 1), (1, 4, 5, 2), (0, 2, 5, 3)]
        mesh = bpy.data.meshes.new("ramp")
        mesh.from_pydata(v, [], faces)
        mesh.validate()
        bm = bmesh.new()
        bm.from_mesh(mesh)
        bmesh.ops.recalc_face_normals(bm, faces=bm.faces)
        bm.to_mesh(mesh)
        bm.free()
        add_object("ramp", mesh, ramp_material(r), int(r["index"]))

    def _part(self, k: int, part: dict) -> None:
        """A moving part keyed at every frame (location and rotation), so the Vector pass sees frame t+1 exactly."""
        obj = add_object(f"part{k}", shape_mesh(f"p{k}", part["shape"], part["half"]),
                         object_material(f"p{k}", part["material"], part["shape"]), part["index"])  # fmt: skip
        obj.rotation_mode = "QUATERNION"
        for t in range(self.T):
            obj.location = part["c"][t]
            obj.rotation_quaternion = Matrix(part["R"][t]).to_quaternion()
            obj.keyframe_insert("location", frame=t)
            obj.keyframe_insert("rotation_quaternion", frame=t)


def pose(R, c) -> Matrix:
    m = Matrix(R).to_4x4()
    m.translation = Vector(c)
    return m


def configure(scene, req: dict, gt: bool) -> None:
    """Render settings of the beauty pass (gt=False) or of the ground-truth pass (gt=True: Cycles, 1 point sample
    per subsample, no bounces, object index, Z and Vector passes, motion blur off)."""
    r = scene.render
    s = int(req["supersample"]) if gt else 1
    r.resolution_x, r.resolution_y = int(req["width"]) * s, int(req["height"]) * s
    r.resolution_percentage = 100
    r.use_motion_blur = False
    r.threads_mode, r.threads = "FIXED", int(req["threads"])
    r.use_persistent_data = False
    engine = "cycles" if gt else req["engine"]
    r.engine = {"cycles": "CYCLES", "eevee": "BLENDER_EEVEE_NEXT", "workbench": "BLENDER_WORKBENCH"}[engine]
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.display_settings.display_device = "sRGB"
    layer = scene.view_layers[0]
    # the layers need no shading: one plain material for everything makes the pass ~35% faster
    layer.material_override = (bpy.data.materials.get("nr-gt") or bpy.data.materials.new("nr-gt")) if gt else None
    layer.use_pass_z = gt
    layer.use_pass_vector = gt
    layer.use_pass_object_index = gt
    if engine == "cycles":
        cy = scene.cycles
        cy.device = "CPU"
        cy.seed = int(req["seed"]) % (2**31)
        cy.use_adaptive_sampling = False
        cy.use_denoising = bool(req["denoise"]) and not gt
        cy.samples = 1 if gt else int(req["samples"])
        cy.max_bounces = 0 if gt else 4
        cy.diffuse_bounces, cy.glossy_bounces = (0, 0) if gt else (2, 2)
        cy.transmission_bounces = cy.volume_bounces = cy.transparent_max_bounces = 0 if gt else 2
        cy.caustics_reflective = cy.caustics_refractive = False
        cy.pixel_filter_type = "BOX" if gt else "BLACKMAN_HARRIS"
        cy.filter_width = 0.01 if gt else 1.5
        cy.use_auto_tile = False
    elif engine == "eevee":
        scene.eevee.taa_render_samples = int(req["samples"])
    else:
        scene.display.shading.light = "STUDIO"
        scene.display.shading.color_type = "MATERIAL"
        scene.display.render_aa = "8"
    r.image_settings.file_format = "OPEN_EXR_MULTILAYER" if gt else "PNG"
    if gt:
        r.image_settings.color_depth = "32"
        r.image_settings.exr_codec = "NONE"
    else:
        r.image_settings.color_mode = "RGB"
        r.image_settings.color_depth = "8"
        r.image_settings.compression = 0


def read_exr(path: str) -> dict[str, np.ndarray]:
    """Channels {name: float32 [h, w]} of an uncompressed scanline OpenEXR file with FLOAT channels (top row first)."""
    data = open(path, "rb").read()
    if struct.unpack_from("<i", data, 0)[0] != 20000630:
        raise ValueError(f"{path}: not an OpenEXR file")
    pos, channels, window, compression = 8, [], None, None
    while data[pos] != 0:
        end = data.index(b"\0", pos)
        name = data[pos:end].decode()
        end2 = data.index(b"\0", end + 1)
        size = struct.unpack_from("<i", data, end2 + 1)[0]
        value = data[end2 + 5:end2 + 5 + size]
        if name == "channels":
            q = 0
            while value[q] != 0:
                e = value.index(b"\0", q)
                channels.append((value[q:e].decode(), struct.unpack_from("<i", value, e + 1)[0]))
                q = e + 17
        elif name == "dataWindow":
            window = struct.unpack_from("<4i", value)
        elif name == "compression":
            compression = value[0]
        pos = end2 + 5 + size
    pos += 1
    if compression != 0 or any(kind != 2 for _, kind in channels):
        raise ValueError(f"{path}: expected uncompressed FLOAT channels, got compression {compression}, {channels}")
    x0, y0, x1, y1 = window
    w, h = x1 - x0 + 1, y1 - y0 + 1
    offsets = np.frombuffer(data, dtype="<u8", count=h, offset=pos)
    out = {name: np.empty((h, w), dtype=np.float32) for name, _ in channels}
    for off in offsets:
        y = struct.unpack_from("<i", data, int(off))[0] - y0
        row = np.frombuffer(data, dtype="<f4", count=w * len(channels), offset=int(off) + 8).reshape(len(channels), w)
        for k, (name, _) in enumerate(channels):
            out[name][y] = row[k]
    return out


def read_png(path: str) -> np.ndarray:
    """uint8 [h, w, 3], top row first, of an 8-bit PNG Blender wrote."""
    img = bpy.data.images.load(path)
    img.colorspace_settings.name = "Non-Color"
    w, h = img.size
    px = np.empty(w * h * 4, dtype=np.float32)
    img.pixels.foreach_get(px)
    bpy.data.images.remove(img)
    return np.rint(px.reshape(h, w, 4)[::-1, :, :3] * 255.0).astype(np.uint8)


def passes(channels: dict) -> dict[str, dict[str, np.ndarray]]:
    """{pass: {channel: [h, w]}} from multilayer EXR names "ViewLayer.PASS.CHANNEL"."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, values in channels.items():
        parts = name.split(".")
        out.setdefault(parts[-2] if len(parts) > 1 else "", {})[parts[-1]] = values
    return out


def render(req: dict) -> dict[str, float]:
    """Build the scene, render every frame twice (beauty, ground truth), save the npz; return seconds per stage."""
    clock = {"build": time.perf_counter(), "beauty": 0.0, "layers": 0.0}
    scene = Scene(req).scene
    clock["build"] = time.perf_counter() - clock["build"]
    T, W, H, s = int(req["num_frames"]), int(req["width"]), int(req["height"]), int(req["supersample"])
    rgb = np.empty((T, H, W, 3), dtype=np.uint8)
    index = np.empty((T, H * s, W * s), dtype=np.uint8)
    depth = np.empty((T, H * s, W * s), dtype=np.float32)
    flow = np.zeros((max(T - 1, 0), 2, H * s, W * s), dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="nr-blender-") as tmp:
        for t in range(T):
            start = time.perf_counter()
            scene.frame_set(t)
            configure(scene, req, gt=False)
            scene.render.filepath = os.path.join(tmp, "rgb.png")
            bpy.ops.render.render(write_still=True)
            rgb[t] = read_png(scene.render.filepath)
            clock["beauty"] += time.perf_counter() - start
            start = time.perf_counter()
            configure(scene, req, gt=True)
            scene.render.filepath = os.path.join(tmp, "gt.exr")
            bpy.ops.render.render(write_still=True)
            ch = passes(read_exr(scene.render.filepath))
            index[t] = np.rint(ch["IndexOB"]["X"]).astype(np.uint8)
            depth[t] = np.where(ch["Depth"]["Z"] >= SKY_DEPTH, np.inf, ch["Depth"]["Z"])
            if t + 1 < T:  # Vector's Z, W: where the point was (frame t) minus where it goes (t+1), y up
                vec = ch["Vector"]
                flow[t, 0] = -vec["Z"] / s
                flow[t, 1] = vec["W"] / s
            clock["layers"] += time.perf_counter() - start
    np.savez(req["out"], rgb=rgb, index=index, depth=depth, flow=flow)
    return clock


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        start = time.perf_counter()
        try:
            timings = render(json.loads(line))
            reply = {"ok": True, "seconds": time.perf_counter() - start, "timings": timings}
        except Exception:  # noqa: BLE001 - the parent turns it into an error naming the clip
            reply = {"error": traceback.format_exc(limit=8)}
        _PROTOCOL.write(json.dumps(reply) + "\n")
        _PROTOCOL.flush()


if __name__ == "__main__":
    main()
