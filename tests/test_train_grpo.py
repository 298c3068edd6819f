"""`train grpo` (issue 12): the SDE step's Gaussian against its closed form, every adapter's plan against its own
sampler, group advantages, the clipped objective's value and gradient, the trajectory reward, the hacking alarm and
its wiring, an end-to-end CLI run, two DDP ranks in step, and an exact resume."""

from __future__ import annotations

import json
import math
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch
from train_helpers import make_bench, recipe

from newtonrewards.errors import UserError
from newtonrewards.eval.trajectory import TrajectoryConfig, trajectory_error
from newtonrewards.train import sde
from newtonrewards.train.adapters.base import SamplingPlan
from newtonrewards.train.grpo import clipped_objective, group_advantages
from newtonrewards.train.hacking import HackingMonitor, hacking_streak, relative_change, reward_hacking


# -- the SDE step ------------------------------------------------------------------------------------------------
def test_log_prob_of_the_sde_step_is_the_closed_form_gaussian():
    """A plan whose model output is fixed: the step's mean is a' x0 + sqrt(s'^2 - c^2) eps from the known (x0, eps),
    c the DDPM posterior std at eta 1, and the log-prob of the sampled state is Normal(mean, c).log_prob averaged."""
    torch.manual_seed(0)
    x0, eps = torch.randn(3, 2, 5, 4, 4), torch.randn(3, 2, 5, 4, 4)
    s, s_next = 0.8, 0.5
    x = (1 - s) * x0 + s * eps
    plan = SamplingPlan([(1 - s, s, 1 - s_next, s_next)], "flow", lambda latents, i: eps - x0)
    traj = sde.sde_sample(plan, x, lambda v: v, 1.0, torch.Generator().manual_seed(1))
    ratio = (1 - s) * s_next / ((1 - s_next) * s)
    std = s_next * math.sqrt(1 - ratio**2)  # DDPM posterior std of x_{s'} given x_s and x0
    assert traj.stds == [pytest.approx(std, rel=1e-12)]
    mean = (1 - s_next) * x0 + math.sqrt(s_next**2 - std**2) * eps
    expected = torch.distributions.Normal(mean, std).log_prob(traj.states[1]).flatten(1).mean(1)
    assert torch.allclose(traj.log_probs[:, 0], expected, atol=1e-5)
    # the posterior's variance is (s'^2 - (a' / a)^2 s^2 ... ) in its usual VP form for alpha^2 + sigma^2 = 1
    bar, bar_next = 0.3, 0.6
    vp = sde.transition_std(bar**0.5, (1 - bar) ** 0.5, bar_next**0.5, (1 - bar_next) ** 0.5, 1.0)
    assert vp**2 == pytest.approx((1 - bar_next) / (1 - bar) * (1 - bar / bar_next), rel=1e-12)
    assert sde.transition_std(0.9, 0.1, 1.0, 0.0, 1.0) == 0  # the last flow step lands on sigma 0
    # a mask leaves the conditioning elements out of the mean
    mask = torch.ones(1, 2, 5, 1, 1)
    mask[:, :, 0] = 0
    masked = sde.gaussian_log_prob(traj.states[1], mean, std, mask)
    by_hand = torch.distributions.Normal(mean, std).log_prob(traj.states[1])[:, :, 1:].flatten(1).mean(1)
    assert torch.allclose(masked, by_hand, atol=1e-5)
    assert torch.allclose(sde.gaussian_kl(mean + 0.1, mean, std), torch.full((3,), 0.01 / (2 * std**2)))


@pytest.mark.slow
@pytest.mark.parametrize("name, options, shape", [("tiny-wan", {}, (9, 32, 32)), ("tiny-ltx", {}, (9, 32, 64)),
                                                  ("tiny-cogvideox", {}, (9, 32, 64))])  # fmt: skip
