"""`newtonrewards eval`: score generated continuations of NewtonBench clips against their ground truth.

Steps per clip (`score_clip`, pure apart from reading the two videos and the ground-truth masks):
1. read the generated clip and bring it to the benchmark's frame times (`matching.resample_indices`) and size
   (same aspect ratio within 1%: resized, with a warning in the row; another aspect ratio: a per-clip error);
2. track the object, prompted by the benchmark's first-frame mask (`tracking.build_tracker`), or take the
   benchmark's own masks with `oracle_masks` (only meaningful when the videos ARE the benchmark clips: a check of the
   pipeline that must give zero errors and IoU 1); frames where the object is lost (`lost_fraction`) or where the
   tracker kept its motion prior because the mask's area jumped (`fallback_frames`) are counted in the row;
3. physics metrics against the exact masks (L2, Chamfer, IoU, velocity and acceleration RMSE), the project's
   kinematic reward of the generated clip, and weight-free visual metrics against the benchmark clip.
The driver (`evaluate`) matches videos to clips, skips clips already in OUT/results.jsonl (resume), runs the rest as
Ray tasks (or in-process), appends each row as it arrives, then aggregates and writes the report.
A clip that cannot be scored gets its error in its row; the run fails only if no clip scored.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from newtonrewards import dataset
from newtonrewards.errors import UserError
from newtonrewards.eval import matching, metrics
from newtonrewards.rewards.composite import RewardConfig

PHYSICS = ("l2", "chamfer", "iou", "velocity_rmse", "acceleration_rmse")
REWARD = ("kinematic", "residual_abs_x", "residual_abs_y", "motion", "motion_floor")
VISUAL = ("psnr", "ssim", "flicker")
METRICS = PHYSICS + REWARD + VISUAL + ("lost_fraction", "fallback_frames")
UNITS = {
    "l2": "mean centroid distance / image diagonal (PISA: / (sqrt(2) * resolution))",
    "chamfer": "symmetric Chamfer distance of mask pixels / image diagonal",
    "iou": "mean mask intersection over union (a lost frame counts 0)",
    "velocity_rmse": "RMSE of the centroid's first difference, px/frame at benchmark resolution",
    "acceleration_rmse": "RMSE of the centroid's second difference, px/frame^2 at benchmark resolution",
    "kinematic": "the reward's kinematic term of the generated clip (default: contact-aware, in units of the clip's "
    "speed per frame; scores.json units say more)",
    "residual_abs_x": "mean |acceleration - the fitted piecewise-constant one|, horizontal, px/frame^2",
    "residual_abs_y": "mean |acceleration - the fitted piecewise-constant one|, vertical, px/frame^2",
    "motion": "mean optical-flow magnitude over all pixels of the generated clip, px/frame",
    "motion_floor": "coherent-travel guard of the reward, 0 (moves coherently) .. 1 (nothing moves coherently)",
    "psnr": f"PSNR against the benchmark clip, dB (capped at {100.0:g} for identical clips)",
    "ssim": "mean SSIM against the benchmark clip",
    "flicker": "mean |I(t+1) - I(t)| on pixels outside both masks, grey levels",
    "lost_fraction": "share of frames where the tracker lost the object",
    "fallback_frames": "frames where the tracker distrusted its segmentation (the mask's area jumped) and kept the "
    "last mask moved: an object that melts or grows is tracked as rigid there (null: tracker without that fallback)",
}
HIGHER_IS_BETTER = frozenset({"iou", "psnr", "ssim"})
PSNR_CAP = 100.0  # dB: identical clips have infinite PSNR, which would make every mean infinite
ASPECT_TOLERANCE = 0.01
BLANK_STD = 1.0  # grey levels: below this the generated first frame shows nothing where the object should be
RESULTS_FILE, CONFIG_FILE, TRACKS_DIR = "results.jsonl", "eval_config.json", "tracks"
IDENTITY_KEYS = ("bench", "split", "tracker", "tracker_kwargs", "oracle_masks", "reward", "visual")


@dataclass
class EvalConfig:
    """`newtonrewards eval`: which benchmark clips, which generated videos, how to track and score, where it runs."""

    bench: str = ""  # NewtonBench root
    split: str = "test"
    videos: str = ""  # folder of generated clips named CLIP_ID.mp4 or CLIP_ID/video.mp4, at any depth
    out: str = ""
    mapping: str = ""  # optional JSON / CSV file: clip_id -> video path (relative to its own folder)
    tracker: str = "embedded"
    tracker_kwargs: dict[str, Any] = field(default_factory=dict)
    oracle_masks: bool = False  # use the benchmark's masks instead of tracking (self-evaluation of the pipeline)
    reward: RewardConfig = field(default_factory=lambda: RewardConfig(w_mass=0.0))  # only its kinematic term is used
    visual: bool = True  # PSNR, SSIM, flicker against the benchmark clip
    bootstrap_samples: int = 2000
    seed: int = 0  # of the bootstrap
    workers: int = 0  # local Ray CPUs (0: all)
    ray_address: str = ""
    no_ray: bool = False


@dataclass(frozen=True)
class ClipJob:
    """One benchmark clip and its generated continuation: everything a worker needs, as plain values."""

    clip_id: str
    primitive: str
    clip_dir: str  # benchmark clip folder
    video: str  # generated video
    fps: float
    num_frames: int
    width: int
    height: int


def conform(frames: np.ndarray, fps: float, job: ClipJob) -> tuple[np.ndarray, list[str]]:
    """Generated frames uint8 [T', H', W', 3] at `fps` -> [T, H, W, 3] at the benchmark's frame times and size.

    Returns the frames and warnings (resampled, held frames, resized). Another aspect ratio is a UserError: a
    resize would distort the motion, a crop would guess where the scene is.
    """
    warnings = []
    if not fps > 0:
        warnings.append(f"no frame rate in the file; assumed the benchmark's {job.fps:g} fps")
        fps = job.fps
    T, H, W = frames.shape[:3]
    if abs(fps - job.fps) > 1e-3 or T != job.num_frames:
        if T / fps + 1e-9 < (job.num_frames - 1) / job.fps:
            warnings.append(f"{T} frames at {fps:g} fps end before the benchmark clip; the last frame is held")
        elif abs(fps - job.fps) > 1e-3:
            warnings.append(f"resampled from {fps:g} fps to {job.fps:g} fps (nearest frame in time)")
        frames = frames[matching.resample_indices(T, fps, job.num_frames, job.fps)]
    if (H, W) != (job.height, job.width):
        if abs((W / H) / (job.width / job.height) - 1) > ASPECT_TOLERANCE:
            raise UserError(
                f"resolution {W}x{H} has another aspect ratio than the benchmark's {job.width}x{job.height}; "
                "generate at the benchmark's aspect ratio (it is resized when only the size differs)"
            )
        import cv2

        frames = np.stack([cv2.resize(f, (job.width, job.height), interpolation=cv2.INTER_AREA) for f in frames])
        warnings.append(f"resized from {W}x{H} to {job.width}x{job.height}")
    return np.ascontiguousarray(frames), warnings


def load_truth_masks(clip_dir: str | Path) -> np.ndarray:
    """The moving object's exact masks bool [T, H, W] (instance id 1 of gt.npz), loading nothing else."""
    path = Path(clip_dir) / dataset.GT_FILE
    try:
        with np.load(path, allow_pickle=False) as data:
            return data["masks"] == 1
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"{path}: unreadable ground-truth masks ({exc})") from None


