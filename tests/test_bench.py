"""`fastloss bench`: runs, writes every figure, agrees within the documented tolerances.

No timing assertions: the figures are checked for presence, type and consistency only, and the
table's marks are checked on synthetic timings."""
import json
import os
import re
import subprocess
import sys
import sysconfig

import numpy as np
import pytest

from fastloss import bench
from fastloss._validate import MAX_THREADS

HERE = os.path.dirname(__file__)
ROW_FIELDS = {"loss": str, "function": str, "n": int, "dtype": str, "threads": int,
              "implementation": str, "median_s": float, "min_s": float,
              "elements_per_s": float, "input_gb_per_s": float, "percent_of_floor": float,
              "floor_s": float, "input_bytes": int, "peak_extra_bytes": int,
              "mean_abs_diff": float, "mean_rel_diff": float}
PROGRESS = re.compile(r"^\[(\d+)/(\d+)\] (\S.*) n=(\S+) (float32|float64) (\d+) threads? \.\.\.$")


def _bench(*args, code=None, stderr=subprocess.PIPE, env=None):
    cmd = [sys.executable, "-m", "fastloss", "bench", *args] if code is None \
        else [sys.executable, "-c", code]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=HERE,
                          timeout=600, env=env)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    paths = {k: str(out / f"report.{k}") for k in ("json", "md", "png")}
    result = _bench("--quick", "--sizes", "3e4", "--threads", "1,2", "--repeat", "2",
                    "--json", paths["json"], "--markdown", paths["md"], "--plot", paths["png"])
    assert result.returncode == 0, result.stderr[-3000:]
    with open(paths["json"]) as f:
        return result, json.load(f), paths


def test_report_holds_every_figure(quick):
    _, report, _ = quick
    assert report["simd_path"] in ("scalar", "avx2", "avx512")
    assert {c.name for c in bench.CASES} == {r["loss"] for r in report["results"]}
    l3 = report["machine"]["l3_cache_bytes"]
    assert l3 is None or (isinstance(l3, int) and l3 > 0)
    for row in report["results"]:
        for name, kind in ROW_FIELDS.items():
            assert isinstance(row[name], kind), (name, row)
        assert row["median_s"] >= row["min_s"] > 0 and row["floor_s"] > 0
        assert row["elements_per_s"] == pytest.approx(row["n"] / row["median_s"])
        assert row["percent_of_floor"] == pytest.approx(100 * row["floor_s"] / row["median_s"])
        assert row["floor_in_cache"] == (None if l3 is None else row["input_bytes"] <= l3)
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


def test_jax_runs_every_case_and_computes_the_same_loss(quick):
    """jax.jit of optax (or jax.numpy) is a competitor of every case; its mean agrees with the
    float64 reference, so the rows time the right loss."""
    import jax
    import optax
    _, report, _ = quick
    assert report["machine"]["jax"] == jax.__version__
    assert report["machine"]["optax"] == optax.__version__
    assert report["not_applicable"] == []
    jax_rows = {(r["loss"], r["n"], r["threads"]): r for r in report["results"]
                if r["implementation"] == "jax"}
    ours = {(r["loss"], r["n"], r["threads"]) for r in report["results"]
            if r["implementation"] == "fastloss"}
    assert set(jax_rows) == ours
    for row in jax_rows.values():
        assert row["mean_rel_diff"] < 1e-5, row


