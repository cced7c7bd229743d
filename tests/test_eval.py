"""`fastloss eval`: files read in batches give the in-memory statistics; every bad file or
option gives one line on stderr and exit status 1."""
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from fastloss import StreamingLoss
from fastloss.evaluate import main


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((30_011, 3)) * 3).astype(np.float32)
    y = (rng.random(x.shape) < 0.3).astype(np.uint8)
    w = rng.random(x.shape[0]).astype(np.float32)
    for name, a in (("x", x), ("y", y), ("w", w)):
        np.save(tmp_path / f"{name}.npy", a)
    return tmp_path, x, y, w


def test_batches_of_a_memory_mapped_file_give_the_in_memory_statistics(data, capsys):
    d, x, y, w = data
    code, out, err = run(capsys, "binary_cross_entropy_with_logits", "--input", d / "x.npy",
                         "--target", d / "y.npy", "--weight", d / "w.npy",
                         "--param", "pos_weight=[1, 2.5, 4]", "--batch-size", 1000,
                         "--json", d / "out.json")
    assert (code, err) == (0, "")
    expected = StreamingLoss("binary_cross_entropy_with_logits", bins="log",
                             pos_weight=[1, 2.5, 4]).update(x, y, w[:, None])
    got = json.loads((d / "out.json").read_text())
    assert set(got) >= {"loss", "mean", "sum", "count", "weight_sum", "min", "max",
                        "histogram"}
    assert got["loss"] == "binary_cross_entropy_with_logits"
    assert got["mean"] == pytest.approx(expected.mean, rel=1e-12)
    assert got["sum"] == pytest.approx(expected.sum, rel=1e-12)
    assert got["weight_sum"] == pytest.approx(expected.weight_sum, rel=1e-12)
    assert (got["count"], got["min"], got["max"]) == (expected.count, expected.min,
                                                      expected.max)
    assert got["histogram"]["counts"] == expected.histogram[0].tolist()
    assert got["histogram"]["edges"] == expected.histogram[1].tolist()
    assert f"mean       {expected.mean:.9g}" in out
    assert "histogram (fraction of examples):" in out and "#" in out


def test_npz_members_stored_and_compressed(data, capsys):
    d, x, y, _ = data
    np.savez(d / "s.npz", logits=x, labels=y)
    np.savez_compressed(d / "c.npz", logits=x, labels=y)
    np.savez(d / "one.npz", x)
    expected = StreamingLoss("sigmoid_focal_loss", bins=20, range=(0, 2)).update(x, y)
    for xs, ys in ((f"{d}/s.npz:logits", f"{d}/s.npz:labels"),
                   (f"{d}/c.npz:logits", f"{d}/c.npz:labels"),
                   (d / "one.npz", d / "y.npy")):
        code, _, err = run(capsys, "sigmoid_focal_loss", "--input", xs, "--target", ys,
                           "--bins", "2e1", "--range", 0, 2, "--batch-size", 777,
                           "--json", d / "o.json")
        got = json.loads((d / "o.json").read_text())
        assert (code, err) == (0, "")
        assert got["mean"] == pytest.approx(expected.mean, rel=1e-12)
        assert got["histogram"]["counts"] == expected.histogram[0].tolist()


