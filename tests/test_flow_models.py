"""Flow models (the velocity proxy): accuracy on known motion, gradients, frozen weights, RAFT loading, bad input.

RAFT here is random-weight (`weights="random"`, asked for by name) unless a test is about the pretrained default.

Accuracy is checked against motion known in closed form: a textured disc pasted at sub-pixel positions
p(t) = p0 + v0 t + a t^2 / 2 over a textured background, and NewtonBench clips rendered in-process and sent through
H.264 (codec noise included), measured like benchmarks/flow_accuracy.py. Sizes are small to keep the file fast.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from newtonrewards.errors import UserError
from newtonrewards.reward_models.flow import flow_model_names, make_flow_model
from newtonrewards.reward_models.flow.accuracy import clip_accuracy, relative_error

RAFT_FAST = dict(variant="small", weights="random", num_flow_updates=2)
BACKENDS = {"classical": {}, "raft": RAFT_FAST}


def texture(rng: np.random.Generator, h: int, w: int, sigma: float, lo: float, hi: float) -> np.ndarray:
    """Smooth random colour texture float32 [h, w, 3] spanning [lo, hi]."""
    import cv2

    x = cv2.GaussianBlur(rng.standard_normal((h, w, 3)).astype(np.float32), (0, 0), sigma)
    return lo + (hi - lo) * (x - x.min()) / (x.max() - x.min())


def disc_clip(p0, v0, a, T=12, H=112, W=128, radius=10, seed=0):
    """A textured disc (diameter 2*radius px) at p(t) = p0 + v0 t + a t^2/2 over a static textured background.

    Returns uint8 frames [T, H, W, 3], object masks bool [T, H, W] and the true displacements [T-1, 2] px/frame.
    """
    import cv2

    rng = np.random.default_rng(seed)
    background = texture(rng, H, W, 1.5, 0.25, 0.75)
    size = 2 * radius + 5
    patch = texture(rng, size, size, 1.0, 0.0, 1.0)
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2
    alpha = np.clip(radius + 0.5 - np.hypot(xx, yy), 0, 1).astype(np.float32)
    t = np.arange(T)[:, None]
    centres = np.asarray(p0) + np.asarray(v0) * t + 0.5 * np.asarray(a) * t**2
    frames, masks = [], []
    for cx, cy in centres:
        shift = np.float32([[1, 0, cx - (size - 1) / 2], [0, 1, cy - (size - 1) / 2]])
        colour = cv2.warpAffine(patch, shift, (W, H), flags=cv2.INTER_CUBIC)
        cover = cv2.warpAffine(alpha, shift, (W, H), flags=cv2.INTER_LINEAR)[..., None]
        frames.append(np.clip(cover * colour + (1 - cover) * background, 0, 1))
        masks.append(cover[..., 0] > 0.5)
    return (np.stack(frames) * 255).round().astype(np.uint8), np.stack(masks), np.diff(centres, axis=0)


def to_video(frames: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float [1, T, 3, H, W] in [0, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).to(dtype).div(255).unsqueeze(0)


@pytest.fixture(scope="module")
def classical():
    return make_flow_model("classical")


@pytest.mark.parametrize(
    "p0,v0,a",
    [
        ((20, 15), (1.5, 1.0), (0.25, 0.5)),  # slow: under a pixel of acceleration, sub-pixel velocities
        ((20, 15), (6.0, 2.0), (0.4, 1.0)),  # fast: up to 14 px/frame, more than half the object's size
        ((60, 20), (-2.0, 1.0), (0.6, 0.3)),  # decelerating then reversing along x
    ],
)
def test_classical_recovers_velocity_and_acceleration_of_a_small_object(classical, p0, v0, a):
    frames, masks, true = disc_clip(p0, v0, a)
    with torch.no_grad():
        flow = classical(to_video(frames))[0].numpy()
    velocity = np.array([flow[t][:, masks[t]].mean(axis=1) for t in range(len(true))])
    per_frame = np.linalg.norm(velocity - true, axis=1) / np.linalg.norm(true, axis=1)
    assert per_frame.max() < 0.10, per_frame.round(3)
    acceleration = np.diff(velocity, axis=0).mean(axis=0)
    assert np.linalg.norm(acceleration - a) / np.linalg.norm(a) < 0.15, acceleration


@pytest.fixture(scope="module")
def rendered_clips(tmp_path_factory):
    """Index 0 of each primitive (test split) at 128x128x12, through H.264 and back: (frames, gt, fps) each."""
    from newtonrewards.bench_gen import scenes
    from newtonrewards.bench_gen.renderers import make_renderer
    from newtonrewards.bench_gen.simulators import make_simulator
    from newtonrewards.bench_gen.writer import ground_truth
    from newtonrewards.video import read_video, write_video

    renderer, simulator = make_renderer("raster"), make_simulator("analytic")
    out = {}
    for primitive in scenes.PRIMITIVES:
        spec = scenes.sample_scene(scenes.SceneSettings(width=128, height=128, num_frames=12), "test", primitive, 0)
        trajectory = simulator.run(spec)
        layers = renderer.render(spec, trajectory)
        path = tmp_path_factory.mktemp("clips") / f"{primitive}.mp4"
        write_video(path, layers.rgb, spec.fps)
        out[primitive] = (read_video(path)[0], ground_truth(spec, trajectory, layers), spec.fps)
    return out


@pytest.mark.parametrize("primitive", ["free_fall", "horizontal_throw", "parabolic_throw", "ramp_down", "ramp_up"])
def test_classical_recovers_image_plane_acceleration_on_rendered_clips(classical, rendered_clips, primitive):
    frames, gt, fps = rendered_clips[primitive]
    with torch.no_grad():
        flow = classical(to_video(frames))[0].numpy()
    result = clip_accuracy(flow, gt, fps)
    assert len(result["a_true"]) >= 3
    error = relative_error(result["a_pred"], result["a_true"])
    assert error < 0.15, (result["a_pred"].mean(axis=0), result["a_true"].mean(axis=0))
    assert result["epe_object"] < 2.0 and result["epe_all"] < 0.5, result


def test_classical_gradient_matches_finite_differences():
    """d(sum(flow * w))/d(pixel) against central differences in float64, at random pixels of both frames' roles."""
    rng = np.random.default_rng(0)
    frames, _, _ = disc_clip((8, 9), (1.2, 0.7), (0.3, 0.2), T=3, H=24, W=24, radius=5, seed=1)
    video = to_video(frames, torch.float64).requires_grad_(True)
    model = make_flow_model("classical", iterations=2)
    weights = torch.from_numpy(rng.standard_normal((1, 2, 2, 24, 24)))
    (model(video) * weights).sum().backward()
    eps = 1e-6  # x*255 moves by 2.6e-4: the uint8 initial flow stays the same, as it should
    picks = [tuple(int(rng.integers(0, n)) for n in video.shape) for _ in range(24)]
    checked = 0
    for index in picks:
        plus, minus = video.detach().clone(), video.detach().clone()
        plus[index] += eps
        minus[index] -= eps
        with torch.no_grad():
            numeric = float(((model(plus) - model(minus)) * weights).sum()) / (2 * eps)
        assert numeric == pytest.approx(float(video.grad[index]), rel=1e-4, abs=1e-6), index
        checked += abs(numeric) > 1e-3
    assert checked >= 5  # the check compared real gradients, not zeros


