"""Wan 2.1 image-to-video (CLIP-conditioned) behind the `wan` adapter, on a tiny I2V build: detection, what one
training step moves, and the acceptance line: exported weights load into WanImageToVideoPipeline, which reproduces the
adapter's first-frame-conditioned sample for a fixed seed."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
from train_helpers import adapter_prompts_batch, make_bench, recipe

from newtonrewards.errors import UserError
from newtonrewards.train.adapters.wan import build_tiny_wan

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return make_bench(tmp_path_factory.mktemp("nb"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_wan(tmp_path_factory.mktemp("tiny-wan-i2v") / "model", seed=0, i2v=True)


def test_an_i2v_folder_is_detected_and_needs_a_first_frame(bench, tiny, tmp_path):
    from diffusers import WanImageToVideoPipeline

    adapter, prompts, batch = adapter_prompts_batch(recipe(tmp_path, bench, tiny))
    assert adapter.i2v and adapter.pipeline_class is WanImageToVideoPipeline and adapter.image_encoder is not None
    assert adapter.image_encoder in adapter.frozen_modules()
    latents = adapter.encode_video(batch["video"])
    noise = adapter.initial_noise(2, 9, 32, 32, torch.Generator().manual_seed(0))
    assert noise.shape == latents.shape  # z_dim channels, not the transformer's 2 z + 4 input channels
    with pytest.raises(UserError, match="image-to-video"):
        adapter.training_loss(latents, prompts(batch["prompt"]), 0, torch.Generator().manual_seed(0))
    condition, image_embeds = adapter.image_condition(latents, 1)
    assert condition.shape == (2, 4 + 4, 3, 4, 4) and image_embeds.shape[0] == 2
    assert condition[:, :4, 0].eq(1).all() and condition[:, :4, 1:].eq(0).all()  # the first-frame mask
    other = adapter.image_condition(torch.cat([latents[:, :, :1], latents[[1, 0], :, 1:]], dim=2), 1)
    torch.testing.assert_close(other[0], condition)  # only the first latent frame matters


@pytest.mark.parametrize("stage", ["sft", "reward"])
def test_one_step_changes_only_the_trainable_weights(stage, bench, tiny, tmp_path):
    from newtonrewards.rewards.composite import NewtonReward
    from newtonrewards.train.reward_ft import RewardStep
    from newtonrewards.train.sft import SFTStep

    cfg = recipe(tmp_path, bench, tiny, stage=stage)
    adapter, prompts, batch = adapter_prompts_batch(cfg)
    reward = NewtonReward(cfg.reward.reward)
    step = SFTStep(adapter, prompts, cfg) if stage == "sft" else RewardStep(adapter, prompts, cfg, reward)
    modules = [adapter.transformer, adapter.vae, adapter.image_encoder, reward]
    before = {f"{i}.{n}": p.detach().clone() for i, m in enumerate(modules) for n, p in m.named_parameters()}
    trainable = {f"0.{n}" for n, p in adapter.transformer.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in adapter.transformer.parameters() if p.requires_grad], lr=1e-3,
                                  weight_decay=0.0)  # fmt: skip
    loss, _ = step(batch, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    after = {f"{i}.{n}": p.detach() for i, m in enumerate(modules) for n, p in m.named_parameters()}
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed == {n for n in trainable if "lora_B" in n}


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_exported_weights_reproduce_the_sample_in_wan_image_to_video_pipeline(guidance, bench, tiny, tmp_path):
    from diffusers import WanImageToVideoPipeline
    from PIL import Image

    from newtonrewards.train.data import clips_from_config
    from newtonrewards.train.generate import load_weights
    from newtonrewards.train.loop import build_adapter, train

    cfg = recipe(tmp_path / "run", bench, tiny, steps=1, **{"optim.lr": 1e-2})
    train(cfg)
    final = tmp_path / "run" / "final"
    adapter = build_adapter(recipe(tmp_path / "run", bench, tiny, **{"lora.enabled": False}), "cpu")
    load_weights(adapter, final)
    pipe = WanImageToVideoPipeline.from_pretrained(str(tiny))
    pipe.load_lora_weights(str(final))
    embeds = adapter.encode_prompts(["a red ball falls", ""])
    cond_embeds, neg_embeds = {k: v[:1] for k, v in embeds.items()}, {k: v[1:] for k, v in embeds.items()}
    negative = neg_embeds if guidance > 1 else None
    clip = clips_from_config(cfg.data)[0]["video"][None]
    cond = adapter.encode_video(clip[:, :1])
    noise = adapter.initial_noise(1, 9, 32, 32, torch.Generator().manual_seed(7))
    with torch.no_grad():
        ours = adapter.decode_latents(adapter.sample(cond_embeds, noise, cond, 3, guidance, negative))
    # the image the adapter conditions on: frame 0 as the VAE reconstructs it from the clean latent, in 8 bits
    frame = (adapter.decode_latents(cond)[0, 0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    kwargs = dict(image=Image.fromarray(frame), height=32, width=32, num_frames=9, num_inference_steps=3,
                  guidance_scale=guidance, output_type="pt",
                  latents=adapter.pipeline_latents(adapter.keep_cond(noise, cond)),
                  callback_on_step_end=adapter.reimpose_callback(cond), callback_on_step_end_tensor_inputs=["latents"],
                  **adapter.pipeline_inputs(cond_embeds, negative))  # fmt: skip
    theirs = pipe(**kwargs).frames
    assert theirs.shape == ours.shape
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    untrained = WanImageToVideoPipeline.from_pretrained(str(tiny))(**kwargs).frames
    assert (untrained - ours).abs().max() > 1e-4  # the trained weights made a difference
