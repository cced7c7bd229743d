"""fastloss.dask: Dask arrays, in uneven and misaligned chunks, on the threaded scheduler and on
a dask.distributed LocalCluster of 2 worker processes, give the in-memory results (float64:
within 1e-12 relative, per-element losses and histograms exactly; float32/float16: a few ulps,
see test_float32_and_float16_results); the graph holds no per-element losses; a worker's memory
stays bounded by a few chunks; errors.

FASTLOSS_DASK_TEST_ELEMENTS sets the size of the memory test (default 5e7 elements: 450 MB of
generated data, a few seconds)."""
import importlib
import os
import resource
import sys
import threading
from typing import NamedTuple

import dask
import dask.array as da
import numpy as np
import pytest
from dask.callbacks import Callback
from dask.utils import key_split
from dask.delayed import Delayed
from distributed import Client, LocalCluster

import fastloss
import fastloss.dask as fd
from fastloss import StreamingLoss
from fastloss.streaming import LOSSES

RTOL = 1e-12


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as cluster, \
            Client(cluster, set_as_default=False) as c:
        yield c


@pytest.fixture(params=["threads", "cluster"])
def scheduler(request):
    """What dask.compute takes as scheduler=: the threaded scheduler or the LocalCluster."""
    if request.param == "threads":
        return "threads"
    return request.getfixturevalue("client").get


class Case(NamedTuple):
    """In-memory arrays and their Dask counterparts. weight/dask_weight: the loss function's
    weight (elementwise for the binary losses; per class for the softmax ones, where the Dask
    one is the same NumPy array); sample/dask_sample: the sample weight for evaluate."""
    name: str
    x: np.ndarray
    y: np.ndarray
    weight: object
    sample: object
    params: dict
    dask_x: object
    dask_y: object
    dask_weight: object
    dask_sample: object


def _cases(loss, rng):
    """float64 cases with uneven chunks, different between the operands."""
    if LOSSES[loss][0] == "binary":
        x = rng.standard_normal((1003, 6)) * 4
        if loss == "binary_cross_entropy":
            x = rng.random(x.shape)
        y = (rng.random(x.shape) < 0.4).astype(np.float64)
        y[::7] = rng.random(y[::7].shape)  # some soft targets
        params = {"binary_cross_entropy_with_logits": {"pos_weight": rng.random(6) + 0.5},
                  "sigmoid_focal_loss": {"alpha": 0.3, "gamma": 1.5}}.get(loss, {})
        X = da.from_array(x, chunks=((300, 1, 402, 300), (4, 2)))  # pos_weight: rechunked
        Y = da.from_array(y, chunks=((250, 250, 503), (3, 3)))
        full = rng.random(x.shape)
        weights = [("plain", None, None), ("weight", full, da.from_array(full, chunks=(77, 6))),
                   ("row weight", full[:, :1], da.from_array(full[:, :1], chunks=200)),
                   ("column weight", full[0], full[0])]  # NumPy, broadcast
        return [Case(name, x, y, w, w, params, X, Y, W, W) for name, w, W in weights]
    c = 7
    x = rng.standard_normal((1003, c)) * 3
    t = rng.integers(0, c, 1003)
    t[::9] = -1
    X = da.from_array(x, chunks=((300, 1, 402, 300), (3, 4)))  # the class axis is rechunked
    T = da.from_array(t, chunks=130)
    cw = rng.random(c) + 0.5
    s = rng.random(1003)
    S = da.from_array(s, chunks=333)
    params = {"ignore_index": -1, **({"label_smoothing": 0.1} if loss == "cross_entropy"
                                     else {"gamma": 2.0})}
    seg_x = rng.standard_normal((5, c, 9, 11))
    seg_t = rng.integers(0, c, (5, 9, 11))
    seg_t[:, ::4] = -1
    seg_s = rng.random((9, 11))  # broadcasts to the loss's shape (5, 9, 11)
    row = rng.standard_normal(c)  # 1-D input: one row, a 0-d target
    cases = [
        Case("plain", x, t, None, s, params, X, T, None, S),
        Case("class weight", x, t, cw, s, params, X, T, cw, S),
        Case("segmentation", seg_x, seg_t, cw, seg_s, params,
             da.from_array(seg_x, chunks=(2, 3, 5, 6)), da.from_array(seg_t, chunks=(3, 9, 4)),
             cw, seg_s),
        Case("1-D", row, np.int64(3), cw, None, params, da.from_array(row, chunks=3),
             np.int64(3), cw, None)]
    if loss == "cross_entropy":
        p = rng.random(x.shape)
        p /= p.sum(axis=1, keepdims=True)
        cases.append(Case("probabilities", x, p, cw, s, {"label_smoothing": 0.2}, X,
                          da.from_array(p, chunks=(100, 7)), cw, S))
    return cases