def test_cross_entropy_with_spatial_dims_class_weights_and_compare(tmp_path, capsys):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 4, 6)).astype(np.float32)
    t = rng.integers(0, 4, (500, 6))
    x2, t2 = x[:200] * 2, t[:200]
    cw = np.array([1.0, 2.0, 0.5, 1.0])
    for name, a in (("x", x), ("t", t), ("x2", x2), ("t2", t2), ("cw", cw)):
        np.save(tmp_path / f"{name}.npy", a)
    code, out, err = run(capsys, "cross_entropy", "--input", tmp_path / "x.npy", "--target",
                         tmp_path / "t.npy", "--param", f"weight={tmp_path / 'cw.npy'}",
                         "--compare", tmp_path / "x2.npy", tmp_path / "t2.npy",
                         "--batch-size", 100, "--json", tmp_path / "o.json",
                         "--hist", tmp_path / "h.png")
    assert (code, err) == (0, "")
    got = json.loads((tmp_path / "o.json").read_text())
    a = StreamingLoss("cross_entropy", bins="log", weight=cw).update(x, t)
    b = StreamingLoss("cross_entropy", bins="log", weight=cw).update(x2, t2)
    assert got["mean"] == pytest.approx(a.mean, rel=1e-12)
    assert got["compare"]["mean"] == pytest.approx(b.mean, rel=1e-12)
    assert got["compare"]["histogram"]["counts"] == b.histogram[0].tolist()
    assert out.count("cross_entropy of") == 2
    png = (tmp_path / "h.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    import matplotlib.image
    assert matplotlib.image.imread(tmp_path / "h.png").shape[:2] > (200, 300)


def test_fortran_ordered_files(data, capsys):
    d, x, y, _ = data
    np.save(d / "xf.npy", np.asfortranarray(x))
    code, _, err = run(capsys, "binary_cross_entropy_with_logits", "--input", d / "xf.npy",
                       "--target", d / "y.npy", "--batch-size", 999, "--json", d / "o.json")
    expected = StreamingLoss("binary_cross_entropy_with_logits", bins="log").update(x, y)
    got = json.loads((d / "o.json").read_text())
    assert (code, err) == (0, "")
    assert got["mean"] == pytest.approx(expected.mean, rel=1e-12)
    assert got["histogram"]["counts"] == expected.histogram[0].tolist()


def test_progress_reports_elements_per_second(data, capsys):
    d, *_ = data
    code, _, err = run(capsys, "binary_cross_entropy_with_logits", "--input", d / "x.npy",
                       "--target", d / "y.npy", "--batch-size", 10_000, "--progress")
    assert code == 0
    assert "100.0% 90,033/90,033 elements" in err and "elements/s" in err


def test_peak_memory_is_bounded_by_the_batch_not_the_file(tmp_path):
    n = 25_000_000  # 100 MB of float32 and 25 MB of labels
    x = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.float32, (n,))
    y = np.lib.format.open_memmap(tmp_path / "y.npy", "w+", np.uint8, (n,))
    rng = np.random.default_rng(2)
    for i in range(0, n, 5_000_000):
        x[i:i + 5_000_000] = rng.standard_normal(5_000_000, np.float32)
        y[i:i + 5_000_000] = rng.random(5_000_000) < 0.5
    x.flush()
    y.flush()
    del x, y
    script = ("import resource, sys\nfrom fastloss.evaluate import main\n"
              "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              "code = main(sys.argv[1:])\n"
              "print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, code)")
    out = subprocess.run([sys.executable, "-c", script, "binary_cross_entropy_with_logits",
                          "--input", tmp_path / "x.npy", "--target", tmp_path / "y.npy",
                          "--batch-size", "1000000"], capture_output=True, text=True,
                         check=True).stdout
    base_kb, peak_kb, code = map(int, out.split()[-3:])
    assert code == 0 and "count      25,000,000" in out
    assert (peak_kb - base_kb) * 1024 < 25e6  # batches of 5 MB; the files hold 125 MB


