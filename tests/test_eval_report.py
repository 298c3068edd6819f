"""Aggregation, comparison over a baseline, frame conforming, and the HTML reports in a real headless Chromium."""

import html
import json
import math
import re

import numpy as np
import pytest
from conftest import REQUIRE_BROWSER, require_browser

from newtonrewards.cli import main as cli_main
from newtonrewards.errors import UserError
from newtonrewards.eval import aggregate, browser, compare, report
from newtonrewards.eval.pipeline import PHYSICS, ClipJob, conform

JOB = ClipJob(
    "test-free_fall-000000", "free_fall", "/nowhere", "/nowhere.mp4", fps=16.0, num_frames=8, width=64, height=64
)


def run_summary(name, per_primitive, split="test"):
    """A minimal evaluation run of one scored clip per primitive, whose metrics are given ({primitive: {metric:
    value}}; an "all" entry is ignored), with its rows, statistics and coverage as `eval` writes them."""
    rows = [{"clip_id": f"{split}-{p}-000000", "primitive": p, **per} for p, per in per_primitive.items() if p != "all"]
    return run_of(name, rows, split=split)


def run_of(name, rows, missing=(), split="test", frames=8):
    """An evaluation run (summary with `rows`, as `compare.load_run` returns it) of these clip rows; `missing`:
    (clip id, primitive) of benchmark clips that had no video."""
    bench = [{"clip_id": r["clip_id"], "primitive": r["primitive"], "num_frames": frames} for r in rows]
    bench += [{"clip_id": c, "primitive": p, "num_frames": frames} for c, p in missing]
    return {"name": name, "split": split, "stats": aggregate.aggregate(rows, PHYSICS, samples=10), "rows": rows,
            "coverage": aggregate.coverage(rows, bench, [c for c, _ in missing]), "missing": [c for c, _ in missing]}


def write_run(folder, run) -> None:
    """The run's summary.json and results.jsonl, as `newtonrewards eval --out folder` leaves them."""
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps({k: v for k, v in run.items() if k != "rows"}))
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in run["rows"]))


def html_tables(page, section):
    """{heading: rows} of the tables in the page's <section id=section> (heading: the <h3> above the table, "" for
    none); each row a list of its cells' text, tags stripped and entities unescaped."""
    def text(cell):  # a line break reads as a space
        return html.unescape(re.sub(r"<[^>]+>", "", cell.replace("<br>", " ")))

    body = re.search(rf'<section id="{section}">(.*?)</section>', page, re.S)
    assert body, f"no section {section!r} in the page"
    tables = {}
    for heading, table in re.findall(r"(?:<h3>(.*?)</h3>)?<table[^>]*>(.*?)</table>", body.group(1), re.S):
        rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)
        cells = (re.findall(r"<t[dh]>(.*?)</t[dh]>", row, re.S) for row in rows)
        tables[html.unescape(heading)] = [[text(c) for c in row] for row in cells]
    return tables


def test_stats_mean_std_and_interval_in_closed_form():
    s = aggregate.stats([1.0, 2.0, 3.0, None, float("nan")])
    assert s["mean"] == 2.0 and s["std"] == 1.0 and s["n"] == 3 and 1.0 <= s["ci_low"] < 2.0 < s["ci_high"] <= 3.0
    assert aggregate.stats([None])["mean"] is None and aggregate.stats([5.0])["std"] is None


def test_aggregate_groups_by_primitive_and_leaves_failed_clips_out():
    rows = [
        {"clip_id": "a", "primitive": "free_fall", "l2": 0.1},
        {"clip_id": "b", "primitive": "free_fall", "l2": 0.3},
        {"clip_id": "c", "primitive": "ramp_up", "l2": 0.2},
        {"clip_id": "d", "primitive": "ramp_up", "error": "bad"},
    ]
    out = aggregate.aggregate(rows, ["l2"])
    assert out["free_fall"]["l2"]["mean"] == pytest.approx(0.2) and out["ramp_up"]["l2"]["n"] == 1
    assert out["all"]["l2"]["mean"] == pytest.approx(0.2) and out["all"]["l2"]["n"] == 3