def _close(got, expected, rtol=RTOL):
    return got == expected or abs(got - expected) <= rtol * abs(expected)


@pytest.mark.parametrize("loss", list(LOSSES))
def test_functions_and_evaluate_match_in_memory(loss, scheduler):
    rng = np.random.default_rng(7)
    function, lazy = getattr(fastloss, loss), getattr(fd, loss)
    binary = LOSSES[loss][0] == "binary"
    expected, results = [], []
    for case in _cases(loss, rng):
        for reduction in ("none", "mean", "sum"):
            expected.append((case.name, reduction, function(
                case.x, case.y, weight=case.weight, reduction=reduction, **case.params)))
            results.append(lazy(case.dask_x, case.dask_y, weight=case.dask_weight,
                                reduction=reduction, **case.params))
        # evaluate: the sample weight (the binary losses' elementwise weight), a histogram
        class_weight = {} if binary or case.weight is None else {"weight": case.weight}
        expected.append((case.name, "evaluate", StreamingLoss(
            loss, bins="log", **case.params, **class_weight).update(case.x, case.y, case.sample)))
        results.append(fd.evaluate(loss, case.dask_x, case.dask_y, case.dask_sample, bins="log",
                                   class_weight=class_weight.get("weight"), **case.params))
    evaluated = [e[1] == "evaluate" for e in expected]
    assert all(isinstance(r, Delayed if ev else da.Array) for r, ev in zip(results, evaluated))
    # in one call: evaluate's Delayed is optimized as the arrays are, so dask 2026.8 keeps the
    # order given (it groups the results of a mix by optimization)
    computed = dask.compute(*results, scheduler=scheduler)
    for (name, reduction, e), got in zip(expected, computed):
        where = f"{loss} {name} {reduction}"
        if reduction == "none":  # each element's loss does not depend on the chunking
            assert got.dtype == e.dtype and got.shape == e.shape, where
            np.testing.assert_array_equal(got, e, err_msg=where)
        elif reduction == "evaluate":
            assert isinstance(got, StreamingLoss), where
            for key in ("sum", "weight_sum", "mean"):
                assert _close(getattr(got, key), getattr(e, key)), (where, key)
            assert (got.count, got.nan_count, got.min, got.max, got.underflow,
                    got.overflow) == (e.count, e.nan_count, e.min, e.max, e.underflow,
                                      e.overflow), where
            np.testing.assert_array_equal(got.histogram[0], e.histogram[0], err_msg=where)
            assert got.histogram[0].sum() > 0, where
        else:
            assert type(got) is type(e) is np.float64, where
            assert _close(got, e), (where, got, e)


