"""Speed comparison on generated data: fastloss against NumPy and (when installed) torch.

    fastloss bench --quick          # or: python -m fastloss bench --quick

For each loss, size and thread count: the median time per element over --repeat runs (after a
warm-up), the speed-up of fastloss over each competitor, and each one's largest relative
difference from a float64 reference on the same inputs. torch runs with the same thread count.
"""
import argparse
import time

import numpy as np

import fastloss


def _numpy_textbook_logits(x, y):
    """The formula from the textbooks: log of a rounded sigmoid (overflows, loses digits)."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        p = 1 / (1 + np.exp(-x))
        return np.mean(-(y * np.log(p) + (1 - y) * np.log1p(-p)))


def _numpy_stable_logits(x, y):
    """The stable log-sum-exp form: max(x, 0) - x*y + log1p(exp(-|x|))."""
    return np.mean(np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x))))


def _numpy_bce(p, y):
    return np.mean(-(y * np.maximum(np.log(p), -100) + (1 - y) * np.maximum(np.log1p(-p), -100)))


def _reference_logits(x, y):
    x, y = x.astype(np.float64), y.astype(np.float64)
    return np.mean(y * np.logaddexp(0, -x) + (1 - y) * np.logaddexp(0, x))


def _reference_bce(p, y):
    return _numpy_bce(p.astype(np.float64), y.astype(np.float64))


def _cases(torch):
    """(loss name, input generator, float64 reference, {implementation: function})."""
    logits = {"numpy textbook": _numpy_textbook_logits, "numpy stable": _numpy_stable_logits}
    probs = {"numpy": _numpy_bce}
    if torch is not None:
        import torch.nn.functional as F

        def tensors(fn):
            return lambda a, b: fn(torch.from_numpy(a), torch.from_numpy(b)).item()

        logits["torch"] = tensors(F.binary_cross_entropy_with_logits)
        probs["torch"] = tensors(F.binary_cross_entropy)
    return [
        ("binary_cross_entropy_with_logits", lambda rng, n: rng.standard_normal(n) * 4,
         _reference_logits, fastloss.binary_cross_entropy_with_logits, logits),
        ("binary_cross_entropy", lambda rng, n: rng.random(n), _reference_bce,
         fastloss.binary_cross_entropy, probs),
    ]


def _median_time(fn, repeat):
    fn()  # warm-up: page faults, thread start-up, caches
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run(sizes, threads, repeat, dtype=np.float32, out=print):
    try:
        import torch
    except ImportError:
        torch = None
        out("torch: not installed (pip install torch to compare against it)")
    rng = np.random.default_rng(0)
    out(f"fastloss {fastloss.__version__}, SIMD path {fastloss.simd_path()}, {dtype.__name__}, "
        f"median of {repeat}")
    header = f"{'loss':34} {'n':>9} {'thr':>3} {'implementation':16} {'ns/elem':>8} " \
             f"{'fastloss x':>10} {'max rel diff':>12}"
    out(header)
    out("-" * len(header))
    for name, make_input, reference, ours, competitors in _cases(torch):
        for n in sizes:
            x = make_input(rng, n).astype(dtype)
            y = (rng.random(n) < 0.3).astype(dtype)
            want = reference(x, y)
            for t in threads:
                if torch is not None:
                    torch.set_num_threads(t)
                impls = {"fastloss": lambda a, b: ours(a, b, n_threads=t), **competitors}
                times = {}
                for impl, fn in impls.items():
                    times[impl] = _median_time(lambda: fn(x, y), repeat)
                    diff = abs(float(fn(x, y)) - want) / abs(want)
                    speedup = times[impl] / times["fastloss"]
                    out(f"{name:34} {n:>9.0e} {t:>3} {impl:16} {times[impl] / n * 1e9:>8.3f} "
                        f"{speedup:>10.1f} {diff:>12.1e}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastloss bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1e5,1e7",
                        help="comma-separated element counts (default: 1e5,1e7)")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per measurement")
    parser.add_argument("--quick", action="store_true",
                        help="sizes 1e5,1e6 and 3 repeats: a few seconds")
    args = parser.parse_args(argv)
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    repeat = args.repeat
    if args.quick:
        sizes, repeat = [10**5, 10**6], 3
    run(sizes, [int(t) for t in args.threads.split(",")], repeat)
