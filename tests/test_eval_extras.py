"""`fastloss eval --calibration --by-class --groups --bootstrap`: the files read in batches give
the statistics of StreamingLoss on the whole arrays, and the group means those of the masked
float64 formula; bad group files give one line on stderr and exit status 1."""
import json

import numpy as np
import pytest

from fastloss import StreamingLoss
from fastloss.evaluate import main


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def bce_logits_f64(x, y):
    x, y = x.astype(np.float64), y.astype(np.float64)
    return y * np.logaddexp(0, -x) + (1 - y) * np.logaddexp(0, x)


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((20_011, 3)) * 3).astype(np.float32)
    y = (rng.random(x.shape) < 1 / (1 + np.exp(-x))).astype(np.float32)
    w = rng.random(x.shape[0]).astype(np.float32)
    g = rng.integers(0, 6, x.shape[0]).astype(np.int16)  # one group per row
    for name, a in (("x", x), ("y", y), ("w", w), ("g", g)):
        np.save(tmp_path / f"{name}.npy", a)
    return tmp_path, x, y, w, g


def test_extras_equal_streaming_loss_on_the_whole_arrays(data, capsys):
    d, x, y, w, g = data
    code, out, err = run(capsys, "binary_cross_entropy_with_logits", "--input", d / "x.npy",
                         "--target", d / "y.npy", "--weight", d / "w.npy", "--groups",
                         d / "g.npy", "--calibration", 15, "--by-class", "--bootstrap", 200,
                         "--seed", 7, "--batch-size", 999, "--json", d / "o.json")
    assert (code, err) == (0, "")
    ids = np.broadcast_to(g[:, None], x.shape)
    m = StreamingLoss("binary_cross_entropy_with_logits", bins="log", calibration_bins=15,
                      by_class=True, n_groups=int(g.max()) + 1, bootstrap=200, seed=7)
    m.update(x, y, w[:, None], groups=ids)
    got = json.loads((d / "o.json").read_text())
    cal = got["calibration"]
    for key in ("ece", "mce", "rms_ce", "brier"):
        assert cal[key] == pytest.approx(getattr(m, key), rel=1e-12)
    r = m.reliability()
    assert cal["count"] == r["count"].tolist() and cal["edges"] == r["edges"].tolist()
    np.testing.assert_allclose(cal["confidence"], r["confidence"], rtol=1e-12)
    np.testing.assert_allclose(cal["accuracy"], r["accuracy"], rtol=1e-12)
    assert got["by_class"]["count"] == m.class_count.tolist() == [x.shape[0]] * 3
    np.testing.assert_allclose(got["by_class"]["mean"], m.class_mean, rtol=1e-12)
    assert got["by_group"]["count"] == m.group_count.tolist()
    np.testing.assert_allclose(got["by_group"]["mean"], m.group_mean, rtol=1e-12)
    # and against the float64 formula, masked group by group (weights per row)
    loss, ww = bce_logits_f64(x, y), np.broadcast_to(w[:, None].astype(np.float64), x.shape)
    for i in range(int(g.max()) + 1):
        mask = ids == i
        assert got["by_group"]["mean"][i] == pytest.approx(
            np.sum(ww[mask] * loss[mask]) / np.sum(ww[mask]), rel=1e-6)
    # any batching of the same positions gives the same replicates: the same interval
    boot = got["bootstrap"]
    assert (boot["replicates"], boot["seed"], boot["level"]) == (200, 7, 0.95)
    lo, hi = m.mean_ci(0.95)
    assert boot["mean_ci"] == pytest.approx([lo, hi], rel=1e-12)
    assert lo < got["mean"] < hi
    assert f"ece {m.ece:.6g}" in out and "per group" in out and "per class" in out
    assert f"mean 95% interval [{lo:.9g}, {hi:.9g}] (200 bootstrap replicates, seed 7)" in out


def test_groups_per_position_softmax_and_explicit_n_groups(tmp_path, capsys):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3000, 4, 5)).astype(np.float32)
    t = rng.integers(0, 4, (3000, 5))
    g = rng.integers(0, 3, (3000, 5))
    for name, a in (("x", x), ("t", t), ("g", g)):
        np.save(tmp_path / f"{name}.npy", a)
    code, out, err = run(capsys, "cross_entropy", "--input", tmp_path / "x.npy", "--target",
                         tmp_path / "t.npy", "--groups", tmp_path / "g.npy", "--n-groups", 10,
                         "--calibration", 10, "--by-class", "--batch-size", 777, "--bins",
                         "none", "--json", tmp_path / "o.json")
    assert (code, err) == (0, "")
    m = StreamingLoss("cross_entropy", calibration_bins=10, by_class=True, n_groups=10)
    m.update(x, t, groups=g)
    got = json.loads((tmp_path / "o.json").read_text())
    assert got["by_group"]["count"] == m.group_count.tolist()
    assert got["by_group"]["count"][3:] == [0] * 7
    assert got["by_group"]["mean"][3:] == ["nan"] * 7
    np.testing.assert_allclose(got["by_group"]["mean"][:3], m.group_mean[:3], rtol=1e-12)
    np.testing.assert_allclose(got["by_class"]["sum"], m.class_sum, rtol=1e-12)
    assert got["calibration"]["count"] == m.reliability()["count"].tolist()
    assert got["calibration"]["ece"] == pytest.approx(m.ece, rel=1e-12)