@pytest.mark.parametrize("name", flow_model_names())
def test_output_contract_and_gradient_reaches_input(name):
    video = torch.rand(2, 3, 3, 32, 40).requires_grad_(True)
    model = make_flow_model(name, **BACKENDS[name])
    flow = model(video)
    assert flow.shape == (2, 2, 2, 32, 40) and flow.dtype == torch.float32
    assert torch.isfinite(flow).all()
    flow.square().mean().backward()
    assert video.grad is not None and video.grad.abs().sum() > 0
    assert video.grad[:, 0].abs().sum() > 0 and video.grad[:, 1].abs().sum() > 0  # both frames of pair 0
    with torch.no_grad():
        assert model(video.detach().to(torch.bfloat16)).dtype == torch.float32  # mixed-precision callers


@pytest.mark.parametrize("name", flow_model_names())
def test_frozen_after_an_optimizer_step(name):
    model = make_flow_model(name, **BACKENDS[name])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert all(not p.requires_grad for p in model.parameters())
    model.train()  # must not bring back training behaviour (BatchNorm statistics, dropout)
    assert not model.training and not any(m.training for m in model.modules())
    video = torch.rand(1, 3, 3, 32, 32).requires_grad_(True)
    optimizer = torch.optim.SGD([video, *model.parameters()], lr=10.0)
    model(video).square().mean().backward()
    optimizer.step()
    assert video.grad.abs().sum() > 0
    after = model.state_dict()
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, changed


