"""Threads: bitwise reproducible reductions, defaults, the GIL, fork, and concurrent callers."""
import multiprocessing
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import fastloss
from fastloss import _kernels, _validate
import reference as ref


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reductions_are_bitwise_identical_for_any_thread_count(simd_path, dtype):
    rng = np.random.default_rng(5)
    n = 1_000_003  # many blocks and a partial one
    x = rng.standard_normal(n).astype(dtype)
    p = rng.random(n).astype(dtype)
    y = rng.random(n).astype(dtype)
    w = rng.random(n).astype(dtype)
    for reduction in ("sum", "mean"):
        results = {t: (fastloss.binary_cross_entropy_with_logits(x, y, w, reduction, w[::-1],
                                                                n_threads=t),
                       fastloss.binary_cross_entropy(p, y, w, reduction, n_threads=t))
                   for t in (1, 2, 3, 7)}
        assert len({r[0].tobytes() for r in results.values()}) == 1
        assert len({r[1].tobytes() for r in results.values()}) == 1


def test_default_threads_follow_size_and_limits():
    cpus = min(_kernels.max_threads(), len(os.sched_getaffinity(0)))
    assert _validate.thread_count(None, 1000) == 1  # small work stays serial
    assert _validate.thread_count(None, 10**8) == cpus
    with threadpool_limits(limits=1, user_api="openmp"):
        assert _validate.thread_count(None, 10**8) == 1
    # n_threads is an upper bound: never more than one thread per 32k elements
    per = _kernels.MIN_ELEMENTS_PER_THREAD
    assert _validate.thread_count(3, 10) == 1
    assert _validate.thread_count(2, 10**4) == 1
    assert _validate.thread_count(3, 2 * per) == 2
    assert _validate.thread_count(3, 10**8) == 3
    assert _validate.thread_count(7, 7 * per - 1) == 6


def test_explicit_threads_are_capped_by_work(simd_path):
    """A small call with n_threads=2 runs one thread, and every capped count gives the same bits
    (the block partition, not the thread count, fixes the sums)."""
    rng = np.random.default_rng(8)
    for n in (1, 4095, 4097, 10**4, 70_000):
        x = rng.standard_normal(n).astype(np.float32)
        y = rng.random(n).astype(np.float32)
        z = x[: n - n % 10].reshape(-1, 10)
        t = rng.integers(0, 10, len(z))
        want = ref.bce_with_logits(x, y).sum()
        got = {k: fastloss.binary_cross_entropy_with_logits(x, y, reduction="sum", n_threads=k)
               for k in (1, 2, 64, 1024)}
        assert len({g.tobytes() for g in got.values()}) == 1
        assert got[1] == pytest.approx(want, rel=1e-6)
        if len(z):
            ce = {k: fastloss.cross_entropy(z, t, reduction="sum", n_threads=k).tobytes()
                  for k in (1, 2, 1024)}
            assert len(set(ce.values())) == 1


def test_omp_num_threads_is_respected():
    code = "from fastloss import _validate; print(_validate.thread_count(None, 10**9))"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(__file__))
    assert out.stdout.strip() == "1"


def test_gil_is_released_during_the_kernel():
    n = 3 * 10**7
    x = np.zeros(n, np.float32)
    y = np.zeros(n, np.float32)
    counter = [0]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            counter[0] += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(0.05)  # another thread runs only when this one lets go of the GIL
    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        before = counter[0]
        fastloss.binary_cross_entropy_with_logits(x, y, n_threads=1)
        during = counter[0] - before
    finally:
        stop.set()
        spinner.join()
        sys.setswitchinterval(old)
    assert during > 0


def test_concurrent_calls_from_python_threads():
    rng = np.random.default_rng(6)
    jobs = [(rng.standard_normal(200_000 + i).astype(np.float32),
             rng.random(200_000 + i).astype(np.float32)) for i in range(8)]
    want = [ref.bce_with_logits(x, y).sum() for x, y in jobs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda a: fastloss.binary_cross_entropy_with_logits(
            *a, reduction="sum", n_threads=2), jobs * 4))
    for g, w in zip(got, want * 4):
        assert g == pytest.approx(w, rel=1e-6)