def _float_case(loss, dtype, rng, n):
    """Inputs of dtype for loss (with its parameters), in memory and chunked."""
    if LOSSES[loss][0] == "binary":
        x = rng.standard_normal((n, 5)) * 3
        if loss == "binary_cross_entropy":
            x = rng.random((n, 5))
        y = rng.random(x.shape) < 0.4
        params = {"binary_cross_entropy_with_logits": {"pos_weight": rng.random(5) + 0.5},
                  "sigmoid_focal_loss": {"alpha": 0.3, "gamma": 1.5}}.get(loss, {})
    else:
        x = rng.standard_normal((n, 5)) * 3
        y = rng.integers(0, 5, n)
        y[::11] = -1
        params = {"weight": rng.random(5) + 0.5, "ignore_index": -1}
    x = x.astype(dtype)
    rows = (1234, 777) * (n // 2011) + (n % 2011,)  # uneven
    return x, y, params, da.from_array(x, chunks=(rows, 5))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("loss", list(LOSSES))
def test_float32_and_float16_results(loss, dtype):
    """As in memory: a NumPy scalar of the input's dtype (float16 computed in float32), within
    4 ulps of the in-memory result. Both round a float64 total to the dtype: the two totals
    differ by their float64 grouping (1e-16) and, for the elementwise losses, by the grouping
    of the kernel's float32 lane sums (runs of 512 elements summed in float32 lanes before
    float64; another chunking regroups them: about 1e-8 relative here, at most a few 1e-7), so
    the results may be neighbours (1 ulp) and, rarely, 2 or 3 ulps apart. "none", counts and
    histograms are exact; evaluate's float64 sums agree within 1e-12."""
    n = 20_000 if dtype == np.float32 else 4000  # a float16 "sum" within its range
    x, y, params, X = _float_case(loss, dtype, np.random.default_rng(3), n)
    for reduction in ("mean", "sum"):
        got = getattr(fd, loss)(X, y, reduction=reduction, **params)
        assert got.dtype == dtype and got.shape == ()
        got = got.compute(scheduler="threads")
        expected = getattr(fastloss, loss)(x, y, reduction=reduction, **params)
        assert type(got) is type(expected) is dtype
        ulps = abs(float(got) - float(expected)) / float(np.spacing(abs(expected)))
        assert ulps <= 4, (reduction, got, expected, ulps)
    none = getattr(fd, loss)(X, y, reduction="none", **params)
    assert none.dtype == dtype
    assert none.chunks == (X.chunks if LOSSES[loss][0] == "binary" else X.chunks[:1])
    np.testing.assert_array_equal(none.compute(scheduler="threads"),
                                  getattr(fastloss, loss)(x, y, reduction="none", **params))
    class_weight = params.pop("weight", None) if LOSSES[loss][0] == "softmax" else None
    got = fd.evaluate(loss, X, y, class_weight=class_weight, bins="log",
                      **params).compute(scheduler="threads")
    expected = StreamingLoss(loss, bins="log", **params, **(
        {} if class_weight is None else {"weight": class_weight})).update(x, y)
    assert _close(got.sum, expected.sum) and _close(got.weight_sum, expected.weight_sum)
    assert (got.count, got.min, got.max) == (expected.count, expected.min, expected.max)
    np.testing.assert_array_equal(got.histogram[0], expected.histogram[0])


def test_split_every_shapes_the_tree_not_the_result():
    rng = np.random.default_rng(5)
    x = rng.standard_normal(16_000)
    y = rng.random(16_000) < 0.5
    X = da.from_array(x, chunks=1000)  # 16 blocks
    expected = StreamingLoss("binary_cross_entropy_with_logits", bins=20,
                             range=(0, 5)).update(x, y)
    for split_every, merges in ((2, 8 + 4 + 2 + 1), (None, 2 + 1), (4, 4 + 1), (16, 1),
                                (100, 1)):
        d = fd.evaluate("binary_cross_entropy_with_logits", X, y, bins=20, range=(0, 5),
                        split_every=split_every)
        keys = [k for k in dict(d.__dask_graph__())
                if key_split(k) in ("fastloss-merge", "fastloss-streamingloss")]
        assert len(keys) == merges, split_every
        got = d.compute(scheduler="threads")
        assert got.mean == pytest.approx(expected.mean, rel=RTOL)
        assert got.count == expected.count
        np.testing.assert_array_equal(got.histogram[0], expected.histogram[0])


def test_merging_leaves_the_partial_states_unchanged():
    """A merge task may run again (a retry, a lost worker), so it must not change its inputs."""
    x = np.linspace(-3, 3, 1000)
    a = StreamingLoss("binary_cross_entropy_with_logits", bins="log").update(x[:600], x[:600] > 0)
    b = StreamingLoss("binary_cross_entropy_with_logits", bins="log").update(x[600:], x[600:] > 0)
    before = a.to_dict(), b.to_dict()
    merged = fd._merge(fd._cell(a, 1), b)
    assert (a.to_dict(), b.to_dict()) == before
    assert merged.count == 1000 and merged is not a


class _Results(Callback):
    """Records what each task of the local schedulers returned."""

    def __init__(self):
        super().__init__()
        self.results = {}

    def _posttask(self, key, result, dsk, state, worker_id):
        self.results[key] = result


def _per_element(results, inputs):
    """The tasks, other than the inputs' blocks, that returned an array of floats."""
    return [k for k, r in results.items()
            if k not in inputs and isinstance(r, np.ndarray) and r.dtype.kind == "f"
            and r.size > 1]


def test_no_task_returns_per_element_losses():
    rng = da.random.default_rng(11)
    x = rng.standard_normal((4000, 10), chunks=(500, 10))
    y = rng.random((4000, 10), chunks=(500, 10)) < 0.3
    inputs = set(x.__dask_graph__()) | set(y.__dask_graph__())  # every task making them
    lazy = [fd.binary_cross_entropy_with_logits(x, y), fd.sigmoid_focal_loss(x, y, reduction="sum"),
            fd.evaluate("binary_cross_entropy_with_logits", x, y, bins="log")]
    for result in lazy:
        with _Results() as record:
            dask.compute(result, scheduler="threads", optimize_graph=False)
        assert len(record.results) > 16  # the inputs' blocks, states, merges
        assert not _per_element(record.results, inputs)
    # the check sees per-element losses where they are: a sum of the "none" result
    with _Results() as record:
        dask.compute(fd.binary_cross_entropy_with_logits(x, y, reduction="none").sum(),
                     scheduler="threads", optimize_graph=False)
    assert len(_per_element(record.results, inputs)) == 8


def test_threads_per_task(monkeypatch, client):
    """1 kernel thread per task by default on every scheduler (Dask runs tasks side by side),
    or n_threads as given."""
    seen = []
    thread_count = fastloss._validate.thread_count

    def record(n_threads, n_elements):
        seen.append(n_threads)
        return thread_count(n_threads, n_elements)

    monkeypatch.setattr(fastloss._validate, "thread_count", record)
    x = da.from_array(np.linspace(-3, 3, 5000), chunks=1000)
    for scheduler, n_threads, expected in (("threads", None, 1), ("sync", None, 1),
                                           ("threads", 2, 2), ("sync", 3, 3)):
        seen.clear()
        for lazy in (fd.evaluate("binary_cross_entropy_with_logits", x, x > 0,
                                 n_threads=n_threads),
                     fd.binary_cross_entropy_with_logits(x, x > 0, n_threads=n_threads),
                     fd.binary_cross_entropy_with_logits(x, x > 0, reduction="none",
                                                         n_threads=n_threads)):
            lazy.compute(scheduler=scheduler)
        assert seen and set(seen) == {expected}, (scheduler, n_threads, seen)
    # from another thread, with the synchronous scheduler
    seen.clear()
    t = threading.Thread(target=lambda: fd.binary_cross_entropy_with_logits(
        x, x > 0).compute(scheduler="sync"))
    t.start()
    t.join()
    assert seen and set(seen) == {1}
    # on a worker of the LocalCluster (2 processes of 1 thread)
    assert client.submit(fd._task_threads, None, pure=False).result() == 1
    assert client.submit(fd._task_threads, 3, pure=False).result() == 3


def _peak_rss(scale=1 if sys.platform == "darwin" else 1024):
    """The process's peak resident memory in bytes (ru_maxrss: bytes on macOS, KiB else)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def test_memory_of_a_large_evaluation_is_a_few_chunks():
    """FASTLOSS_DASK_TEST_ELEMENTS (default 5e7) float32 logits and bool targets, generated
    chunk by chunk on the workers (9 bytes an element with the uniform draws: 450 MB, 225 MB a
    worker by default): each worker's peak memory grows by a few chunks only (about 25 MB
    measured), far less than its share of the data. A cluster of its own: the workers' peak
    resident memory (which only grows) must not come from earlier tests."""
    chunk = 10**6
    chunk_bytes = chunk * (4 + 4 + 1)  # logits, the uniform draws, the targets
    bound = 8 * chunk_bytes  # 72 MB
    # a worker's share of the data must be well above the bound for the test to show anything
    n = max(int(float(os.environ.get("FASTLOSS_DASK_TEST_ELEMENTS", "5e7"))),
            4 * bound // 9 * 2)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as cluster, \
            Client(cluster, set_as_default=False) as client:
        small = da.random.default_rng(0).standard_normal(1000, chunks=100, dtype=np.float32)
        fd.evaluate("binary_cross_entropy_with_logits", small, small > 0,
                    bins="log").compute(scheduler=client.get)  # imports, first allocations
        before = client.run(_peak_rss)
        rng = da.random.default_rng(12345)
        x = rng.standard_normal(n, chunks=chunk, dtype=np.float32)
        y = rng.random(n, chunks=chunk, dtype=np.float32) < 0.3
        m = fd.evaluate("binary_cross_entropy_with_logits", x, y,
                        bins="log").compute(scheduler=client.get)
        after = client.run(_peak_rss)
    assert m.count == n and m.histogram[0].sum() + m.underflow + m.overflow == n
    assert 0.5 < m.mean < 1.2  # softplus of unit normals, weighted to the negatives
    for worker, peak in after.items():
        growth = peak - before[worker]
        assert growth < bound, (worker, growth / 1e6)


# ---- regressions ----

@pytest.mark.parametrize("loss", [k for k, v in LOSSES.items() if v[0] == "binary"])
def test_elementwise_weights_of_any_value_as_in_memory(loss):
    """The binary losses' weight rescales each element (torch), whatever its sign or value:
    "mean" is sum(w*l) / N, nan and inf propagate, as in memory (not a sample weight, which
    must be finite and non-negative)."""
    rng = np.random.default_rng(4)
    x = rng.random((60, 6)) if loss == "binary_cross_entropy" else rng.standard_normal((60, 6))
    y = (rng.random(x.shape) < 0.5).astype(np.float64)
    X = da.from_array(x, chunks=(25, 4))
    nan_row = np.ones(6)
    nan_row[2] = np.nan
    for weight in (-np.ones(6), -rng.random((60, 1)), nan_row, np.array([np.inf] * 6),
                   np.array([np.inf, -np.inf, 1, 1, 1, 1]), np.zeros(6)):
        W = da.from_array(weight, chunks=4 if weight.ndim == 1 else (20, 1))
        for reduction in ("mean", "sum"):
            expected = getattr(fastloss, loss)(x, y, weight=weight, reduction=reduction)
            got = getattr(fd, loss)(X, y, weight=W, reduction=reduction).compute(
                scheduler="sync")
            assert type(got) is type(expected)
            assert (np.isnan(got) and np.isnan(expected)) or _close(got, expected), \
                (weight, reduction, got, expected)


def test_none_is_not_a_default_for_scalar_parameters():
    """As in memory: None is "not given" only for pos_weight and weight; alpha=None,
    gamma=None, ignore_index=None, label_smoothing=None raise TypeError at once."""
    x = np.zeros((10, 3))
    t = np.zeros(10, np.int64)
    X = da.from_array(x, chunks=5)
    for name, call, kwargs in (
            ("sigmoid_focal_loss", (x, x), {"alpha": None}),
            ("sigmoid_focal_loss", (x, x), {"gamma": None}),
            ("softmax_focal_loss", (x, t), {"gamma": None}),
            ("softmax_focal_loss", (x, t), {"ignore_index": None}),
            ("cross_entropy", (x, t), {"ignore_index": None}),
            ("cross_entropy", (x, t), {"label_smoothing": None})):
        with pytest.raises(TypeError) as in_memory:
            getattr(fastloss, name)(*call, **kwargs)
        with pytest.raises(TypeError, match=str(in_memory.value)):
            getattr(fd, name)(X, call[1], **kwargs)
    # the parameter arrays: None is "not given"
    assert _close(fd.binary_cross_entropy_with_logits(X, x, None, pos_weight=None).compute(),
                  fastloss.binary_cross_entropy_with_logits(x, x))
    assert _close(fd.cross_entropy(X, t, weight=None).compute(), fastloss.cross_entropy(x, t))


def test_parameter_arrays_are_private_copies():
    """Changing the caller's pos_weight or class weights after building changes neither the
    result nor its keys."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((90, 4))
    y = rng.random(x.shape) < 0.5
    t = rng.integers(0, 4, 90)
    X = da.from_array(x, chunks=(40, 4))
    pw, cw = rng.random(4) + 0.5, rng.random(4) + 0.5
    pw0, cw0 = pw.copy(), cw.copy()
    lazy = {r: fd.binary_cross_entropy_with_logits(X, y, pos_weight=pw, reduction=r)
            for r in ("none", "mean", "sum")}
    lazy.update({("ce", r): fd.cross_entropy(X, t, weight=cw, reduction=r)
                 for r in ("none", "mean", "sum")})
    ev = fd.evaluate("cross_entropy", X, t, class_weight=cw)
    names = {k: v.name for k, v in lazy.items()}
    pw[:] = 100.0
    cw[:] = 100.0
    for r in ("none", "mean", "sum"):
        _check([(fastloss.binary_cross_entropy_with_logits(x, y, pos_weight=pw0, reduction=r),
                 lazy[r].compute(scheduler="sync")),
                (fastloss.cross_entropy(x, t, weight=cw0, reduction=r),
                 lazy[("ce", r)].compute(scheduler="sync"))])
        assert lazy[r].name == fd.binary_cross_entropy_with_logits(
            X, y, pos_weight=pw0, reduction=r).name == names[r]
        assert lazy[("ce", r)].name == fd.cross_entropy(X, t, weight=cw0, reduction=r).name
    assert _close(ev.compute(scheduler="sync").mean, fastloss.cross_entropy(x, t, weight=cw0))


