"""pytest-benchmark timings: fastloss against torch and NumPy, per loss and size.

    (cd benchmarks && python -m pytest . --benchmark-only)

The default size, 10^7 elements, fits in a large L3 cache; --size 100000000 gives DRAM-bound
figures. Groups are named by loss, size and threads, so --benchmark-compare tracks each one
across commits.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastloss
from fastloss.bench import NUMPY


def _binary(loss, rng, n):
    x = rng.standard_normal(n, dtype=np.float32) * 4 if loss.endswith("logits") \
        else rng.random(n, dtype=np.float32)
    y = (rng.random(n, dtype=np.float32) < 0.3).astype(np.float32)
    return x.reshape(-1, 10), y.reshape(-1, 10)


def _cross_entropy(shape, targets):
    def make(rng, n):
        rows = max(n // int(np.prod(shape)), 1)
        x = rng.standard_normal((rows,) + shape, dtype=np.float32)
        if targets == "index":
            return x, rng.integers(0, shape[0], (rows,) + shape[1:])
        y = rng.random(x.shape, dtype=np.float32)
        return x, y / y.sum(axis=1, keepdims=True)
    return make


# name: (make data from rng and element count, fastloss call, torch call, NumPy call or None)
CASES = {
    "bce_with_logits pos_weight (N,10)": (
        lambda rng, n: _binary("logits", rng, n),
        lambda x, y, t: fastloss.binary_cross_entropy_with_logits(
            x, y, pos_weight=np.full(10, 2, np.float32), n_threads=t),
        lambda x, y: F.binary_cross_entropy_with_logits(x, y, pos_weight=torch.full((10,), 2.0)),
        NUMPY["binary_cross_entropy_with_logits"]["numpy stable"]),
    "bce (N,10)": (
        lambda rng, n: _binary("probabilities", rng, n),
        lambda p, y, t: fastloss.binary_cross_entropy(p, y, n_threads=t),
        F.binary_cross_entropy, NUMPY["binary_cross_entropy"]["numpy"]),
    "cross_entropy index (N,10)": (
        _cross_entropy((10,), "index"),
        lambda z, t, n: fastloss.cross_entropy(z, t, n_threads=n), F.cross_entropy,
        NUMPY["cross_entropy"]["numpy"]),
    "cross_entropy index (N,1000)": (
        _cross_entropy((1000,), "index"),
        lambda z, t, n: fastloss.cross_entropy(z, t, n_threads=n), F.cross_entropy,
        NUMPY["cross_entropy"]["numpy"]),
    "cross_entropy index (N,21,256,256)": (
        _cross_entropy((21, 256, 256), "index"),
        lambda z, t, n: fastloss.cross_entropy(z, t, n_threads=n), F.cross_entropy, None),
    "cross_entropy probabilities (N,10)": (
        _cross_entropy((10,), "probabilities"),
        lambda z, y, n: fastloss.cross_entropy(z, y, n_threads=n), F.cross_entropy, None),
}

# NumPy has no threads: it runs once, next to the single-threaded ones.
RUNS = [(case, impl, threads) for case in CASES
        for impl, threads in [("fastloss", 1), ("torch", 1), ("numpy", 1), ("fastloss", 2),
                              ("torch", 2)]
        if impl != "numpy" or CASES[case][3] is not None]


@pytest.fixture(scope="module")
def data(request):
    n = request.config.getoption("--size")
    rng = np.random.default_rng(0)
    return {name: case[0](rng, n) for name, case in CASES.items()}


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("case,impl,threads", RUNS)
def test_mean(benchmark, data, torch_threads, case, impl, threads):
    _, ours, theirs, numpy_fn = CASES[case]
    a, b = data[case]
    benchmark.group = f"{case} n={a.size:.0e} threads={threads}"
    if impl == "fastloss":
        benchmark(ours, a, b, threads)
    elif impl == "torch":
        torch_threads(threads)
        benchmark(theirs, torch.from_numpy(a), torch.from_numpy(b))
    else:
        benchmark(numpy_fn, a, b)
