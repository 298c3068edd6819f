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


def header_of(recipe: Path) -> str:
    """The recipe's leading comment block."""
    lines = recipe.read_text().splitlines()
    return "\n".join(line for line in lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))])


@pytest.mark.parametrize("recipe", [r for r in RECIPES if stage_of(r) == "reward"], ids=lambda p: p.stem)
def test_reward_recipes_load_trained_flow_and_encoder_weights_or_say_why_not(recipe):
    """RAFT and the transformers encoders load pretrained weights (never a silent random init) and the header says
    where they come from; the weight-free `classical` / `pixels` models are named in the header with the reason."""
    import inspect

    from torchvision.models import optical_flow

    from newtonrewards.reward_models.flow.raft import RAFTFlow

    reward = build_config(TrainConfig, str(recipe), {}).reward.reward
    header = header_of(recipe)
    if reward.flow_model == "raft":
        kwargs = {name: p.default for name, p in inspect.signature(RAFTFlow).parameters.items()} | reward.flow_kwargs
        assert kwargs["weights"] == "default", kwargs  # torchvision's pretrained weights
        assert "weights" in reward.flow_kwargs  # and the recipe says so itself
        url = getattr(optical_flow, f"Raft_{kwargs['variant'].capitalize()}_Weights").DEFAULT.url
        assert url in header and url.rsplit("/", 1)[1] in header and "checkpoints" in header, header
    else:
        assert reward.flow_model == "classical" and "`classical` flow" in header and "no weights" in header, header
    if reward.encoder == "pixels":
        assert "`pixels` encoder" in header and "no weights" in header, header
    else:
        import importlib

        default = importlib.import_module(f"newtonrewards.reward_models.encoders.{reward.encoder}").DEFAULT_MODEL
        model = str(reward.encoder_kwargs.get("model", default))
        assert model in header, (model, header)
