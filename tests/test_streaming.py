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
from memory import peak_allocation

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


# ---- memory in proportion to the work ----

def test_many_bins_and_threads_allocate_in_proportion():
    """2**24 bins with n_threads=1024 asked for a histogram copy per thread (128 GiB); now
    about one copy and its sum, and the counts are still np.histogram's."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal(100_000).astype(np.float32)
    y = (x > 0).astype(np.float32)
    m = StreamingLoss("binary_cross_entropy_with_logits", bins=2**24, range=(0.0, 2.0))
    one_copy = 8 * (2**24 + 4)
    assert peak_allocation(lambda: m.update(x, y, n_threads=1024)) < 2.5 * one_copy
    v = fastloss.binary_cross_entropy_with_logits(x, y, reduction="none").astype(np.float64)
    counts, edges = m.histogram
    nonzero = np.flatnonzero(counts)  # np.histogram over 2**24 edges, on the filled bins only
    assert counts.sum() + m.overflow == m.count == x.size and m.underflow == 0
    np.testing.assert_array_equal(
        counts[nonzero], np.bincount(np.searchsorted(edges, v[v <= 2.0], "right") - 1,
                                     minlength=2**24)[nonzero])
    # few blocks: no more copies than threads that get one (8 copies of each of 516 slots
    # per thread: 33 KiB, 34 MB for 1024 threads)
    small = StreamingLoss("binary_cross_entropy_with_logits", bins=512, range=(0.0, 5.0))
    assert peak_allocation(lambda: small.update(x[:8192], y[:8192], n_threads=1024)) < 2**22
    np.testing.assert_array_equal(small.histogram[0], np.histogram(v[:8192], small.histogram[1])[0])


# ---- sharing a meter between threads ----

def _batches(loss, n_batches, rng):
    for i in range(n_batches):
        x, y, s, params = _data(loss, rng, np.float32, n=1001 + 37 * (i % 50))
        if i % 5 == 0:  # some nan losses too
            x = x.copy()
            x[(0,) * x.ndim] = np.nan
        yield x, y, s


@pytest.mark.parametrize("loss", ["binary_cross_entropy_with_logits", "cross_entropy"])
def test_threads_sharing_a_meter_give_the_serial_state(loss):
    """8 threads updating and merging into one meter lost histogram counts (numpy's += of
    the counts runs without the GIL); now the state is that of serial updates."""
    import threading
    params = _data(loss, np.random.default_rng(0))[3]
    batches = list(_batches(loss, 400, np.random.default_rng(12)))
    # many bins: numpy adds the counts without the GIL, where updates used to lose some
    make = lambda: StreamingLoss(loss, bins=2**16, range=(0.0, 8.0), **params)  # noqa: E731
    serial = make()
    for x, y, s in batches:
        serial.update(x, y, s)
    shared = make()
    errors = []

    def work(k):
        try:
            for i in range(k, len(batches), 8):
                x, y, s = batches[i]
                if i % 3:
                    shared.update(x, y, s, n_threads=1 + i % 2)
                else:  # through a meter of its own, merged in
                    shared.merge(make().update(x, y, s))
                shared.to_dict()  # reads meanwhile see consistent states
        except BaseException as e:  # noqa: B036 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert (shared.count, shared.nan_count, shared.underflow, shared.overflow, shared.min,
            shared.max) == (serial.count, serial.nan_count, serial.underflow, serial.overflow,
                            serial.min, serial.max)
    np.testing.assert_array_equal(shared.histogram[0], serial.histogram[0])
    assert shared.weight_sum == pytest.approx(serial.weight_sum, rel=1e-12)
    assert shared.sum == pytest.approx(serial.sum, rel=1e-12, nan_ok=True)
    assert serial.nan_count == (80 if loss.startswith("binary") else 0)  # position 0 ignored
    StreamingLoss.from_dict(shared.to_dict())


def test_merges_in_both_directions_at_once_and_pickles():
    """a.merge(b) and b.merge(a) from two threads do not deadlock; a meter pickles without
    its lock and the copy has one of its own."""
    import threading
    rng = np.random.default_rng(13)
    x = rng.standard_normal(1000)
    a = StreamingLoss("binary_cross_entropy_with_logits", bins="log").update(x, x > 0)
    b = StreamingLoss("binary_cross_entropy_with_logits", bins="log").update(x, x > 0)

    def merge_many(into, other):
        for _ in range(200):
            into.merge(other)

    threads = [threading.Thread(target=merge_many, args=args, daemon=True)
               for args in ((a, b), (b, a))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)  # a deadlock would otherwise hang the suite
    assert not any(t.is_alive() for t in threads)
    # each merge adds the other's count at the time: both counts are sums of the two
    assert a.histogram[0].sum() + a.overflow + a.underflow == a.count > 2000
    copy = pickle.loads(pickle.dumps(a))
    assert copy.to_dict() == a.to_dict()
    copy.update(x, x > 0)
    assert copy.count == a.count + 1000
    self_merged = StreamingLoss.from_dict(b.to_dict()).merge(b)
    assert self_merged.count == 2 * b.count
    b.merge(b)
    assert b.to_dict() == self_merged.to_dict()


# ---- counts near 2**63 ----

def _huge_state(count):
    """A valid state of count losses, all of them above the last edge."""
    m = StreamingLoss("binary_cross_entropy_with_logits", bins=4, range=(0.0, 1.0))
    state = m.update(np.array([-5.0]), np.array([1.0])).to_dict()
    state["count"] = state["histogram"]["overflow"] = count
    return state


def test_merge_and_update_refuse_to_pass_2_to_the_63():
    big = StreamingLoss.from_dict(_huge_state(2**63 - 1))
    other = StreamingLoss.from_dict(_huge_state(2**63 - 1))
    before = big.to_dict()
    with pytest.raises(OverflowError, match=r"count would pass 2\*\*63 - 1"):
        big.merge(other)
    with pytest.raises(OverflowError, match=r"count would pass 2\*\*63 - 1"):
        big.update(np.array([0.0]), np.array([1.0]))
    with pytest.raises(OverflowError):
        big.merge(big)
    assert big.to_dict() == before
    # one below the limit still adds up exactly
    almost = StreamingLoss.from_dict(_huge_state(2**63 - 2)).update(np.array([-5.0]),
                                                                    np.array([1.0]))
    assert almost.count == almost.overflow == 2**63 - 1
    StreamingLoss.from_dict(almost.to_dict())


# ---- from_dict: states no updates produce ----

def _valid_states():
    """Honest states: (label, meter)."""
    rng = np.random.default_rng(14)
    x = rng.standard_normal((50, 3)) * 3
    y = (rng.random((50, 3)) < 0.4).astype(np.float64)
    x[0, 0] = np.nan
    t = rng.integers(0, 3, 50)
    return {
        "binary": StreamingLoss("binary_cross_entropy_with_logits", bins=5,
                                range=(0.1, 2.0)).update(x[1:], y[1:]),
        "binary nan": StreamingLoss("sigmoid_focal_loss", bins="log").update(x, y, y + 1),
        "softmax": StreamingLoss("cross_entropy", weight=[1.0, 2.0, 0.5], ignore_index=1,
                                 bins=[0.0, 0.5, 1.0, 8.0]).update(x, t),
        "no bins": StreamingLoss("softmax_focal_loss", gamma=2.0).update(x[1:], t[1:]),
        "empty": StreamingLoss("binary_cross_entropy", bins=3, range=(0, 1)),
        "negative class weight": StreamingLoss("cross_entropy", weight=[-1.0, 2.0, 1.0])
        .update(x[1:], np.zeros(49, np.int64)),
        "+inf and -inf": StreamingLoss("binary_cross_entropy_with_logits", pos_weight=-1.0,
                                       bins=3, range=(0, 1))
        .update(np.array([-np.inf, np.inf]), np.array([1.0, 0.0])),
    }


@pytest.mark.parametrize("label", list(_valid_states()))
def test_honest_states_round_trip(label):
    """Negative class weights (weight_sum < 0) and nan sums from +inf and -inf losses are
    states updates produce: from_dict takes them back."""
    m = _valid_states()[label]
    state = json.loads(json.dumps(m.to_dict(), allow_nan=False))
    assert StreamingLoss.from_dict(state).to_dict() == m.to_dict()


def _set(*path_and_value):
    *path, key, value = path_and_value

    def change(d):
        for p in path:
            d = d[p]
        d[key] = value
    return change


@pytest.mark.parametrize("label, change, match", [
    ("empty", _set("histogram", "counts", [2**62, 2**62, 2**62]), "must add up to count"),
    ("empty", lambda d: d["histogram"].update(counts=[2**62] * 3, underflow=2**62),
     "must add up to count"),  # 2**64 wraps to 0 in int64
    ("binary", _set("sum", "nan"), "sum is nan without a nan loss"),
    ("binary", _set("sum", "-inf"), "sign of a loss"),
    ("binary", _set("sum", -1.0), "sign of a loss"),
    ("binary nan", _set("sum", 3.0), "sum must be nan when nan_count > 0"),
    ("binary", _set("min", 100.0), "min 100.0 must be <= max"),
    ("binary", _set("min", "nan"), "must be <= max"),
    ("binary", _set("max", 0.05), "must lie in the first and last filled slots"),
    ("binary", _set("max", 1.5), "must lie in the first and last filled slots"),
    ("empty", _set("min", 0.5), "min and max must be 'inf' and '-inf'"),
    ("empty", _set("weight_sum", 2.0), "sum and weight_sum must be 0 without losses"),
    ("binary", _set("weight_sum", "nan"), "weight_sum must be >= 0"),
    ("no bins", _set("nan_count", 10**6), "nan_count 1000000 exceeds count"),
    ("softmax", _set("params", "weight", [1.0, 2.0]), "class weight has 2 values for 3"),
    ("softmax", _set("params", "weight", [[1.0, 2.0, 3.0]]), "weight must be 1-D"),
    ("softmax", _set("n_classes", None), "n_classes must be an int once there are losses"),
    ("softmax", _set("loss", ["cross_entropy"]), "unknown loss"),
    ("softmax", _set("loss", {}), "unknown loss"),
    ("no bins", _set("params", "gamma", 10**400), "gamma must be a finite float"),
])
def test_from_dict_rejects_states_no_updates_produce(label, change, match):
    state = _valid_states()[label].to_dict()
    change(state)
    with pytest.raises(ValueError, match=match):
        StreamingLoss.from_dict(state)


def test_constructor_takes_only_a_loss_name():
    with pytest.raises(ValueError, match="unknown loss"):
        StreamingLoss(["cross_entropy"])
    with pytest.raises(ValueError, match="weight must be 1-D, one value per class"):
        StreamingLoss("cross_entropy", weight=np.ones((2, 3)))


# ---- from_dict under mutation ----

_STATES = {label: m.to_dict() for label, m in _valid_states().items()}
_ODD_VALUES = [None, True, "x", "nan", "inf", "-inf", [], {}, [1], 1.5, -1, 0, 2**63 - 1, 2**63,
               -(2**63), 10**400, float("nan")]


def _paths(value, prefix=()):
    """Every (path, value) in a to_dict() state, containers included."""
    yield prefix, value
    items = value.items() if isinstance(value, dict) else \
        enumerate(value) if isinstance(value, list) else ()
    for key, v in items:
        yield from _paths(v, prefix + (key,))


def _mutate(state, data):
    import copy
    from hypothesis import strategies as st
    paths = [p for p, _ in _paths(state) if p]
    path = data.draw(st.sampled_from(paths))
    parent = state
    for key in path[:-1]:
        parent = parent[key]
    key, old = path[-1], parent[path[-1]]
    how = data.draw(st.sampled_from(["drop", "type", "number", "negate", "list"]))
    if how == "drop":
        parent.pop(key)
    elif how == "type":
        parent[key] = copy.deepcopy(data.draw(st.sampled_from(_ODD_VALUES)))
    elif how == "number" and isinstance(old, (int, float)) and not isinstance(old, bool):
        step = data.draw(st.sampled_from([1, -1, 2**62, 0.5, 1e-300, -1e300]))
        parent[key] = old + (step if abs(old) < 2**1000 else 1)
    elif how == "negate" and isinstance(old, (int, float)):
        parent[key] = -old
    elif how == "list" and isinstance(old, list):
        parent[key] = old[:-1] if data.draw(st.booleans()) else old + old[-1:]
    else:
        parent[key] = copy.deepcopy(data.draw(st.sampled_from(_ODD_VALUES)))


def _same(a, b):
    """a == b, numbers compared as the floats a state holds them as."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and type(a) is not type(b):
        return float(a) == float(b)  # [True, 2.0] is a weight array like [1.0, 2.0]
    return type(a) is type(b) and a == b


