"""Every shipped training recipe passes the checks `train` runs before building a model (adapter, conditioning, frame
count and size the model takes, reward frames), so a recipe cannot rot unnoticed."""

from pathlib import Path

import pytest

from newtonrewards.config import build_config
from newtonrewards.errors import UserError
from newtonrewards.train.config import TrainConfig, validate_train
from train_helpers import make_bench

RECIPES = sorted(Path("configs/train").glob("*.yaml"))


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return make_bench(tmp_path_factory.mktemp("recipes") / "nb", train=1, test=0)


def stage_of(recipe: Path) -> str:
    return "reward" if "reward" in recipe.stem else "sft"


def test_there_is_an_sft_and_a_reward_recipe_for_every_real_adapter():
    adapters = {build_config(TrainConfig, str(r), {}).model.adapter: r for r in RECIPES}
    assert {"wan", "ltx", "cogvideox", "tiny-wan"} <= set(adapters)
    for name in ("wan", "ltx", "cogvideox"):
        stages = {stage_of(r) for r in RECIPES if build_config(TrainConfig, str(r), {}).model.adapter == name}
        assert stages == {"sft", "reward"}, name


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_passes_the_pre_flight_checks(recipe, bench, tmp_path):
    cfg = build_config(TrainConfig, str(recipe), {"stage": stage_of(recipe), "out": str(tmp_path / "out"),
                                                   "data.bench": str(bench)})  # fmt: skip
    validate_train(cfg)
    assert not (tmp_path / "out").exists()  # checks write nothing


def test_a_recipe_with_a_frame_count_the_model_cannot_take_is_refused(bench, tmp_path):
    recipe = "configs/train/ltx_sft.yaml"
    cfg = build_config(TrainConfig, recipe, {"stage": "sft", "out": str(tmp_path), "data.bench": str(bench),
                                             "data.num_frames": 33 + 4})  # fmt: skip
    with pytest.raises(UserError, match="8k\\+1"):
        validate_train(cfg)