def _child_loss(queue):
    x = np.linspace(-5, 5, 1_000_000, dtype=np.float32)
    queue.put(float(fastloss.binary_cross_entropy_with_logits(x, np.zeros_like(x),
                                                              reduction="sum", n_threads=2)))


def test_forked_child_does_not_hang():
    x = np.linspace(-5, 5, 1_000_000, dtype=np.float32)
    want = float(fastloss.binary_cross_entropy_with_logits(x, np.zeros_like(x), reduction="sum",
                                                           n_threads=2))  # parent's thread pool
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_loss, args=(queue,))
    child.start()
    child.join(timeout=60)
    assert not child.is_alive(), "the forked child hung"
    child.terminate()
    assert child.exitcode == 0
    assert queue.get(timeout=5) == pytest.approx(want, rel=1e-12)


def test_every_forked_child_runs_serially():
    """Another library may have used the shared OpenMP pool without fastloss knowing: a forked
    child runs serially even if fastloss itself never ran threads."""
    code = ("import os, fastloss\n"
            "from fastloss import _kernels, _validate\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    os._exit(0 if _kernels.max_threads() == 1 == _validate.thread_count(None, 10**9)"
            " else 1)\n"
            "print(os.waitpid(pid, 0)[1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(__file__))
    assert out.stdout.strip() == "0"


TORCH_THEN_FORK = """
import multiprocessing, os, sys
import numpy as np
import torch
import fastloss
torch.set_num_threads(2)
torch.ones(10**7).exp().sum()  # torch's parallel region, in the libgomp fastloss also uses
x = np.linspace(-5, 5, 10**6, dtype=np.float32)
y = (x > 0.5).astype(np.float32)
want = torch.nn.functional.binary_cross_entropy_with_logits(
    torch.from_numpy(x).double(), torch.from_numpy(y).double(), reduction="sum").item()


def loss(n_threads):
    return float(fastloss.binary_cross_entropy_with_logits(x, y, reduction="sum",
                                                           n_threads=n_threads))


if sys.argv[1] == "fork":
    pid = os.fork()
    if pid == 0:
        ok = all(abs(loss(k) - want) <= 1e-6 * want for k in (2, None))
        os._exit(0 if ok else 3)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
else:
    with multiprocessing.get_context("fork").Pool(2) as pool:
        got = pool.map(loss, [2, None, 2, None])
    print(0 if all(abs(g - want) <= 1e-6 * want for g in got) else 3)
"""


@pytest.mark.parametrize("how", ["fork", "pool"])
def test_forked_child_does_not_hang_after_torch_used_threads(how):
    try:
        out = subprocess.run([sys.executable, "-c", TORCH_THEN_FORK, how], capture_output=True,
                             text=True, timeout=120, cwd=os.path.dirname(__file__))
    except subprocess.TimeoutExpired:
        pytest.fail("the forked child hung")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "0"


SMALL_STACK_CALLS = """
import threading, numpy as np, fastloss
def calls(x, threads):
    t = dict(n_threads=threads)
    return [
        lambda: fastloss.binary_cross_entropy_with_logits(
            x[::-1], (x > 0).astype(np.int64), np.ones((1000, 1)).repeat(200, 1).ravel(),
            pos_weight=2.0, reduction="none", **t),
        lambda: fastloss.binary_cross_entropy(np.abs(x[::-2]) / 3, (x[::2] > 0), 2.0, **t),
        lambda: fastloss.cross_entropy(x.reshape(-1, 10), np.abs(x).reshape(-1, 10),
                                       np.ones(10), label_smoothing=0.1, reduction="none", **t),
        lambda: fastloss.cross_entropy(x.reshape(-1, 20, 10), np.zeros((1000, 10), np.uint8),
                                       label_smoothing=0.1, **t),
        lambda: fastloss.sigmoid_focal_loss(x[::-1], (x > 0), gamma=1.5, weight=2.0,
                                            reduction="mean", **t),
        lambda: fastloss.softmax_focal_loss(x.reshape(-1, 10), np.zeros(20_000, np.int8),
                                            gamma=0.5, **t),
        lambda: fastloss.softmax_focal_loss(x.reshape(-1, 100), np.zeros(2_000, np.int8),
                                            gamma=2.0, reduction="none", **t),
    ]
threading.stack_size(128 * 1024)  # musl's default for new threads
for dtype in (np.float64, np.float32):
    x = np.linspace(-3, 3, 200_000).astype(dtype)
    for call in calls(x, 2):  # OpenMP workers, with OMP_STACKSIZE
        call()
    for call in calls(x, 1):  # the calling thread
        worker = threading.Thread(target=call)
        worker.start()
        worker.join()
print("ok")
"""


def test_kernels_fit_in_small_thread_stacks():
    """Threads may have 128 KiB of stack (musl, OMP_STACKSIZE): the kernels must not overflow."""
    env = dict(os.environ, OMP_STACKSIZE="128K")
    out = subprocess.run([sys.executable, "-c", SMALL_STACK_CALLS], env=env,
                         capture_output=True, text=True, cwd=os.path.dirname(__file__))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"


def test_simd_path_from_the_environment():
    code = "import fastloss; print(fastloss.simd_path())"
    for requested in _kernels.supported_simd_paths():
        env = dict(os.environ, FASTLOSS_SIMD=requested)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True, cwd=os.path.dirname(__file__))
        assert out.stdout.strip() == requested
    env = dict(os.environ, FASTLOSS_SIMD="sse9")
    out = subprocess.run([sys.executable, "-W", "always", "-c", code], env=env,
                         capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(__file__))
    assert "FASTLOSS_SIMD" in out.stderr and "'sse9' is not available" in out.stderr
    assert out.stdout.strip() == _kernels.supported_simd_paths()[-1]


