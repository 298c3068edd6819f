"""The `tiny-ltx` and `tiny-cogvideox` adapters (and CogVideoX's image-to-video variant): frame rules, VAE shapes,
the training objective, the sampler's gradient window, and the acceptance line: weights exported after a training
step load into the plain diffusers pipeline, which reproduces the adapter's sample for a fixed seed."""

from __future__ import annotations

import pytest
import torch

from newtonrewards.errors import UserError
from newtonrewards.train.adapters import adapter_class, make_adapter

# id -> (registry name, options)
TINY = {"tiny-ltx": ("tiny-ltx", {}), "tiny-cogvideox": ("tiny-cogvideox", {}),
        "tiny-cogvideox-i2v": ("tiny-cogvideox", {"i2v": True})}  # fmt: skip
T, H, W = 9, 32, 64


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """One tiny model folder per variant, built on first use and shared by the module's tests."""
    root = tmp_path_factory.mktemp("tiny_models")
    return {key: root / key for key in TINY}


def load(key, folders):
    """A fresh adapter loaded (through from_pretrained) from the variant's folder; built there the first time."""
    name, options = TINY[key]
    return make_adapter(name, model=str(folders[key]), **options)


def clip(seed=0, batch=2):
    return torch.rand(batch, T, 3, H, W, generator=torch.Generator().manual_seed(seed))


