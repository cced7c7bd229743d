"""Speed comparison on generated data: fastloss against NumPy and (when installed) torch.

    fastloss bench --quick          # or: python -m fastloss bench --quick

For each loss, size and thread count: the median time per element over --repeat runs (after a
warm-up), the speed-up of fastloss over each competitor, and each one's relative difference from
a float64 reference on the same inputs. torch runs with the same thread count.
"""
import argparse
import time

import numpy as np

import fastloss

CE_CLASSES = 10  # cross-entropy inputs are (n / 10, 10)


def _log_softmax(z):
    m = z.max(axis=1, keepdims=True)
    return z - (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))


NUMPY = {
    "binary_cross_entropy_with_logits": {
        # the formula from the textbooks: log of a rounded sigmoid (overflows, loses digits)
        "numpy textbook": lambda x, y: np.mean(-(y * np.log(1 / (1 + np.exp(-x)))
                                                 + (1 - y) * np.log(1 - 1 / (1 + np.exp(-x))))),
        # the stable log-sum-exp form
        "numpy stable": lambda x, y: np.mean(np.maximum(x, 0) - x * y
                                             + np.log1p(np.exp(-np.abs(x)))),
    },
    "binary_cross_entropy": {
        "numpy": lambda p, y: np.mean(-(y * np.maximum(np.log(p), -100)
                                        + (1 - y) * np.maximum(np.log1p(-p), -100))),
    },
    "cross_entropy": {
        "numpy": lambda z, t: -np.mean(np.take_along_axis(_log_softmax(z), t[:, None], 1)),
    },
}


def _reference(loss, a, b):
    """The loss in float64 from the same inputs, with NumPy's stable building blocks."""
    a = a.astype(np.float64)
    if loss == "binary_cross_entropy_with_logits":
        return np.mean(b * np.logaddexp(0, -a) + (1 - b) * np.logaddexp(0, a))
    if loss == "binary_cross_entropy":
        return NUMPY[loss]["numpy"](a, b.astype(np.float64))
    return NUMPY[loss]["numpy"](a, b)


def _data(loss, rng, n, dtype):
    if loss == "cross_entropy":
        rows = max(n // CE_CLASSES, 1)
        return (rng.standard_normal((rows, CE_CLASSES)).astype(dtype),
                rng.integers(0, CE_CLASSES, rows))
    x = rng.standard_normal(n) * 4 if loss.endswith("logits") else rng.random(n)
    return x.astype(dtype), (rng.random(n) < 0.3).astype(dtype)


def _implementations(loss, torch, n_threads):
    impls = {"fastloss": lambda a, b: getattr(fastloss, loss)(a, b, n_threads=n_threads)}
    impls.update(NUMPY[loss])
    if torch is not None:
        fn = getattr(torch.nn.functional, loss)
        impls["torch"] = lambda a, b: fn(torch.from_numpy(a), torch.from_numpy(b)).item()
    return impls


def _median_time(fn, repeat):
    fn()  # warm-up: page faults, thread start-up, caches
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run(sizes, threads, repeat, losses=tuple(NUMPY), dtype=np.float32, out=print):
    try:
        import torch
    except ImportError:
        torch = None
        out("torch: not installed (install it to compare against it)")
    rng = np.random.default_rng(0)
    out(f"fastloss {fastloss.__version__}, SIMD path {fastloss.simd_path()}, {dtype.__name__}, "
        f"median of {repeat}; cross_entropy inputs are (n/{CE_CLASSES}, {CE_CLASSES})")
    header = f"{'loss':34} {'n':>9} {'thr':>3} {'implementation':16} {'ns/elem':>8} " \
             f"{'fastloss x':>10} {'rel diff':>9}"
    out(header)
    out("-" * len(header))
    for loss in losses:
        for n in sizes:
            a, b = _data(loss, rng, n, dtype)
            with np.errstate(all="ignore"):  # log(0) in the formulas is clamped or intended
                want = _reference(loss, a, b)
            for t in threads:
                if torch is not None:
                    torch.set_num_threads(t)
                times = {}
                for impl, fn in _implementations(loss, torch, t).items():
                    with np.errstate(all="ignore"):
                        times[impl] = _median_time(lambda: fn(a, b), repeat)
                        diff = abs(float(fn(a, b)) - want) / abs(want)
                    out(f"{loss:34} {a.size:>9.0e} {t:>3} {impl:16} "
                        f"{times[impl] / a.size * 1e9:>8.3f} "
                        f"{times[impl] / times['fastloss']:>10.1f} {diff:>9.1e}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastloss bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loss", action="append", choices=list(NUMPY),
                        help="a loss to time (repeatable; default: all)")
    parser.add_argument("--sizes", help="comma-separated element counts (default: 1e5,1e7; "
                                         "1e5,1e6 with --quick)")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--repeat", type=int,
                        help="timed runs per measurement (default: 5; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats: seconds")
    args = parser.parse_args(argv)
    sizes = args.sizes or ("1e5,1e6" if args.quick else "1e5,1e7")
    repeat = args.repeat or (3 if args.quick else 5)
    run([int(float(s)) for s in sizes.split(",")], [int(t) for t in args.threads.split(",")],
        repeat, losses=args.loss or tuple(NUMPY))