def test_every_adapters_plan_with_no_noise_is_its_own_sampler(name, options, shape, tmp_path):
    """eta 0: the plan's steps reproduce `sample` (first-frame conditioning, with and without guidance; 3 steps make
    CogVideoX's DDIM round its timesteps); with noise every step but the last (onto the clean state) is stochastic."""
    from newtonrewards.train.adapters import make_adapter

    adapter = make_adapter(name, model=str(tmp_path / name), **options)
    embeds, negative = adapter.encode_prompts(["a ball", "a box"]), adapter.encode_prompts(["", ""])
    t, h, w = shape
    video = torch.rand(2, t, 3, h, w, generator=torch.Generator().manual_seed(0))
    cond = adapter.encode_video(video[:, : adapter.cond_pixel_frames(1)])
    noise = adapter.initial_noise(2, t, h, w, torch.Generator().manual_seed(1))
    for steps, guidance in ((4, 1.0), (3, 2.5)):
        with torch.no_grad():
            ours = adapter.sample(embeds, noise, cond, steps, guidance, negative, 0)
            plan = adapter.sampling_plan(embeds, noise, cond, steps, guidance, negative)
            traj = sde.sde_sample(plan, noise, lambda x: adapter.keep_cond(x, cond), 0.0, None)
        assert (traj.states[-1] - ours.float()).abs().max() < 1e-5, (steps, guidance)
    noisy = sde.sde_sample(plan, noise, lambda x: adapter.keep_cond(x, cond), 0.7, torch.Generator().manual_seed(2))
    assert all(std > 0 for std in noisy.stds[:-1])
    assert noisy.stds[-1] == 0  # the last step lands on the clean state (flow: sigma 0; CogVideoX: alpha-bar 1)
    assert (noisy.states[-1] - traj.states[-1]).abs().max() > 1e-2  # the noise changed the sample


# -- advantages and the clipped objective --------------------------------------------------------------------------
def test_advantages_are_relative_to_each_group():
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0])
    adv = group_advantages(rewards, 4, eps=0.0 + 1e-12)
    std = math.sqrt(1.25)  # population std of 1, 2, 3, 4
    assert torch.allclose(adv[:4], torch.tensor([-1.5, -0.5, 0.5, 1.5]) / std)
    assert torch.equal(adv[4:], torch.zeros(4))  # equal rewards: nothing to learn from this group
    assert torch.allclose(group_advantages(rewards * 10 + 3, 4, 1e-12), adv)  # invariant to the reward's scale
    assert group_advantages(rewards, 2, 1e-12)[:2].tolist() == pytest.approx([-1.0, 1.0])


@pytest.mark.parametrize("ratio, adv, loss, grad", [
    (1.0, 2.0, -2.0, -2.0),   # on-policy: the plain policy gradient, -A r, pushes log p up for A > 0
    (1.0, -1.0, 1.0, 1.0),    # and down for A < 0
    (1.5, 2.0, -2.4, 0.0),    # A > 0 and r above 1 + c: clipped, no gradient
    (0.5, -1.0, 0.8, 0.0),    # A < 0 and r below 1 - c: clipped, no gradient
    (0.5, 2.0, -1.0, -1.0),   # A > 0 and r below 1 - c: the pessimistic bound keeps the gradient (-A r)
    (1.1, 2.0, -2.2, -2.2),   # inside the range: -A r
])  # fmt: skip
def test_clipped_objective_value_and_gradient(ratio, adv, loss, grad):
    logp_old = torch.tensor([0.3])
    logp_new = (logp_old + math.log(ratio)).requires_grad_(True)
    value, info = clipped_objective(logp_new, logp_old, torch.tensor([adv]), clip_range=0.2)
    value.backward()
    assert value.item() == pytest.approx(loss, rel=1e-6)
    assert logp_new.grad.item() == pytest.approx(grad, abs=1e-6)  # d(-A r)/d log p = -A r
    assert info["clip_frac"].item() == (abs(ratio - 1) > 0.2)


# -- trajectory reward ---------------------------------------------------------------------------------------------
def test_trajectory_error_is_zero_for_the_exact_track_and_grows_with_an_offset():
    t = np.arange(9.0)
    truth = np.stack([2 + 3 * t, 4 + 0.5 * t**2], axis=1)
    exact = trajectory_error(truth, truth, 30, 40)
    assert exact == {"position": 0.0, "velocity": 0.0, "total": 0.0}
    totals = [trajectory_error(truth + [d, 0], truth, 30, 40)["total"] for d in (1, 2, 5)]
    assert totals[0] > 0 and totals == sorted(totals)
    assert trajectory_error(truth + [5, 0], truth, 30, 40)["position"] == pytest.approx(5 / 50)  # diagonal 50
    assert trajectory_error(truth + [5, 0], truth, 30, 40)["velocity"] == 0  # a constant offset keeps the speed
    drift = truth + np.stack([t, 0 * t], 1)  # one px per frame too fast
    assert trajectory_error(drift, truth, 30, 40)["velocity"] == pytest.approx(1 / 50)
    lost = truth.copy()
    lost[4] = np.nan  # a lost frame costs lost_error, a frame without a truth is left out
    assert trajectory_error(lost, truth, 30, 40, cfg=TrajectoryConfig(lost_error=0.9))["position"] == \
        pytest.approx(0.9 / 9)  # fmt: skip
    hidden = truth.copy()
    hidden[4] = np.nan
    assert trajectory_error(lost, hidden, 30, 40)["position"] == 0
    # contact re-weighting: an error at the impact frame weighs more when contact_weight > 0
    contact = t >= 6
    bump = truth.copy()
    bump[6] += [5, 0]
    plain = trajectory_error(bump, truth, 30, 40, contact)["position"]
    weighted = trajectory_error(bump, truth, 30, 40, contact, TrajectoryConfig(contact_weight=3.0))["position"]
    assert weighted > plain == pytest.approx(5 / 50 / 9)