def test_relative_change_is_positive_when_better_for_errors_and_for_iou():
    assert compare.relative_change(0.08, 0.10, "l2") == pytest.approx(0.2)  # lower error: better
    assert compare.relative_change(0.12, 0.10, "velocity_rmse") == pytest.approx(-0.2)
    assert compare.relative_change(0.6, 0.5, "iou") == pytest.approx(0.2)  # higher IoU: better
    assert compare.relative_change(0.1, 0.0, "l2") is None and compare.relative_change(None, 0.1, "l2") is None


def test_compare_averages_the_five_physics_metrics_per_primitive():
    base = {"free_fall": {"l2": 0.1, "chamfer": 0.1, "iou": 0.5, "velocity_rmse": 1.0, "acceleration_rmse": 2.0}}
    better = {"free_fall": {"l2": 0.09, "chamfer": 0.08, "iou": 0.55, "velocity_rmse": 0.9, "acceleration_rmse": 1.0}}
    base["all"], better["all"] = base["free_fall"], better["free_fall"]
    result = compare.compare([run_summary("sft", base), run_summary("ours", better)])
    assert result["baseline"] == "sft" and result["groups"] == ["free_fall", "all"]
    assert result["mean"]["ours"]["free_fall"] == pytest.approx((0.1 + 0.2 + 0.1 + 0.1 + 0.5) / 5)
    assert result["mean"]["sft"]["free_fall"] == 0.0
    other = compare.compare([run_summary("sft", base), run_summary("ours", better)], baseline="ours")
    assert other["mean"]["sft"]["free_fall"] < 0
    text = compare.format_comparison(result)
    assert "+20.0%" in text and "free_fall" in text and "(positive = better" in text
    with pytest.raises(UserError, match="--baseline 'pisa'"):
        compare.compare([run_summary("sft", base)], baseline="pisa")
    with pytest.raises(UserError, match="split 'ood-height'"):
        compare.compare([run_summary("sft", base), run_summary("x", base, split="ood-height")])


def test_compare_command_prints_the_table_and_writes_a_report_that_loads(chromium, tmp_path, capsys):
    base = {"ramp_up": {m: 0.2 for m in PHYSICS}}
    ours = {"ramp_up": {**{m: 0.1 for m in PHYSICS}, "iou": 0.3}}
    for name, per in (("sft", base), ("ours", ours)):
        write_run(tmp_path / name, run_summary(name, per))
    code = cli_main(["eval", "compare", str(tmp_path / "sft"), str(tmp_path / "ours"), "--out", str(tmp_path / "cmp")])
    printed = capsys.readouterr().out
    assert code == 0 and "+50.0%" in printed.splitlines()[3]  # ramp_up: four errors halved, IoU +50%
    page = browser.check_page(tmp_path / "cmp" / "compare.html")
    assert page.errors == [] and set(report.COMPARE_SECTIONS) <= set(page.ids) and page.sections["chart"]["svgs"] == 1
    assert page.sections["coverage"]["text"] > 0
    rows = (tmp_path / "cmp" / "compare.csv").read_text().splitlines()
    assert rows[0] == "run,primitive,metric,value,change" and any(
        r.startswith("ours,ramp_up,mean_change,,0.5") for r in rows
    )
    assert cli_main(["eval", "compare", str(tmp_path / "nothing")]) == 2
    assert "no evaluation summary" in capsys.readouterr().err


