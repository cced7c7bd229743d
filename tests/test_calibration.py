"""StreamingLoss(calibration_bins=...): ECE, MCE, RMS-CE, bin counts and the Brier score against
torchmetrics, scikit-learn and float64 NumPy formulas; threads, batching, merge, JSON, pickling,
from_dict's checks."""
import json
import pickle

import numpy as np
import pytest
import torch
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss
from torchmetrics.functional.classification import (binary_calibration_error,
                                                    multiclass_calibration_error)

from fastloss import StreamingLoss

N = 20_011  # several blocks and chunks, and a partial one
BINS = 15


def _binary(rng, n=N):
    """Probabilities in (0, 1) (none at a bin edge of 15 bins, none exactly 1: torchmetrics
    gives p == 1 a bin of its own), logits whose sigmoid is near them, and targets."""
    p = rng.uniform(0.001, 0.999, n)
    y = (rng.random(n) < p**1.3).astype(np.float64)
    return p, y


def _tm(p, y, norm, multiclass=None):
    if multiclass is None:
        return binary_calibration_error(torch.from_numpy(p), torch.from_numpy(y).long(),
                                        n_bins=BINS, norm=norm).item()
    return multiclass_calibration_error(torch.from_numpy(p), torch.from_numpy(y),
                                        num_classes=multiclass, n_bins=BINS, norm=norm).item()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binary_probabilities_match_torchmetrics_and_sklearn(dtype):
    rng = np.random.default_rng(0)
    p, y = _binary(rng)
    p = p.astype(dtype)
    m = StreamingLoss("binary_cross_entropy", calibration_bins=BINS).update(p, y.astype(dtype))
    p64 = p.astype(np.float64)  # the same values, the references in float64
    for norm, result in (("l1", m.ece), ("max", m.mce), ("l2", m.rms_ce)):
        assert result == pytest.approx(_tm(p64, y, norm), rel=1e-9, abs=1e-12)
    rel = m.reliability()
    counts = np.histogram(p64, np.linspace(0, 1, BINS + 1))[0]
    np.testing.assert_array_equal(rel["count"], counts)
    # sklearn's calibration_curve leaves out empty bins and returns the means of the others
    true, pred = calibration_curve(y, p64, n_bins=BINS)
    filled = counts > 0
    np.testing.assert_allclose(rel["accuracy"][filled], true, rtol=1e-12)
    np.testing.assert_allclose(rel["confidence"][filled], pred, rtol=1e-12)
    assert m.brier == pytest.approx(brier_score_loss(y, p64), rel=1e-12)


def test_binary_logits_calibrate_their_sigmoid():
    rng = np.random.default_rng(1)
    x = rng.normal(size=N) * 3
    y = (rng.random(N) < 0.5).astype(np.float64)
    m = StreamingLoss("binary_cross_entropy_with_logits", calibration_bins=BINS,
                      pos_weight=[2.0]).update(x, y)
    p = 1 / (1 + np.exp(-x))
    for norm, result in (("l1", m.ece), ("max", m.mce), ("l2", m.rms_ce)):
        assert result == pytest.approx(_tm(p, y, norm), rel=1e-9)
    np.testing.assert_array_equal(m.reliability()["count"],
                                  np.histogram(p, np.linspace(0, 1, BINS + 1))[0])
    assert m.brier == pytest.approx(brier_score_loss(y, p), rel=1e-12)
    # the focal loss calibrates the same probabilities
    f = StreamingLoss("sigmoid_focal_loss", calibration_bins=BINS).update(x, y)
    assert f.ece == pytest.approx(m.ece, rel=1e-12) and f.brier == pytest.approx(m.brier)


