"""pytest-benchmark timings of the binary losses: fastloss against torch and NumPy.

    pip install ".[bench]" && pytest benchmarks/ --benchmark-only

10^7 float32 elements fit in the 260 MB L3 cache of the reference machine; pass
--size 100000000 for DRAM-bound figures (see README, "Performance").
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastloss


def _numpy_stable_logits(x, y, pw):
    log_sigmoid = -np.logaddexp(0, -x)
    return np.mean((1 - y) * x - (1 + (pw - 1) * y) * log_sigmoid)


def _numpy_bce(p, y):
    return np.mean(-(y * np.maximum(np.log(p), -100) + (1 - y) * np.maximum(np.log1p(-p), -100)))


@pytest.fixture(scope="module")
def data(request):
    n = request.config.getoption("--size")
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n, dtype=np.float32) * 4
    p = rng.random(n, dtype=np.float32)
    y = (rng.random(n, dtype=np.float32) < 0.3).astype(np.float32)
    pw = np.full(10, 2.0, np.float32)
    return {"binary_cross_entropy_with_logits": (x.reshape(-1, 10), y.reshape(-1, 10), pw),
            "binary_cross_entropy": (p.reshape(-1, 10), y.reshape(-1, 10), None)}


IMPLEMENTATIONS = {
    "binary_cross_entropy_with_logits": {
        "fastloss": lambda x, y, pw, t: fastloss.binary_cross_entropy_with_logits(
            x, y, pos_weight=pw, n_threads=t),
        "torch": lambda x, y, pw, t: F.binary_cross_entropy_with_logits(
            torch.from_numpy(x), torch.from_numpy(y), pos_weight=torch.from_numpy(pw)),
        "numpy": lambda x, y, pw, t: _numpy_stable_logits(x, y, pw),
    },
    "binary_cross_entropy": {
        "fastloss": lambda p, y, pw, t: fastloss.binary_cross_entropy(p, y, n_threads=t),
        "torch": lambda p, y, pw, t: F.binary_cross_entropy(torch.from_numpy(p),
                                                            torch.from_numpy(y)),
        "numpy": lambda p, y, pw, t: _numpy_bce(p, y),
    },
}


# NumPy has no threads: it runs once, next to the single-threaded ones.
RUNS = [("fastloss", 1), ("torch", 1), ("numpy", 1), ("fastloss", 2), ("torch", 2)]


@pytest.mark.parametrize("impl,threads", RUNS)
@pytest.mark.parametrize("loss", list(IMPLEMENTATIONS))
def test_mean(benchmark, data, loss, impl, threads):
    torch.set_num_threads(threads)
    benchmark.group = f"{loss} n={data[loss][0].size} threads={threads}"
    benchmark(IMPLEMENTATIONS[loss][impl], *data[loss], threads)
