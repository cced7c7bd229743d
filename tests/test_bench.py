"""`fastloss bench`: runs, writes every figure, agrees within the documented tolerances.

No timing assertions: the figures are checked for presence, type and consistency only."""
import json
import os
import subprocess
import sys
import sysconfig

import pytest

from fastloss import bench

HERE = os.path.dirname(__file__)
ROW_FIELDS = {"loss": str, "function": str, "n": int, "dtype": str, "threads": int,
              "implementation": str, "median_s": float, "min_s": float,
              "elements_per_s": float, "input_gb_per_s": float, "percent_of_floor": float,
              "floor_s": float, "input_bytes": int, "peak_extra_bytes": int,
              "mean_abs_diff": float, "mean_rel_diff": float}


def _bench(*args, code=None):
    cmd = [sys.executable, "-m", "fastloss", "bench", *args] if code is None \
        else [sys.executable, "-c", code]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=HERE, timeout=600)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    paths = {k: str(out / f"report.{k}") for k in ("json", "md", "png")}
    result = _bench("--quick", "--sizes", "1e3,3e4", "--threads", "1,2", "--quiet",
                    "--json", paths["json"], "--markdown", paths["md"], "--plot", paths["png"])
    assert result.returncode == 0, result.stderr[-3000:]
    with open(paths["json"]) as f:
        return result, json.load(f), paths


def test_report_holds_every_figure(quick):
    _, report, _ = quick
    assert report["simd_path"] in ("scalar", "avx2", "avx512")
    assert {c.name for c in bench.CASES} == {r["loss"] for r in report["results"]}
    for row in report["results"]:
        for name, kind in ROW_FIELDS.items():
            assert isinstance(row[name], kind), (name, row)
        assert row["median_s"] >= row["min_s"] > 0 and row["floor_s"] > 0
        assert row["elements_per_s"] == pytest.approx(row["n"] / row["median_s"])
        assert row["percent_of_floor"] == pytest.approx(100 * row["floor_s"] / row["median_s"])
        if row["implementation"] != "sklearn log_loss":  # log_loss has no per-element form
            assert isinstance(row["none_rel_diff"], float)


def test_fastloss_agrees_and_is_compared_with_every_competitor(quick):
    _, report, _ = quick
    rows = report["results"]
    for ours in (r for r in rows if r["implementation"] == "fastloss"):
        assert ours["agrees"], ours
        assert ours["mean_rel_diff"] <= ours["tolerance"]["rtol"] + ours["tolerance"]["atol"]
        theirs = [r for r in rows if r["loss"] == ours["loss"] and r["n"] == ours["n"]
                  and r["threads"] == ours["threads"] and r is not ours]
        assert set(ours["speedup"]) == {r["implementation"] for r in theirs}
        for r in theirs:
            assert r["fastloss_speedup"] == pytest.approx(r["median_s"] / ours["median_s"])


def test_fastloss_mean_reports_no_allocation_proportional_to_the_input(quick):
    """The report's memory figure; page-granular RSS noise of a few hundred KiB is allowed
    (tests/test_*_inputs check the allocations themselves, with tracemalloc)."""
    _, report, _ = quick
    for row in report["results"]:
        if row["implementation"] == "fastloss" and row["n"] >= 30_000:
            assert row["peak_extra_bytes"] < 512 * 1024 + row["input_bytes"] // 100, row


def test_table_markdown_and_plot(quick):
    result, report, paths = quick
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["loss", "n"]
    assert sum(" fastloss " in line for line in lines[1:]) == sum(
        r["implementation"] == "fastloss" for r in report["results"])
    with open(paths["md"]) as f:
        md = f.read().splitlines()
    assert md[0].startswith("| loss | n |") and len(md) == 2 + len(report["results"])
    with open(paths["png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(paths["png"]) > 20_000


def test_missing_competitor_is_reported_not_fatal(tmp_path):
    path = tmp_path / "r.json"
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "from fastloss.__main__ import main\n"
            f"main(['bench', '--quick', '--sizes', '1e3', '--threads', '1', '--quiet', "
            f"'--loss', 'binary_cross_entropy', '--json', {str(path)!r}])")
    result = _bench(code=code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sklearn: not installed" in result.stdout
    with open(path) as f:
        report = json.load(f)
    assert report["not_installed"] == ["sklearn"]
    assert {r["implementation"] for r in report["results"]} == {"fastloss", "numpy", "torch"}


@pytest.mark.parametrize("args,message", [
    (["--loss", "hinge"], "unknown loss 'hinge'"),
    (["--dtype", "float16"], "--dtype takes float32 and float64"),
    (["--against", "jax"], "--against takes numpy, torch, sklearn"),
    (["--threads", "0"], "--threads and --sizes take positive numbers"),
    (["--repeat", "0"], "--repeat takes a positive number"),
])
def test_bad_options(args, message):
    result = _bench(*args)
    assert result.returncode == 2 and message in result.stderr


def test_console_script():
    script = os.path.join(sysconfig.get_path("scripts"), "fastloss")
    result = subprocess.run([script, "bench", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "--quick" in result.stdout