def _all_results(loss, x, y, X, Y, **params):
    """(expected, computed) pairs of every reduction and evaluate's mean, sum and count."""
    pairs = []
    for reduction in ("none", "mean", "sum"):
        pairs.append((getattr(fastloss, loss)(x, y, reduction=reduction, **params),
                      getattr(fd, loss)(X, Y, reduction=reduction, **params).compute(
                          scheduler="sync")))
    class_weight = params.pop("weight", None)
    e = StreamingLoss(loss, **params, **({} if class_weight is None else
                                         {"weight": class_weight})).update(x, y)
    g = fd.evaluate(loss, X, Y, class_weight=class_weight, **params).compute(scheduler="sync")
    pairs += [(e.mean, g.mean), (e.sum, g.sum), (e.count, g.count)]
    return pairs


def _check(pairs):
    for expected, got in pairs:
        if isinstance(expected, np.ndarray):
            assert got.dtype == expected.dtype and got.shape == expected.shape
            np.testing.assert_array_equal(got, expected)
        else:
            assert (np.isnan(got) and np.isnan(expected)) or _close(got, expected), \
                (got, expected)


def test_zero_d_empty_inputs_and_zero_size_chunks():
    rng = np.random.default_rng(8)
    # 0-d binary input
    x0, y0 = np.float64(0.7), np.float64(1.0)
    for loss in ("binary_cross_entropy", "binary_cross_entropy_with_logits",
                 "sigmoid_focal_loss"):
        _check(_all_results(loss, x0, y0, da.asarray(x0), da.asarray(y0)))
    # empty inputs: "mean" is nan (0/0), "sum" 0, as in memory
    xe = np.zeros((0, 5))
    _check(_all_results("binary_cross_entropy_with_logits", xe, xe,
                        da.from_array(xe, chunks=(3, 2)), xe))
    _check(_all_results("cross_entropy", xe, np.zeros(0, np.int64),
                        da.from_array(xe, chunks=(3, 5)), np.zeros(0, np.int64)))
    # zero-size chunks among others
    x = rng.standard_normal((500, 5))
    y = rng.random(x.shape) < 0.5
    t = rng.integers(0, 5, 500)
    X = da.from_array(x, chunks=((0, 300, 0, 200, 0), (5,)))
    _check(_all_results("binary_cross_entropy_with_logits", x, y, X,
                        da.from_array(y, chunks=((100, 0, 400), (2, 3))),
                        pos_weight=rng.random(5) + 0.5))
    _check(_all_results("softmax_focal_loss", x, t, X, da.from_array(t, chunks=(0, 250, 250)),
                        weight=rng.random(5) + 0.5))