def test_compare_uses_the_clips_every_run_scored_and_prints_each_runs_coverage(tmp_path, capsys):
    """Run B fails (or has no video for) the two hard clips that run A scored badly, and is a little worse than A on
    the two it kept: averaged over its own clips it would look far better; compared on the clips both scored it is
    worse, and the table shows each run's scored / failed / missing clips and lost / fallback frame shares."""
    ids = [f"test-ramp_up-00000{i}" for i in range(4)]
    easy, hard = {m: 0.1 for m in PHYSICS}, {m: 0.5 for m in PHYSICS}
    easy["iou"], hard["iou"] = 0.8, 0.2
    a_rows = [{"clip_id": c, "primitive": "ramp_up", **(easy if i < 2 else hard), "lost_fraction": 0.25 * (i >= 2),
               "fallback_frames": 0} for i, c in enumerate(ids)]  # fmt: skip
    worse = {**{m: 0.12 for m in PHYSICS}, "iou": 0.75}
    b_rows = [{"clip_id": c, "primitive": "ramp_up", **worse, "lost_fraction": 0.0, "fallback_frames": 2}
              for c in ids[:2]]  # fmt: skip
    b_rows.append({"clip_id": ids[2], "primitive": "ramp_up", "error": "no visible object"})
    write_run(tmp_path / "a", run_of("a", a_rows))
    write_run(tmp_path / "b", run_of("b", b_rows, missing=[(ids[3], "ramp_up")]))

    result = compare.compare([compare.load_run(tmp_path / "a"), compare.load_run(tmp_path / "b")])
    assert result["common"] == {"ramp_up": 2, "all": 2} and result["clips"]["all"] == 4
    assert result["metrics"]["a"]["all"]["l2"] == {"value": pytest.approx(0.1), "change": 0.0, "n": 2}
    assert result["metrics"]["b"]["all"]["l2"]["change"] == pytest.approx(-0.2)  # 0.12 against A's 0.1 there
    assert result["mean"]["b"]["ramp_up"] == pytest.approx((4 * -0.2 - 0.0625) / 5)  # worse on the same clips
    # (averaged over its own clips it was 0.12 against A's 0.3: "+60%" on the errors)
    cov_a, cov_b = result["coverage"]["a"]["all"], result["coverage"]["b"]["all"]
    assert (cov_a["scored"], cov_a["failed"], cov_a["missing"]) == (4, 0, 0)
    assert (cov_b["scored"], cov_b["failed"], cov_b["missing"]) == (2, 1, 1)
    assert cov_a["lost_frame_share"] == pytest.approx(0.125) and cov_b["fallback_frame_share"] == pytest.approx(0.25)

    assert cli_main(["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "c")]) == 0
    printed = capsys.readouterr().out
    assert "on the clips every run scored" in printed
    lines = printed.splitlines()
    assert any(line.split() == ["all", "2", "of", "4", "+0.0%", "-17.2%"] for line in lines), printed
    assert any(line.split() == ["all", "4/0/0", "2/1/1"] for line in lines), printed
    assert any(line.split() == ["lost", "frames", "12.5%", "0.0%"] for line in lines), printed
    assert any(line.split() == ["fallback", "frames", "0.0%", "25.0%"] for line in lines), printed
    saved = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert saved["coverage"]["b"]["all"]["failed"] == 1 and saved["common"]["all"] == 2
    csv_rows = (tmp_path / "c" / "compare.csv").read_text().splitlines()
    assert "b,all,coverage_failed,1," in csv_rows and "b,all,compared_clips,2," in csv_rows

    # compare.html: the compared clips beside the headline numbers, and each run's coverage (frame shares in %)
    page = (tmp_path / "c" / "compare.html").read_text()
    assert html_tables(page, "overview")[""][1:] == [["ramp_up", "2 of 4", "+0.0%", "-17.2%"],
                                                     ["all", "2 of 4", "+0.0%", "-17.2%"]]  # fmt: skip
    coverage = html_tables(page, "coverage")
    assert list(coverage) == ["a", "b"]
    assert coverage["a"][1:] == [["ramp_up", "4", "4", "0", "0", "12.5", "0"], ["all", "4", "4", "0", "0", "12.5", "0"]]
    assert coverage["b"][1:] == [["ramp_up", "4", "2", "1", "1", "0", "25.0"], ["all", "4", "2", "1", "1", "0", "25.0"]]
    assert coverage["b"][0] == ["primitive", "clips", "scored", "failed", "missing no video", "lost frames %",
                                "fallback frames %"]  # fmt: skip


def test_compare_refuses_a_run_without_its_clip_rows_or_coverage(tmp_path):
    run = run_summary("a", {"ramp_up": {m: 0.1 for m in PHYSICS}})
    write_run(tmp_path / "a", run)
    (tmp_path / "a" / "results.jsonl").unlink()
    with pytest.raises(UserError, match=r"results.jsonl: missing; compare averages each run over the clips every"):
        compare.load_run(tmp_path / "a")
    (tmp_path / "a" / "summary.json").write_text(json.dumps({"split": "test", "stats": run["stats"]}))
    with pytest.raises(UserError, match=r"summary.json: no coverage .* rerun the same `newtonrewards eval"):
        compare.load_run(tmp_path / "a")


def test_the_page_checker_catches_script_errors_console_errors_and_broken_images(chromium, tmp_path):
    good = report._page(
        "ok",
        [
            ("a", "A", report.bar_chart_svg(["free_fall", "ramp_up"], [("l2", [0.1, -0.05], None, None)], "t")),
            ("b", "B", f'<img alt="x" src="{report.png_base64(np.zeros((4, 4, 3), np.uint8))}">'),
        ],
    )
    (tmp_path / "good.html").write_text(good)
    page = browser.check_page(tmp_path / "good.html")
    assert page.errors == [] and page.broken_images == [] and page.sections["a"]["svgs"] == 1 and page.images == 1
    broken = good.replace(
        "</body>",
        '<img alt="broken" src="data:image/png;base64,AAAA"><script>console.error("boom");'
        "missingFunction();</script></body>",
    )
    (tmp_path / "broken.html").write_text(broken)
    page = browser.check_page(tmp_path / "broken.html")
    assert page.broken_images == ["broken"]
    assert any("boom" in e for e in page.errors) and any("missingFunction" in e for e in page.errors)


def test_a_page_that_does_not_load_is_an_error(chromium, tmp_path, monkeypatch):
    with pytest.raises(UserError, match="no such page"):
        browser.check_page(tmp_path / "absent.html")
    monkeypatch.setattr(browser.Path, "is_file", lambda self: True)  # it vanished between the check and the load
    assert browser.check_page(tmp_path / "absent.html").errors == ["navigation: net::ERR_FILE_NOT_FOUND"]


def test_a_missing_chromium_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(browser.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="apt-get install -y chromium"):
        browser.find_chromium()


def test_browser_tests_skip_without_a_browser_and_fail_instead_when_one_is_required(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no browser on this PATH, whatever the machine has installed
    monkeypatch.delenv(REQUIRE_BROWSER, raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"no headless browser: .*apt-get install -y chromium"):
        require_browser()
    monkeypatch.setenv(REQUIRE_BROWSER, "1")
    with pytest.raises(pytest.fail.Exception, match=r"chromium: not found on PATH.*NR_REQUIRE_BROWSER=1"):
        require_browser()
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert require_browser() == str(fake)
    monkeypatch.setenv(REQUIRE_BROWSER, "0")
    assert require_browser() == str(fake)


def test_metrics_read_with_their_unit_and_three_significant_digits():
    diag = 500.0  # a 400x300 benchmark
    assert report.format_metric("l2", 0.01, diag) == "5.00 px (1.00% of diag)"
    assert report.format_metric("l2", 0.01) == "1.00% of diag"  # resolution unknown: no pixels
    assert report.format_metric("chamfer", 0.0002088, math.hypot(256, 256)) == "0.0756 px (0.0209% of diag)"
    assert report.format_metric("acceleration_rmse", 1.23456) == "1.23 px/frame\u00b2"
    assert report.format_metric("velocity_rmse", 0.0) == "0 px/frame"
    assert report.format_metric("psnr", 100.0) == "100 dB" and report.format_metric("psnr", 31.94) == "31.9 dB"
    assert report.format_metric("iou", 0.91234) == "0.912" and report.format_metric("iou", 1.0) == "1.00"
    assert report.format_metric("lost_fraction", 0.25) == "25.0%" and report.format_metric("iou", None) == "-"
    assert report.format_metric("flicker", 1234.4) == "1234 grey levels"
    assert report.number(2.5e-6) == "2.50e-06" and report.number(-0.5) == "-0.500" and report.number(None) == "-"
    s = {"mean": 0.01, "std": 0.002, "ci_low": 0.008, "ci_high": 0.012, "n": 4}
    assert report.format_stats("l2", s, diag) == (  # in px (the column header says so), then in % of the diagonal
        "5.00 &plusmn; 1.0<br><small>= 1.00 &plusmn; 0.20% of diag</small><br><small>[4.00, 6.00] n=4</small>"
    )
    assert report.format_stats("psnr", {"mean": 30.0, "std": None, "ci_low": None, "ci_high": None, "n": 1}) == (
        "30.0<br><small>n=1</small>"
    )
    assert [report.unit_of(m, diag) for m in ("l2", "iou", "psnr", "lost_fraction")] == ["px", "", "dB", "%"]
    assert report.unit_of("l2") == "% of diag"


def test_the_run_report_shows_l2_in_pixels_at_the_benchmark_resolution():
    stats = {m: {"mean": 0.01, "std": 0.0, "ci_low": 0.01, "ci_high": 0.01, "n": 1} for m in PHYSICS}
    summary = {"stats": {"free_fall": stats, "all": stats}, "metrics": list(PHYSICS), "bench": "b", "split": "test",
               "videos": "v", "tracker": "embedded", "scored": 1, "failed": 0, "missing": [], "unmatched_files": [],
               "units": {}, "errors": [], "warnings": [], "config": {}}  # fmt: skip
    rows = [{"clip_id": "c", "primitive": "free_fall", **{m: 0.01 for m in PHYSICS}}]
    page = report.render_run_report(summary, rows, {"c": (None, 400, 300)}, lambda clip_id: {})
    assert "<td>5.00 &plusmn; 0<br><small>= 1.00 &plusmn; 0% of diag</small>" in page  # per primitive
    assert "l2 &darr;<br><small>px</small>" in page and "in pixels at the benchmark's 400x300" in page
    assert "l2 per primitive (px, 95% CI)" in page and "l2<br><small>px</small>" in page and "<td>5.00</td>" in page


def test_bar_chart_scales_bars_to_values():
    svg = report.bar_chart_svg(["a", "b"], [("s", [1.0, 0.5], [0.9, 0.4], [1.1, 0.6])], "t", width=200, height=140)
    heights = [float(h) for h in __import__("re").findall(r'<rect [^>]*height="([\d.]+)"', svg)]
    assert len(heights) == 2 and heights[0] == pytest.approx(2 * heights[1], rel=0.02)
    assert svg.count("<line") >= 2 + 5  # two whiskers, grid lines


def test_conform_resamples_frame_rates_holds_short_clips_and_resizes_only_the_same_aspect_ratio():
    frames = np.arange(16, dtype=np.uint8)[:, None, None, None] * np.ones((1, 32, 32, 3), np.uint8)
    out, warnings = conform(frames, 32.0, JOB)  # 32 fps -> 16 fps, 64x64
    assert out.shape == (8, 64, 64, 3) and list(out[:, 0, 0, 0]) == [0, 2, 4, 6, 8, 10, 12, 14]
    assert any("resampled from 32 fps" in w for w in warnings) and any("resized from 32x32" in w for w in warnings)
    out, warnings = conform(frames[:5, :, :, :].repeat(2, 1).repeat(2, 2), 16.0, JOB)
    assert list(out[:, 0, 0, 0]) == [0, 1, 2, 3, 4, 4, 4, 4] and any("last frame is held" in w for w in warnings)
    with pytest.raises(UserError, match="aspect ratio"):
        conform(np.zeros((8, 32, 48, 3), np.uint8), 16.0, JOB)
    same, warnings = conform(np.zeros((8, 64, 64, 3), np.uint8), 16.0, JOB)
    assert same.shape == (8, 64, 64, 3) and warnings == []


def test_extremes_never_show_a_clip_twice():
    rows = [{"clip_id": str(i), "l2": float(i)} for i in range(4)] + [{"clip_id": "x", "error": "bad"}]
    worst, best = report.select_extremes(rows, count=3)
    assert [r["clip_id"] for r in worst] == ["3", "2", "1"] and [r["clip_id"] for r in best] == ["0"]
    assert math.isclose(
        report.colourise(np.array([[0.0, 2.0]]), 1.0)[0, 1].sum(), report.colourise(np.array([[1.0]]), 1.0).sum()
    )