def test_unavailable_simd_path_is_refused():
    with pytest.raises(ValueError, match="not available"):
        _kernels.set_simd_path("neon")
    assert "scalar" in _kernels.supported_simd_paths()
    assert fastloss.simd_path() in _kernels.supported_simd_paths()


def test_import_leaves_the_environment_as_it_was():
    code = "import os, fastloss; print(os.environ.get('GOMP_SPINCOUNT'))"
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    for extra, want in (({}, "None"), ({"GOMP_SPINCOUNT": "77"}, "77")):
        out = subprocess.run([sys.executable, "-c", code], env={**env, **extra},
                             capture_output=True, text=True, check=True,
                             cwd=os.path.dirname(__file__))
        assert out.stdout.strip() == want


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_an_elements_loss_does_not_depend_on_where_the_data_starts(simd_path, dtype):
    """The loss of an element is the same in any slice of the data (tails are computed by the
    vector code too, not by a scalar epilogue that may round differently), so statistics of
    batches add up to those of the whole."""
    rng = np.random.default_rng(11)
    n = 1500
    x = (rng.standard_normal(n) * 4).astype(dtype)
    p = rng.random(n).astype(dtype)
    y = rng.random(n).astype(dtype)
    w = rng.random(n).astype(dtype)
    z = (rng.standard_normal((n, 3)) * 3).astype(dtype)
    zs = (rng.standard_normal((n // 10, 3, 10)) * 3).astype(dtype)
    t = rng.integers(0, 3, n)
    q = rng.dirichlet(np.ones(3), n).astype(dtype)
    qs = rng.dirichlet(np.ones(3), (n // 10, 10)).transpose(0, 2, 1).astype(dtype)
    losses = [
        lambda s: fastloss.binary_cross_entropy(p[s], y[s], w[s], "none"),
        lambda s: fastloss.binary_cross_entropy_with_logits(x[s], y[s], w[s], "none", w[s] + 1),
        lambda s: fastloss.sigmoid_focal_loss(x[s], y[s], 0.3, 1.5, "none", weight=w[s]),
        lambda s: fastloss.sigmoid_focal_loss(x[s], y[s], reduction="none"),
        lambda s: fastloss.cross_entropy(z[s], t[s], reduction="none", label_smoothing=0.1),
        lambda s: fastloss.cross_entropy(z[s], q[s], reduction="none"),
        lambda s: fastloss.cross_entropy(zs[s], qs[s], reduction="none"),
        lambda s: fastloss.softmax_focal_loss(z[s], t[s], 1.5, reduction="none"),
    ]
    for loss in losses:
        whole = loss(slice(None))
        for start in range(0, 20):
            for stop in (whole.shape[0] - start, whole.shape[0] // 2 + start):
                np.testing.assert_array_equal(loss(slice(start, stop)), whole[start:stop])