@pytest.mark.slow
def test_trajectory_reward_of_a_bench_clip_is_small_and_grows_when_the_clip_is_shifted(tmp_path):
    """The tracker on the ground-truth clip resized as a recipe sees it (48x64 -> 32x32: scaled 2/3, cropped) finds
    the exact track mapped by truth_track; shifting the frames by k px adds about k / diagonal."""
    from newtonrewards.eval.trajectory import TrajectoryReward
    from newtonrewards.train.data import BenchClips, truth_track

    from newtonrewards.bench_gen.driver import BenchGenerateConfig, generate

    generate(BenchGenerateConfig(out=str(tmp_path / "nb"), counts={"train": 1}, num_frames=9, width=64, height=48,
                                 primitives=["horizontal_throw"], no_ray=True))  # fmt: skip
    clips = BenchClips(tmp_path / "nb", "train", 9, 32, 32)
    item = clips[0]
    truth = truth_track(clips.root / clips.rows[0]["path"], 9, 32, 32)
    assert truth["first_mask"].any() and np.isfinite(truth["track"]).all()
    reward = TrajectoryReward(TrajectoryConfig())
    on_truth = reward(item["video"], truth)
    assert on_truth["position"] < 0.02, on_truth  # within ~1 px of 45 at this size
    first = dict(truth, first_mask=np.roll(truth["first_mask"], 3, axis=1))  # frames 3 px to the right, mask too
    shifted = reward(torch.roll(item["video"], 3, dims=-1), first)
    assert shifted["position"] > on_truth["position"] + 0.5 * 3 / math.hypot(32, 32), (shifted, on_truth)


def test_tracker_loses_an_object_that_vanishes_into_noise_instead_of_crashing():
    """A generated clip of pure noise after frame 0 (seed 28 once crashed the embedded tracker in cv2.convexHull):
    the trajectory reward charges lost frames instead of stopping the run."""
    from newtonrewards.eval.trajectory import TrajectoryReward

    rng = np.random.default_rng(28)
    frames = np.repeat(rng.integers(0, 255, (1, 32, 32, 3), dtype=np.uint8), 9, 0)
    frames[1:] = rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[10:16, 10:16] = True
    frames[0][mask] = [250, 20, 20]
    truth = {"first_mask": mask, "track": np.tile([12.5, 12.5], (9, 1)), "contact": np.zeros(9, bool)}
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    terms = TrajectoryReward(TrajectoryConfig(lost_error=0.7))(video, truth)
    assert 0 < terms["position"] <= 0.7 and np.isfinite(terms["total"])


# -- the reward-hacking alarm --------------------------------------------------------------------------------------
def test_hacking_alarm_on_hand_made_sequences():
    worse = [{"position": 0.10, "velocity": 0.05}, {"position": 0.11, "velocity": 0.06},
             {"position": 0.12, "velocity": 0.07}, {"position": 0.13, "velocity": 0.08}]  # fmt: skip
    better = list(reversed(worse))
    rising, falling = [-5.0, -4.0, -3.0, -2.0], [-2.0, -3.0, -4.0, -5.0]
    assert relative_change(worse[1], worse[0]) == pytest.approx((0.1 + 0.2) / 2)
    assert hacking_streak(rising, worse) == 3 and reward_hacking(rising, worse, 3)
    assert not reward_hacking(rising, worse, 4)  # only three changes in four evaluations
    assert hacking_streak(rising, better) == 0  # reward and held-out both improve: learning
    assert hacking_streak(falling, worse) == 0  # both get worse: not hacking, just bad
    broken = [worse[0], worse[1], worse[0], worse[1]]  # the held-out metrics improved once: the streak restarts
    assert hacking_streak(rising, broken) == 1
    mixed = [{"position": 0.10, "velocity": 0.05}, {"position": 0.12, "velocity": 0.04}]  # +20%, -20%: not worse
    assert hacking_streak([0.0, 1.0], mixed) == 0
    monitor = HackingMonitor(patience=2)
    for reward, heldout in zip(rising, worse):
        monitor.add_reward(reward - 1)
        monitor.add_reward(reward + 1)  # the window's mean is `reward`
        streak, alarm = monitor.update(heldout)
    assert (streak, alarm) == (3, True) and monitor.train == rising
    again = HackingMonitor(patience=2)
    again.load_state_dict(monitor.state_dict())
    assert again.train == monitor.train and again.heldout == monitor.heldout


