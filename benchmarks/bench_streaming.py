"""What StreamingLoss.update costs against the plain reduction="mean" call, side by side in one
process (the machine's noise hits both alike), per loss and kind of bins:

    python benchmarks/bench_streaming.py --size 1e7 --threads 1

Prints the median ns per element of each and the ratio to the plain call.
"""
import argparse
import time

import numpy as np

import fastloss
from fastloss import StreamingLoss

CASES = {  # name: (loss, make(rng, n) -> (input, target), the loss's parameters)
    "binary_cross_entropy_with_logits": (
        "binary_cross_entropy_with_logits",
        lambda rng, n: (rng.standard_normal(n, np.float32) * 3,
                        (rng.random(n, np.float32) < 0.5).astype(np.float32)), {}),
    "sigmoid_focal_loss[gamma=2]": (
        "sigmoid_focal_loss",
        lambda rng, n: (rng.standard_normal(n, np.float32) * 3,
                        (rng.random(n, np.float32) < 0.5).astype(np.float32)), {}),
    "cross_entropy[N x 10]": (
        "cross_entropy",
        lambda rng, n: (rng.standard_normal((n // 10, 10), np.float32) * 3,
                        rng.integers(0, 10, n // 10)), {}),
}
BINS = {"no bins": {}, "bins='log'": {"bins": "log"},
        "bins=100, range=(0, 20)": {"bins": 100, "range": (0, 20)}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=float, default=1e7, help="elements per input")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args(argv)
    n = int(args.size)
    rng = np.random.default_rng(0)
    print(f"{n:.0e} float32 elements, {args.threads} thread(s), median of {args.repeat}, "
          f"SIMD path {fastloss.simd_path()}\n")
    print(f"{'case':36} {'call':30} {'ns/element':>10} {'vs mean':>8}")
    for name, (loss, make, params) in CASES.items():
        x, y = make(rng, n)
        fn = getattr(fastloss, loss)
        calls = {'reduction="mean"': lambda: fn(x, y, reduction="mean",
                                                n_threads=args.threads, **params)}
        for label, bins in BINS.items():
            meter = StreamingLoss(loss, **bins, **params)
            calls[f"update, {label}"] = (lambda m: lambda: m.update(x, y,
                                                                    n_threads=args.threads))(meter)
        times = {label: [] for label in calls}
        for _ in range(args.repeat):  # interleaved: each round times every call once
            for label, call in calls.items():
                start = time.perf_counter()
                call()
                times[label].append(time.perf_counter() - start)
        base = np.median(times['reduction="mean"'])
        for label, t in times.items():
            t = np.median(t)
            print(f"{name:36} {label:30} {t / n * 1e9:10.3f} {t / base:7.2f}x")


if __name__ == "__main__":
    main()