def shows_something(frame: np.ndarray, mask: np.ndarray, ring: int = 3) -> bool:
    """Whether a frame uint8 [H, W, 3] has any structure (grey-level std >= BLANK_STD) over `mask` [H, W] grown by
    `ring` px: a blank region holds no object to track, and a tracker prompted there would follow the blank."""
    import cv2

    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * ring + 1, 2 * ring + 1))
    region = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
    return bool(frame[region].astype(np.float64).std(axis=0).max() >= BLANK_STD)


def reward_terms(frames: np.ndarray, reward_cfg: RewardConfig, flow_model) -> tuple[dict[str, float], np.ndarray]:
    """The kinematic reward's terms of a clip uint8 [T, H, W, 3], and its Eulerian residual map.

    The map is mean |flow[t+1] - 2 flow[t] + flow[t-1]| over frames and both components, float32 [H, W]
    px/frame^3: where in the image the motion departs from a constant acceleration (the paper's diagnostic).
    """
    import torch

    from newtonrewards.rewards.composite import newton_loss
    from newtonrewards.rewards.kinematic import eulerian_residual
    from newtonrewards.video import to_float

    video = torch.from_numpy(to_float(frames))[None]
    with torch.no_grad():
        flow = flow_model(video)
        _, diag = newton_loss(flow, reward_cfg, video=video)
        residual_map = eulerian_residual(flow)[0].abs().mean(dim=(0, 1)).numpy()
    terms = {k: float(diag[k][0]) for k in ("kinematic", "residual_abs_x", "residual_abs_y", "motion")}
    terms["motion_floor"] = float(diag["motion_floor"][0])
    return terms, residual_map


