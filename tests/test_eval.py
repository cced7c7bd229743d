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


# ---- hardening: files that change, lie or are not files ----

def run_child(*args, script=None, timeout=60):
    """`fastloss eval` in a child process: (exit status, stdout, stderr); a signal shows as a
    negative status."""
    code = script or "import sys\nfrom fastloss.evaluate import main\nsys.exit(main(sys.argv[1:]))"
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                       text=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def one_line_error(code, err, *needles):
    assert code == 1, (code, err)
    assert err.startswith("fastloss eval: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err


TRUNCATE_DURING_A_BATCH = """
import os, sys
import fastloss.evaluate as ev
class Meter(ev.StreamingLoss):
    def update(self, *a, **k):
        # Truncated once the batch is read, before it is used (what np.save does to a file
        # being rewritten): a memory mapping of the batch would raise SIGBUS here.
        with open(sys.argv[1], "r+b") as f:
            f.truncate({size})
        super().update(*a, **k)
ev.StreamingLoss = Meter
sys.exit(ev.main(sys.argv[2:]))
"""


@pytest.mark.parametrize("size", [0, 4096])
def test_a_file_truncated_while_being_read_gives_one_line_not_sigbus(tmp_path, size):
    x = np.random.default_rng(3).standard_normal(400_000).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", (x > 0).astype(np.float32))
    code, out, err = run_child(tmp_path / "x.npy", "binary_cross_entropy_with_logits",
                               "--input", tmp_path / "x.npy", "--target", tmp_path / "y.npy",
                               "--batch-size", 100_000,
                               script=TRUNCATE_DURING_A_BATCH.format(size=size))
    one_line_error(code, err, "x.npy: changed while being read")


def test_a_file_rewritten_concurrently_never_kills_eval(tmp_path):
    """A child rewrites the input with np.save (truncate, then write) in a loop while eval
    reads it: every run ends with a result or one line and status 1, never a signal."""
    n = 2_000_000
    np.save(tmp_path / "x.npy", np.zeros(n, np.float32))
    np.save(tmp_path / "y.npy", np.zeros(n, np.float32))
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, numpy as np\nx = np.zeros(%d, np.float32)\n"
        "while True: np.save(sys.argv[1], x)") % n, tmp_path / "x.npy"])
    try:
        codes = []
        for _ in range(5):
            code, out, err = run_child("binary_cross_entropy_with_logits", "--input",
                                       tmp_path / "x.npy", "--target", tmp_path / "y.npy",
                                       "--batch-size", 50_000, "--bins", "none")
            codes.append(code)
            if code:
                one_line_error(code, err, "x.npy: ")
            else:
                assert "count      2,000,000" in out
    finally:
        writer.kill()
        writer.wait()
    assert all(c in (0, 1) for c in codes), codes


def npy_header(shape, descr="<f4", fortran=False):
    text = f"{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape!r}, }}".encode()
    text += b" " * (63 - (10 + len(text)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text


@pytest.mark.parametrize("shape", [(2**62, 0), (0, 2**62), (2**40, 0, 7), (0,)])
def test_empty_arrays_finish_at_once_whatever_their_header_says(tmp_path, shape):
    for name in ("x", "y"):
        (tmp_path / f"{name}.npy").write_bytes(npy_header(shape))
    code, out, err = run_child("binary_cross_entropy_with_logits", "--input",
                               tmp_path / "x.npy", "--target", tmp_path / "y.npy",
                               "--batch-size", 1000, timeout=30)
    assert (code, err) == (0, "")
    assert "count      0\n" in out


def test_rows_longer_than_a_batch_are_read_in_pieces(tmp_path, capsys):
    """Pieces of a row keep whole blocks of the dimensions pos_weight varies over, and the
    per-row or per-element weights that go with them."""
    from reference import bce_with_logits
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 7, 5, 4))  # float64: computed in float64, to 1e-12
    y = rng.random(x.shape)
    pw = rng.random((5, 1)) * 3
    for name, w in (("row", rng.random(3)), ("element", rng.random(x.shape))):
        for a, b in (("x", x), ("y", y), ("w", w)):
            np.save(tmp_path / f"{a}.npy", b)
        for batch in (1, 13, 41, 139, 140):
            code, _, err = run(capsys, "binary_cross_entropy_with_logits", "--input",
                               tmp_path / "x.npy", "--target", tmp_path / "y.npy", "--weight",
                               tmp_path / "w.npy", "--param", f"pos_weight={pw.tolist()}",
                               "--batch-size", batch, "--json", tmp_path / "o.json")
            assert (code, err) == (0, "")
            got = json.loads((tmp_path / "o.json").read_text())
            loss = bce_with_logits(x, y, w.reshape(w.shape + (1,) * (4 - w.ndim)), pw)
            assert got["sum"] == pytest.approx(loss.sum(), rel=1e-12), (name, batch)
            assert got["count"] == x.size


