"""StreamingLoss: fused statistics and histograms against float64 and np.histogram references,
batching and merging, serialization, errors."""
import json
import math
import pickle

import numpy as np
import pytest

import fastloss
from fastloss import StreamingLoss
from fastloss.streaming import LOSSES

N = 20_011  # several blocks and chunks, and a partial one


def _data(loss, rng, dtype=np.float32, n=N, classes=7):
    """(input, target, per-position sample weight, loss parameters) for a loss."""
    if LOSSES[loss][0] == "binary":
        x = (rng.standard_normal((n // 4, 4)) * 4).astype(dtype)
        if loss == "binary_cross_entropy":
            x = rng.random(x.shape).astype(dtype)
        y = (rng.random(x.shape) < 0.4).astype(dtype)
        params = {"binary_cross_entropy_with_logits": {"pos_weight": [1.0, 2.0, 0.5, 3.0]},
                  "sigmoid_focal_loss": {"alpha": 0.3, "gamma": 1.5}}.get(loss, {})
        return x, y, rng.random(x.shape).astype(dtype), params
    x = (rng.standard_normal((n // classes, classes)) * 3).astype(dtype)
    t = rng.integers(0, classes, x.shape[0])
    t[::9] = -1
    params = {"weight": rng.random(classes) + 0.5, "ignore_index": -1}
    if loss == "cross_entropy":
        params["label_smoothing"] = 0.1
    else:
        params["gamma"] = 2.0
    return x, t, rng.random(x.shape[0]).astype(dtype), params


def _per_position(loss, x, y, params):
    """The losses the function returns with reduction="none", and which positions count."""
    fn = getattr(fastloss, loss)
    kw = dict(params)
    if "pos_weight" in kw:
        kw["pos_weight"] = np.asarray(kw["pos_weight"], x.dtype)
    if "weight" in kw:
        kw["weight"] = np.asarray(kw["weight"], x.dtype)
    values = fn(x, y, reduction="none", **kw)
    valid = np.ones(values.shape, bool) if LOSSES[loss][0] == "binary" else y != -1
    return values, valid


def _reference(loss, x, y, s, params):
    """sum, weight_sum, count, min, max in float64 from the per-position losses."""
    values, valid = _per_position(loss, x, y, params)
    d = np.ones(values.shape)
    if LOSSES[loss][0] == "softmax":
        d = np.asarray(params["weight"], x.dtype).astype(np.float64)[np.where(valid, y, 0)]
    s = np.ones(values.shape) if s is None else s.astype(np.float64)
    v = values.astype(np.float64)[valid]
    return ((s[valid] * v).sum(), (s * d)[valid].sum(), int(valid.sum()), v.min(), v.max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss", list(LOSSES))
def test_statistics_match_float64_reference_over_batches(loss, dtype):
    rng = np.random.default_rng(1)
    x, y, s, params = _data(loss, rng, dtype)
    for weight in (None, s):
        m = StreamingLoss(loss, **params)
        for lo, hi in ((0, 7), (7, 1000), (1000, 1001), (1001, len(x))):
            m.update(x[lo:hi], y[lo:hi], None if weight is None else weight[lo:hi])
        total, weight_sum, count, lo_, hi_ = _reference(loss, x, y, weight, params)
        assert m.sum == pytest.approx(total, rel=1e-12)
        assert m.weight_sum == pytest.approx(weight_sum, rel=1e-12)
        assert m.mean == pytest.approx(total / weight_sum, rel=1e-12)
        assert (m.count, m.min, m.max, m.nan_count) == (count, lo_, hi_, 0)


@pytest.mark.parametrize("loss", list(LOSSES))
def test_mean_without_weight_is_the_functions_mean(loss):
    rng = np.random.default_rng(2)
    x, y, _, params = _data(loss, rng, np.float64)
    m = StreamingLoss(loss, **params).update(x, y)
    values, _ = _per_position(loss, x, y, {**params})
    kw = {k: np.asarray(v) if k in ("weight", "pos_weight") else v for k, v in params.items()}
    assert m.mean == pytest.approx(float(getattr(fastloss, loss)(x, y, reduction="mean", **kw)),
                                   rel=1e-12)


def test_mean_is_scikit_learns_weighted_log_loss():
    from sklearn import metrics as sklearn_metrics  # a test dependency
    rng = np.random.default_rng(3)
    p = rng.uniform(0.01, 0.99, 5000)
    y = (rng.random(5000) < p).astype(np.float64)
    w = rng.random(5000)
    m = StreamingLoss("binary_cross_entropy").update(p, y, w)
    assert m.mean == pytest.approx(sklearn_metrics.log_loss(y, p, sample_weight=w), rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("bins", ["log", 37, "edges"])
def test_histogram_is_np_histogram_of_the_losses(simd_path, loss, dtype, bins):
    rng = np.random.default_rng(4)
    x, y, _, params = _data(loss, rng, dtype)
    if bins == "edges":
        bins = np.sort(np.concatenate([[0.0], rng.exponential(1.0, 20)]))
    kw = {"range": (0.05, 4.0)} if isinstance(bins, int) else {}
    m = StreamingLoss(loss, bins=bins, **params, **kw).update(x[:3000], y[:3000])
    m.update(x[3000:], y[3000:])
    values, valid = _per_position(loss, x, y, params)
    v = values[valid].astype(np.float64)
    counts, edges = m.histogram
    expected, _ = np.histogram(v, edges)
    np.testing.assert_array_equal(counts, expected)
    assert m.underflow == np.sum(v < edges[0]) and m.overflow == np.sum(v > edges[-1])
    assert counts.sum() + m.underflow + m.overflow == m.count


def _logits_with_loss_near(edges, dtype):
    """For each edge e, logits x (target 1) whose loss softplus(-x) lies a few ulps below, at
    or above e: bisection on the kernel's own loss, which falls as x rises, then steps in x
    that move the loss by about one ulp of e."""
    lo = np.full(edges.size, -3000.0)
    hi = np.full(edges.size, 3000.0)
    one = np.ones(edges.size, dtype)
    for _ in range(100):
        mid = (lo + hi) / 2
        above = fastloss.binary_cross_entropy_with_logits(mid.astype(dtype), one,
                                                          reduction="none") > edges
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    step = np.maximum(np.spacing(hi.astype(dtype)).astype(np.float64),
                      np.spacing(edges.astype(dtype)) * (1 + np.exp(hi)))
    return np.concatenate([hi + k * step for k in range(-3, 4)]).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bins, kw", [("log", {}), (50, {"range": (0.0, 20.0)}),
                                      (13, {"range": (0.3, 0.9)})])
def test_histogram_is_exact_at_bin_boundaries(simd_path, dtype, bins, kw):
    """Losses within a few ulps of every edge, on both sides, land where np.histogram puts
    them: the arithmetic guess of the bin defers to the edges near a boundary."""
    loss = "binary_cross_entropy_with_logits"
    edges = StreamingLoss(loss, bins=bins, **kw).histogram[1]
    x = _logits_with_loss_near(edges[edges > 0], dtype)
    y = np.ones_like(x)
    m = StreamingLoss(loss, bins=bins, **kw).update(x, y)
    v = fastloss.binary_cross_entropy_with_logits(x, y, reduction="none").astype(np.float64)
    np.testing.assert_array_equal(m.histogram[0], np.histogram(v, edges)[0])
    assert m.underflow == np.sum(v < edges[0]) and m.overflow == np.sum(v > edges[-1])
    # the test is only as good as its losses are close to the edges, on both sides
    e = edges[edges > 0][:, None]
    below = ((v < e) & (v > e * (1 - 1e-5))).any(1)
    above = ((v >= e) & (v < e * (1 + 1e-5))).any(1)
    assert np.all(below & above)


def test_log_bins_span_1e_minus_8_to_1e3_ten_per_decade():
    counts, edges = StreamingLoss("cross_entropy", bins="log").histogram
    np.testing.assert_allclose(edges, np.logspace(-8, 3, 111), rtol=1e-15)
    assert counts.shape == (110,) and counts.sum() == 0


def test_nan_losses_are_counted_apart():
    x = np.array([0.5, np.nan, -1.0, np.nan, 2.0], np.float32)
    y = np.array([1, 0, 1, 1, 0], np.float32)
    m = StreamingLoss("binary_cross_entropy_with_logits", bins="log").update(x, y)
    finite = fastloss.binary_cross_entropy_with_logits(x[[0, 2, 4]], y[[0, 2, 4]],
                                                       reduction="none").astype(np.float64)
    assert (m.count, m.nan_count) == (5, 2)
    assert math.isnan(m.sum) and math.isnan(m.mean)
    assert (m.min, m.max) == (finite.min(), finite.max())
    assert m.histogram[0].sum() + m.underflow + m.overflow == 3


def test_ignored_positions_are_left_out():
    x = np.zeros((4, 3), np.float32)
    t = np.array([0, -100, 2, -100])
    m = StreamingLoss("cross_entropy", bins="log").update(x, t)
    assert (m.count, m.weight_sum) == (2, 2.0)
    assert m.mean == pytest.approx(math.log(3), rel=1e-7)
    assert m.histogram[0].sum() == 2


def test_weights_broadcast_and_scale():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((100, 3)).astype(np.float32)
    y = (rng.random((100, 3)) < 0.5).astype(np.float32)
    w = rng.random((100, 1)).astype(np.float32)
    a = StreamingLoss("binary_cross_entropy_with_logits").update(x, y, w)
    b = StreamingLoss("binary_cross_entropy_with_logits").update(x, y, np.repeat(w, 3, axis=1))
    assert (a.sum, a.weight_sum) == (b.sum, b.weight_sum)
    c = StreamingLoss("binary_cross_entropy_with_logits").update(x, y, 2 * w)
    assert c.mean == pytest.approx(a.mean, rel=1e-12)
    # a zero weight drops an infinite loss; the count still holds it
    z = StreamingLoss("binary_cross_entropy_with_logits").update(
        np.array([np.inf, 0.0], np.float32), np.array([0.0, 1.0], np.float32),
        np.array([0.0, 1.0], np.float32))
    assert z.mean == pytest.approx(math.log(2), rel=1e-7) and z.count == 2 and z.max == math.inf


@pytest.mark.parametrize("loss", ["binary_cross_entropy_with_logits", "softmax_focal_loss"])
def test_any_split_and_merge_order_agree(loss):
    rng = np.random.default_rng(6)
    x, y, s, params = _data(loss, rng, np.float32, n=60_000)
    whole = StreamingLoss(loss, bins="log", **params).update(x, y, s)
    cuts = np.sort(rng.choice(np.arange(1, len(x)), 5, replace=False))
    parts = [StreamingLoss(loss, bins="log", **params).update(x[a:b], y[a:b], s[a:b])
             for a, b in zip([0, *cuts], [*cuts, len(x)])]
    copies = lambda: [StreamingLoss.from_dict(p.to_dict()) for p in parts]  # noqa: E731
    left = copies()
    for p in left[1:]:
        left[0].merge(p)
    right = copies()
    for p in reversed(right[:-1]):
        right[-1].merge(p)
    tree = copies()
    tree = tree[0].merge(tree[1]).merge(tree[2].merge(tree[3])).merge(tree[4].merge(tree[5]))
    for m in (left[0], right[-1], tree):
        assert m.mean == pytest.approx(whole.mean, rel=1e-12)
        assert m.sum == pytest.approx(whole.sum, rel=1e-12)
        assert (m.count, m.min, m.max, m.underflow, m.overflow) == \
            (whole.count, whole.min, whole.max, whole.underflow, whole.overflow)
        np.testing.assert_array_equal(m.histogram[0], whole.histogram[0])


def test_threads_do_not_change_any_statistic():
    rng = np.random.default_rng(7)
    x = rng.standard_normal(300_001).astype(np.float32)
    y = rng.random(300_001).astype(np.float32)
    states = {json.dumps(StreamingLoss("sigmoid_focal_loss", bins="log")
                         .update(x, y, n_threads=t).to_dict()) for t in (1, 2, 3, 7)}
    assert len(states) == 1


def test_json_round_trip_is_exact():
    rng = np.random.default_rng(8)
    x, y, s, params = _data("cross_entropy", rng)
    m = StreamingLoss("cross_entropy", bins=np.array([0.0, 0.5, 1.0, 3.0]), **params)
    m.update(x, y, s)
    text = json.dumps(m.to_dict(), allow_nan=False)
    back = StreamingLoss.from_dict(json.loads(text))
    assert back.to_dict() == m.to_dict()
    assert (back.mean, back.sum, back.count, back.min, back.max) == \
        (m.mean, m.sum, m.count, m.min, m.max)
    back.update(x[:10], y[:10])  # restored parameters and bins work
    empty = StreamingLoss("binary_cross_entropy", bins=5, range=(0, 1))
    state = json.loads(json.dumps(empty.to_dict(), allow_nan=False))
    assert state["min"] == "inf" and math.isnan(StreamingLoss.from_dict(state).min)


def test_reset_and_empty_state():
    m = StreamingLoss("binary_cross_entropy", bins=4, range=(0, 2))
    assert m.count == 0 and math.isnan(m.mean) and math.isnan(m.min) and math.isnan(m.max)
    m.update(np.array([0.5], np.float32), np.array([1.0], np.float32))
    assert m.count == 1
    m.reset()
    assert (m.count, m.sum, m.underflow) == (0, 0.0, 0) and m.histogram[0].sum() == 0
    m.update(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32))
    assert m.count == 0


def test_parameters_and_edges_are_private_and_read_only():
    pw = np.array([1.0, 2.0])
    m = StreamingLoss("binary_cross_entropy_with_logits", pos_weight=pw, bins="log")
    pw[0] = 100.0
    assert m.params["pos_weight"].tolist() == [1.0, 2.0]
    for copy in (m, pickle.loads(pickle.dumps(m))):  # as dask ships meters between processes
        with pytest.raises(ValueError, match="read-only"):
            copy.params["pos_weight"][0] = 5.0
        with pytest.raises(ValueError, match="read-only"):
            copy.histogram[1][0] = 5.0
    with pytest.raises(ValueError, match="pos_weight must be finite"):
        StreamingLoss("binary_cross_entropy_with_logits", pos_weight=[1.0, np.nan])


def _state(m):
    return json.dumps(m.to_dict())


@pytest.mark.parametrize("args, kwargs, error, match", [
    (("hinge",), {}, ValueError, "unknown loss 'hinge'; choose one of binary_cross_entropy, "),
    (("binary_cross_entropy",), {"pos_weight": 2.0}, TypeError, "takes no parameter pos_weight"),
    (("cross_entropy",), {"gamma": 2.0}, TypeError, "its parameters: weight, ignore_index"),
    (("sigmoid_focal_loss",), {"gamma": -1.0}, ValueError, "gamma"),
    (("cross_entropy",), {"label_smoothing": 2.0}, ValueError, "label_smoothing"),
    (("cross_entropy",), {"bins": "linear"}, ValueError, "bins must be an int, an array"),
    (("cross_entropy",), {"bins": 10}, ValueError, r"needs range=\(lo, hi\)"),
    (("cross_entropy",), {"bins": 0, "range": (0, 1)}, ValueError, "between 1 and 16777216"),
    (("cross_entropy",), {"bins": 2**24 + 1, "range": (0, 1)}, ValueError, "between 1 and"),
    (("cross_entropy",), {"bins": 10, "range": (1, 1)}, ValueError, "lo < hi"),
    (("cross_entropy",), {"bins": 10, "range": "ab"}, TypeError, "pair of numbers"),
    (("cross_entropy",), {"bins": "log", "range": (0, 1)}, ValueError, "only for an int"),
    (("cross_entropy",), {"range": (0, 1)}, ValueError, "without bins"),
    (("cross_entropy",), {"bins": [1.0, 1.0, 2.0]}, ValueError, "strictly increasing"),
    (("cross_entropy",), {"bins": [1.0]}, ValueError, "1-D array of 2 to"),
    (("cross_entropy",), {"bins": [0.0, np.nan]}, ValueError, "finite"),
])
def test_construction_errors(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        StreamingLoss(*args, **kwargs)


def test_update_errors_leave_the_state_unchanged():
    rng = np.random.default_rng(9)
    first = StreamingLoss("cross_entropy")
    with pytest.raises(IndexError):  # a failed first batch does not fix the number of classes
        first.update(np.zeros((3, 4)), np.array([0, 7, 1]))
    first.update(np.zeros((3, 5)), np.array([0, 1, 1]))
    assert first.count == 3
    m = StreamingLoss("cross_entropy", bins="log")
    m.update(rng.standard_normal((10, 4)), rng.integers(0, 4, 10))
    before = _state(m)
    with pytest.raises(ValueError, match="input has 5 classes; earlier batches had 4"):
        m.update(rng.standard_normal((10, 5)), rng.integers(0, 5, 10))
    with pytest.raises(IndexError, match="Target 4 is out of bounds"):
        m.update(rng.standard_normal((3, 4)), np.array([0, 4, 1]))
    with pytest.raises(ValueError, match="weight of shape \\(3,\\) cannot be broadcast"):
        m.update(rng.standard_normal((10, 4)), rng.integers(0, 4, 10), np.ones(3))
    for bad in (-1.0, np.nan, np.inf):
        with pytest.raises(ValueError, match="weight should be finite and non-negative"):
            m.update(rng.standard_normal((10, 4)), rng.integers(0, 4, 10),
                     np.where(np.arange(10) == 7, bad, 1.0))
    assert _state(m) == before
    b = StreamingLoss("binary_cross_entropy", bins=3, range=(0, 1))
    b.update(np.array([0.5]), np.array([1.0]))
    before = _state(b)
    with pytest.raises(ValueError, match="target should be between 0 and 1"):
        b.update(np.array([0.5, 0.5]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="input should be between 0 and 1"):
        b.update(np.array([0.5, 1.5]), np.array([1.0, 1.0]))
    with pytest.raises(TypeError, match="weight must be a real numeric array"):
        b.update(np.array([0.5]), np.array([1.0]), np.array(["a"]))
    assert _state(b) == before


def test_merge_errors():
    m = StreamingLoss("cross_entropy", bins="log", label_smoothing=0.1)
    with pytest.raises(TypeError, match="can only merge a StreamingLoss"):
        m.merge({"loss": "cross_entropy"})
    with pytest.raises(ValueError, match="cannot merge a softmax_focal_loss meter into a "
                                         "cross_entropy meter"):
        m.merge(StreamingLoss("softmax_focal_loss", bins="log"))
    with pytest.raises(ValueError, match="different parameters"):
        m.merge(StreamingLoss("cross_entropy", bins="log"))
    with pytest.raises(ValueError, match="different bins"):
        m.merge(StreamingLoss("cross_entropy", bins=10, range=(0, 1), label_smoothing=0.1))
    other = StreamingLoss("cross_entropy", bins="log", label_smoothing=0.1)
    other.update(np.zeros((2, 3)), np.array([0, 1]))
    m.update(np.zeros((2, 4)), np.array([0, 1]))
    with pytest.raises(ValueError, match="meters of 4 and 3 classes"):
        m.merge(other)


@pytest.mark.parametrize("change, match", [
    (lambda d: d.pop("sum"), "expected the keys"),
    (lambda d: d.update(count=-1), "count must be an int"),
    (lambda d: d.update(sum=[1]), "sum must be a number"),
    (lambda d: d["histogram"].update(counts=[1, 2]), "the histogram needs one count per bin"),
    (lambda d: d.update(bins=None), "bins and histogram go together"),
    (lambda d: d["bins"].update(spacing="log"), "bins must be {'edges'"),
    (lambda d: d.update(histogram=[1, 2, 3]), "bins must be {'edges'"),
    (lambda d: d.update(loss="hinge"), "unknown loss"),
    (lambda d: d["params"].update(bins="log"), "params of binary_cross_entropy must have"),
    (lambda d: d.update(nan_count=1), "must add up to count"),
    (lambda d: d["histogram"].update(underflow=2**70), "must be an int from 0 to 2"),
    (lambda d: d.update(weight_sum=-1.0), "weight_sum must be >= 0"),
    (lambda d: d.update(sum=10**400), "sum must be a number"),
    (lambda d: d.update(n_classes=3), "n_classes must be None"),
])
def test_from_dict_rejects_malformed_states(change, match):
    state = StreamingLoss("binary_cross_entropy", bins=3, range=(0, 1)).update(
        np.array([0.5, 0.2]), np.array([1.0, 0.0])).to_dict()
    change(state)
    with pytest.raises(ValueError, match=match):
        StreamingLoss.from_dict(state)
    with pytest.raises(ValueError, match="not a StreamingLoss state"):
        StreamingLoss.from_dict([1, 2])


@pytest.mark.parametrize("bins, kw", [
    (np.logspace(-8, 3, 111), {}),                      # explicit edges: guessed like "log"
    (np.linspace(-1.0, 3.0, 9), {}),                    # ... and like an int number of bins
    (np.array([0.0, 0.1, 0.5, 2.0, 10.0]), {}),         # uneven: binary search
    (10, {"range": (0.0, 1e300)}),                      # beyond float32: binary search
    (10, {"range": (1e39, 2e39)}),
    (7, {"range": (1e-42, 1e-40)}),                     # subnormal float32 edges
    (100_000, {"range": (0.0, 20.0)}),                  # many bins: one counter copy each
    (5, {"range": (1e6, 1e6 + 1e-3)}),                  # a huge origin for the width
])
def test_histogram_is_exact_for_any_edges(simd_path, bins, kw):
    rng = np.random.default_rng(10)
    m = StreamingLoss("binary_cross_entropy_with_logits", bins=bins, **kw)
    edges = m.histogram[1]
    # losses softplus(-x) on, around and between the edges, in float64
    inner = rng.uniform(edges[0], edges[-1], 5000)
    around = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf),
                             edges * (1 + 1e-7), edges * (1 - 1e-7)])
    v = np.concatenate([inner, around, [0.0, 1e-300, edges[-1] * 2]])
    v = v[v > 0]
    with np.errstate(over="ignore"):  # softplus(-x) == v up to rounding; the kernel bins its own
        x = -np.log(np.expm1(v))
    x = x[np.isfinite(x)]
    m.update(x, np.ones_like(x))
    got = fastloss.binary_cross_entropy_with_logits(x, np.ones_like(x), reduction="none")
    np.testing.assert_array_equal(m.histogram[0], np.histogram(got, edges)[0])
    assert m.underflow == np.sum(got < edges[0]) and m.overflow == np.sum(got > edges[-1])


def test_explicit_log_edges_are_as_fast_as_log_bins():
    """Explicit edges that are evenly spaced in log (or linear) scale take the arithmetic
    guess, not the binary search: the same kernel arguments as bins="log"."""
    from fastloss.streaming import _Bins
    explicit = _Bins.parse(np.logspace(-8, 3, 111), None)
    assert (explicit.spacing, explicit.scale) == ("log", _Bins.parse("log", None).scale)
    assert _Bins.parse(np.linspace(0, 1, 11), None).spacing == "uniform"
    assert _Bins.parse([0.0, 0.1, 0.5, 2.0], None).spacing == "edges"