def score_clip(job: ClipJob, cfg: EvalConfig, tracker, flow_model) -> tuple[dict, dict[str, np.ndarray]]:
    """One clip's row (metrics, warnings, or `error`) and its artifacts (tracks, residual map) for the report."""
    from newtonrewards.rewards.composite import MIN_FRAMES
    from newtonrewards.video import read_video

    start = time.perf_counter()
    row: dict[str, Any] = {"clip_id": job.clip_id, "primitive": job.primitive, "video": job.video}
    artifacts: dict[str, np.ndarray] = {}
    try:  # 1. read the generated clip and bring it to the benchmark's frame times and size
        raw, fps = read_video(job.video)
        row.update(frames=int(raw.shape[0]), fps=float(fps), width=int(raw.shape[2]), height=int(raw.shape[1]))
        frames, warnings = conform(raw, fps, job)
        truth = load_truth_masks(job.clip_dir)  # 2. the exact masks, and the tracked ones
        if truth.shape != frames.shape[:3]:
            raise UserError(f"{job.clip_dir}: ground-truth masks {truth.shape} do not match the manifest's clip size")
        if not truth[0].any():
            raise UserError(f"{job.clip_dir}: the object is not visible in the benchmark's first frame")
        if not cfg.oracle_masks and not shows_something(frames[0], truth[0]):
            raise UserError(
                "no visible object: the first frame is blank where the benchmark's object is (nothing to "
                "prompt the tracker with)"
            )
        if cfg.oracle_masks:
            masks, lost, fallback = truth, ~truth.any(axis=(1, 2)), None
        else:
            result = tracker.track(frames, truth[0])
            masks, lost = np.asarray(result.masks, bool), np.asarray(result.lost, bool)
            fallback = getattr(result, "fallback", None)  # None: a tracker without a fallback to its prior
        if lost[1:].all():
            raise UserError("no visible object: the tracker lost it in every frame after the first")
        reference = None  # 3. physics and visual metrics against the benchmark clip
        if cfg.visual:
            reference, _ = read_video(Path(job.clip_dir) / dataset.VIDEO_FILE)
            if reference.shape != frames.shape:
                raise UserError(
                    f"{job.clip_dir}: benchmark video is {list(reference.shape)}, its manifest row says "
                    f"{list(frames.shape)}"
                )
        values = metrics.clip_metrics(masks, truth, frames if cfg.visual else None, reference)
        if "psnr" in values:
            values["psnr"] = min(values["psnr"], PSNR_CAP)
        values["lost_fraction"] = float(lost.mean())
        if frames.shape[0] >= MIN_FRAMES:  # 4. the project's kinematic reward of the generated clip
            terms, residual_map = reward_terms(frames, cfg.reward, flow_model)
            values.update(terms)
            artifacts["residual_map"] = _shrink(residual_map)
        else:
            warnings.append(f"{frames.shape[0]} frames: the kinematic reward needs at least {MIN_FRAMES}")
        row.update({k: _finite_or_none(v) for k, v in values.items()})
        row["fallback_frames"] = None if fallback is None else int(np.count_nonzero(fallback))
        if warnings:
            row["warnings"] = warnings
        artifacts["track"] = metrics.centroid_track(masks).astype(np.float32)
        artifacts["truth_track"] = metrics.centroid_track(truth).astype(np.float32)
    except (UserError, ValueError) as exc:
        row["error"] = str(exc)
        artifacts = {}
    except Exception as exc:  # a bug or a corrupt file in one clip of thousands must not stop the run
        row["error"] = f"{exc.__class__.__name__}: {exc}"
        artifacts = {}
    row["seconds"] = round(time.perf_counter() - start, 3)
    return row, artifacts