def test_a_huge_row_is_read_a_batch_at_a_time(tmp_path):
    n = 25_000_000  # one row of 100 MB of float32 and 25 MB of labels
    x = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.float32, (1, n))
    y = np.lib.format.open_memmap(tmp_path / "y.npy", "w+", np.uint8, (1, n))
    x[0, ::1000] = 1.0
    y[0, ::3] = 1
    del x, y
    script = ("import resource, sys\nfrom fastloss.evaluate import main\n"
              "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              "code = main(sys.argv[1:])\n"
              "print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, code)")
    code, out, err = run_child("binary_cross_entropy_with_logits", "--input",
                               tmp_path / "x.npy", "--target", tmp_path / "y.npy",
                               "--batch-size", 1_000_000, script=script, timeout=120)
    base_kb, peak_kb, status = map(int, out.split()[-3:])
    assert (code, status, err) == (0, 0, "")
    assert "count      25,000,000" in out
    assert (peak_kb - base_kb) * 1024 < 25e6  # batches of 5 MB; one row is 125 MB


def test_a_fortran_ordered_row_longer_than_a_batch_is_refused(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.asfortranarray(np.zeros((3, 50), np.float32)))
    np.save(tmp_path / "y.npy", np.zeros((3, 50), np.float32))
    code, out, err = run(capsys, "binary_cross_entropy_with_logits", "--input",
                         tmp_path / "x.npy", "--target", tmp_path / "y.npy", "--batch-size", 10)
    one_line_error(code, err, "x.npy: Fortran-ordered with rows of 50 elements, more than "
                              "--batch-size")


def zip_with(path, method, payload):
    with zipfile.ZipFile(path, "w", method) as z:
        z.writestr("a.npy", payload)


@pytest.mark.parametrize("case, message", [
    ("directory", "x.npy: a directory, not a regular file"),
    ("fifo", "x.npy: a FIFO, not a regular file"),
    ("device", "/dev/null: a device, not a regular file"),
    ("unreadable", "x.npy: cannot open ("),
    ("negative", "x.npy: its header gives the negative shape (-1,)"),
    ("negative_2d", "x.npy: its header gives the negative shape (2, -3)"),
    ("bad_dict", "x.npy: not a valid .npy array ("),
    ("bad_descr", "x.npy: not a valid .npy array ("),
    ("bad_version", "x.npy: not a valid .npy array ("),
    ("long_header", "x.npy: not a valid .npy array ("),
    ("lies", "x.npy: truncated: its header promises 4,000,000 bytes of data, the file holds 40"),
    ("lies_huge", "x.npy: truncated: its header promises"),
    ("lzma", "a.npz:a: "),
    ("bzip2", "a.npz:a: "),
    ("deflate_header", "a.npz:a: "),
    ("broken_zip", "a.npz: not a valid .npz archive ("),
    ("param_fifo", "w.npy: a FIFO, not a regular file"),
    ("param_bad", "w.npy: not a valid .npy array ("),
    ("input_dtype", "x.npy: rows 0 to 10: input must be a float16, float32 or float64 array"),
])
def test_bad_files_give_one_line_naming_the_file(tmp_path, case, message):
    import os
    x = tmp_path / "x.npy"
    np.save(tmp_path / "y.npy", np.zeros(10, np.float32))
    np.save(x, np.zeros(10, np.float32))
    spec, extra = x, []
    if case == "directory":
        x.unlink()
        x.mkdir()
    elif case == "fifo":
        x.unlink()
        os.mkfifo(x)
    elif case == "device":
        spec = "/dev/null"
    elif case == "unreadable":
        if os.geteuid() == 0:  # root reads anything: a path through a file instead
            spec = tmp_path / "y.npy" / "x.npy"
            message = "x.npy: cannot open ("
        x.chmod(0)
    elif case.startswith("negative"):
        x.write_bytes(npy_header((-1,) if case == "negative" else (2, -3)) + bytes(40))
    elif case == "bad_dict":
        x.write_bytes(npy_header((10,))[:20] + b"{not python}" + b" " * 100 + b"\n")
    elif case == "bad_descr":
        x.write_bytes(npy_header((10,), descr="<q9") + bytes(40))
    elif case == "bad_version":
        x.write_bytes(b"\x93NUMPY\x07\x00" + npy_header((10,))[8:] + bytes(40))
    elif case == "long_header":
        x.write_bytes(b"\x93NUMPY\x02\x00\xff\xff\xff\x7f{")
    elif case == "lies":
        x.write_bytes(npy_header((10**6,)) + bytes(40))
    elif case == "lies_huge":
        x.write_bytes(npy_header((2**62, 2**62)) + bytes(40))
    elif case in ("lzma", "bzip2", "deflate_header"):
        method = {"lzma": zipfile.ZIP_LZMA, "bzip2": zipfile.ZIP_BZIP2,
                  "deflate_header": zipfile.ZIP_DEFLATED}[case]
        payload = npy_header((3000,), "<f8") + np.random.default_rng(5).random(3000).tobytes()
        zip_with(tmp_path / "a.npz", method, payload)
        raw = bytearray((tmp_path / "a.npz").read_bytes())
        start = 30 + len("a.npy") + (8 if case == "deflate_header" else 2000)
        raw[start:start + 60] = np.random.default_rng(6).bytes(60)
        (tmp_path / "a.npz").write_bytes(bytes(raw))
        np.save(tmp_path / "y.npy", np.zeros(3000, np.float32))
        spec = f"{tmp_path / 'a.npz'}:a"
    elif case == "broken_zip":
        np.savez(tmp_path / "a.npz", a=np.zeros(10))
        raw = (tmp_path / "a.npz").read_bytes()
        (tmp_path / "a.npz").write_bytes(raw[:-30])
        spec = tmp_path / "a.npz"
    elif case == "param_fifo":
        os.mkfifo(tmp_path / "w.npy")
        extra = ["--param", f"pos_weight={tmp_path / 'w.npy'}"]
    elif case == "param_bad":
        (tmp_path / "w.npy").write_bytes(b"\x93NUMPY nonsense")
        extra = ["--param", f"pos_weight={tmp_path / 'w.npy'}"]
    elif case == "input_dtype":
        np.save(x, np.zeros(10, np.int16))
    code, out, err = run_child("binary_cross_entropy_with_logits", "--input", spec,
                               "--target", tmp_path / "y.npy", *extra, timeout=30)
    one_line_error(code, err, message)
    assert out == ""


