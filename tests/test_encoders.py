"""Appearance encoders (mass proxy): the contract over every backend, pixel-token geometry, preprocessing fidelity.

The transformers backends are tiny random models built from configs, saved to a folder and loaded back through
`make_encoder(name, model=folder)`, the path real checkpoints take. No network: HF_HUB_OFFLINE=1 (conftest).
"""

from __future__ import annotations

import os
import time

import pytest
import torch
import torch.nn.functional as F

from newtonrewards.errors import UserError
from newtonrewards.reward_models.encoders import Encoder, encoder_names, make_encoder

B, T, H, W = 2, 5, 40, 48  # contract clip: odd T (tubelet padding), non-square frames unlike the 32x32 models
VJEPA2_MEAN, VJEPA2_STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)  # saved with the tiny V-JEPA 2: must be read back
EXPECTED_SHAPE = {  # (N, D) for a [B, 5, 3, 40, 48] clip
    "pixels": (5 * 16 * 16, 4),  # default grid 16, Y/Cb/Cr + contrast
    "vjepa2": (3 * 4 * 4, 48),  # ceil(5 / tubelet 2) * (32 / 8)^2
    "videomae": (2 * 4 * 4, 32),  # num_frames 4 / tubelet 2 * (32 / 8)^2
    "dinov2": (5 * 4 * 4, 32),  # every frame, (32 / 8)^2 patches, no CLS
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    """Tiny seeded V-JEPA 2, VideoMAE and DINOv2 saved with save_pretrained (dropout on, so eval mode is visible)."""
    from transformers import (
        BitImageProcessor,
        Dinov2Config,
        Dinov2Model,
        VideoMAEConfig,
        VideoMAEModel,
        VJEPA2Config,
        VJEPA2Model,
        VJEPA2VideoProcessor,
    )

    root = tmp_path_factory.mktemp("encoders")
    paths = {name: str(root / name) for name in ("vjepa2", "videomae", "dinov2")}
    torch.manual_seed(0)
    heads = dict(num_attention_heads=2, num_hidden_layers=2)
    VJEPA2Model(
        VJEPA2Config(
            crop_size=32, patch_size=8, tubelet_size=2, frames_per_clip=4, hidden_size=48, **heads,
            attention_probs_dropout_prob=0.3, drop_path_rate=0.3, pred_hidden_size=24,
            pred_num_attention_heads=2, pred_num_hidden_layers=1, num_pooler_layers=1,
        )
    ).save_pretrained(paths["vjepa2"])
    VJEPA2VideoProcessor(crop_size=32, image_mean=list(VJEPA2_MEAN), image_std=list(VJEPA2_STD)).save_pretrained(
        paths["vjepa2"]
    )
    VideoMAEModel(
        VideoMAEConfig(
            image_size=32, patch_size=8, num_frames=4, tubelet_size=2, hidden_size=32, intermediate_size=64, **heads,
            hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3,
        )
    ).save_pretrained(paths["videomae"])  # no processor config: the built-in defaults apply
    Dinov2Model(
        Dinov2Config(
            image_size=32, patch_size=8, hidden_size=32, **heads,
            hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3, drop_path_rate=0.3,
        )
    ).save_pretrained(paths["dinov2"])
    BitImageProcessor(
        size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}, resample=3,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(paths["dinov2"])
    return paths


@pytest.fixture(scope="module")
def encoders(folders) -> dict[str, Encoder]:
    """Every registered encoder, the transformers ones loaded from the tiny folders."""
    options = {name: {"model": path} for name, path in folders.items()}
    return {name: make_encoder(name, **options.get(name, {})) for name in encoder_names()}


@pytest.fixture
def clip() -> torch.Tensor:
    """A seeded random clip [B, T, 3, H, W] in [0, 1] that requires grad."""
    gen = torch.Generator().manual_seed(1)
    return torch.rand(B, T, 3, H, W, generator=gen).requires_grad_(True)


def weighted_sum(tokens: torch.Tensor) -> torch.Tensor:
    """Sum of tokens times fixed random weights: unlike tokens.sum(), not cancelled by a final LayerNorm."""
    gen = torch.Generator().manual_seed(2)
    return (tokens * torch.randn(tokens.shape[1:], generator=gen)).sum()


def test_registry_names_and_unknown_name():
    assert encoder_names() == ("pixels", "vjepa2", "videomae", "dinov2")
    with pytest.raises(ValueError, match="unknown encoder 'vjepa3'; known: pixels, vjepa2, videomae, dinov2"):
        make_encoder("vjepa3")


@pytest.mark.parametrize("name", ["pixels", "vjepa2", "videomae", "dinov2"])
def test_shape_dtype_and_determinism(encoders, clip, name):
    enc = encoders[name]
    with torch.no_grad():
        first, second = enc(clip), enc(clip)
    n, d = EXPECTED_SHAPE[name]
    assert first.shape == (B, n, d) and enc.dim == d
    assert first.dtype == torch.float32
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)
    assert not torch.equal(first[0], first[1])  # the two clips differ, so must their tokens


