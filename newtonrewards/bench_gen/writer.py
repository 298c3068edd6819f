"""Make one clip and write its folder atomically: sample -> simulate -> render -> write (video, gt.npz, meta.json).

`generate_clip` is the unit of work of the driver (in-process or a Ray task): a pure function of the recipe, split,
primitive and index, plus the file I/O. The folder is assembled under a temporary name and renamed into place, so a
kill never leaves a half-written clip where a reader would look.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from newtonrewards import __version__, dataset, physics
from newtonrewards.bench_gen import scenes
from newtonrewards.bench_gen.renderers import Layers, make_renderer
from newtonrewards.bench_gen.simulators import make_simulator
from newtonrewards.bench_gen.spec import SceneSpec
from newtonrewards.video import fsync_dir, write_video


@dataclass(frozen=True)
class ClipRecipe:
    """Everything the bytes of a clip depend on besides (split, primitive, index)."""

    scene: scenes.SceneSettings = field(default_factory=scenes.SceneSettings)
    renderer: str = "raster"
    supersample: int = 2
    simulator: str = "analytic"
    crf: int = 18
    renderer_options: dict = field(default_factory=dict)  # passed to the renderer (blender: engine, samples, python)


def generate_clip(recipe: ClipRecipe, root: str | Path, split: str, primitive: str, index: int) -> dict:
    """Make clip (split, primitive, index) under ROOT and return its manifest row (the caller appends it)."""
    spec = scenes.sample_scene(recipe.scene, split, primitive, index)
    trajectory = make_simulator(recipe.simulator).run(spec)
    renderer = make_renderer(recipe.renderer, supersample=recipe.supersample, **recipe.renderer_options)
    layers = renderer.render(spec, trajectory)
    return write_clip(Path(root), spec, trajectory, layers, recipe)


def ground_truth(spec: SceneSpec, trajectory: physics.Trajectory, layers: Layers) -> dict[str, np.ndarray]:
    """The arrays of gt.npz (names, shapes and units in docs/DATASET.md)."""
    K, w2c = spec.camera.K, spec.camera.world_to_camera
    uv, duv, dduv = physics.project_motion(K, w2c, trajectory.position, trajectory.velocity, trajectory.acceleration)
    contact = trajectory.phase != physics.FLIGHT if trajectory.contact is None else trajectory.contact
    gt = {
        "times": trajectory.times,
        "position": trajectory.position,
        "velocity": trajectory.velocity,
        "acceleration": trajectory.acceleration,
        "phase": trajectory.phase,
        "segment": trajectory.segment,
        "contact": contact,
        "event_times": trajectory.event_times,
        "event_kinds": np.array(trajectory.event_kinds, dtype="<U16"),
        "center_2d": uv,
        "velocity_2d": duv,
        "acceleration_2d": dduv,
        "centroid_2d": layers.centroid,
        "area": layers.area,
        "masks": layers.instance,
        "depth": layers.depth,
        "flow": layers.flow,
        "K": K,
        "world_to_camera": w2c,
        "fps": np.float64(spec.fps),
    }
    if trajectory.second is not None:  # a collision's second body: the same arrays, prefixed
        two = trajectory.second
        uv2, duv2, dduv2 = physics.project_motion(K, w2c, two.position, two.velocity, two.acceleration)
        gt.update(
            second_position=two.position, second_velocity=two.velocity, second_acceleration=two.acceleration,
            second_phase=two.phase, second_segment=two.segment, second_center_2d=uv2, second_velocity_2d=duv2,
            second_acceleration_2d=dduv2, second_centroid_2d=layers.second_centroid, second_area=layers.second_area,
        )  # fmt: skip
    return gt


def metadata(spec: SceneSpec, recipe: ClipRecipe, trajectory: physics.Trajectory) -> dict:
    """meta.json: the sampled parameters, assets, camera, light, prompt and seeds of one clip."""
    def plain(x):
        return json.loads(json.dumps(dataclasses.asdict(x), default=float)) if x is not None else None

    meta = {
        "clip_id": spec.clip_id,
        "split": spec.split,
        "primitive": spec.primitive,
        "index": spec.index,
        "seed": spec.seed,
        "generator_seed": recipe.scene.seed,
        "prompt": spec.prompt,
        "params": spec.params,
        "object": plain(spec.object),
        "ramp": plain(spec.ramp),
        "ground": plain(spec.ground),
        "light": plain(spec.light),
        "distractors": [plain(d) for d in spec.distractors],
        "camera": {
            **plain(spec.camera),
            "K": spec.camera.K.tolist(),
            "world_to_camera": spec.camera.world_to_camera.tolist(),
        },
        "segments": [plain(s) for s in spec.segments],
        "events": [{"time": float(t), "kind": k} for t, k in zip(trajectory.event_times, trajectory.event_kinds)],
        "num_frames": spec.num_frames,
        "fps": spec.fps,
        "width": spec.camera.width,
        "height": spec.camera.height,
        "simulator": recipe.simulator,
        "renderer": recipe.renderer,
        "supersample": recipe.supersample,
        "newtonrewards_version": __version__,
    }
    if recipe.renderer == "blender":  # the Blender render settings (not where its interpreter lives)
        meta["blender"] = {k: v for k, v in recipe.renderer_options.items() if k != "python"}
    extended = {"pendulum": plain(spec.pendulum), "second": plain(spec.second), "rolling": spec.rolling or None}
    meta.update({k: v for k, v in extended.items() if v is not None})  # the five's meta.json keeps its keys
    return meta


def write_clip(root: Path, spec: SceneSpec, trajectory: physics.Trajectory, layers: Layers, recipe: ClipRecipe) -> dict:
    """Assemble the clip folder under a temporary name, then rename it into place; return the manifest row."""
    rel = dataset.clip_relpath(spec.split, spec.primitive, spec.clip_id)
    final = root / rel
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{spec.clip_id}{dataset.TMP_MARK}{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        write_video(tmp / dataset.VIDEO_FILE, layers.rgb, spec.fps, crf=recipe.crf)
        dataset.save_npz_deterministic(tmp / dataset.GT_FILE, ground_truth(spec, trajectory, layers))
        (tmp / dataset.META_FILE).write_text(json.dumps(metadata(spec, recipe, trajectory), indent=1) + "\n")
        for name in (dataset.VIDEO_FILE, dataset.GT_FILE, dataset.META_FILE):
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        gt_sha = hashlib.sha256((tmp / dataset.GT_FILE).read_bytes()).hexdigest()
        if final.exists():  # an earlier run finished these files but was killed before its manifest row
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "clip_id": spec.clip_id,
        "split": spec.split,
        "primitive": spec.primitive,
        "index": spec.index,
        "path": rel,
        "num_frames": spec.num_frames,
        "fps": spec.fps,
        "width": spec.camera.width,
        "height": spec.camera.height,
        "asset_id": spec.object.asset_id,
        "prompt": spec.prompt,
        "seed": spec.seed,
        "gt_sha256": gt_sha,
    }