# ---- fuzzing: random arrays in .npy files, then a header byte, the length or the shape changed

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(descr=st.sampled_from(["<f4", ">f4", "<f8", "<f2", "<i4", "|u1"]),
       shape=st.lists(st.integers(0, 5), min_size=1, max_size=3).map(tuple),
       fortran=st.booleans(), seed=st.integers(0, 2**32 - 1),
       mutation=st.one_of(st.none(),
                          st.tuples(st.just("byte"), st.integers(0, 127), st.integers(0, 255)),
                          st.tuples(st.just("length"), st.integers(-200, 200)),
                          st.tuples(st.just("shape"), st.lists(st.integers(-3, 2**63),
                                                               max_size=3))),
       batch=st.integers(1, 50))
def test_fuzzed_files_give_numpys_result_or_one_line(tmp_path, descr, shape, fortran, seed,
                                                     mutation, batch):
    from reference import bce_with_logits
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 4).astype(descr)
    y = rng.random(shape)
    np.save(tmp_path / "x.npy", np.asfortranarray(x) if fortran else x)
    np.save(tmp_path / "y.npy", y)
    raw = bytearray((tmp_path / "x.npy").read_bytes())
    if mutation is None:
        pass
    elif mutation[0] == "byte":
        raw[mutation[1]] = mutation[2]
    elif mutation[0] == "length":
        raw = raw[:len(raw) + mutation[1]] if mutation[1] < 0 else raw + bytes(mutation[1])
    else:
        old = repr(np.load(tmp_path / "x.npy", mmap_mode="r").shape).encode()
        raw = raw.replace(old, repr(tuple(mutation[1])).encode(), 1)
    (tmp_path / "x.npy").write_bytes(bytes(raw))
    code, out, err = run_child("binary_cross_entropy_with_logits", "--input",
                               tmp_path / "x.npy", "--target", tmp_path / "y.npy", "--bins",
                               "none", "--batch-size", batch, "--json", tmp_path / "o.json",
                               timeout=60)
    assert code in (0, 1), err
    if code == 1:
        one_line_error(code, err)
        assert mutation is not None or x.dtype.kind != "f", err
        return
    assert err == ""
    got = json.loads((tmp_path / "o.json").read_text())
    read = np.load(tmp_path / "x.npy")  # what NumPy makes of the same bytes
    assert read.dtype.kind == "f" and read.shape == y.shape
    assert got["count"] == read.size
    finite = np.isfinite(read)
    if finite.all():  # inf logits: fastloss's limits, where the reference gives nan
        assert got["sum"] == pytest.approx(bce_with_logits(read, y).sum(), rel=1e-6, abs=1e-9)