# -- runs ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return make_bench(tmp_path_factory.mktemp("nb"), train=1, test=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from newtonrewards.train.adapters.wan import build_tiny_wan

    return build_tiny_wan(tmp_path_factory.mktemp("tiny-wan") / "model", seed=0)


def grpo_recipe(out, bench, tiny, **overrides):
    base = {"stage": "grpo", "batch_size": 2, "sampling.num_steps": 3, "grpo.group_size": 2, "optim.lr": 1e-2,
            "reward.reward.w_mass": 0.0}  # fmt: skip
    return recipe(out, bench, tiny, **(base | overrides))


def test_grpo_options_are_checked_before_any_model(bench, tiny, tmp_path):
    from newtonrewards.train.config import validate_train

    for bad, match in ((dict(**{"grpo.reuse": 2}, save_every=3), "grpo.reuse=2"),
                       ({"grpo.eta": 0.0}, "grpo.eta"), ({"grpo.group_size": 1}, "group_size"),
                       ({"grpo.train_steps": [3]}, "train_steps"), ({"sampling.num_steps": 1}, "num_steps=1"),
                       ({"grpo.w_newton": 0.0}, "not both 0")):  # fmt: skip
        with pytest.raises(UserError, match=match):
            validate_train(grpo_recipe(tmp_path, bench, tiny, **bad))