def _check_like_an_honest_meter(m, state):
    """What every meter updates and merges produce satisfies (stated here from the definitions
    in the docstring, not from_dict's code), and that it keeps working like one."""
    d = m.to_dict()
    assert _same(d, state)  # nothing was dropped or altered on the way in
    count, nans = m.count, m.nan_count
    assert 0 <= nans <= count <= 2**63 - 1
    if m.histogram is not None:
        assert int(m.histogram[0].sum()) + m.underflow + m.overflow + nans == count
    if count == nans:
        assert math.isnan(m.min) and math.isnan(m.max)
    else:
        assert m.min <= m.max
    if count == 0:
        assert (m.sum, m.weight_sum) == (0.0, 0.0)
    if nans:
        assert math.isnan(m.sum)
    elif not (m.min < 0 < m.max):
        assert not math.isnan(m.sum)
    if m.loss in ("cross_entropy", "softmax_focal_loss") and count:
        assert isinstance(d["n_classes"], int)
    # honest operations keep it valid: merge into itself, update, round trip
    if count <= 2**62:
        m.merge(StreamingLoss.from_dict(state))
        StreamingLoss.from_dict(m.to_dict())


@pytest.mark.parametrize("label", list(_STATES))
def test_from_dict_of_mutated_states_raises_cleanly_or_gives_a_valid_meter(label):
    import copy
    from hypothesis import HealthCheck, given, settings, strategies as st

    @settings(max_examples=150, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.data())
    def run(data):
        state = copy.deepcopy(_STATES[label])
        for _ in range(data.draw(st.integers(1, 3))):
            _mutate(state, data)
        try:
            m = StreamingLoss.from_dict(copy.deepcopy(state))
        except (ValueError, TypeError) as e:
            assert str(e)
        else:
            _check_like_an_honest_meter(m, state)

    run()
