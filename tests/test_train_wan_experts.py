"""Two-expert Wan 2.2 A14B (`transformer` for t >= boundary, `transformer_2` below) behind the `wan` adapter, on a tiny
build: only the low-noise expert trains, SFT stays below the boundary, and exported weights reproduce the adapter's
sample in WanPipeline(transformer_2=..., boundary_ratio=...)."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
from train_helpers import adapter_prompts_batch, make_bench, recipe

from newtonrewards.train.adapters.wan import build_tiny_wan

pytestmark = pytest.mark.slow
BOUNDARY = 0.875  # Wan 2.2 T2V A14B's


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return make_bench(tmp_path_factory.mktemp("nb"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_wan(tmp_path_factory.mktemp("tiny-wan-a14b") / "model", seed=0, boundary_ratio=BOUNDARY)


@pytest.mark.parametrize("stage", ["sft", "reward"])
def test_one_step_trains_only_the_low_noise_expert(stage, bench, tiny, tmp_path):
    from newtonrewards.rewards.composite import NewtonReward
    from newtonrewards.train.reward_ft import RewardStep
    from newtonrewards.train.sft import SFTStep

    cfg = recipe(tmp_path, bench, tiny, stage=stage, **{"sampling.num_steps": 3} if stage == "reward" else {})
    adapter, prompts, batch = adapter_prompts_batch(cfg)
    assert adapter.trainable_module() is adapter.transformer_2 and adapter.transformer in adapter.frozen_modules()
    reward = NewtonReward(cfg.reward.reward)
    step = SFTStep(adapter, prompts, cfg) if stage == "sft" else RewardStep(adapter, prompts, cfg, reward)
    modules = [adapter.transformer_2, adapter.transformer, adapter.vae, reward]
    before = {f"{i}.{n}": p.detach().clone() for i, m in enumerate(modules) for n, p in m.named_parameters()}
    calls = {"high": [], "low": []}
    hooks = [module.register_forward_hook(lambda m, args, kw, out, key=key: calls[key].append(kw["timestep"]),
                                          with_kwargs=True)
             for key, module in (("high", adapter.transformer), ("low", adapter.transformer_2))]  # fmt: skip
    optimizer = torch.optim.AdamW([p for p in adapter.transformer_2.parameters() if p.requires_grad], lr=1e-3,
                                  weight_decay=0.0)  # fmt: skip
    loss, _ = step(batch, torch.Generator().manual_seed(0))
    loss.backward()
    optimizer.step()
    for hook in hooks:
        hook.remove()
    after = {f"{i}.{n}": p.detach() for i, m in enumerate(modules) for n, p in m.named_parameters()}
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and changed == {n for n in before if n.startswith("0.") and "lora_B" in n}
    boundary = BOUNDARY * 1000
    assert all((t < boundary).all() for t in calls["low"]) and calls["low"]
    if stage == "sft":
        assert not calls["high"]  # SFT draws noise levels below the boundary only
    else:
        assert calls["high"] and all((t >= boundary).all() for t in calls["high"])  # sampling used both experts


@pytest.mark.parametrize("mode, guidance", [("text", 1.0), ("first_frame", 3.0)])
def test_exported_low_noise_expert_reproduces_the_sample_in_two_expert_wanpipeline(mode, guidance, bench, tiny,
                                                                                    tmp_path):  # fmt: skip
    from diffusers import WanPipeline

    from newtonrewards.train.data import clips_from_config
    from newtonrewards.train.generate import load_weights
    from newtonrewards.train.loop import build_adapter, train

    cfg = recipe(tmp_path / "run", bench, tiny, steps=1, **{"optim.lr": 1e-2, "conditioning.mode": mode})
    train(cfg)
    final = tmp_path / "run" / "final"
    adapter = build_adapter(recipe(tmp_path / "run", bench, tiny, **{"lora.enabled": False}), "cpu")
    load_weights(adapter, final)
    pipe = WanPipeline.from_pretrained(str(tiny))
    assert pipe.transformer_2 is not None and pipe.config.boundary_ratio == BOUNDARY
    pipe.load_lora_weights(str(final), load_into_transformer_2=True)
    embeds = adapter.encode_prompts(["a red ball falls", ""])
    cond_embeds, neg_embeds = {k: v[:1] for k, v in embeds.items()}, {k: v[1:] for k, v in embeds.items()}
    negative = neg_embeds if guidance > 1 else None
    clip = clips_from_config(cfg.data)[0]["video"][None]
    cond = adapter.encode_video(clip[:, :1]) if mode != "text" else None
    noise = adapter.initial_noise(1, 9, 32, 32, torch.Generator().manual_seed(7))
    with torch.no_grad():
        ours = adapter.decode_latents(adapter.sample(cond_embeds, noise, cond, 3, guidance, negative))
    kwargs = dict(height=32, width=32, num_frames=9, num_inference_steps=3, guidance_scale=guidance,
                  output_type="pt", latents=adapter.pipeline_latents(adapter.keep_cond(noise, cond)),
                  callback_on_step_end=adapter.reimpose_callback(cond), callback_on_step_end_tensor_inputs=["latents"],
                  **adapter.pipeline_inputs(cond_embeds, negative))  # fmt: skip
    theirs = pipe(**kwargs).frames
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    untrained = WanPipeline.from_pretrained(str(tiny))(**kwargs).frames
    assert (untrained - ours).abs().max() > 1e-4  # the trained low-noise expert made a difference
    one_expert = WanPipeline.from_pretrained(str(tiny), transformer_2=None, boundary_ratio=None)
    one_expert.load_lora_weights(str(final))
    assert (one_expert(**kwargs).frames - ours).abs().max() > 1e-4  # the high-noise expert took part too
