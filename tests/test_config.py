"""Typed configs: defaults <- YAML <- dotted overrides, with every problem reported at once."""

from dataclasses import dataclass, field

import pytest

from newtonrewards.config import build_config, parse_override
from newtonrewards.errors import UserError


@dataclass
class Inner:
    rate: float = 0.5
    names: list[str] = field(default_factory=lambda: ["a"])


@dataclass
class Outer:
    steps: int = 3
    flag: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)


def test_yaml_then_overrides_take_precedence_and_keep_types(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("steps: 7\ninner:\n  rate: 0.25\n")
    cfg = build_config(Outer, path, dict([parse_override("inner.names=x,y"), parse_override("counts=train=4,test=2"),
                                          parse_override("steps=9")]))  # fmt: skip
    assert cfg == Outer(steps=9, counts={"train": 4, "test": 2}, inner=Inner(rate=0.25, names=["x", "y"]))


def test_every_problem_is_reported_together():
    with pytest.raises(UserError) as err:
        build_config(Outer, None, {"steps": 2.5, "flag": "yes", "inner.rte": 1, "colour": "red"})
    message = str(err.value)
    for part in ("option steps must be int", "option flag must be bool", "unknown option 'inner.rte'",
                 "unknown option 'colour'"):  # fmt: skip
        assert part in message


def test_a_broken_yaml_file_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("steps: [1,\n")
    with pytest.raises(UserError, match="bad.yaml: not valid YAML"):
        build_config(Outer, path)
    with pytest.raises(UserError, match="missing.yaml: cannot read config"):
        build_config(Outer, tmp_path / "missing.yaml")
    with pytest.raises(UserError, match="not of the form key=value"):
        parse_override("steps")