@pytest.mark.parametrize("case, message", [
    ("missing", "nope.npy: no such file"),
    ("target_shape", "bad.npy: has shape (100, 2); for "),
    ("lengths", "mismatched lengths: "),
    ("strings", "bad.npy: non-numeric dtype <U1"),
    ("objects", "bad.npy: non-numeric dtype object"),
    ("truncated", "bad.npy: truncated: its header promises 1,200 bytes of data, the file holds 600"),
    ("not_npy", "bad.npy: not a valid .npy array ("),
    ("compressed_corrupt", "c.npz:y: not a valid .npy array (Error -3 while decompressing"),
    ("compressed_corrupt_data", "c.npz:y: corrupt ("),
    ("member", "d.npz: has no array 'nope'; it has a"),
    ("members", "d.npz: holds 2 arrays (a, b): name one as"),
    ("scalar", "bad.npy: 0-d: it needs at least one dimension"),
    ("range", "bad.npy: rows 0 to 100: all elements of target should be between 0 and 1"),
    ("param", "binary_cross_entropy_with_logits takes no parameter gamma"),
    ("bins", "an int number of bins needs range=(lo, hi)"),
    ("bins_word", "--bins must be 'log', 'none' or a number of bins; got 'many'"),
    ("bins_fraction", "--bins must be 'log', 'none' or a number of bins; got '2.5'"),
    ("weight", "bad.npy: rows 0 to 100: all elements of weight should be finite and non-negative"),
    ("weight_shape", "bad.npy: has shape (100, 2); the weights must have the loss's shape (100, 3) or one per row (100,)"),
    ("classes", "x.npy: has shape (3,): cross_entropy reads rows of classes"),
    ("batch", "--batch-size must be a number from 1 up; got 0"),
    ("batch_inf", "--batch-size must be a number from 1 up; got inf"),
    ("batch_nan", "--batch-size must be a number from 1 up; got nan"),
])
def test_bad_files_and_options_give_one_line(tmp_path, capsys, case, message):
    x = np.zeros((100, 3), np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.zeros((100, 3), np.float32))
    args = ["binary_cross_entropy_with_logits", "--input", tmp_path / "x.npy", "--target",
            tmp_path / "y.npy"]
    bad = tmp_path / "bad.npy"
    target = lambda path: args.__setitem__(4, path)  # noqa: E731
    if case == "missing":
        target(tmp_path / "nope.npy")
    elif case == "target_shape":
        np.save(bad, np.zeros((100, 2), np.float32))
        target(bad)
    elif case == "lengths":
        np.save(bad, np.zeros((99, 3), np.float32))
        target(bad)
    elif case == "strings":
        np.save(bad, np.full((100, 3), "a"))
        target(bad)
    elif case == "objects":
        np.save(bad, np.empty((100, 3), object), allow_pickle=True)
        target(bad)
    elif case == "truncated":
        raw = (tmp_path / "y.npy").read_bytes()
        bad.write_bytes(raw[:len(raw) - 600])
        target(bad)
    elif case == "not_npy":
        bad.write_bytes(b"hello, this is not an array" * 10)
        target(bad)
    elif case == "compressed_corrupt":
        np.savez_compressed(tmp_path / "c.npz", y=np.random.default_rng(0).random((100, 3)))
        raw = bytearray((tmp_path / "c.npz").read_bytes())
        raw[300:600] = np.random.default_rng(1).bytes(300)  # inside the compressed data
        (tmp_path / "c.npz").write_bytes(bytes(raw))
        target(f"{tmp_path / 'c.npz'}:y")
    elif case == "compressed_corrupt_data":
        big = np.random.default_rng(0).random((20_000, 3))
        np.save(tmp_path / "x.npy", big)
        np.savez_compressed(tmp_path / "c.npz", y=big)
        raw = bytearray((tmp_path / "c.npz").read_bytes())
        raw[len(raw) // 2:len(raw) // 2 + 300] = np.random.default_rng(1).bytes(300)
        (tmp_path / "c.npz").write_bytes(bytes(raw))
        target(f"{tmp_path / 'c.npz'}:y")
    elif case == "member":
        np.savez(tmp_path / "d.npz", a=x)
        target(f"{tmp_path / 'd.npz'}:nope")
    elif case == "members":
        np.savez(tmp_path / "d.npz", a=x, b=x)
        target(tmp_path / "d.npz")
    elif case == "scalar":
        np.save(bad, np.float32(1))
        target(bad)
    elif case == "range":
        np.save(bad, np.full((100, 3), 2.0, np.float32))
        target(bad)
    elif case == "param":
        args += ["--param", "gamma=2"]
    elif case == "bins":
        args += ["--bins", "10"]
    elif case == "bins_word":
        args += ["--bins", "many"]
    elif case == "bins_fraction":
        args += ["--bins", "2.5", "--range", "0", "1"]
    elif case == "weight":
        np.save(bad, -np.ones(100, np.float32))
        args += ["--weight", bad]
    elif case == "weight_shape":
        np.save(bad, np.ones((100, 2), np.float32))
        args += ["--weight", bad]
    elif case == "classes":
        np.save(tmp_path / "t.npy", np.zeros(3, np.int64))
        args = ["cross_entropy", "--input", tmp_path / "x.npy", "--target", tmp_path / "t.npy"]
        np.save(tmp_path / "x.npy", np.zeros(3, np.float32))
    elif case.startswith("batch"):
        args += ["--batch-size", {"batch": "0", "batch_inf": "inf", "batch_nan": "nan"}[case]]
    code, out, err = run(capsys, *args)
    assert code == 1 and out == ""
    assert err.startswith("fastloss eval: error: ") and err.count("\n") == 1, err
    assert message in err
    assert "Traceback" not in err


def test_bad_param_syntax_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["binary_cross_entropy", "--input", "x.npy", "--target", "y.npy", "--param",
              "gamma"])
    assert e.value.code == 2
    assert "expected NAME=VALUE" in capsys.readouterr().err


def test_the_console_command_runs(data):
    d, *_ = data
    out = subprocess.run([sys.executable, "-m", "fastloss", "eval",
                          "binary_cross_entropy_with_logits", "--input",
                          d / "x.npy", "--target", d / "y.npy"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.startswith("binary_cross_entropy_with_logits of ")
