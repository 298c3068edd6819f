"""Every shipped training recipe works as its header says: the header's commands, run at toy size (the bench it
builds, with the frame count it asks for), pass the checks `train` runs before building a model (adapter,
conditioning, frame count and size the model takes, the bench's clip length, reward frames), so a recipe cannot rot
unnoticed."""

import importlib.util
import re
import shlex
from dataclasses import replace
from pathlib import Path

import pytest

from newtonrewards import cli
from newtonrewards.config import build_config
from newtonrewards.errors import UserError
from newtonrewards.train.config import TrainConfig, validate_train
from train_helpers import make_bench

RECIPES = sorted(Path("configs/train").glob("*.yaml"))


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return make_bench(tmp_path_factory.mktemp("recipes") / "nb", train=1, test=0)


def stage_of(recipe: Path) -> str:
    return next((stage for stage in ("reward", "grpo") if stage in recipe.stem), "sft")


def test_there_is_an_sft_and_a_reward_recipe_for_every_real_adapter():
    adapters = {build_config(TrainConfig, str(r), {}).model.adapter: r for r in RECIPES}
    assert {"wan", "ltx", "cogvideox", "tiny-wan"} <= set(adapters)
    for name in ("wan", "ltx", "cogvideox"):
        stages = {stage_of(r) for r in RECIPES if build_config(TrainConfig, str(r), {}).model.adapter == name}
        assert {"sft", "reward"} <= stages, name
    assert {"tiny-wan", "wan"} <= {build_config(TrainConfig, str(r), {}).model.adapter for r in RECIPES
                                   if stage_of(r) == "grpo"}  # fmt: skip


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_header_commands_work_as_written(recipe, tmp_path, monkeypatch, capsys):
    """The header's commands run in order at toy size: `First` builds the bench (1 clip per primitive at 32x32, but
    the frame count it asks for) or follows the recipe it names, `Run` and `Run` + `Change` pass train's pre-flight
    against that bench (no model is built), and a reward recipe starts from its SFT recipe's --out on its bench."""
    toy_run(monkeypatch, tmp_path)
    preflights = follow_header(recipe, capsys)
    assert preflights and all(cfg.data.bench for cfg in preflights)