def frame0_mask(out):
    """1 on the transformer's raw output for latent frame 0 (LTX: packed frame-major tokens; CogVideoX [B, T', ..])."""
    mask = torch.zeros_like(out)
    if out.dim() == 3:
        mask[:, : (H // 32) * (W // 32)] = 1
    else:
        mask[:, :1] = 1
    return mask


@pytest.mark.parametrize(
    "name, frames, height, width, rule",
    [
        ("tiny-ltx", 10, 32, 32, r"8k\+1 frames"),
        ("tiny-ltx", 9, 48, 32, "multiple of 32"),
        ("ltx", 9, 32, 40, "multiple of 32"),
        ("tiny-cogvideox", 8, 32, 32, r"4k\+1 frames"),
        ("cogvideox", 9, 32, 24, "multiple of 16"),
    ],
)
def test_bad_clip_sizes_name_the_rule(name, frames, height, width, rule):
    cls = adapter_class(name)
    with pytest.raises(UserError, match=rule):
        cls.check_shape(frames, height, width)


def test_frame_counts_follow_each_vae():
    ltx, cog = adapter_class("tiny-ltx"), adapter_class("tiny-cogvideox")
    ltx.check_shape(17, 64, 96)
    cog.check_shape(13, 48, 80)
    assert [ltx.latent_frames(t) for t in (1, 9, 17, 121)] == [1, 2, 3, 16]
    assert [cog.latent_frames(t) for t in (1, 9, 13, 49)] == [1, 3, 4, 13]
    assert [ltx.cond_latent_frames(k) for k in (0, 1, 4, 8, 9, 17)] == [0, 1, 1, 1, 2, 3]
    assert [ltx.cond_pixel_frames(k) for k in (0, 1, 4, 9, 12)] == [0, 1, 1, 9, 9]
    assert [cog.cond_latent_frames(k) for k in (0, 1, 4, 5, 9)] == [0, 1, 1, 2, 3]
    assert [cog.cond_pixel_frames(k) for k in (0, 1, 4, 5, 8)] == [0, 1, 1, 5, 5]


@pytest.mark.parametrize("key", list(TINY))
def test_encode_decode_shapes(key, folders):
    adapter = load(key, folders)
    video = clip()
    latents = adapter.encode_video(video)
    noise = adapter.initial_noise(2, T, H, W, torch.Generator().manual_seed(0))
    assert latents.shape == noise.shape
    frame_axis = 2 if key == "tiny-ltx" else 1
    assert latents.shape[frame_axis] == adapter.latent_frames(T)
    cond = adapter.encode_video(video[:, : adapter.cond_pixel_frames(4)])
    assert cond.shape[frame_axis] == adapter.cond_latent_frames(4) == 1
    if key == "tiny-ltx":  # LTX's VAE is causal: the first frame alone encodes to the clip's first latent frame
        torch.testing.assert_close(cond, latents[:, :, :1], atol=1e-5, rtol=0)
    kept = adapter.keep_cond(noise, cond)
    rest = noise.shape[frame_axis] - 1
    assert torch.equal(kept.narrow(frame_axis, 0, 1), cond)
    assert torch.equal(kept.narrow(frame_axis, 1, rest), noise.narrow(frame_axis, 1, rest))
    z = latents.clone().requires_grad_(True)
    frames = adapter.decode_latents(z)
    assert frames.shape == video.shape and 0 <= frames.min() and frames.max() <= 1
    frames.mean().backward()
    assert z.grad.abs().sum() > 0
    with pytest.raises(UserError, match="8k\\+1" if key == "tiny-ltx" else "4k\\+1"):
        adapter.encode_video(video[:, :8])


@pytest.mark.parametrize("key", list(TINY))
def test_training_loss_is_finite_reaches_the_transformer_and_ignores_conditioning_frames(key, folders):
    adapter = load(key, folders)
    latents = adapter.encode_video(clip())
    embeds = adapter.encode_prompts(["a ball falls", "a box slides down a ramp"])
    loss = adapter.training_loss(latents, embeds, 1, torch.Generator().manual_seed(3))
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    loss.sum().backward()
    grads = {n: p.grad for n, p in adapter.trainable_module().named_parameters()}
    assert all(g is not None for g in grads.values())
    assert sum(g.abs().sum() > 0 for g in grads.values()) > 0.8 * len(grads)
    # the loss is masked off the conditioning frame: corrupting the prediction there changes nothing with num_cond=1
    hook = adapter.trainable_module().register_forward_hook(
        lambda module, args, output: (output[0] + 1e3 * frame0_mask(output[0]),)
    )
    try:
        with torch.no_grad():
            masked = adapter.training_loss(latents, embeds, 1, torch.Generator().manual_seed(3))
            unmasked = adapter.training_loss(latents, embeds, 0, torch.Generator().manual_seed(3))
    finally:
        hook.remove()
    torch.testing.assert_close(masked, loss.detach())
    assert (unmasked > 1e3).all()


@pytest.mark.parametrize("key", list(TINY))
def test_sampler_gradient_flows_only_through_the_last_steps(key, folders):
    adapter = load(key, folders)
    video = clip()
    embeds = adapter.encode_prompts(["a ball falls", "a ball falls"])
    cond = adapter.encode_video(video[:, :1])
    calls = []
    hook = adapter.trainable_module().register_forward_hook(lambda *_: calls.append(torch.is_grad_enabled()))
    try:
        noise = adapter.initial_noise(2, T, H, W, torch.Generator().manual_seed(0)).requires_grad_(True)
        out = adapter.sample(embeds, noise, cond, num_steps=3, grad_last_k=1)
        assert calls == [False, False, True]
        out.square().mean().backward()
        assert noise.grad is None  # the window starts after step 2: nothing flows back to the initial noise
        grads = [p.grad for p in adapter.trainable_module().parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
        calls.clear()
        out = adapter.sample(embeds, noise, cond, num_steps=3, grad_last_k=3)
        out.square().mean().backward()
        assert calls == [True, True, True] and noise.grad.abs().sum() > 0
        calls.clear()
        assert not adapter.sample(embeds, noise.detach(), cond, num_steps=3, grad_last_k=0).requires_grad
        assert calls == [False, False, False]
    finally:
        hook.remove()


def _train_one_step(adapter, lora: bool, cond_frames: int):
    """One AdamW step of the adapter's own objective (LoRA r=4 or all transformer weights)."""
    from newtonrewards.train.lora import add_lora, trainable_parameters

    module = adapter.trainable_module()
    if lora:
        add_lora(module, rank=4, alpha=4, targets=adapter.lora_targets)
    params = list(trainable_parameters(module).values())
    optimizer = torch.optim.AdamW(params, lr=3e-2, weight_decay=0)
    latents = adapter.encode_video(clip(seed=5))
    embeds = adapter.encode_prompts(["a ball falls", "a box slides"])
    num_cond = adapter.cond_latent_frames(cond_frames)
    adapter.training_loss(latents, embeds, num_cond, torch.Generator().manual_seed(7)).mean().backward()
    optimizer.step()
    optimizer.zero_grad()


def plain_sample(pipe, adapter, noise, cond, frames=T, guidance=1.0, prompt="a ball falls", **extra):
    """The plain pipeline's clip from the prompt text, the adapter's (imposed) noise and its re-imposing callback."""
    pipe.set_progress_bar_config(disable=True)
    if cond is not None:
        extra.update(callback_on_step_end=adapter.reimpose_callback(cond),
                     callback_on_step_end_tensor_inputs=["latents"])  # fmt: skip
    return pipe(prompt=[prompt], negative_prompt=[""], max_sequence_length=adapter.max_sequence_length,
                latents=adapter.pipeline_latents(adapter.keep_cond(noise, cond)), num_frames=frames, height=H, width=W,
                num_inference_steps=3, guidance_scale=guidance, output_type="pt", **extra).frames  # fmt: skip


def adapter_sample(adapter, noise, cond, guidance=1.0, prompt="a ball falls"):
    """The adapter's decoded clip for the same prompt (3 steps; negative prompt "" when guided)."""
    embeds, negative_embeds = adapter.encode_prompts([prompt]), adapter.encode_prompts([""])
    with torch.no_grad():
        latents = adapter.sample(embeds, noise, cond, num_steps=3, guidance=guidance, negative_embeds=negative_embeds)
        return adapter.decode_latents(latents)


def image_posterior_mode(monkeypatch):
    """The I2V pipeline samples the image's VAE posterior; the adapter's contract encodes its mode."""
    monkeypatch.setattr("diffusers.pipelines.cogvideo.pipeline_cogvideox_image2video.retrieve_latents",
                        lambda encoded, generator=None, sample_mode="sample": encoded.latent_dist.mode())  # fmt: skip


CASES = [("tiny-ltx", True, 0), ("tiny-ltx", False, 1), ("tiny-cogvideox", True, 0), ("tiny-cogvideox", False, 1),
         ("tiny-cogvideox-i2v", True, 1)]  # fmt: skip


@pytest.mark.parametrize("key, lora, cond_frames", CASES)
def test_exported_weights_reproduce_the_sample_in_the_plain_pipeline(key, lora, cond_frames, folders, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    adapter = load(key, folders)
    _train_one_step(adapter, lora, cond_frames)
    out = adapter.export(tmp_path / "export", lora=lora)

    guidance = 3.0 if cond_frames == 0 else 1.0  # text-only with classifier-free guidance, as the pipeline does it
    video = clip(seed=11, batch=1)
    cond = adapter.encode_video(video[:, : adapter.cond_pixel_frames(cond_frames)]) if cond_frames else None
    noise = adapter.initial_noise(1, T, H, W, torch.Generator().manual_seed(0))
    mine = adapter_sample(adapter, noise, cond, guidance)

    cls, base = adapter.pipeline_class, str(folders[key])
    if lora:
        pipe = cls.from_pretrained(base)
        pipe.load_lora_weights(str(out))
    else:
        pipe = cls.from_pretrained(base, transformer=type(adapter.trainable_module()).from_pretrained(
            str(out), subfolder="transformer"))  # fmt: skip
    inputs = adapter.pipeline_inputs(adapter.encode_prompts(["a"]))
    extra = {k: v for k, v in inputs.items() if "prompt" not in k}  # LTX: frame rate, decode timestep
    if getattr(adapter, "i2v", False):
        image_posterior_mode(monkeypatch)
        extra["image"] = video[:, 0]
    theirs = plain_sample(pipe, adapter, noise, cond, guidance=guidance, **extra)
    torch.testing.assert_close(theirs, mine, atol=1e-4, rtol=0)
    untrained = plain_sample(cls.from_pretrained(base), adapter, noise, cond, guidance=guidance, **extra)
    assert (untrained - mine).abs().max() > 1e-3  # the trained weights give another clip: the export mattered


def test_ltx_native_conditioning_matches_its_image_to_video_pipeline(folders):
    """native_cond: timestep 0 on the clean first latent frame, exactly what LTXImageToVideoPipeline runs."""
    from diffusers import LTXImageToVideoPipeline

    adapter = load("tiny-ltx", folders)
    adapter.native_cond = True
    seen = []
    hook = adapter.trainable_module().register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["timestep"].clone()), with_kwargs=True
    )
    cond = adapter.encode_video(clip(seed=2, batch=1)[:, :1])
    noise = adapter.initial_noise(1, T, H, W, torch.Generator().manual_seed(0))
    mine = adapter_sample(adapter, noise, cond, guidance=3.0)
    hook.remove()
    per_frame = (H // 32) * (W // 32)
    assert all(t.shape == (2, 2 * per_frame) for t in seen)
    assert all((t[:, :per_frame] == 0).all() and (t[:, per_frame:] > 0).all() for t in seen)
    pipe = LTXImageToVideoPipeline.from_pretrained(str(folders["tiny-ltx"]))
    theirs = plain_sample(pipe, adapter, noise, cond, guidance=3.0, image=None, frame_rate=adapter.frame_rate)
    torch.testing.assert_close(theirs, mine, atol=1e-4, rtol=0)


@pytest.mark.parametrize("i2v", [False, True])
def test_cogvideox_15_pairs_latent_frames_and_matches_its_pipeline(i2v, tmp_path, monkeypatch):
    """CogVideoX 1.5 (patch_size_t=2): an odd latent frame count is refused with the rule; 13 frames (4 latent
    frames) sample as CogVideoX(ImageToVideo)Pipeline does, with the 1.5 I2V's offset embedding and inverted scale."""
    adapter = make_adapter("tiny-cogvideox", model=str(tmp_path / "m"), i2v=i2v, v15=True)
    with pytest.raises(UserError, match="multiple of patch_size_t=2"):
        adapter.initial_noise(1, 9, H, W, None)
    video = torch.rand(1, 13, 3, H, W, generator=torch.Generator().manual_seed(4))
    loss = adapter.training_loss(adapter.encode_video(video), adapter.encode_prompts(["a"]), 1, None)
    assert torch.isfinite(loss).all()
    cond = adapter.encode_video(video[:, :1])
    noise = adapter.initial_noise(1, 13, H, W, torch.Generator().manual_seed(0))
    mine = adapter_sample(adapter, noise, cond)
    extra = {}
    if i2v:
        image_posterior_mode(monkeypatch)
        extra["image"] = video[:, 0]
    theirs = plain_sample(adapter.pipeline_class.from_pretrained(str(tmp_path / "m")), adapter, noise, cond, frames=13,
                          **extra)  # fmt: skip
    torch.testing.assert_close(theirs, mine, atol=1e-4, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("key, stage, mode", [("tiny-ltx", "sft", "first_frame"), ("tiny-ltx", "reward", "text"),
                                              ("tiny-cogvideox", "sft", "text"),
                                              ("tiny-cogvideox", "reward", "first_frame")])  # fmt: skip
def test_training_loops_run_a_step_on_ltx_and_cogvideox(key, stage, mode, folders, tmp_path_factory, tmp_path):
    """The shared SFT / reward steps (train/sft.py, train/reward_ft.py) on these adapters: finite loss, LoRA moves."""
    from train_helpers import make_bench, recipe

    from newtonrewards.rewards.composite import NewtonReward
    from newtonrewards.train.data import clips_from_config
    from newtonrewards.train.loop import PromptLookup, build_adapter, collate
    from newtonrewards.train.prompt_cache import PromptCache
    from newtonrewards.train.reward_ft import RewardStep
    from newtonrewards.train.sft import SFTStep

    bench = tmp_path_factory.getbasetemp() / "nb_ltx_cog"
    if not bench.exists():
        make_bench(bench)
    load(key, folders)  # builds the tiny model folder if this test runs alone
    overrides = {"model.adapter": TINY[key][0], "conditioning.mode": mode}
    cfg = recipe(tmp_path, bench, folders[key], stage=stage, **overrides)
    adapter = build_adapter(cfg, "cpu")
    clips = clips_from_config(cfg.data)
    PromptCache(cfg.out + "/prompt_cache", adapter).fill(clips.prompts() + [""])
    prompts = PromptLookup(cfg, adapter)
    if stage == "sft":
        step = SFTStep(adapter, prompts, cfg)
    else:
        step = RewardStep(adapter, prompts, cfg, NewtonReward(cfg.reward.reward))
    trainable = [p for p in adapter.trainable_module().parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    loss, _ = step(collate([clips[0], clips[1]]), torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    loss.backward()
    torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.0).step()
    assert sum(not torch.equal(a, b) for a, b in zip(before, trainable)) == len(trainable) // 2  # every lora_B


def test_cogvideox_with_learned_positions_takes_only_its_trained_clip_size(tmp_path):
    """CogVideoX-5b-I2V's learned positional embeddings exist for one size: others are refused with both sizes."""
    from diffusers import CogVideoXTransformer3DModel

    from newtonrewards.train.adapters.cogvideox import build_tiny_cogvideox

    folder = build_tiny_cogvideox(tmp_path / "m", i2v=True)
    transformer = CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=16, in_channels=8,
                                              out_channels=4,
                                              time_embed_dim=16, text_embed_dim=16, num_layers=1, sample_width=4,
                                              sample_height=4, sample_frames=9, max_text_seq_length=32,
                                              use_rotary_positional_embeddings=True,
                                              use_learned_positional_embeddings=True)  # fmt: skip
    transformer.save_pretrained(folder / "transformer")
    adapter = make_adapter("cogvideox", model=str(folder), max_sequence_length=32)
    embeds = adapter.encode_prompts(["a ball"])
    with pytest.raises(UserError, match="takes only 9 frames of 32x32 .* not 9 of 32x64"):
        adapter.initial_noise(1, 9, 32, 64, None)
    with pytest.raises(UserError, match="not 13 of 32x32"):
        adapter.training_loss(adapter.encode_video(torch.rand(1, 13, 3, 32, 32)), embeds, 1, None)
    assert adapter.sample(embeds, adapter.initial_noise(1, 9, 32, 32, None), num_steps=2).shape == (1, 3, 4, 4, 4)
