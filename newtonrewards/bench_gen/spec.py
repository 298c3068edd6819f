"""Frozen scene specs: everything a simulator and a renderer need to make one clip, and nothing else.

A SceneSpec is a pure function of (generator config, split, primitive, index, seed); see `scenes.sample_scene`.
World frame as in `newtonrewards.physics`: metres, x along the motion, y away from the camera, z up, ground z = 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from newtonrewards.physics import Segment

Vec3 = tuple[float, float, float]
Mat3 = tuple[Vec3, Vec3, Vec3]
IDENTITY: Mat3 = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def rotation_y(angle: float) -> Mat3:
    """Rotation about the world y axis (the camera's viewing axis) by `angle` rad; tilts an object onto a ramp."""
    c, s = float(np.cos(angle)), float(np.sin(angle))
    return ((c, 0.0, s), (0.0, 1.0, 0.0), (-s, 0.0, c))


def rotation_z(angle: float) -> Mat3:
    """Rotation about the vertical axis (yaw) by `angle` rad."""
    c, s = float(np.cos(angle)), float(np.sin(angle))
    return ((c, -s, 0.0), (s, c, 0.0), (0.0, 0.0, 1.0))


@dataclass(frozen=True)
class ObjectSpec:
    """A procedural rigid object. It translates and never spins, so its rotation is fixed for the whole clip.

    shape: "sphere" (half_extents = (r, r, r)), "cube"/"box" (half sizes along local x, y, z) or "cylinder"
    (radius r = half_extents[0] = half_extents[1], axis along local z, half height half_extents[2]).
    """

    asset_id: str
    shape: str
    half_extents: Vec3
    texture: str  # solid | checker | stripes | dots | marble
    color_name: str
    color: Vec3  # base albedo in [0, 1]
    mass: float  # kg
    mu: float  # kinetic friction of the object; surfaces have mu = 1 and contacts multiply (Bullet's rule)
    rotation: Mat3 = IDENTITY  # object-to-world

    @property
    def bottom_offset(self) -> float:
        """Distance from the centre to the surface it rests on, along its local z axis."""
        return float(self.half_extents[2])


@dataclass(frozen=True)
class RampSpec:
    """A triangular-prism incline whose sloped face starts at the ground line x = foot_x and rises uphill (+-x)."""

    angle: float  # rad
    uphill: int  # +1: the ramp rises towards +x; -1: towards -x
    foot_x: float  # m, where the slope meets the ground
    length: float  # m along the slope
    width: float  # m along y, centred on y = 0
    texture: str  # wood | metal | painted
    color: Vec3

    @property
    def slope_dir(self) -> np.ndarray:
        """Unit vector pointing uphill along the slope."""
        return np.array([self.uphill * np.cos(self.angle), 0.0, np.sin(self.angle)])

    @property
    def normal(self) -> np.ndarray:
        """Unit normal of the sloped face, pointing out of the ramp (upwards)."""
        return np.array([-self.uphill * np.sin(self.angle), 0.0, np.cos(self.angle)])

    @property
    def height(self) -> float:
        return float(self.length * np.sin(self.angle))


@dataclass(frozen=True)
class StaticObjectSpec:
    """A distractor at rest on the ground, behind the plane of motion (it never occludes the moving object)."""

    asset_id: str
    shape: str
    half_extents: Vec3
    texture: str
    color_name: str
    color: Vec3
    position: Vec3  # centre, m
    rotation: Mat3 = IDENTITY


@dataclass(frozen=True)
class GroundSpec:
    """The ground plane z = 0: a procedural texture with two colours and a world-space scale (m per tile/feature)."""

    texture: str  # grass | sand | tiles | wood | asphalt
    color_a: Vec3
    color_b: Vec3
    scale: float


@dataclass(frozen=True)
class LightSpec:
    """A sun (directional light) plus sky ambient; `direction` is the unit vector from a surface towards the sun."""

    direction: Vec3
    sun: float  # diffuse intensity
    ambient: float
    sky_top: Vec3
    sky_horizon: Vec3
    shadow_softness: float  # rad, angular radius of the sun used for soft shadows


@dataclass(frozen=True)
class CameraSpec:
    """A static pinhole camera looking along +y with its image plane parallel to the x-z plane of motion.

    With the image plane parallel to the motion, a constant 3D acceleration projects to a constant image-plane
    acceleration, which is exactly what the kinematic reward assumes. Framing uses a shifted principal point
    (a shift lens), not a tilt, for the same reason. Pixel centres lie at integer coordinates.
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    position: Vec3

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def world_to_camera(self) -> np.ndarray:
        """4x4 matrix mapping world points to OpenCV camera coordinates (x right, y down, z forward)."""
        R = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
        M = np.eye(4)
        M[:3, :3] = R
        M[:3, 3] = -R @ np.asarray(self.position, dtype=np.float64)
        return M


@dataclass(frozen=True)
class PendulumSpec:
    """A bob on a rigid massless rod swinging in the x-z plane about a fixed pivot (released at rest)."""

    pivot: Vec3  # m
    length: float  # m, pivot to the bob's centre
    theta0: float  # rad, release angle from the vertical (signed: + swings from +x)
    rod_radius: float  # m, drawn only: the closed form's rod has no mass


@dataclass(frozen=True)
class SecondBodySpec:
    """The second moving body of a two-body collision (instance id 2 in the masks; distractors start at 3)."""

    object: ObjectSpec
    segments: tuple[Segment, ...]


@dataclass(frozen=True)
class SceneSpec:
    """One clip: the sampled physics parameters, the closed-form motion, and the scene around it."""

    clip_id: str
    split: str
    primitive: str
    index: int
    seed: int  # the clip's own seed (derived from the generator seed, split, primitive and index)
    num_frames: int
    fps: float
    g: float
    params: dict  # sampled physical parameters (h, v0, angle, theta, mu, ...), SI units, angles in degrees
    object: ObjectSpec
    segments: tuple[Segment, ...]  # the closed-form motion of the object's centre (empty for a pendulum)
    camera: CameraSpec
    light: LightSpec
    ground: GroundSpec
    ramp: RampSpec | None = None
    distractors: tuple[StaticObjectSpec, ...] = field(default_factory=tuple)
    prompt: str = ""
    # extended primitives only (the paper's five leave these at their defaults)
    pendulum: PendulumSpec | None = None  # the motion is the pendulum's closed form; `segments` is empty
    second: SecondBodySpec | None = None  # a second moving body (collision)
    rolling: bool = False  # the object rolls without slipping on the ramp (its texture turns with it)