def test_groups_of_rows_longer_than_a_batch(tmp_path, capsys):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((7, 1000)).astype(np.float32)
    y = (rng.random(x.shape) < 0.5).astype(np.float32)
    rows, positions = np.array([0, 2, 1, 2, 0, 1, 1]), rng.integers(0, 4, x.shape)
    for name, a in (("x", x), ("y", y), ("rows", rows), ("pos", positions)):
        np.save(tmp_path / f"{name}.npy", a)
    for file, ids in (("rows", np.broadcast_to(rows[:, None], x.shape)), ("pos", positions)):
        code, _, err = run(capsys, "binary_cross_entropy_with_logits", "--input",
                           tmp_path / "x.npy", "--target", tmp_path / "y.npy", "--groups",
                           tmp_path / f"{file}.npy", "--batch-size", 300, "--json",
                           tmp_path / "o.json")
        assert (code, err) == (0, "")
        got = json.loads((tmp_path / "o.json").read_text())
        loss = bce_logits_f64(x, y)
        n = int(ids.max()) + 1
        assert got["by_group"]["count"] == np.bincount(ids.ravel(), minlength=n).tolist()
        np.testing.assert_allclose(got["by_group"]["mean"],
                                   [loss[ids == i].mean() for i in range(n)], rtol=1e-6)


@pytest.mark.parametrize("ids, extra, message", [
    (np.arange(5.0), [], "g.npy: dtype float64: group ids must be integers"),
    (np.array([0, 1, -3, 2, 0]), [], "g.npy: has the negative group id -3 at element 2"),
    (np.array([0, 1, -3, 2, 0]), ["--n-groups", 4], "groups must be integers in [0, 4)"),
    (np.array([0, 1, 5, 2, 0]), ["--n-groups", 4], "groups must be integers in [0, 4)"),
    (np.arange(4), [], "x.npy has 5 rows, "),
    (np.zeros((5, 3), int), [], "g.npy: has shape (5, 3); the group ids must have the loss's "
                                "shape (5, 2) or one per row (5,)"),
])
def test_bad_groups_give_one_line(tmp_path, capsys, ids, extra, message):
    np.save(tmp_path / "x.npy", np.zeros((5, 2), np.float32))
    np.save(tmp_path / "y.npy", np.zeros((5, 2), np.float32))
    np.save(tmp_path / "g.npy", ids)
    before = (tmp_path / "g.npy").read_bytes()
    code, out, err = run(capsys, "binary_cross_entropy_with_logits", "--input",
                         tmp_path / "x.npy", "--target", tmp_path / "y.npy", "--groups",
                         tmp_path / "g.npy", *extra)
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith("fastloss eval: error: ") and message in err
    assert (tmp_path / "g.npy").read_bytes() == before


def test_n_groups_needs_groups_and_bad_counts_are_refused(data, capsys):
    d = data[0]
    common = ["binary_cross_entropy_with_logits", "--input", d / "x.npy", "--target",
              d / "y.npy"]
    for extra, message in ((["--n-groups", 3], "--n-groups needs --groups"),
                           (["--calibration", 0], "calibration_bins must be an int from 1"),
                           (["--bootstrap", 0], "bootstrap must be an int from 1"),
                           (["--bootstrap", 5, "--seed", -1], "seed must be an int from 0")):
        code, out, err = run(capsys, *common, *extra)
        assert (code, out) == (1, "") and message in err and err.count("\n") == 1


def test_one_weight_per_row_of_rows_longer_than_a_batch(tmp_path, capsys):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 1000)).astype(np.float32)
    y = (rng.random(x.shape) < 0.5).astype(np.float32)
    w = rng.random(7)
    for name, a in (("x", x), ("y", y), ("w", w)):
        np.save(tmp_path / f"{name}.npy", a)
    code, _, err = run(capsys, "binary_cross_entropy_with_logits", "--input", tmp_path / "x.npy",
                       "--target", tmp_path / "y.npy", "--weight", tmp_path / "w.npy",
                       "--batch-size", 300, "--json", tmp_path / "o.json")
    assert (code, err) == (0, "")
    ww = np.broadcast_to(w[:, None], x.shape)
    expected = np.sum(ww * bce_logits_f64(x, y)) / np.sum(ww)
    assert json.loads((tmp_path / "o.json").read_text())["mean"] == pytest.approx(expected,
                                                                                 rel=1e-6)
