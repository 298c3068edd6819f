"""Evaluation metrics against closed forms: shifted, identical, time-warped and empty masks."""

import math

import numpy as np
import pytest

from newtonrewards.eval import metrics

H = W = 64


def disc_masks(centres, radius=5.0) -> np.ndarray:
    ys, xs = np.mgrid[:H, :W]
    return np.stack([(xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2 for cx, cy in centres])


def falling(t, accel=0.2, start=(20.0, 8.0), vx=1.0):
    """Centres of a disc under constant image-plane acceleration (px, px/frame^2)."""
    t = np.asarray(t, np.float64)
    return np.stack([start[0] + vx * t, start[1] + 0.5 * accel * t**2], axis=1)


def test_identical_clips_score_zero_errors_and_iou_one():
    truth = disc_masks(falling(np.arange(12)))
    frames = np.random.default_rng(0).integers(0, 255, (12, H, W, 3), dtype=np.uint8)
    m = metrics.clip_metrics(truth, truth, frames, frames)
    assert m["l2"] == m["chamfer"] == m["velocity_rmse"] == m["acceleration_rmse"] == 0.0
    assert m["iou"] == 1.0 and m["psnr"] == math.inf and m["ssim"] == pytest.approx(1.0)


@pytest.mark.parametrize("k", [1, 3, 6])
def test_a_clip_lagging_k_pixels_gets_l2_of_k_over_sqrt2_res(k):
    centres = falling(np.arange(12))
    truth, lagging = disc_masks(centres), disc_masks(centres - [k, 0])
    m = metrics.clip_metrics(lagging, truth)
    assert m["l2"] == pytest.approx(k / (math.sqrt(2) * H), rel=1e-9)
    assert m["velocity_rmse"] == pytest.approx(0.0, abs=1e-9)  # a constant lag does not change the velocity
    assert 0 < m["chamfer"] <= k / (math.sqrt(2) * H) + 1e-9 and m["iou"] < 1


def test_a_time_warped_clip_has_larger_velocity_and_acceleration_errors():
    t = np.arange(16)
    truth = disc_masks(falling(t))
    warped = disc_masks(falling(t + 2 * np.sin(2 * np.pi * t / 11)))
    exact = metrics.clip_metrics(truth, truth)
    m = metrics.clip_metrics(warped, truth)
    assert m["velocity_rmse"] > exact["velocity_rmse"] + 0.3 and m["acceleration_rmse"] > exact["acceleration_rmse"] + 0.3


def test_centroid_and_chamfer_closed_forms():
    mask = np.zeros((H, W), bool)
    mask[10:20, 30:34] = True  # centroid (31.5, 14.5)
    np.testing.assert_allclose(metrics.centroid_track(mask[None])[0], [31.5, 14.5])
    shifted = np.roll(mask, 5, axis=0)  # 10 rows moved down by 5: rows overlap (0) or lie 1..5 px off
    d = metrics.chamfer_distance(shifted, mask)
    assert d == pytest.approx((0 * 5 + 1 + 2 + 3 + 4 + 5) / 10 / math.hypot(H, W))
    assert math.isnan(metrics.chamfer_distance(np.zeros_like(mask), mask))
    assert math.isnan(metrics.centroid_track(np.zeros((1, H, W), bool))[0, 0])


def test_frames_where_the_object_is_missing_are_left_out_not_counted_as_zero():
    centres = falling(np.arange(8))
    truth = disc_masks(centres)
    gen = disc_masks(centres - [2, 0])
    gen[3] = False
    m = metrics.clip_metrics(gen, truth)
    assert m["l2"] == pytest.approx(2 / (math.sqrt(2) * H))


def test_psnr_ssim_and_flicker_on_known_noise():
    rng = np.random.default_rng(1)
    ref = rng.integers(40, 200, (4, H, W, 3)).astype(np.uint8)
    noisy = (ref.astype(int) + 10).astype(np.uint8)
    assert metrics.psnr(noisy, ref) == pytest.approx(10 * math.log10(255**2 / 100))
    assert metrics.ssim(noisy, ref) < 1.0
    static = np.ones((3, H, W), bool)
    assert metrics.flicker(np.repeat(ref[:1], 4, axis=0), static) == 0.0
    flashing = np.repeat(ref[:1], 4, axis=0).astype(int)
    flashing[1::2] += 6
    assert metrics.flicker(flashing.astype(np.uint8), static) == pytest.approx(6.0)


def test_bootstrap_interval_contains_the_mean_and_narrows_with_more_data():
    rng = np.random.default_rng(2)
    small, large = rng.normal(1.0, 1.0, 20), rng.normal(1.0, 1.0, 2000)
    lo_s, hi_s = metrics.bootstrap_ci(small)
    lo_l, hi_l = metrics.bootstrap_ci(large)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 4
    assert all(math.isnan(v) for v in metrics.bootstrap_ci([np.nan]))


def test_ssim_of_uniform_frames_is_the_luminance_term_in_closed_form():
    a, b = np.full((2, 32, 32, 3), 100, np.uint8), np.full((2, 32, 32, 3), 110, np.uint8)
    c1 = (0.01 * 255) ** 2
    assert metrics.ssim(a, b) == pytest.approx((2 * 100 * 110 + c1) / (100**2 + 110**2 + c1), rel=1e-5)
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    assert metrics.ssim(x, x) == pytest.approx(1.0, abs=1e-5)