def test_a_bench_of_the_default_32_frames_is_refused_by_a_33_frame_recipe(tmp_path, monkeypatch, capsys):
    """What the issue met: `bench generate --preset full` (32-frame clips) under wan_1_3b_sft.yaml (33 frames) stops
    in pre-flight with the bench, its clip length, the recipe's need and the fix."""
    toy_run(monkeypatch, tmp_path)
    run_cli("newtonrewards bench generate --out nb --preset full", capsys)
    code = cli.main(["train", "sft", "--config", "configs/train/wan_1_3b_sft.yaml", "--bench", "nb", "--out", "r"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "bench nb has 32-frame clips" in err and "data.num_frames=33 x frame_stride 1 needs 33" in err, err
    assert "bench generate --frames 33" in err and "--set data.num_frames=29" in err, err


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


@pytest.mark.parametrize("recipe", [r for r in RECIPES if stage_of(r) in ("reward", "grpo")], ids=lambda p: p.stem)
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


# -- running a header's commands at toy size ------------------------------------------------------------------------
COMMAND = re.compile(r"(?:accelerate launch -m )?newtonrewards [^;(\n]*|python benchmarks/[^;(\n]*")
REPO = Path(__file__).resolve().parents[1]
PREFLIGHTS: list[TrainConfig] = []  # the configs the patched `train` checked, in order


def toy_run(monkeypatch, work: Path) -> None:
    """Run commands in `work` (configs/ linked in): `bench generate` makes 1 train (and test, when the command's bench
    has that split: GRPO's held-out evaluation reads it) clip per primitive at 32x32 with the frames it is given,
    `train` runs its pre-flight and loads its first clip only, and building a model fails the test."""
    import newtonrewards.bench_gen.driver as driver
    import newtonrewards.train.adapters as adapters
    import newtonrewards.train.loop as loop

    real_generate = driver.generate

    def toy_generate(cfg):  # one clip per primitive in train, and in test when the command's bench has one
        counts = {split: 1 for split in ("train", "test") if split in driver.counts_of(cfg)}
        return real_generate(replace(cfg, counts=counts or {"train": 1}, width=32, height=32, no_ray=True))

    def preflight(cfg):
        from newtonrewards.train.data import clips_from_config

        validate_train(cfg)
        clips_from_config(cfg.data)[0]  # the first clip loads at the recipe's length, as the run's first batch does
        PREFLIGHTS.append(cfg)
        return {"final": None}

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built by a pre-flight")

    (work / "configs").symlink_to(REPO / "configs")
    monkeypatch.chdir(work)
    monkeypatch.setattr(driver, "generate", toy_generate)
    monkeypatch.setattr(loop, "train", preflight)
    monkeypatch.setattr(adapters, "make_adapter", refuse)
    PREFLIGHTS.clear()



def header_entries(recipe: Path) -> dict[str, str]:
    """{"First": text, "Run": text, ...}: each `# Key: text` line of the header with its continuation lines."""
    entries: dict[str, str] = {}
    key = None
    for line in header_of(recipe).splitlines():
        match = re.match(r"# (\w[\w ]*):\s+(.*)", line)
        if match:
            key = match.group(1)
            entries[key] = match.group(2)
        elif key:
            entries[key] += "\n" + line.lstrip("# ")
    return entries


def run_cli(command: str, capsys) -> list[str]:
    """Run one header command line through the CLI (as `newtonrewards` would); it must exit 0. Returns its argv."""
    argv = shlex.split(command.strip().removeprefix("accelerate launch -m "))
    assert argv[0] == "newtonrewards", command
    code = cli.main(argv[1:])
    err = capsys.readouterr().err.strip()
    assert code == 0, f"{command}: {err.splitlines()[-1:]}"
    return argv


def option(argv: list[str], flag: str) -> str:
    assert flag in argv, (flag, argv)
    return argv[argv.index(flag) + 1]


def follow_header(recipe: Path, capsys) -> list[TrainConfig]:
    """Run the recipe's `First` (the bench, or the recipe it names, followed the same way), then `Run` and `Run` +
    `Change` as pre-flights; the run's --out is then made, as the next stage's --init-from. The configs checked."""
    entries = header_entries(recipe)
    assert {"First", "Run"} <= set(entries), (recipe, entries)
    runs = COMMAND.findall(entries["Run"])
    assert len(runs) == 1, (recipe, entries["Run"])
    run = shlex.split(runs[0])
    prior = re.search(r"configs/train/\S+\.yaml", entries["First"])
    if prior:  # the stage this one starts from: same bench, its --out is this --init-from
        follow_header(Path(prior.group()), capsys)
        prior_run = shlex.split(COMMAND.findall(header_entries(Path(prior.group()))["Run"])[0])
        assert option(run, "--bench") == option(prior_run, "--bench"), (recipe, run, prior_run)
        assert option(run, "--init-from") == option(prior_run, "--out"), (recipe, run, prior_run)
    else:
        commands = COMMAND.findall(entries["First"])
        assert commands, (recipe, entries["First"])
        for command in commands:
            if command.startswith("python benchmarks/learning_mini.py"):  # it builds --work W/nb-mini-32 first
                work = option(shlex.split(command), "--work")
                assert Path(option(run, "--bench")).parent == Path(work), (recipe, command, run)
                spec = importlib.util.spec_from_file_location("learning_mini", REPO / "benchmarks/learning_mini.py")
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                module.make_bench(Path(option(run, "--bench")))
            else:
                run_cli(command, capsys)
    start = len(PREFLIGHTS)
    run_cli(runs[0], capsys)
    if "Change" in entries:
        sets = re.findall(r"--set \S+", entries["Change"])
        assert sets, (recipe, entries["Change"])
        run_cli(runs[0] + " " + " ".join(sets), capsys)
    assert len(PREFLIGHTS) == start + 1 + ("Change" in entries), recipe  # each command reached the pre-flight
    Path(option(run, "--out")).mkdir(parents=True, exist_ok=True)  # stands for the trained run
    return PREFLIGHTS[start:]