def test_jax_float64_computes_in_float64(tmp_path):
    import jax  # noqa: F401  (the test needs it)
    path = tmp_path / "r.json"
    result = _bench("--sizes", "1e3", "--threads", "1", "--repeat", "1", "--dtype", "float64",
                    "--against", "jax", "--loss", "binary_cross_entropy,cross_entropy",
                    "--quiet", "--json", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    with open(path) as f:
        rows = json.load(f)["results"]
    jax_rows = [r for r in rows if r["implementation"] == "jax"]
    assert len(jax_rows) == 5 and all(r["dtype"] == "float64" for r in jax_rows)
    for row in jax_rows:  # float32 arithmetic would be off by about 1e-7
        assert row["mean_rel_diff"] < 1e-12 and row["none_rel_diff"] < 1e-12, row


def test_jax_cases_it_cannot_run_are_reported_not_applicable(tmp_path):
    """float64 without jax_enable_x64, and an optax without sigmoid_focal_loss: "n/a" rows."""
    import optax  # noqa: F401  (the test needs it)
    path = tmp_path / "r.json"
    code = ("import jax, optax\n"
            "jax.config.update = lambda *a: None\n"
            "del optax.sigmoid_focal_loss\n"
            "from fastloss.__main__ import main\n"
            "main(['bench', '--sizes', '1e3', '--threads', '1', '--repeat', '1', '--quiet', "
            "'--dtype', 'float32,float64', '--against', 'jax', "
            "'--loss', 'binary_cross_entropy,sigmoid_focal_loss[gamma=2]', "
            f"'--json', {str(path)!r}])")
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    result = _bench(code=code, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(path) as f:
        report = json.load(f)
    na = {(r["loss"], r["dtype"]): r["reason"] for r in report["not_applicable"]}
    assert na == {("binary_cross_entropy", "float64"): "float64 needs jax_enable_x64",
                  ("sigmoid_focal_loss[gamma=2]", "float64"): "float64 needs jax_enable_x64",
                  ("sigmoid_focal_loss[gamma=2]", "float32"):
                      "this optax has no sigmoid_focal_loss"}
    assert [(r["loss"], r["dtype"]) for r in report["results"] if r["implementation"] == "jax"
            ] == [("binary_cross_entropy", "float32")]
    na_lines = [line for line in result.stdout.splitlines() if " jax " in line and "n/a" in line]
    assert len(na_lines) == 3 and "n/a: float64 needs jax_enable_x64" in na_lines[0]


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
    table = lines[1:1 + len(report["results"])]
    assert table == [bench._table_line(r) for r in report["results"]]
    assert lines[1 + len(report["results"]):] == bench.legend(report)
    with open(paths["md"]) as f:
        md = f.read().splitlines()
    assert md[0].startswith("| loss | n |")
    assert len(md) == 2 + len(report["results"]) + 1 + len(bench.legend(report))
    with open(paths["png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(paths["png"]) > 20_000


def test_progress_on_stderr_one_line_per_case(quick):
    result, report, _ = quick
    progress = [PROGRESS.match(line) for line in result.stderr.splitlines()]
    progress = [m.groups() for m in progress if m]
    jobs = len(bench.CASES) * 2  # one size, two thread counts
    assert [(int(k), int(total)) for k, total, *_ in progress] == [
        (k, jobs) for k in range(1, jobs + 1)]
    fastloss_rows = [r for r in report["results"] if r["implementation"] == "fastloss"]
    assert [(name, float(n), int(threads)) for _, _, name, n, _, threads in progress] == [
        (r["loss"], pytest.approx(r["n"], rel=0.5), r["threads"]) for r in fastloss_rows]
    assert not any(PROGRESS.match(line) for line in result.stdout.splitlines())


def test_rows_are_printed_as_they_are_measured():
    """With stdout and stderr in one pipe, each case's rows follow its progress line, before the
    next case's: nothing waits for the end of the run."""
    result = _bench("--sizes", "1e3,2e3", "--threads", "1", "--repeat", "1", "--against",
                    "numpy", "--loss", "binary_cross_entropy", stderr=subprocess.STDOUT)
    assert result.returncode == 0, result.stdout[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["loss", "n"]
    assert PROGRESS.match(lines[1]).group(1, 2) == ("1", "2")
    assert [line.split()[4] for line in lines[2:4]] == ["fastloss", "numpy"]
    assert lines[2].split()[1] == lines[3].split()[1] == "1e+03"
    assert PROGRESS.match(lines[4]).group(1, 2) == ("2", "2")
    assert [line.split()[4] for line in lines[5:7]] == ["fastloss", "numpy"]
    assert lines[5].split()[1] == "2e+03"


def test_quiet_prints_no_progress():
    result = _bench("--sizes", "1e3", "--threads", "1", "--repeat", "1", "--against", "numpy",
                    "--loss", "binary_cross_entropy", "--quiet")
    assert result.returncode == 0 and result.stderr == ""
    assert len(result.stdout.splitlines()) == 3 + len(bench.legend(
        {"fastloss": "", "simd_path": "", "repeat": 1, "machine": {"l3_cache_bytes": None}}))


def test_missing_competitor_is_reported_not_fatal(tmp_path):
    path = tmp_path / "r.json"
    code = ("import sys; sys.modules['sklearn'] = None; sys.modules['optax'] = None\n"
            "from fastloss.__main__ import main\n"
            f"main(['bench', '--quick', '--sizes', '1e3', '--threads', '1', '--quiet', "
            f"'--loss', 'binary_cross_entropy', '--json', {str(path)!r}])")
    result = _bench(code=code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sklearn: not installed" in result.stdout
    assert "jax: not installed (needs jax and optax)" in result.stdout
    with open(path) as f:
        report = json.load(f)
    assert report["not_installed"] == ["jax", "sklearn"]
    assert {r["implementation"] for r in report["results"]} == {"fastloss", "numpy", "torch"}


# ---- options: refused before anything is measured ----

@pytest.mark.parametrize("args,message", [
    (["--loss", "hinge"], "unknown loss 'hinge'"),
    (["--dtype", "float16"], "argument --dtype: takes float32, float64; got 'float16'"),
    (["--against", "numba"], "argument --against: takes numpy, torch, sklearn, jax; got 'numba'"),
    (["--sizes", "abc"], "argument --sizes: sizes are whole element counts"),
    (["--sizes", "inf"], "got 'inf'"),
    (["--sizes", "nan"], "got 'nan'"),
    (["--sizes", "1e3,0"], "got '0'"),
    (["--sizes=-5"], "got '-5'"),
    (["--sizes", "2.5"], "got '2.5'"),
    (["--threads", "x"], "argument --threads: thread counts are whole numbers from 1 to"),
    (["--threads", "0"], "got '0'"),
    (["--threads", str(MAX_THREADS + 1)], f"from 1 to {MAX_THREADS}; got '{MAX_THREADS + 1}'"),
    (["--threads", "2000"], "got '2000'"),
    (["--repeat", "0"], "argument --repeat: takes a whole number of at least 1; got '0'"),
    (["--repeat", "x"], "got 'x'"),
    (["--json", "/nonexistent-dir/x.json"], "--json /nonexistent-dir/x.json: directory "),
    (["--markdown", "/nonexistent-dir/x.md"], "--markdown /nonexistent-dir/x.md: directory "),
    (["--plot", "/nonexistent-dir/x.png"], "--plot /nonexistent-dir/x.png: directory "),
    (["--json", "."], "--json .: is a directory"),
])
def test_bad_options_are_refused_before_measuring(monkeypatch, capsys, args, message):
    def no_run(*a, **k):
        raise AssertionError("measured before checking the options")
    monkeypatch.setattr(bench, "run", no_run)
    with pytest.raises(SystemExit) as exit_:
        bench.main(args)
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and out == ""
    assert err.splitlines()[-1].startswith("fastloss bench: error: ")
    assert message in err.splitlines()[-1]


def test_bad_option_from_the_command_line():
    result = _bench("--sizes", "abc", "--json", "/nonexistent-dir/x.json")
    assert result.returncode == 2 and result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("fastloss bench: error: argument --sizes")


def test_help_says_jax_threads_are_not_controlled(capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 0
    assert "jax (XLA) runs on its own thread pool, which cannot be set to this count" in help_text


# ---- the table's marks, on synthetic timings ----

def _row(median_s, floor_s, in_cache, speedup=None, implementation="numpy"):
    row = {"loss": "binary_cross_entropy", "function": "binary_cross_entropy", "n": 10**8,
           "dtype": "float32", "threads": 1, "implementation": implementation,
           "median_s": median_s, "floor_s": floor_s, "percent_of_floor": 100 * floor_s / median_s,
           "floor_in_cache": in_cache, "input_gb_per_s": 8e8 / median_s / 1e9,
           "mean_rel_diff": 1e-8, "peak_extra_bytes": 0}
    if speedup is not None:
        row["fastloss_speedup"] = speedup
    return row


def _cell(row, title):
    titles = [t for _, t, _, _ in bench.COLUMNS]
    return bench._cells(row)[titles.index(title)].strip()


@pytest.mark.parametrize("median_s,floor_s,in_cache,shown", [
    (0.1, 0.1, False, "100"),      # as fast as a read from memory
    (0.2, 0.1, False, "50"),
    (0.3, 0.1, None, "33"),        # L3 size unknown: the figure, the legend says so
    (0.1, 0.2, False, "200"),      # faster than the read (noise): shown as measured
    (0.1, 0.2, True, "(cache)"),   # in cache the read is no memory limit
    (0.01, 0.001, True, "(cache)"),
])
def test_floor_cell(median_s, floor_s, in_cache, shown):
    assert _cell(_row(median_s, floor_s, in_cache), "%floor") == shown


@pytest.mark.parametrize("speedup,shown", [
    (None, "-"), (3.04, "3.0"), (1.0, "1.0"), (0.994, "0.99 SLOWER"), (0.25, "0.25 SLOWER")])
def test_speedup_cell_marks_where_fastloss_is_slower(speedup, shown):
    row = _row(0.1, 0.05, False, speedup, "fastloss" if speedup is None else "torch")
    assert _cell(row, "fastloss x") == shown


def test_table_line_and_markdown_of_synthetic_rows():
    rows = [_row(0.4, 0.1, False, None, "fastloss"), _row(0.2, 0.1, False, 0.5, "jax"),
            _row(0.8, 0.1, True, 2.0, "torch")]
    header_cells = bench._header().split()
    assert header_cells[:2] == ["loss", "n"] and "%floor" in header_cells
    lines = [bench._table_line(r) for r in rows]
    assert len({len(line) for line in lines} | {len(bench._header())}) == 1  # aligned
    assert "SLOWER" in lines[1] and "SLOWER" not in lines[0] + lines[2]
    assert " 25 " in lines[0] and " 50 " in lines[1] and "(cache)" in lines[2]
    report = {"fastloss": "0", "simd_path": "avx512", "repeat": 5, "results": rows,
              "machine": {"l3_cache_bytes": 32 << 20}}
    md = bench.markdown(report).splitlines()
    assert md[2].split(" | ")[8:10] == ["25", "-"]
    assert md[3].split(" | ")[8:10] == ["50", "0.50 SLOWER"]
    assert md[4].split(" | ")[8:10] == ["(cache)", "2.0"]
    legend = " ".join(bench.legend(report))
    assert "32 MiB L3 cache" in legend and "'(cache)'" in legend and "SLOWER" in legend
    unknown = " ".join(bench.legend(dict(report, machine={"l3_cache_bytes": None})))
    assert "L3 cache size is unknown" in unknown


def test_not_applicable_line():
    line = bench._not_applicable_line(_row(1, 1, False, implementation="jax"), "why")
    assert line.split()[:5] == ["binary_cross_entropy", "1e+08", "float32", "1", "jax"]
    assert line.endswith(" n/a: why")


def test_console_script():
    script = os.path.join(sysconfig.get_path("scripts"), "fastloss")
    result = subprocess.run([script, "bench", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "--quick" in result.stdout


def test_floor_reads_the_buffers_each_implementation_reads_on_as_many_threads(monkeypatch):
    """The read floor runs on the job's thread count, over the case's arrays (shared by NumPy,
    torch and fastloss) and over jax's own copies for the jax row; each read is warmed up and
    repeated like the implementation's calls."""
    import jax  # noqa: F401  (the test needs it)
    reads, made, prepared = [], [], []
    read_words, make_jax = bench._kernels.read_words, bench.PREPARE_INPUTS["jax"]
    case = next(c for c in bench.CASES if c.name == "binary_cross_entropy")
    make = case.make

    def spy_read(a, n_threads):
        reads.append((a.__array_interface__["data"][0], n_threads))
        return read_words(a, n_threads)

    def spy_make(*args):
        made.append(make(*args))
        return made[-1]

    def spy_jax(*args):
        prepared.append(make_jax(*args))
        return prepared[-1]

    monkeypatch.setattr(bench._kernels, "read_words", spy_read)
    monkeypatch.setattr(case, "make", spy_make)
    monkeypatch.setitem(bench.PREPARE_INPUTS, "jax", spy_jax)
    report = bench.run(["binary_cross_entropy"], [1000], ["float32"], [2], repeat=3,
                       against=["numpy", "jax"], out=lambda line: None)
    assert [r["implementation"] for r in report["results"]] == ["fastloss", "numpy", "jax"]
    (data,), (jax_data,) = made, prepared
    shared = [(v.__array_interface__["data"][0], 2) for v in (data["input"], data["target"])]
    jax_own = [(np.asarray(v).__array_interface__["data"][0], 2)
               for v in (jax_data["input"], jax_data["target"])]
    assert not set(shared) & set(jax_own)
    # fastloss and NumPy read the shared arrays, jax its copies: a warm-up and 3 repeats each
    assert reads == shared * 4 + shared * 4 + jax_own * 4