@pytest.mark.parametrize("name", ["pixels", "vjepa2", "videomae", "dinov2"])
def test_gradients_reach_the_video(encoders, clip, name):
    weighted_sum(encoders[name](clip)).backward()
    grad = clip.grad
    assert torch.isfinite(grad).all()
    per_frame = grad.abs().sum(dim=(0, 2, 3, 4))  # [T]
    # VideoMAE samples round(linspace(0, 4, 4)) = frames 0, 1, 3, 4: frame 2 never reaches it; every other backend
    # sees every frame (V-JEPA 2 pads the odd 5th frame rather than dropping it).
    seen = [0, 1, 3, 4] if name == "videomae" else list(range(T))
    assert (per_frame[seen] > 0).all()
    assert (per_frame[[t for t in range(T) if t not in seen]] == 0).all()


@pytest.mark.parametrize("name", ["pixels", "vjepa2", "videomae", "dinov2"])
def test_frozen_and_train_cannot_undo_eval(encoders, clip, name):
    enc = encoders[name]
    with torch.no_grad():
        before_tokens = enc(clip)
    enc.train()  # dropout 0.3 in the tiny models: tokens would change if this switched it on
    assert not any(module.training for module in enc.modules())
    params = list(enc.parameters())
    assert all(not p.requires_grad for p in params)
    if name == "pixels":
        assert params == []
    else:
        before = {k: v.clone() for k, v in enc.state_dict().items()}
        optimizer = torch.optim.SGD(params, lr=1.0)
        weighted_sum(enc(clip)).backward()
        optimizer.step()
        assert all(p.grad is None for p in params)
        assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
    with torch.no_grad():
        assert torch.equal(enc(clip), before_tokens)


@pytest.mark.parametrize("name", ["vjepa2", "videomae", "dinov2"])
def test_hub_id_offline_fails_fast_and_clearly(name):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    start = time.perf_counter()
    with pytest.raises(UserError, match=rf"{name} encoder: cannot load model 'newtonrewards-tests/absent'.*local"):
        make_encoder(name, model="newtonrewards-tests/absent")
    assert time.perf_counter() - start < 10.0


def test_missing_local_folder_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="vjepa2 encoder: model folder '.*missing' does not exist"):
        make_encoder("vjepa2", model=tmp_path / "missing")