def test_sample_weights_weight_the_bins_and_brier():
    rng = np.random.default_rng(2)
    p, y = _binary(rng)
    s = rng.random(N)
    m = StreamingLoss("binary_cross_entropy", calibration_bins=BINS).update(p, y, s)
    assert m.brier == pytest.approx(brier_score_loss(y, p, sample_weight=s), rel=1e-12)
    b = np.clip((p * BINS).astype(int), 0, BINS - 1)
    w = np.bincount(b, s, BINS)
    gap = np.abs(np.bincount(b, s * y, BINS) - np.bincount(b, s * p, BINS))
    assert m.ece == pytest.approx(gap.sum() / w.sum(), rel=1e-9)


@pytest.mark.parametrize("loss,params", [("cross_entropy", {}),
                                         ("cross_entropy", {"label_smoothing": 0.1}),
                                         ("softmax_focal_loss", {"gamma": 2.0})])
@pytest.mark.parametrize("classes", [3, 40])  # transposed tiles and whole rows
def test_softmax_top_label_calibration_and_brier(loss, params, classes):
    rng = np.random.default_rng(3)
    n = N // 2
    z = rng.normal(size=(n, classes)) * 2
    t = rng.integers(0, classes, n)
    m = StreamingLoss(loss, calibration_bins=BINS, **params).update(z, t)
    prob = np.exp(z - z.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    for norm, result in (("l1", m.ece), ("max", m.mce), ("l2", m.rms_ce)):
        assert result == pytest.approx(_tm(prob, t, norm, classes), rel=1e-6)
    np.testing.assert_array_equal(m.reliability()["count"],
                                  np.histogram(prob.max(1), np.linspace(0, 1, BINS + 1))[0])
    brier = np.mean(np.sum((prob - np.eye(classes)[t]) ** 2, axis=1))
    assert m.brier == pytest.approx(brier, rel=1e-12)


def test_softmax_brier_of_confident_rows_keeps_its_digits():
    # rows whose target has p ~ 1 - 1e-9: (1 - p_t)^2 + sum p_c^2 without cancellation
    z = np.array([[30.0, 10.0, 9.0], [0.0, 25.0, 1.0], [5.0, 5.0, -3.0]])
    t = np.array([0, 0, 1])
    m = StreamingLoss("cross_entropy", calibration_bins=BINS).update(z, t)
    prob = np.exp(z - z.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    other = 1 - prob[np.arange(3), t]
    other[0] = prob[0, 1:].sum()  # the complement summed directly
    rows = other**2 + (prob**2).sum(1) - prob[np.arange(3), t] ** 2
    assert m.brier == pytest.approx(rows.mean(), rel=1e-12)


def test_ignored_rows_and_probability_targets():
    rng = np.random.default_rng(4)
    z = rng.normal(size=(500, 5))
    t = rng.integers(0, 5, 500)
    t[::3] = -100
    m = StreamingLoss("cross_entropy", calibration_bins=10).update(z, t)
    assert m.reliability()["count"].sum() == m.count == np.sum(t >= 0)
    with pytest.raises(ValueError, match="calibration_bins needs class-index targets"):
        StreamingLoss("cross_entropy", calibration_bins=10).update(z, np.full((500, 5), 0.2))


def test_explicit_edges_place_each_confidence_like_np_histogram():
    rng = np.random.default_rng(5)
    edges = np.array([0.0, 0.1, 0.5, 0.55, 0.9, 1.0])
    p = np.concatenate([rng.random(5000), edges, [0.3] * 7])  # the edges themselves too
    y = (rng.random(p.size) < 0.5).astype(np.float64)
    for dtype in (np.float32, np.float64):
        m = StreamingLoss("binary_cross_entropy", calibration_bins=edges).update(
            p.astype(dtype), y.astype(dtype))
        ref = np.histogram(p.astype(dtype).astype(np.float64), edges)[0]
        np.testing.assert_array_equal(m.reliability()["count"], ref)
    # uniform edges at their exact float32 values too
    q = np.linspace(0, 1, BINS + 1).astype(np.float32)
    m = StreamingLoss("binary_cross_entropy", calibration_bins=BINS).update(q, np.zeros_like(q))
    np.testing.assert_array_equal(m.reliability()["count"],
                                  np.histogram(q.astype(np.float64), np.linspace(0, 1, BINS + 1))[0])


def test_threads_batches_merge_json_and_pickle_agree():
    rng = np.random.default_rng(6)
    x = (rng.normal(size=300_000) * 2).astype(np.float32)
    y = (rng.random(x.size) < 0.5).astype(np.float32)
    make = lambda: StreamingLoss("binary_cross_entropy_with_logits", calibration_bins=BINS)  # noqa
    states = [make().update(x, y, n_threads=k).to_dict() for k in (1, 2, 3)]
    assert states[0] == states[1] == states[2]  # bitwise, for any thread count
    whole = make().update(x, y)
    batched = make()
    for part in np.array_split(np.arange(x.size), 7):
        batched.update(x[part], y[part])
    merged = make().update(x[:1000], y[:1000]).merge(make().update(x[1000:], y[1000:]))
    for other in (batched, merged):
        np.testing.assert_array_equal(other.reliability()["count"], whole.reliability()["count"])
        assert other.ece == pytest.approx(whole.ece, rel=1e-12)
        assert other.brier == pytest.approx(whole.brier, rel=1e-12)
    back = StreamingLoss.from_dict(json.loads(json.dumps(whole.to_dict())))
    copy = pickle.loads(pickle.dumps(whole))
    for other in (back, copy):
        assert other.to_dict() == whole.to_dict()
        assert (other.ece, other.mce, other.brier) == (whole.ece, whole.mce, whole.brier)
    with pytest.raises(ValueError, match="different calibration bins"):
        whole.merge(StreamingLoss("binary_cross_entropy_with_logits", calibration_bins=10))


def test_empty_meter_and_no_calibration():
    m = StreamingLoss("binary_cross_entropy", calibration_bins=5)
    assert np.isnan(m.ece) and np.isnan(m.brier) and m.reliability()["count"].sum() == 0
    plain = StreamingLoss("binary_cross_entropy")
    assert plain.ece is None and plain.brier is None and plain.reliability() is None
    assert "calibration" not in plain.to_dict()


@pytest.mark.parametrize("bins,match", [(0, "calibration_bins must be an int from 1"),
                                        (True, "calibration_bins must be"),
                                        ([0.0, 0.5], "from 0 to 1"),
                                        ([0.0, 0.6, 0.5, 1.0], "from 0 to 1"),
                                        ([[0.0, 1.0]], "1-D array")])
def test_bad_bins(bins, match):
    with pytest.raises(ValueError, match=match):
        StreamingLoss("binary_cross_entropy", calibration_bins=bins)


def _state():
    rng = np.random.default_rng(7)
    p, y = _binary(rng, 2000)
    return StreamingLoss("binary_cross_entropy", calibration_bins=4).update(p, y).to_dict()


@pytest.mark.parametrize("change,match", [
    (lambda c: c.update(count=c["count"][:-1]), "list of 4 ints"),
    (lambda c: c["count"].__setitem__(0, -1), "list of 4 ints"),
    (lambda c: c["count"].__setitem__(0, c["count"][0] + 10**6), "more than count"),
    (lambda c: c["weight"].__setitem__(1, "nan"), "non-negative"),
    (lambda c: c["confidence"].__setitem__(1, c["weight"][1] * 2), "confidence"),
    (lambda c: c["confidence"].__setitem__(3, 0.0), "outside the bin"),
    (lambda c: c.update(brier_sum=-1.0), "non-negative"),
    (lambda c: c.update(edges=[0.0, 2.0]), "calibration edges"),
    (lambda c: c.pop("outcome"), "keys"),
])
def test_from_dict_rejects_lying_calibration(change, match):
    state = _state()
    change(state["calibration"])
    with pytest.raises(ValueError, match=match):
        StreamingLoss.from_dict(state)
