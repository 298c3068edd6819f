"""The tiny VAE fit's shortcut: a causal convolution with zero past taps applied by its current-frame tap alone."""

import torch
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

from newtonrewards.train.adapters.wan import _current_frame_taps


def _conv(seed=0):
    torch.manual_seed(seed)
    conv = WanCausalConv3d(3, 5, 3, padding=1)
    with torch.no_grad():
        conv.weight[:, :, :-1] = 0
    return conv


def test_the_shortcut_gives_the_same_output_and_gradients_as_the_full_causal_convolution():
    x = torch.randn(2, 3, 1, 9, 7)  # one-frame clips, as the fit feeds them
    conv = _conv()
    full = conv(x)
    full.square().sum().backward()
    grad_full = conv.weight.grad.clone()
    conv.weight.grad = None
    with _current_frame_taps(WanCausalConv3d):
        short = conv(x)
        short.square().sum().backward()
    assert short.shape == full.shape
    torch.testing.assert_close(short, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conv.weight.grad, grad_full, rtol=1e-4, atol=1e-4)  # past taps: zero in both
    assert grad_full[:, :, -1].abs().max() > 0


def test_with_zero_past_taps_the_shortcut_matches_on_clips_of_several_frames_too():
    x, conv = torch.randn(1, 3, 4, 6, 6), _conv(1)
    with _current_frame_taps(WanCausalConv3d):
        short = conv(x)
    torch.testing.assert_close(short, conv(x), rtol=1e-5, atol=1e-5)


def test_the_shortcut_is_removed_on_exit_even_after_an_error():
    original = WanCausalConv3d.forward
    try:
        with _current_frame_taps(WanCausalConv3d):
            assert WanCausalConv3d.forward is not original
            raise RuntimeError("stop")
    except RuntimeError:
        pass
    assert WanCausalConv3d.forward is original
