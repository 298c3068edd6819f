"""Bad training / generation input stops with one clear line before any model is built."""

from __future__ import annotations

import pytest
from train_helpers import make_bench, recipe

from newtonrewards.errors import UserError


@pytest.fixture(scope="module")
def benches(tmp_path_factory):
    root = tmp_path_factory.mktemp("nb")
    return make_bench(root / "full", frames=9, size=32, train=1, test=0), make_bench(root / "test-only", train=0, test=1)


@pytest.fixture
def no_models(monkeypatch):
    """Any attempt to build a model fails the test."""
    import newtonrewards.train.adapters as adapters

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the input was checked")

    monkeypatch.setattr(adapters, "make_adapter", refuse)


@pytest.mark.parametrize("overrides, expected", [
    ({"model.adapter": "sora"}, "unknown adapter 'sora'; known: wan, tiny-wan, ltx"),
    ({"conditioning.mode": "last_frame"}, "unknown conditioning.mode 'last_frame'; known: text, first_frame"),
    ({"data.num_frames": 8}, "num_frames=8, but Wan takes 4k+1 frames"),
    ({"data.height": 40}, "height=40 must be a positive multiple of 16"),
    ({"conditioning.mode": "first_frames", "conditioning.frames": 9}, "conditioning.frames=9 must lie in 1..num_frames-1"),
    ({"stage": "reward", "sampling.grad_last_k": 5}, "sampling.grad_last_k=5 must lie in 1..num_steps (4)"),
    ({"stage": "reward", "reward.frames": 3}, "the reward needs 4..num_frames frames, got 3"),
    ({"data.split": "ood-mass"}, "no clips of split 'ood-mass'"),
])  # fmt: skip
def test_bad_recipe_is_one_line_before_any_model(overrides, expected, benches, tmp_path, no_models):
    from newtonrewards.train.loop import train

    with pytest.raises(UserError) as info:
        train(recipe(tmp_path / "run", benches[0], tmp_path / "model", **overrides))
    message = str(info.value)
    assert expected in message and "\n" not in message
    assert not (tmp_path / "run").exists()


def test_bench_without_a_train_split(benches, tmp_path, no_models):
    from newtonrewards.train.loop import train

    with pytest.raises(UserError, match=r"no clips of split 'train' in the manifest \(it has: test\)"):
        train(recipe(tmp_path / "run", benches[1], tmp_path / "model"))


def test_generate_checks_its_input_too(benches, tmp_path, no_models):
    from newtonrewards.config import build_config
    from newtonrewards.train.config import GenerateConfig
    from newtonrewards.train.generate import generate

    cfg = build_config(GenerateConfig, None, {"out": str(tmp_path / "g"), "bench": str(benches[1]), "num_frames": 10})
    with pytest.raises(UserError, match="num_frames=10, but Wan takes 4k"):
        generate(cfg)
    cfg = build_config(GenerateConfig, None, {"out": str(tmp_path / "g"), "bench": str(benches[1]),
                                              "weights": str(tmp_path / "nowhere")})  # fmt: skip
    with pytest.raises(UserError, match="weights .*nowhere do not exist"):
        generate(cfg)


def test_cli_prints_one_line_and_exits_2(benches, tmp_path, capsys, no_models):
    from newtonrewards.cli import main

    code = main(["train", "sft", "--bench", str(benches[1]), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "no clips of split 'train'" in err


@pytest.mark.parametrize("overrides, need, fix", [
    ({"data.num_frames": 13}, "data.num_frames=13 x frame_stride 1 needs 13", "--set data.num_frames=9"),
    ({"data.frame_stride": 2}, "data.num_frames=9 x frame_stride 2 needs 17", "--set data.num_frames=5"),
])  # fmt: skip
def test_a_recipe_longer_than_the_bench_clips_is_refused_before_any_model(overrides, need, fix, benches, tmp_path,
                                                                            no_models):  # fmt: skip
    """The bench's clips (dataset.json: 9 frames) are shorter than the recipe needs: one line naming the bench, its
    clip length, the recipe's need and both fixes, not a failure at the first batch after the model is built."""
    from newtonrewards.train.loop import train

    with pytest.raises(UserError) as info:
        train(recipe(tmp_path / "run", benches[0], tmp_path / "model", **overrides))
    message = str(info.value)
    assert f"bench {benches[0]} has 9-frame clips" in message and need in message and "\n" not in message
    assert f"bench generate --frames {need.rsplit(' ', 1)[1]}" in message and fix in message
    assert not (tmp_path / "run").exists()


def test_generate_refuses_more_frames_than_the_bench_clips_hold(benches, tmp_path, no_models):
    from newtonrewards.config import build_config
    from newtonrewards.train.config import GenerateConfig
    from newtonrewards.train.generate import generate

    cfg = build_config(GenerateConfig, None, {"out": str(tmp_path / "g"), "bench": str(benches[1]), "num_frames": 17})
    with pytest.raises(UserError, match=r"has 9-frame clips .* num_frames=17 x frame_stride 1 needs 17; .*"
                                        r"--set num_frames=9 "):  # fmt: skip
        generate(cfg)
