"""The proxies measure physics on NewtonBench `mini` test clips (256x256, 32 frames, decoded from H.264).

One validation run (`proxies validate`, default reward) over the mini preset's test split backs every assertion.
"""

import pytest

from newtonrewards.bench_gen.driver import PRESETS, BenchGenerateConfig, generate
from newtonrewards.proxies.corruptions import LAW_BLIND, NON_CONSTANT_ACCELERATION
from newtonrewards.proxies.validate import ValidateConfig, validate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini") / "nb"
    generate(BenchGenerateConfig(out=str(root), counts={"test": PRESETS["mini"]["test"]}, no_ray=True))
    return validate(ValidateConfig(bench=str(root), split="test"))


def test_classical_flow_recovers_the_image_plane_acceleration_within_15_percent(report):
    for primitive, summary in report["summary"].items():
        assert summary["accel_rel_error"] <= 0.15, (primitive, summary["accel_rel_error"])
    assert {c["primitive"] for c in report["clips"] if "accel_rel_error" in c} == set(report["summary"])


def test_kinematic_term_alone_ranks_the_truth_above_non_constant_acceleration_twins_in_95_percent_of_pairs(report):
    pairs = [(c["clip_id"], kind, c["original"]["kinematic"] < c[kind]["kinematic"])
             for c in report["clips"] if "original" in c for kind in NON_CONSTANT_ACCELERATION]
    assert len(pairs) >= 24 and {p[1] for p in pairs} == set(NON_CONSTANT_ACCELERATION)
    wins = sum(win for _, _, win in pairs)
    assert wins >= 0.95 * len(pairs), [p for p in pairs if not p[2]]


def test_law_blind_twins_are_caught_by_the_motion_floor_or_the_mass_term(report):
    ranked = [c for c in report["clips"] if "original" in c]
    assert len(ranked) >= 8
    for clip in ranked:
        for kind in LAW_BLIND:
            twin, original = clip[kind], clip["original"]
            caught = twin["motion_floor"] > original["motion_floor"] or twin["mass"] > original["mass"]
            assert caught, (clip["clip_id"], kind, twin, original)