def test_wrong_model_type_names_both(folders):
    with pytest.raises(UserError, match="holds a 'videomae' model, not 'dinov2'"):
        make_encoder("dinov2", model=folders["videomae"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dtype="int8"), "dtype must be a floating torch dtype"),
        (dict(dtype="float33"), "dtype must be a floating torch dtype"),
        (dict(resize_mode="stretch"), "resize_mode must be one of full, processor"),
    ],
)
def test_bad_options(folders, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_encoder("vjepa2", model=folders["vjepa2"], **kwargs)


def test_bfloat16_model_returns_float32_tokens_with_gradient(folders, clip):
    enc = make_encoder("vjepa2", model=folders["vjepa2"], dtype="bfloat16")
    assert enc.model.dtype == torch.bfloat16
    tokens = enc(clip)
    assert tokens.dtype == torch.float32 and tokens.shape == (B, *EXPECTED_SHAPE["vjepa2"])
    weighted_sum(tokens).backward()
    assert torch.isfinite(clip.grad).all() and clip.grad.abs().sum() > 0


def test_processor_numbers_read_from_the_folder_or_defaults(encoders):
    vjepa2, videomae = encoders["vjepa2"].preprocess, encoders["videomae"].preprocess
    assert vjepa2.source.endswith("video_preprocessor_config.json")
    assert torch.allclose(vjepa2.mean.flatten(), torch.tensor(VJEPA2_MEAN))
    assert torch.allclose(vjepa2.std.flatten(), torch.tensor(VJEPA2_STD))
    assert videomae.source == "built-in defaults"
    assert torch.allclose(videomae.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert encoders["dinov2"].preprocess.interpolation == "bicubic"


def smooth_uint8_frames(height: int, width: int, seed: int) -> torch.Tensor:
    """Six smooth random uint8 frames [6, 3, height, width] (what a decoded clip looks like)."""
    coarse = torch.rand(6, 3, height // 4 + 1, width // 4 + 1, generator=torch.Generator().manual_seed(seed))
    return (F.interpolate(coarse, size=(height, width), mode="bilinear") * 255).round().to(torch.uint8)


@pytest.mark.parametrize("height, width", [(40, 48), (64, 50), (20, 30)])
def test_processor_mode_matches_transformers_processors(folders, height, width):
    """Our torch preprocessing vs the real processors (uint8 path): within ~1 grey level over the normalised range."""
    from transformers import BitImageProcessor, VJEPA2VideoProcessor

    frames = smooth_uint8_frames(height, width, seed=height)
    x = frames.float() / 255
    reference = VJEPA2VideoProcessor.from_pretrained(folders["vjepa2"])(videos=[frames], return_tensors="pt")
    ours = make_encoder("vjepa2", model=folders["vjepa2"], resize_mode="processor").preprocess(x)
    assert ours.shape == reference["pixel_values_videos"][0].shape == (6, 3, 32, 32)
    assert (ours - reference["pixel_values_videos"][0]).abs().max() < 0.03  # no antialias: 0.75
    reference = BitImageProcessor.from_pretrained(folders["dinov2"])(images=list(frames), return_tensors="pt")
    ours = make_encoder("dinov2", model=folders["dinov2"], resize_mode="processor").preprocess(x)
    assert (ours - reference["pixel_values"]).abs().max() < 0.03


def test_full_mode_keeps_the_frame_border_that_the_processor_crops(folders):
    frames = torch.zeros(1, 3, H, W)
    frames[..., :4, :4] = 1.0  # a white object in the top-left corner
    full = make_encoder("vjepa2", model=folders["vjepa2"]).preprocess(frames)
    cropped = make_encoder("vjepa2", model=folders["vjepa2"], resize_mode="processor").preprocess(frames)
    background = (0.0 - torch.tensor(VJEPA2_MEAN)) / torch.tensor(VJEPA2_STD)
    assert full.shape == cropped.shape == (1, 3, 32, 32)
    assert (full[0, :, 0, 0] > background + 1.0).all()
    assert torch.allclose(cropped[0], background.view(3, 1, 1).expand(3, 32, 32), atol=1e-5)


# ---- pixels: the tokens must see where the object is ----


def square_clip(shift: int = 0, vanish_from: int | None = None, frames: int = 4, size: int = 12) -> torch.Tensor:
    """An orange square falling 3 px/frame on a dark 64x64 background, moved right by `shift` px: [1, T, 3, 64, 64]."""
    video = torch.full((1, frames, 3, 64, 64), 0.1)
    colour = torch.tensor([0.9, 0.6, 0.2]).view(3, 1, 1)
    for t in range(frames if vanish_from is None else vanish_from):
        top, left = 10 + 3 * t, 20 + shift
        video[0, t, :, top : top + size, left : left + size] = colour
    return video


def pixel_distance(enc: Encoder, a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared token distance, the reward's MSE form."""
    with torch.no_grad():
        return float(F.mse_loss(enc(a), enc(b)))


def test_pixels_identical_clips_give_zero(encoders):
    assert pixel_distance(encoders["pixels"], square_clip(), square_clip()) == 0.0


def test_pixels_distance_grows_with_the_shift(encoders):
    distances = [pixel_distance(encoders["pixels"], square_clip(), square_clip(shift)) for shift in (1, 2, 4, 8, 12)]
    assert distances[0] > 0
    assert all(a < b for a, b in zip(distances, distances[1:])), distances


def test_pixels_vanishing_frozen_and_melting_objects_are_seen(encoders):
    enc, reference = encoders["pixels"], square_clip()
    vanished = square_clip(vanish_from=2)
    frozen = reference[:, :1].expand_as(reference).clone()
    melted = F.avg_pool2d(reference.flatten(0, 1), 9, stride=1, padding=4, count_include_pad=False).unflatten(0, (1, 4))
    for other in (vanished, frozen, melted):
        assert pixel_distance(enc, reference, other) > 1e-4


def test_pixels_contrast_sees_texture_that_cell_means_miss():
    flat = torch.full((1, 1, 3, 32, 32), 0.5)
    checker = flat.clone()
    checker[..., ::2, ::2] = checker[..., 1::2, 1::2] = 0.75
    checker[..., ::2, 1::2] = checker[..., 1::2, ::2] = 0.25  # same cell means as `flat`
    assert pixel_distance(make_encoder("pixels", grid=4, contrast=False), flat, checker) < 1e-12
    assert pixel_distance(make_encoder("pixels", grid=4), flat, checker) > 1e-3


def test_pixels_token_order_is_frame_row_column():
    enc = make_encoder("pixels", grid=4)
    video = torch.zeros(1, 2, 3, 32, 32)
    video[0, 1, :, 8:16, 24:32] = 1.0  # frame 1, cell row 1, column 3
    luma = enc(video)[0, :, 0]
    assert int(luma.argmax()) == 1 * 16 + 1 * 4 + 3
    assert enc(video).shape == (1, 2 * 16, 4)


def test_pixels_grid_larger_than_frame_is_refused():
    with pytest.raises(ValueError, match="smaller than grid=16"):
        make_encoder("pixels")(torch.zeros(1, 2, 3, 8, 8))
    with pytest.raises(ValueError, match="grid must be a positive int"):
        make_encoder("pixels", grid=0)


# ---- bad input: every backend rejects it with the same clear message ----


@pytest.mark.parametrize("name", ["pixels", "vjepa2", "videomae", "dinov2"])
@pytest.mark.parametrize(
    "make_bad, message",
    [
        (lambda: torch.rand(2, 3, 32, 32), "expected rank 5"),
        (lambda: torch.rand(1, 2, 4, 32, 32), "expected 3 colour channels"),
        (lambda: torch.full((1, 2, 3, 32, 32), float("nan")), "contains NaN or inf"),
        (lambda: torch.full((1, 2, 3, 32, 32), 1.5), r"values must lie in \[0, 1\]"),
        (lambda: -torch.rand(1, 2, 3, 32, 32) - 0.1, r"values must lie in \[0, 1\]"),
        (lambda: torch.zeros(1, 2, 3, 32, 32, dtype=torch.uint8), "expected a float tensor"),
    ],
)
def test_bad_video_is_a_value_error(encoders, name, make_bad, message):
    with pytest.raises(ValueError, match=f"video: {message}"):
        encoders[name](make_bad())
