"""pytest-benchmark timings of every loss in `fastloss bench` (fastloss.bench.CASES): fastloss
against NumPy and torch (and scikit-learn where it applies), reduction="mean".

    (cd benchmarks && python -m pytest . --benchmark-only)

The default size, 10^7 elements, may fit in a large L3 cache; --size 100000000 gives DRAM-bound
figures. Groups are named by loss, size and threads, so --benchmark-compare tracks each one
across commits.
"""

import numpy as np
import pytest

from fastloss import bench

LIBRARIES = bench._libraries(bench.IMPLEMENTATION_LIBRARIES)
# NumPy and scikit-learn have no threads: they run once, next to the single-threaded ones.
RUNS = [(case.name, impl, threads) for case in bench.CASES
        for impl, (lib, _) in [("fastloss", ("fastloss", None)), *case.competitors.items()]
        if lib in LIBRARIES or lib == "fastloss"
        for threads in ((1, 2) if lib in ("fastloss", "torch") else (1,))]


@pytest.fixture(scope="module")
def data(request):
    n = request.config.getoption("--size")
    return {case.name: case.make(np.random.default_rng(0), n, np.dtype(np.float32))
            for case in bench.CASES}


@pytest.fixture
def torch_threads():
    torch = LIBRARIES.get("torch")
    before = torch.get_num_threads() if torch else None
    yield torch.set_num_threads if torch else (lambda n: None)
    if torch:
        torch.set_num_threads(before)


@pytest.mark.parametrize("case,impl,threads", RUNS)
def test_mean(benchmark, data, torch_threads, case, impl, threads):
    spec = next(c for c in bench.CASES if c.name == case)
    d = data[case]
    benchmark.group = f"{case} n={d['input'].size:.0e} threads={threads}"
    if impl == "fastloss":
        benchmark(bench._fastloss_call(spec), None, d, "mean", n_threads=threads)
    else:
        lib, call = spec.competitors[impl]
        torch_threads(threads)
        benchmark(call, LIBRARIES[lib], d, "mean")
