"""Training tiny Wan on CPU: what moves, where gradients flow, exact resume, export into WanPipeline, generate."""

from __future__ import annotations

import os
import re

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
from train_helpers import adapter_prompts_batch, make_bench, recipe

from newtonrewards.train.adapters.wan import build_tiny_wan

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return make_bench(tmp_path_factory.mktemp("nb"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_wan(tmp_path_factory.mktemp("tiny-wan") / "model", seed=0)


def _snapshot(modules):
    return {f"{i}.{n}": p.detach().clone() for i, m in enumerate(modules) for n, p in m.named_parameters()}


@pytest.mark.parametrize("stage", ["sft", "reward"])
def test_one_step_changes_the_trainable_weights_and_only_them(stage, bench, tiny, tmp_path):
    from newtonrewards.rewards.composite import NewtonReward
    from newtonrewards.train.reward_ft import RewardStep
    from newtonrewards.train.sft import SFTStep

    cfg = recipe(tmp_path, bench, tiny, stage=stage)
    adapter, prompts, batch = adapter_prompts_batch(cfg)
    reward = NewtonReward(cfg.reward.reward)
    step = SFTStep(adapter, prompts, cfg) if stage == "sft" else RewardStep(adapter, prompts, cfg, reward)
    modules = [adapter.transformer, adapter.vae, reward]
    before = _snapshot(modules)
    trainable = {f"0.{n}" for n, p in adapter.transformer.named_parameters() if p.requires_grad}
    assert trainable and all("lora" in n for n in trainable)
    optimizer = torch.optim.AdamW([p for p in adapter.transformer.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
    loss, logs = step(batch, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    after = _snapshot(modules)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed <= trainable
    lora_b = {n for n in trainable if "lora_B" in n}  # B starts at zero, so it is what the first step moves
    assert changed == lora_b


def test_reward_gradient_reaches_lora_through_the_vae_decode_and_frozen_reward_models(bench, tiny, tmp_path):
    from newtonrewards.rewards.composite import NewtonReward
    from newtonrewards.train.reward_ft import RewardStep

    cfg = recipe(tmp_path, bench, tiny, stage="reward")
    adapter, prompts, batch = adapter_prompts_batch(cfg)
    reward = NewtonReward(cfg.reward.reward)
    step = RewardStep(adapter, prompts, cfg, reward)
    decoded = []
    original = adapter.decode_latents
    adapter.decode_latents = lambda z: decoded.append(z) or original(z)
    loss, logs = step(batch, torch.Generator().manual_seed(0))
    (latents,) = decoded
    assert latents.requires_grad  # the sampled latents carry the last step's graph into the VAE decode
    grad_latents = torch.autograd.grad(loss, latents, retain_graph=True)[0]
    assert grad_latents.abs().sum() > 0
    loss.backward()
    lora_b = [p for n, p in adapter.transformer.named_parameters() if "lora_B" in n]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)
    frozen = [*adapter.vae.parameters(), *reward.parameters(),
              *(p for n, p in adapter.transformer.named_parameters() if "lora" not in n)]  # fmt: skip
    assert all(p.grad is None for p in frozen)
    assert {"kinematic", "mass", "motion", "loss"} <= set(logs)
    assert float(logs["kinematic"]) > 0  # the kinematic term is live on these 32x32 clips


def test_no_gradient_outside_the_last_k_steps(bench, tiny, tmp_path):
    """grad_last_k=1: the denoiser's graph holds one step; with k=0 sampling builds no graph at all."""
    cfg = recipe(tmp_path, bench, tiny, stage="reward")
    adapter, prompts, batch = adapter_prompts_batch(cfg)
    noise = adapter.initial_noise(1, 9, 32, 32, torch.Generator().manual_seed(1))
    embeds = prompts(batch["prompt"][:1])
    calls = []
    handle = adapter.transformer.register_forward_hook(lambda m, i, o: calls.append(torch.is_grad_enabled()))
    out = adapter.sample(embeds, noise, None, num_steps=4, grad_last_k=1)
    assert calls == [False, False, False, True] and out.requires_grad
    calls.clear()
    assert not adapter.sample(embeds, noise, None, num_steps=4, grad_last_k=0).requires_grad
    assert calls == [False] * 4
    handle.remove()


def test_stopped_and_resumed_run_matches_an_uninterrupted_one_exactly(bench, tiny, tmp_path):
    from safetensors.torch import load_file

    from newtonrewards.train.checkpoint import TRAINABLE_FILE, checkpoint_dirs
    from newtonrewards.train.loop import train

    common = dict(batch_size=2, grad_accum=2, save_every=2, ema_decay=0.9, **{"optim.lr": 1e-2})
    whole = recipe(tmp_path / "whole", bench, tiny, steps=4, **common)
    train(whole)
    part = recipe(tmp_path / "part", bench, tiny, steps=2, **common)
    train(part)  # stops after step 2 (its checkpoint is written), crossing an epoch boundary of 5 clips
    resumed = recipe(tmp_path / "part", bench, tiny, steps=4, **common)
    result = train(resumed)
    assert result["step"] == 4
    a = load_file(str(checkpoint_dirs(tmp_path / "whole")[-1] / TRAINABLE_FILE))
    b = load_file(str(checkpoint_dirs(tmp_path / "part")[-1] / TRAINABLE_FILE))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(v.abs().sum() > 0 for k, v in a.items() if "lora_B" in k)
    ea = load_file(str(tmp_path / "whole/final/pytorch_lora_weights.safetensors"))
    eb = load_file(str(tmp_path / "part/final/pytorch_lora_weights.safetensors"))
    assert all(torch.equal(ea[k], eb[k]) for k in ea)  # EMA weights resumed exactly too


@pytest.mark.parametrize("lora, mode, guidance", [(True, "text", 1.0), (True, "first_frame", 1.0),
                                                  (False, "first_frame", 3.0)])  # fmt: skip
def test_exported_weights_reproduce_the_trained_sample_in_plain_wanpipeline(lora, mode, guidance, bench, tiny, tmp_path):
    from diffusers import WanPipeline, WanTransformer3DModel

    from newtonrewards.train.generate import load_weights
    from newtonrewards.train.loop import build_adapter, train

    cfg = recipe(tmp_path / "run", bench, tiny, steps=2, **{"lora.enabled": lora, "optim.lr": 1e-2,
                                                             "conditioning.mode": mode})  # fmt: skip
    train(cfg)
    final = tmp_path / "run" / "final"
    base = recipe(tmp_path / "run", bench, tiny, **{"lora.enabled": False})
    adapter = build_adapter(base, "cpu")
    load_weights(adapter, final)
    if lora:
        pipe = WanPipeline.from_pretrained(str(tiny))
        pipe.load_lora_weights(str(final))
    else:
        pipe = WanPipeline.from_pretrained(str(tiny), transformer=WanTransformer3DModel.from_pretrained(
            str(final), subfolder="transformer"))  # fmt: skip
    embeds = adapter.encode_prompts(["a red ball falls", ""])
    cond_embeds, neg_embeds = ({k: v[:1] for k, v in embeds.items()}, {k: v[1:] for k, v in embeds.items()})
    negative = neg_embeds if guidance > 1 else None
    from newtonrewards.train.data import clips_from_config

    clip = clips_from_config(cfg.data)[0]["video"][None]
    cond = adapter.encode_video(clip[:, :1]) if mode != "text" else None
    noise = adapter.initial_noise(1, 9, 32, 32, torch.Generator().manual_seed(7))
    with torch.no_grad():
        ours = adapter.decode_latents(adapter.sample(cond_embeds, noise, cond, 3, guidance, negative))
    kwargs = dict(height=32, width=32, num_frames=9, num_inference_steps=3, guidance_scale=guidance,
                  output_type="pt", **adapter.pipeline_inputs(cond_embeds, negative))  # fmt: skip
    if mode == "text":
        kwargs["generator"] = torch.Generator().manual_seed(7)  # the pipeline draws the same noise itself
    else:
        kwargs.update(latents=adapter.pipeline_latents(adapter.keep_cond(noise, cond)),
                      callback_on_step_end=adapter.reimpose_callback(cond),
                      callback_on_step_end_tensor_inputs=["latents"])  # fmt: skip
    theirs = pipe(**kwargs).frames
    assert theirs.shape == ours.shape
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    untrained = WanPipeline.from_pretrained(str(tiny))(**{**kwargs, "generator": torch.Generator().manual_seed(7)}
                                                      if mode == "text" else kwargs).frames  # fmt: skip
    assert (untrained - ours).abs().max() > 1e-4  # the trained weights made a difference


def test_generate_writes_one_clip_per_test_clip_and_resumes(bench, tiny, tmp_path):
    from newtonrewards.config import build_config
    from newtonrewards.dataset import open_bench
    from newtonrewards.train.config import GenerateConfig
    from newtonrewards.train.generate import generate
    from newtonrewards.video import read_video

    cfg = build_config(GenerateConfig, None, {"out": str(tmp_path / "gen"), "bench": str(bench), "split": "test",
                                              "model.path": str(tiny), "sampling.num_steps": 2})  # fmt: skip
    result = generate(cfg)
    _, rows = open_bench(bench, "test")
    names = sorted(p.stem for p in (tmp_path / "gen").glob("*.mp4"))
    assert names == sorted(r["clip_id"] for r in rows) and result["written"] == len(rows)
    frames, _ = read_video(tmp_path / "gen" / f"{names[0]}.mp4")
    assert frames.shape == (9, 32, 32, 3)
    first = frames.copy()
    (tmp_path / "gen" / f"{names[0]}.mp4").unlink()
    again = generate(cfg)
    assert again == {"out": str(tmp_path / "gen"), "written": 1, "skipped": len(rows) - 1}
    assert (read_video(tmp_path / "gen" / f"{names[0]}.mp4")[0].astype(int) - first).__abs__().max() <= 3


class _HookRecorder:
    """Just enough of an Accelerator for checkpoint.register_hooks: keeps the hooks, unwraps nothing."""

    def register_save_state_pre_hook(self, hook):
        self.save = hook

    def register_load_state_pre_hook(self, hook):
        self.load = hook

    def unwrap_model(self, model):
        return model


def test_trainable_weights_of_the_other_kind_are_refused_not_silently_skipped(bench, tiny, tmp_path):
    """A LoRA checkpoint loaded into a full-weight setup (and the reverse) would load nothing under strict=False."""
    from safetensors.torch import save_file

    from newtonrewards.errors import UserError
    from newtonrewards.train.checkpoint import CHECKPOINTS, TRAINABLE_FILE, load_trained, register_hooks
    from newtonrewards.train.loop import build_adapter
    from newtonrewards.train.lora import trainable_parameters

    adapters = {kind: build_adapter(recipe(tmp_path, bench, tiny, **{"lora.enabled": kind == "LoRA"}), "cpu")
                for kind in ("LoRA", "full")}  # fmt: skip
    saved = {}
    for kind, adapter in adapters.items():  # a checkpoint as the save hook writes it, with weights moved off init
        saved[kind] = {n: p.detach() + 0.5 for n, p in trainable_parameters(adapter.trainable_module()).items()}
        folder = tmp_path / kind / CHECKPOINTS / "step-0000001"
        folder.mkdir(parents=True)
        save_file(saved[kind], str(folder / TRAINABLE_FILE))
    hooks = _HookRecorder()
    register_hooks(hooks)
    for found, want in (("LoRA", "full"), ("full", "LoRA")):
        module = adapters[want].trainable_module()
        before = {n: p.detach().clone() for n, p in module.named_parameters()}
        file = tmp_path / found / CHECKPOINTS / "step-0000001" / TRAINABLE_FILE
        message = (f"{file}: holds {found} weights ({len(saved[found])} tensors) but this model expects {want} "
                   f"weights ({len(saved[want])} tensors)")  # fmt: skip
        with pytest.raises(UserError, match=re.escape(message)):
            load_trained(adapters[want], tmp_path / found)  # init_from, generate
        with pytest.raises(UserError, match=re.escape(message)):
            hooks.load([module], str(file.parent))  # resuming a run
        assert all(torch.equal(p, before[n]) for n, p in module.named_parameters())
    fewer = build_adapter(recipe(tmp_path, bench, tiny, **{"lora.targets": ["to_q"]}), "cpu")  # other LoRA options
    with pytest.raises(UserError, match=rf"{len(saved['LoRA'])} LoRA tensors where this model expects \d+ \(has e\.g\. "
                                        r".*, which this model lacks\); was it written with other LoRA options"):
        load_trained(fewer, tmp_path / "LoRA")
    for kind, adapter in adapters.items():  # the matching kind loads every tensor
        assert load_trained(adapter, tmp_path / kind) == kind.lower()
        loaded = trainable_parameters(adapter.trainable_module())
        assert loaded.keys() == saved[kind].keys() and all(torch.equal(loaded[n], saved[kind][n]) for n in loaded)


def test_generate_refuses_to_resume_a_folder_of_other_settings_or_retrained_weights(bench, tiny, tmp_path):
    import os

    from newtonrewards.config import build_config
    from newtonrewards.errors import UserError
    from newtonrewards.train.config import GenerateConfig
    from newtonrewards.train.generate import generate, weights_fingerprint

    base = {"out": str(tmp_path / "gen"), "bench": str(bench), "split": "test", "model.path": str(tiny),
            "sampling.num_steps": 2, "max_clips": 1}  # fmt: skip
    generate(build_config(GenerateConfig, None, base))
    assert generate(build_config(GenerateConfig, None, {**base, "prompt_cache": str(tmp_path / "pc")}))["written"] == 0
    with pytest.raises(UserError, match=r"other sampling .*generate\.json"):
        generate(build_config(GenerateConfig, None, {**base, "sampling.num_steps": 3}))
    # the same weights path, rewritten by a new training run: another fingerprint
    weights = tmp_path / "run" / "final"
    weights.mkdir(parents=True)
    (weights / "model.safetensors").write_bytes(b"old")
    before = weights_fingerprint(str(weights))
    (weights / "metrics.jsonl").write_text("{}")  # logs beside the weights are not the weights
    assert weights_fingerprint(str(weights)) == before
    os.utime(weights / "model.safetensors", ns=(1, 1))
    assert weights_fingerprint(str(weights)) != before and weights_fingerprint("") == ""
