"""fastloss.dask: Dask arrays, in uneven and misaligned chunks, on the threaded scheduler and on
a dask.distributed LocalCluster of 2 worker processes, give the in-memory results (float64:
within 1e-12 relative, per-element losses and histograms exactly); the graph holds no
per-element losses; a worker's memory stays bounded by a few chunks; errors."""
import importlib
import resource
import sys
import threading
from typing import NamedTuple

import dask
import dask.array as da
import numpy as np
import pytest
from dask.callbacks import Callback
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
    # Arrays and Delayed objects in separate calls: dask 2026.8 returns the results of a mix
    # grouped by collection type, out of the order given
    arrays = iter(dask.compute(*[r for r, ev in zip(results, evaluated) if not ev],
                               scheduler=scheduler))
    states = iter(dask.compute(*[r for r, ev in zip(results, evaluated) if ev],
                               scheduler=scheduler))
    computed = [next(states) if ev else next(arrays) for ev in evaluated]
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


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("loss", ["binary_cross_entropy_with_logits", "cross_entropy"])
def test_result_dtype_is_the_inputs(loss, dtype):
    """As in memory: a NumPy scalar of the input's dtype (float16 computed in float32)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2000, 5)).astype(dtype)
    y = (rng.random(x.shape) < 0.5) if loss != "cross_entropy" else rng.integers(0, 5, 2000)
    X = da.from_array(x, chunks=(300, 5))
    for reduction in ("mean", "sum"):
        got = getattr(fd, loss)(X, y, reduction=reduction)
        assert got.dtype == dtype and got.shape == ()
        got = got.compute(scheduler="threads")
        expected = getattr(fastloss, loss)(x, y, reduction=reduction)
        assert type(got) is type(expected) is dtype
        # both sum in float64 (in other groupings) and round once to the dtype
        assert got == pytest.approx(expected, rel=2 * float(np.finfo(dtype).eps))
    none = getattr(fd, loss)(X, y, reduction="none")
    assert none.dtype == dtype
    assert none.chunks == (X.chunks if loss != "cross_entropy" else X.chunks[:1])
    np.testing.assert_array_equal(none.compute(scheduler="threads"),
                                  getattr(fastloss, loss)(x, y, reduction="none"))


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
        keys = [k for k in dict(d.__dask_graph__()) if str(k).startswith("_merge")]
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
    """1 kernel thread per task where tasks run concurrently, fastloss's default (None) with
    the synchronous scheduler, or n_threads as given."""
    seen = []
    thread_count = fastloss._validate.thread_count

    def record(n_threads, n_elements):
        seen.append(n_threads)
        return thread_count(n_threads, n_elements)

    monkeypatch.setattr(fastloss._validate, "thread_count", record)
    x = da.from_array(np.linspace(-3, 3, 5000), chunks=1000)
    for scheduler, n_threads, expected in (("threads", None, 1), ("sync", None, None),
                                           ("threads", 2, 2), ("sync", 1, 1)):
        seen.clear()
        for lazy in (fd.evaluate("binary_cross_entropy_with_logits", x, x > 0,
                                 n_threads=n_threads),
                     fd.binary_cross_entropy_with_logits(x, x > 0, reduction="none",
                                                         n_threads=n_threads)):
            lazy.compute(scheduler=scheduler)
        assert seen and set(seen) == {expected}, (scheduler, n_threads, seen)
    # on a worker of the LocalCluster (2 processes of 1 thread)
    assert client.submit(fd._task_threads, None, pure=False).result() == 1
    assert client.submit(fd._task_threads, 3, pure=False).result() == 3
    result = []
    t = threading.Thread(target=lambda: result.append(fd._task_threads(None)))
    t.start()
    t.join()
    assert result == [1] and fd._task_threads(None) is None


def _peak_rss(scale=1 if sys.platform == "darwin" else 1024):
    """The process's peak resident memory in bytes (ru_maxrss: bytes on macOS, KiB else)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def test_memory_of_a_large_evaluation_is_a_few_chunks(client):
    """10^8 float32 logits and bool targets, generated chunk by chunk on the workers (500 MB,
    250 MB a worker): each worker's peak memory grows by a few chunks only (about 25 MB
    measured; holding the data would be 250 MB)."""
    n, chunk = 10**8, 10**6
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
    chunk_bytes = chunk * (4 + 4 + 1)  # logits, the uniform draws, the targets
    for worker, peak in after.items():
        growth = peak - before[worker]
        assert growth < 8 * chunk_bytes, (worker, growth / 1e6)  # 72 MB


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