@pytest.mark.parametrize("size", [(64, 64), (70, 90), (128, 128)])
def test_raft_any_frame_size(size):
    model = make_flow_model("raft", **RAFT_FAST)
    video = torch.rand(1, 3, 3, *size).requires_grad_(True)
    flow = model(video)
    assert flow.shape == (1, 2, 2, *size)
    flow.sum().backward()
    assert video.grad.abs().sum() > 0


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_raft_weights_round_trip_through_a_file(tmp_path, suffix):
    torch.manual_seed(0)
    source = make_flow_model("raft", **RAFT_FAST)
    path = tmp_path / f"raft_small{suffix}"
    if suffix == ".pth":
        torch.save(source.raft.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file(source.state_dict(), str(path))  # the wrapper's keys ("raft." prefix) load too
    torch.manual_seed(1)
    loaded = make_flow_model("raft", variant="small", weights=path, num_flow_updates=2)
    fresh = make_flow_model("raft", **RAFT_FAST)
    video = torch.rand(1, 2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(video), source(video))
        assert not torch.equal(fresh(video), source(video))  # the file, not the seed, made them equal


def test_raft_bad_weights_are_clear(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        make_flow_model("raft", variant="small", weights=tmp_path / "missing.pth")
    small = tmp_path / "small.pth"
    torch.save(make_flow_model("raft", **RAFT_FAST).raft.state_dict(), small)
    with pytest.raises(UserError, match="do not fit RAFT variant 'large'"):
        make_flow_model("raft", variant="large", weights=small)


@pytest.fixture
def offline_empty_hub(tmp_path, monkeypatch):
    """An empty torch hub dir (torch.hub.set_dir, undone after the test) and no network: returns the hub dir."""
    import socket

    def unreachable(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "_hub_dir", torch.hub._hub_dir)  # set_dir below is undone with the monkeypatch
    torch.hub.set_dir(str(hub))
    monkeypatch.setattr(socket, "create_connection", unreachable)
    return hub


def torchvision_cache_path(hub, variant: str):
    """Where torch.hub keeps torchvision's default RAFT weights: hub/checkpoints/<file name of the weights' URL>."""
    from torchvision.models import optical_flow

    url = getattr(optical_flow, f"Raft_{variant.capitalize()}_Weights").DEFAULT.url
    return hub / "checkpoints" / url.rsplit("/", 1)[1], url


@pytest.mark.parametrize("variant", [None, "large", "small"])
def test_raft_default_weights_offline_and_not_cached_is_one_line_naming_the_cache_path(offline_empty_hub, variant):
    """`raft` is pretrained RAFT (large unless asked): offline with an empty cache it stops; it never goes random."""
    kwargs = {} if variant is None else {"variant": variant}
    cached, url = torchvision_cache_path(offline_empty_hub, variant or "large")
    with pytest.raises(UserError) as info:
        make_flow_model("raft", **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    assert str(cached) in message and url in message and "weights=<path" in message, message
    assert cached.name in ("raft_large_C_T_SKHT_V2-ff5fadd5.pth", "raft_small_C_T_V2-01064c6d.pth")
    assert not cached.parent.exists() or not any(cached.parent.iterdir())  # nothing half-written


def test_raft_default_weights_load_from_the_torch_cache(offline_empty_hub):
    """A state_dict saved under torchvision's file name in the hub cache is what the default loads (offline)."""
    torch.manual_seed(0)
    source = make_flow_model("raft", **RAFT_FAST)  # a random-init torchvision raft_small inside the wrapper
    cached, _ = torchvision_cache_path(offline_empty_hub, "small")
    cached.parent.mkdir(parents=True)
    torch.save(source.raft.state_dict(), cached)
    torch.manual_seed(1)
    loaded = make_flow_model("raft", variant="small", num_flow_updates=2)  # weights="default" implied
    fresh = make_flow_model("raft", **RAFT_FAST)
    video = torch.rand(1, 2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(video), source(video))
        assert not torch.equal(fresh(video), source(video))  # the cached file, not the seed, made them equal
    with pytest.raises(UserError, match="do not fit RAFT variant 'large'"):  # the large default is another file
        make_flow_model("raft", variant="large", weights=cached)


def test_raft_random_weights_by_name_need_no_file_and_no_network(offline_empty_hub):
    torch.manual_seed(0)
    first = make_flow_model("raft", variant="small", weights="random", num_flow_updates=2)
    torch.manual_seed(1)
    second = make_flow_model("raft", variant="small", weights="random", num_flow_updates=2)
    video = torch.rand(1, 2, 3, 32, 32)
    with torch.no_grad():
        flow = first(video)
        assert flow.shape == (1, 1, 2, 32, 32) and torch.isfinite(flow).all()
        assert not torch.equal(flow, second(video))  # random initialisation, nothing loaded
    assert not offline_empty_hub.exists()  # nothing looked up or written in the cache


@pytest.mark.parametrize("weights", [None, ""])
def test_raft_weights_none_is_refused_with_the_choices(weights):
    with pytest.raises(UserError, match=r"weights=(None|'') is not a choice; pass 'default' .*file, or 'random'"):
        make_flow_model("raft", variant="small", weights=weights)


@pytest.mark.parametrize("name", flow_model_names())
@pytest.mark.parametrize(
    "video,message",
    [
        (torch.rand(3, 3, 16, 16), "rank 5"),
        (torch.rand(1, 3, 4, 16, 16), "3 colour channels"),
        (torch.rand(1, 3, 3, 16, 16) + 1.0, r"\[0, 1\]"),
        (torch.full((1, 3, 3, 16, 16), float("nan")), "NaN"),
        (torch.rand(1, 1, 3, 16, 16), "at least 2 frames"),
        ((torch.rand(1, 3, 3, 16, 16) * 255).to(torch.uint8), "float"),
    ],
    ids=["rank4", "4-channels", "above-1", "nan", "one-frame", "uint8"],
)
def test_bad_input_is_a_clear_value_error(name, video, message):
    model = make_flow_model(name, **BACKENDS[name])
    with pytest.raises(ValueError, match=message):
        model(video)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match="unknown flow model 'farneback'; known: classical, raft"):
        make_flow_model("farneback")
    with pytest.raises(ValueError, match="unknown variant 'medium'"):
        make_flow_model("raft", variant="medium")
    with pytest.raises(ValueError, match="base: unknown initial flow"):
        make_flow_model("classical", base="pwc")


def test_classical_too_small_frames_are_a_clear_value_error():
    with pytest.raises(ValueError, match="at least 16x16 pixels, got 8x12"):
        make_flow_model("classical")(torch.rand(1, 2, 3, 8, 12))


def test_raft_chunks_give_the_same_flow():
    torch.manual_seed(0)
    whole = make_flow_model("raft", **RAFT_FAST)
    chunked = make_flow_model("raft", **RAFT_FAST, chunk_size=1)
    chunked.load_state_dict(whole.state_dict())
    video = torch.rand(2, 3, 3, 48, 40)
    with torch.no_grad():
        torch.testing.assert_close(chunked(video), whole(video), rtol=1e-4, atol=1e-4)