@pytest.mark.slow
def test_train_grpo_end_to_end_writes_checkpoints_export_and_logs(bench, tiny, tmp_path):
    """The CLI verb from the SFT run, with both rewards and a held-out evaluation: checkpoints, the LoRA export,
    metrics with the reward terms, the KL, the ratio and the held-out trajectory errors."""
    import subprocess
    import sys

    from newtonrewards.train.loop import train

    train(recipe(tmp_path / "sft", bench, tiny, steps=1))
    args = [sys.executable, "-m", "newtonrewards.cli", "train", "grpo", "--config", "configs/train/tiny_wan_grpo.yaml",
            "--bench", str(bench), "--model", str(tiny), "--init-from", str(tmp_path / "sft"), "--out",
            str(tmp_path / "grpo"), "--steps", "2", "--set", "tracker=none", "--set", "log_every=1", "--set",
            "save_every=1", "--set", "grpo.w_trajectory=1.0", "--set", "grpo.eval_every=1", "--set",
            "grpo.group_size=2", "--set", "sampling.num_steps=3", "--set", "lora.rank=4", "--set", "lora.alpha=4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(__file__)))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "grpo"
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-0000001", "step-0000002"]
    assert (out / "final" / "pytorch_lora_weights.safetensors").is_file()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert {"reward", "newton", "trajectory", "position", "velocity", "kl", "ratio", "clip_frac",
                "heldout/position", "heldout/velocity", "hacking_streak"} <= set(r), r  # fmt: skip
        assert r["reward"] == pytest.approx(-(r["newton"] + r["trajectory"]), rel=1e-4)
    assert rows[0]["ratio"] == pytest.approx(1.0, abs=1e-4)  # on-policy: old and current policy agree
    assert rows[1]["kl"] > 0  # the first update moved the policy away from the SFT weights
    assert json.loads((out / "config.json").read_text())["stage"] == "grpo"


@pytest.mark.slow
def test_stopped_and_resumed_grpo_run_matches_an_uninterrupted_one_exactly(bench, tiny, tmp_path):
    """2 + 2 steps == 4 steps, bit for bit: grad_accum 2, rollouts reused over 2 steps (the ratio leaves 1), the
    trajectory reward and a held-out evaluation every step whose hacking history is checkpointed."""
    from safetensors.torch import load_file

    from newtonrewards.train.checkpoint import TRAINABLE_FILE, checkpoint_dirs
    from newtonrewards.train.loop import train

    common = {"grad_accum": 2, "save_every": 2, "grpo.reuse": 2, "grpo.w_trajectory": 1.0, "grpo.eval_every": 1,
              "grpo.eval_clips": 1}  # fmt: skip
    train(grpo_recipe(tmp_path / "whole", bench, tiny, steps=4, **common))
    train(grpo_recipe(tmp_path / "part", bench, tiny, steps=2, **common))
    assert train(grpo_recipe(tmp_path / "part", bench, tiny, steps=4, **common))["step"] == 4
    a = load_file(str(checkpoint_dirs(tmp_path / "whole")[-1] / TRAINABLE_FILE))
    b = load_file(str(checkpoint_dirs(tmp_path / "part")[-1] / TRAINABLE_FILE))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(v.abs().sum() > 0 for k, v in a.items() if "lora_B" in k)
    whole = [json.loads(line) for line in (tmp_path / "whole/metrics.jsonl").read_text().splitlines()]
    part = [json.loads(line) for line in (tmp_path / "part/metrics.jsonl").read_text().splitlines()]
    assert whole == part  # every logged value, the held-out errors and the hacking streak included
    assert whole[0]["ratio"] == pytest.approx(1.0, abs=1e-4) and whole[1]["ratio"] != pytest.approx(1.0, abs=1e-6)


@pytest.mark.slow
def test_hacking_alarm_stops_the_run_when_asked(bench, tiny, tmp_path, monkeypatch, capsys):
    """Wiring: a training reward that rises every step and held-out errors that worsen every evaluation fire the alarm
    after `hacking_patience` evaluations in a row; with stop_on_hacking the run checkpoints, exports and stops."""
    from newtonrewards.train import grpo, hacking
    from newtonrewards.train.checkpoint import checkpoint_dirs
    from newtonrewards.train.loop import train

    counter = iter(range(1000))
    monkeypatch.setattr(grpo.GRPOStep, "evaluate_heldout",
                        lambda self, seed: {"position": 0.1 + next(counter) * 0.01, "velocity": 0.05})  # fmt: skip
    add = hacking.HackingMonitor.add_reward
    monkeypatch.setattr(hacking.HackingMonitor, "add_reward", lambda self, v: add(self, float(len(self.train))))
    cfg = grpo_recipe(tmp_path / "run", bench, tiny, steps=8, save_every=8, **{"grpo.eval_every": 1,
                      "grpo.hacking_patience": 2, "grpo.stop_on_hacking": True})  # fmt: skip
    result = train(cfg)
    assert result["step"] == 3  # evaluations at 1, 2, 3: two rises in a row by step 3
    assert "reward hacking at step 3" in capsys.readouterr().err
    assert [p.name for p in checkpoint_dirs(tmp_path / "run")] == ["step-0000003"]
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["hacking_alarm"] for r in rows] == [False, False, True]
    assert (tmp_path / "run/final/pytorch_lora_weights.safetensors").is_file()


@pytest.mark.slow
def test_two_ranks_sample_their_own_groups_and_keep_identical_weights(bench, tiny, tmp_path):
    from test_train_distributed import launch_two_ranks

    out = tmp_path / "grpo2"
    launch_two_ranks(["train", "grpo", "--config", "configs/train/tiny_wan_grpo.yaml", "--bench", str(bench),
                      "--model", str(tiny), "--out", str(out), "--steps", "2", "--set", "tracker=none", "--set",
                      "log_every=1", "--set", "save_every=2", "--set", "batch_size=1", "--set", "grpo.group_size=2",
                      "--set", "sampling.num_steps=3", "--set", "grpo.eval_every=0", "--set", "lora.rank=4",
                      "--set", "lora.alpha=4", "--set", "sampling.guidance=2.0"], tmp_path)  # fmt: skip
    reports = [json.loads((out / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert {r["world_size"] for r in reports} == {2}
    assert not set(reports[0]["clips_seen"]) & set(reports[1]["clips_seen"])  # each rank its own clips and groups
    assert reports[0]["trainable_sha256"] == reports[1]["trainable_sha256"]  # gradients all-reduced
    from safetensors.torch import load_file

    state = load_file(str(out / "checkpoints" / "step-0000002" / "trainable.safetensors"))
    assert any(v.abs().max() > 0 for k, v in state.items() if "lora_B" in k)  # and they moved