def test_pos_weight_per_class_on_4d_input():
    """pos_weight (C, 1, 1) on (N, C, H, W): the class axis is made one chunk, the others keep
    the input's chunks (so does the "none" result)."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((6, 3, 8, 10))
    y = rng.random(x.shape) < 0.4
    pw = (rng.random(3) + 0.5).reshape(3, 1, 1)
    X = da.from_array(x, chunks=(4, 2, 5, 6))
    Y = da.from_array(y, chunks=(3, 3, 8, 4))
    _check(_all_results("binary_cross_entropy_with_logits", x, y, X, Y, pos_weight=pw))
    none = fd.binary_cross_entropy_with_logits(X, Y, pos_weight=pw, reduction="none")
    assert none.chunks == (X.chunks[0], (3,), X.chunks[2], X.chunks[3])
    # 1-D input with a pos_weight that varies: one row of classes, one chunk
    x1, y1, pw1 = x[0, :, 0, 0], y[0, :, 0, 0], pw.ravel()
    _check(_all_results("binary_cross_entropy_with_logits", x1, y1, da.from_array(x1, chunks=2),
                        y1, pos_weight=pw1))


def test_all_positions_ignored():
    """"mean" is nan (0/0), "sum" 0, evaluate counts nothing, as in memory."""
    x = np.random.default_rng(10).standard_normal((100, 4))
    t = np.full(100, -100)
    X = da.from_array(x, chunks=30)
    for loss in ("cross_entropy", "softmax_focal_loss"):
        pairs = _all_results(loss, x, t, X, da.from_array(t, chunks=45),
                             weight=np.array([1.0, 2, 3, 4]))
        _check(pairs)
        assert np.isnan(pairs[1][1]) and pairs[2][1] == 0 and pairs[-1][1] == 0


def test_none_result_is_chunked_like_the_input():
    """Target and weight are rechunked to the input's chunks, not the input to a common
    refinement."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((1000, 6))
    y = rng.random(x.shape) < 0.5
    X = da.from_array(x, chunks=((300, 300, 300, 100), (4, 2)))
    Y = da.from_array(y, chunks=((250, 250, 500), (3, 3)))
    W = da.from_array(rng.random((1000, 1)), chunks=((450, 550), 1))
    for lazy in (fd.binary_cross_entropy_with_logits(X, Y, W, reduction="none"),
                 fd.sigmoid_focal_loss(X, Y, weight=W)):
        assert lazy.chunks == X.chunks
    lazy = fd.binary_cross_entropy_with_logits(X, Y, W, reduction="none",
                                               pos_weight=np.ones(6))
    assert lazy.chunks == (X.chunks[0], (6,))  # the axis pos_weight varies along: one chunk
    np.testing.assert_array_equal(lazy.compute(scheduler="sync"),
                                  fastloss.binary_cross_entropy_with_logits(
                                      x, y, W.compute(), reduction="none"))
    T = da.from_array(rng.integers(0, 6, 1000), chunks=((250, 250, 500),))
    assert fd.cross_entropy(X, T, reduction="none").chunks == (X.chunks[0],)
    assert fd.cross_entropy(X, T, reduction="none").compute(scheduler="sync").shape == (1000,)