def _shrink(residual_map: np.ndarray, size: int = 96) -> np.ndarray:
    """A residual map small enough to keep for every clip (float16, longest side `size` px)."""
    import cv2

    H, W = residual_map.shape
    scale = min(1.0, size / max(H, W))
    small = cv2.resize(residual_map, (max(1, round(W * scale)), max(1, round(H * scale))), interpolation=cv2.INTER_AREA)
    return small.astype(np.float16)


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: a metric that does not exist for this clip (e.g. no frame where both masks exist) is None."""
    value = float(value)
    return value if np.isfinite(value) else None


class ClipScorer:
    """Builds the tracker and flow model once per process and scores clips with them."""

    def __init__(self, cfg: EvalConfig, tracker=None):
        from newtonrewards.eval.tracking import build_tracker
        from newtonrewards.reward_models.flow import make_flow_model

        self.cfg = cfg
        self.tracker = (
            tracker if tracker is not None or cfg.oracle_masks else build_tracker(cfg.tracker, **cfg.tracker_kwargs)
        )
        self.flow_model = make_flow_model(cfg.reward.flow_model, **cfg.reward.flow_kwargs)

    def __call__(self, job: ClipJob) -> tuple[dict, dict[str, np.ndarray]]:
        return score_clip(job, self.cfg, self.tracker, self.flow_model)


# ---------------------------------------------------------------------------------------------------------- driver


def plan(cfg: EvalConfig) -> tuple[list[ClipJob], matching.Matching]:
    """The jobs (benchmark clips with a generated video) and the matching with both sides' leftovers."""
    root = Path(cfg.bench)
    _, rows = dataset.open_bench(root, cfg.split)
    rows = sorted(rows, key=lambda r: r["clip_id"])
    videos_dir = Path(cfg.videos)
    if cfg.mapping:
        mapping_path = Path(cfg.mapping)
        if not mapping_path.is_file():
            raise UserError(f"{mapping_path}: no such mapping file (--mapping)")
        videos = matching.read_mapping(mapping_path, mapping_path.parent)
    else:
        videos = matching.find_videos(videos_dir)
    found = matching.match([r["clip_id"] for r in rows], videos)
    by_id = {r["clip_id"]: r for r in rows}
    jobs = [
        ClipJob(
            clip_id=c,
            primitive=by_id[c]["primitive"],
            clip_dir=str(root / by_id[c]["path"]),
            video=str(v),
            fps=float(by_id[c]["fps"]),
            num_frames=int(by_id[c]["num_frames"]),
            width=int(by_id[c]["width"]),
            height=int(by_id[c]["height"]),
        )
        for c, v in found.pairs.items()
    ]
    return jobs, found


def validate(cfg: EvalConfig) -> None:
    """Every option problem at once, before any work."""
    from newtonrewards.eval.tracking import tracker_names

    problems = []
    for name in ("bench", "videos", "out"):
        if not getattr(cfg, name) and not (name == "videos" and cfg.mapping):
            problems.append(f"--{name} is required")
    if not cfg.oracle_masks and cfg.tracker not in tracker_names():
        problems.append(f"unknown tracker {cfg.tracker!r} (known: {', '.join(tracker_names())})")
    if cfg.bootstrap_samples < 1:
        problems.append(f"bootstrap_samples must be >= 1, got {cfg.bootstrap_samples}")
    try:
        cfg.reward.validate()
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        raise UserError("; ".join(problems))


def identity(cfg: EvalConfig) -> dict:
    """What defines a run's numbers; resuming into a folder scored with other settings is refused."""
    data = asdict(cfg)
    data["bench"] = str(Path(cfg.bench).resolve())
    return {k: data[k] for k in IDENTITY_KEYS}


def read_results(out: Path) -> dict[str, dict]:
    """clip id -> its latest row in OUT/results.jsonl (a retried clip's later row wins); a torn last line is ignored."""
    path = out / RESULTS_FILE
    latest: dict[str, dict] = {}
    if not path.exists():
        return latest
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            latest[row["clip_id"]] = row
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            print(f"{path}:{number}: skipped a corrupt line (that clip is scored again)", file=sys.stderr)
    return latest


def append_result(out: Path, row: dict) -> None:
    """Append one row to OUT/results.jsonl (`dataset.append_jsonl`: a kill leaves whole rows only)."""
    dataset.append_jsonl(out / RESULTS_FILE, row)


def save_artifacts(out: Path, clip_id: str, artifacts: dict[str, np.ndarray]) -> None:
    """OUT/tracks/CLIP_ID.npz, written under a temporary name and renamed (before the clip's row is appended)."""
    folder = out / TRACKS_DIR
    folder.mkdir(exist_ok=True)
    path = folder / f"{clip_id}.npz"
    tmp = folder / f".{clip_id}{dataset.TMP_MARK}{os.getpid()}.npz"
    np.savez(tmp, **artifacts)
    os.replace(tmp, path)