class _CountingLoader:
    """A block loader that counts its calls (the synchronous scheduler: one thread)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, i):
        self.calls += 1
        return np.linspace(-1, 1, 1000) * (i + 1)


def test_results_computed_together_read_the_inputs_once():
    """The reductions are graph layers over the inputs' own keys (not optimized copies made
    at build time), and evaluate's Delayed is optimized as Dask arrays are: dask.compute of
    several results, of both kinds, shares the inputs' tasks."""
    load = _CountingLoader()
    X = da.concatenate([da.from_delayed(dask.delayed(load, pure=True)(i), (1000,), np.float64)
                        for i in range(4)])
    Y = X > 0.1
    for results in ((fd.binary_cross_entropy_with_logits(X, Y),
                     fd.sigmoid_focal_loss(X, Y, reduction="sum"),
                     fd.binary_cross_entropy_with_logits(X, Y, reduction="none").sum()),
                    (fd.evaluate("binary_cross_entropy_with_logits", X, Y),
                     fd.evaluate("sigmoid_focal_loss", X, Y, bins="log")),
                    (fd.evaluate("binary_cross_entropy_with_logits", X, Y),
                     fd.binary_cross_entropy_with_logits(X, Y, reduction="sum"),
                     fd.evaluate("sigmoid_focal_loss", X, Y))):
        load.calls = 0
        computed = dask.compute(*results, scheduler="sync")
        assert load.calls == 4
        assert [isinstance(c, StreamingLoss) for c in computed] == [
            isinstance(r, Delayed) for r in results]  # in the order given


def _load_logits(i):
    return np.random.default_rng(i).standard_normal((5000, 10))


def _load_labels(i):
    return np.random.default_rng(i).integers(0, 10, 5000)


def test_evaluate_then_loss_functions_on_a_cluster(client):
    """On one dask.distributed client, evaluate then the loss functions over the same inputs
    (deterministic keys), as in the README: the scheduler must get the same task under each
    key every time (dask/dask#9888: else KeyError or deadlocks). The conflict is timing
    dependent: this sequence does not always show it; the README's example, run as the main
    module, does."""
    def load(function, shape, dtype):
        return da.concatenate([da.from_delayed(dask.delayed(function, pure=True)(i), shape,
                                               dtype) for i in range(4)])

    X, T = load(_load_logits, (5000, 10), np.float64), load(_load_labels, (5000,), np.int64)
    x, t = X.compute(scheduler="sync"), T.compute(scheduler="sync")
    e = fd.evaluate("cross_entropy", X, T, bins="log").compute(scheduler=client.get)
    w = fd.evaluate("softmax_focal_loss", X, T, class_weight=np.linspace(0.5, 2, 10)).compute(
        scheduler=client.get)
    mean = fd.cross_entropy(X, T, label_smoothing=0.1).compute(scheduler=client.get)
    first = fd.cross_entropy(X, T, reduction="none")[:5].compute(scheduler=client.get)
    assert _close(e.mean, fastloss.cross_entropy(x, t)) and e.count == w.count == 20_000
    assert _close(mean, fastloss.cross_entropy(x, t, label_smoothing=0.1))
    np.testing.assert_array_equal(first, fastloss.cross_entropy(x[:5], t[:5],
                                                                reduction="none"))


# ---- errors ----