def load_artifacts(out: str | Path, clip_id: str) -> dict[str, np.ndarray]:
    """The tracks and residual map stored for a clip ({} when there are none)."""
    path = Path(out) / TRACKS_DIR / f"{clip_id}.npz"
    if not path.exists():
        return {}
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def prepare_output(cfg: EvalConfig) -> Path:
    """Create OUT (or check that it holds a run with the same settings, to resume) and record the config."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder (--out)")
    config_path = out / CONFIG_FILE
    if config_path.exists():
        try:
            previous = json.loads(config_path.read_text()).get("identity")
        except (json.JSONDecodeError, AttributeError):
            previous = None
        if previous != identity(cfg):
            theirs = previous or {}
            diff = [
                f"{k}: {theirs.get(k)!r} there, {v!r} asked" for k, v in identity(cfg).items() if theirs.get(k) != v
            ]
            raise UserError(
                f"{config_path}: this folder holds a run with other settings ({'; '.join(diff)}); "
                "choose another --out or rerun with the same settings to resume"
            )
    elif out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: folder is not empty and holds no {CONFIG_FILE}; choose an empty or new --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        dataset.write_json_atomic(config_path, {"identity": identity(cfg), "config": asdict(cfg)})
    except PermissionError as exc:
        raise UserError(f"{exc.filename or out}: no write permission; choose another --out") from None
    for leftover in (out / TRACKS_DIR).glob(f".*{dataset.TMP_MARK}*"):
        leftover.unlink(missing_ok=True)
    _drop_torn_tail(out / RESULTS_FILE)
    return out


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line that a killed run left without its newline, so the next row starts on a line of its own."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def evaluate(cfg: EvalConfig, tracker=None) -> dict:
    """Score every matched clip not yet in OUT/results.jsonl, then aggregate and write the report.

    `tracker` replaces the configured one (tests; in-process only). Returns the summary (also in OUT/summary.json).
    """
    from tqdm import tqdm

    from newtonrewards.eval.aggregate import summarize_run
    from newtonrewards.eval.report import write_run_report

    validate(cfg)
    jobs, found = plan(cfg)
    out = prepare_output(cfg)
    done = {c for c, r in read_results(out).items() if "error" not in r}  # errored clips are tried again
    todo = [j for j in jobs if j.clip_id not in done]
    start = time.perf_counter()

    with tqdm(
        total=len(jobs),
        initial=len(jobs) - len(todo),
        unit="clip",
        desc="eval",
        file=sys.stderr,
        mininterval=0.5,
        dynamic_ncols=True,
    ) as bar:

        def on_result(row: dict, artifacts: dict) -> None:
            if artifacts:
                save_artifacts(out, row["clip_id"], artifacts)
            append_result(out, row)
            bar.update(1)

        if cfg.no_ray or tracker is not None or not todo:
            scorer = ClipScorer(cfg, tracker) if todo else None
            for job in todo:
                on_result(*scorer(job))
        else:
            _run_ray(cfg, todo, on_result)
    wanted = {j.clip_id for j in jobs}
    rows = [r for c, r in sorted(read_results(out).items()) if c in wanted]
    _, bench_rows = dataset.open_bench(cfg.bench, cfg.split)
    summary = summarize_run(rows, cfg, found, bench_rows, seconds=time.perf_counter() - start, new=len(todo))
    summary["files"] = write_run_report(out, summary, rows, cfg)
    return summary


def _run_ray(cfg: EvalConfig, todo: list[ClipJob], on_result) -> None:
    """One Ray task per clip, at most two per CPU in flight; rows are written by the driver as tasks finish."""
    from newtonrewards.ray_session import ray_session

    with ray_session(cfg.ray_address, cfg.workers) as ray:
        task = ray.remote(num_cpus=1, max_retries=2)(_ray_score_clip)
        window = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
        cfg_ref = ray.put(cfg)
        pending, queue, job_of = [], list(todo), {}
        while queue or pending:
            while queue and len(pending) < window:
                job = queue.pop(0)
                pending.append(task.remote(cfg_ref, job))
                job_of[pending[-1]] = job
            ready, pending = ray.wait(pending, num_returns=1)
            job = job_of.pop(ready[0])
            try:
                on_result(*ray.get(ready[0]))
            except ray.exceptions.RayError as exc:  # a worker that died on this clip (retried) fails the clip only
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
                on_result(
                    {
                        "clip_id": job.clip_id,
                        "primitive": job.primitive,
                        "video": job.video,
                        "error": f"worker failed: {message}",
                    },
                    {},
                )


_SCORERS: dict[str, ClipScorer] = {}


def _ray_score_clip(cfg: EvalConfig, job: ClipJob) -> tuple[dict, dict[str, np.ndarray]]:
    """A Ray task: one clip, one thread (parallelism comes from clips); models built once per worker process."""
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    key = json.dumps(asdict(cfg), sort_keys=True)
    if key not in _SCORERS:
        _SCORERS.clear()
        _SCORERS[key] = ClipScorer(cfg)
    return _SCORERS[key](job)