def test_errors_at_once():
    x = da.zeros((10, 3), chunks=4)
    y = da.zeros((10, 3), chunks=4)
    with pytest.raises(ValueError, match=r"unknown loss 'mse'; choose one of binary_cross"):
        fd.evaluate("mse", x, y)
    with pytest.raises(ValueError, match=r"target shape \(10, 4\) does not match input shape "
                                         r"\(10, 3\)"):
        fd.binary_cross_entropy(x, da.zeros((10, 4)))
    with pytest.raises(ValueError, match=r"weight of shape \(10,\) cannot be broadcast to the "
                                         r"input's shape \(10, 3\)"):
        fd.evaluate("binary_cross_entropy", x, y, np.ones(10))
    with pytest.raises(ValueError, match=r"pos_weight of shape \(4,\) cannot be broadcast"):
        fd.binary_cross_entropy_with_logits(x, y, pos_weight=np.ones(4))
    with pytest.raises(TypeError, match="pos_weight is a loss parameter"):
        fd.binary_cross_entropy_with_logits(x, y, pos_weight=da.ones(3))
    with pytest.raises(TypeError, match="input must be a float16, float32 or float64 array; "
                                        "got dtype int64"):
        fd.binary_cross_entropy(da.zeros((10, 3), dtype=np.int64), y)
    with pytest.raises(TypeError, match="target must be a real numeric or bool array"):
        fd.binary_cross_entropy(x, y.astype(np.complex128))
    with pytest.raises(ValueError, match="reduction must be one of"):
        fd.binary_cross_entropy(x, y, reduction="max")
    with pytest.raises(ValueError, match="split_every must be an int >= 2; got 1"):
        fd.evaluate("binary_cross_entropy", x, y, split_every=1)
    with pytest.raises(ValueError, match="n_threads must be between 1 and"):
        fd.binary_cross_entropy(x, y, n_threads=0)
    with pytest.raises(ValueError, match="gamma must be a finite number >= 0"):
        fd.sigmoid_focal_loss(x, y, gamma=-1.0)
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        fd.binary_cross_entropy(x[x[:, 0] > 0], y[x[:, 0] > 0])
    t = da.zeros(10, dtype=np.int64, chunks=3)
    with pytest.raises(ValueError, match=r"target of shape \(10, 3\) does not match input of "
                                         r"shape \(10, 3\): class indices must have shape "
                                         r"\(10,\)"):
        fd.cross_entropy(x, y.astype(np.int64))
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\), one value per class; "
                                         r"got shape \(4,\)"):
        fd.cross_entropy(x, t, weight=np.ones(4))
    with pytest.raises(ValueError, match=r"class_weight must have shape \(3,\)"):
        fd.evaluate("softmax_focal_loss", x, t, class_weight=np.ones(4))
    with pytest.raises(ValueError, match=r"weight of shape \(3,\) cannot be broadcast to the "
                                         r"loss's shape \(10,\) .*class_weight="):
        fd.evaluate("cross_entropy", x, t, np.ones(3))
    with pytest.raises(TypeError, match="binary_cross_entropy has no class weights"):
        fd.evaluate("binary_cross_entropy", x, y, class_weight=np.ones(3))
    with pytest.raises(ValueError, match="softmax_focal_loss takes class-index targets"):
        fd.softmax_focal_loss(x, y)
    with pytest.raises(ValueError, match="ignore_index is only for class-index targets"):
        fd.cross_entropy(x, y, ignore_index=0)
    with pytest.raises(ValueError, match="input must have a class dimension"):
        fd.cross_entropy(da.zeros(()), da.zeros((), dtype=np.int64))
    # the whole shape, at once (not a block's, when computed)
    with pytest.raises(ValueError, match=r"input of shape \(3, 0\) has no classes"):
        fd.cross_entropy(da.zeros((3, 0)), da.zeros(3, dtype=np.int64, chunks=2))
    with pytest.raises(ValueError, match=r"input of shape \(0,\) has no classes"):
        fd.evaluate("softmax_focal_loss", da.zeros(0), np.int64(0))
    # a pos_weight varying along the batch axis would make the whole input one task
    with pytest.raises(ValueError, match=r"pos_weight of shape \(10, 1\) varies along the "
                                         r"first \(batch\) axis of the input of shape "
                                         r"\(10, 3\)"):
        fd.binary_cross_entropy_with_logits(x, y, pos_weight=np.ones((10, 1)))
    with pytest.raises(ValueError, match="varies along the first"):
        fd.evaluate("binary_cross_entropy_with_logits", x, y, pos_weight=np.ones((10, 3)))
    # evaluate's parameters: the class weight is class_weight=, the sample weight weight=
    for loss, names in (("cross_entropy", "ignore_index, label_smoothing, class_weight"),
                        ("binary_cross_entropy_with_logits", "pos_weight"),
                        ("binary_cross_entropy", "none")):
        with pytest.raises(TypeError) as error:
            fd.evaluate(loss, x, t if loss == "cross_entropy" else y, ignore_idx=3)
        assert str(error.value) == (f"{loss} takes no parameter ignore_idx (its parameters: "
                                    f"{names}; the sample weight is weight=)")


def test_errors_of_values_when_computed(scheduler):
    x = da.from_array(np.full((100, 3), 0.5), chunks=30)
    y = np.zeros((100, 3))
    y[77, 1] = 2.0
    with pytest.raises(ValueError, match="all elements of target should be between 0 and 1"):
        dask.compute(fd.binary_cross_entropy(x, y), scheduler=scheduler)
    t = np.zeros(100, np.int64)
    t[55] = 3
    with pytest.raises(IndexError, match="Target 3 is out of bounds."):
        dask.compute(fd.evaluate("cross_entropy", x, t), scheduler=scheduler)


def test_import_without_dask_names_the_extra(monkeypatch):
    monkeypatch.delitem(sys.modules, "fastloss.dask")
    for name in [m for m in sys.modules if m == "dask" or m.startswith("dask.")]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"fastloss.dask needs dask: pip install "
                                          r"'fastloss\[dask\]'"):
        importlib.import_module("fastloss.dask")
