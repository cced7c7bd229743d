"""fastloss bench: how much faster, how close to the memory-bandwidth limit, and does it agree?

    fastloss bench --quick          # or: python -m fastloss bench --quick

Every loss runs on generated data next to NumPy formulas (the textbook one and the stable one),
torch (torch.nn.functional, and torchvision's focal-loss formula in torch ops, on as many threads)
and scikit-learn's log_loss where it applies. For each loss, size, dtype, thread count and
implementation it reports the median and minimum time over --repeat runs after a warm-up,
elements/s, input GB/s, how many times faster fastloss is, the percentage of the bandwidth floor
(the time a plain vectorized read of the same input bytes takes, measured in the same run,
divided by the implementation's time), the peak extra memory of one "mean" call, and the largest
absolute and relative differences from a float64 reference on the same inputs, for
reduction="none" and "mean".
"""
import argparse
import functools
import importlib
import json
import math
import os
import platform
import sys
import time
import tracemalloc
from dataclasses import dataclass, field

import numpy as np

import fastloss
from fastloss import _kernels

IMPLEMENTATION_LIBRARIES = ("numpy", "torch", "sklearn")


# ---- float64 reference formulas (NumPy), also the NumPy competitors' stable forms ----

def _softplus(x):
    return np.logaddexp(0, x)


def _ref_bce(d):
    p, y = d["input"], d["target"]
    with np.errstate(divide="ignore"):
        return -(y * np.maximum(np.log(p), -100) + (1 - y) * np.maximum(np.log1p(-p), -100))


def _ref_bce_logits(d):
    x, y = d["input"], d["target"]
    pw = d.get("pos_weight", 1.0)
    return (pw * y * _softplus(-x) + (1 - y) * _softplus(x)) * d.get("weight", 1.0)


def _ref_sigmoid_focal(d, alpha=0.25):
    x, y, gamma = d["input"], d["target"], d["gamma"]
    q = y / (1 + np.exp(x)) + (1 - y) / (1 + np.exp(-x))  # 1 - p_t, without cancellation
    ce = y * _softplus(-x) + (1 - y) * _softplus(x)
    return (alpha * y + (1 - alpha) * (1 - y)) * ce * q ** gamma


def _log_softmax(z, axis):
    m = z.max(axis=axis, keepdims=True)
    return z - (m + np.log(np.exp(z - m).sum(axis=axis, keepdims=True)))


def _nll(log_p, target):
    """-log p of the target (class indices, or probabilities over axis 1)."""
    if target.dtype.kind == "f":
        return -(log_p * target).sum(axis=1)
    return -np.take_along_axis(log_p, target[:, None], axis=1)[:, 0]


def _ref_cross_entropy(d):
    return _nll(_log_softmax(d["input"], 1), d["target"])


def _ref_softmax_focal(d):
    log_p_t = -_ref_cross_entropy(d)
    return -(-np.expm1(log_p_t)) ** d["gamma"] * log_p_t


# ---- NumPy competitors: the textbook formulas (float ops as written) ----

def _np_textbook_bce_logits(d):
    p = 1 / (1 + np.exp(-d["input"]))
    return -(d["target"] * np.log(p) + (1 - d["target"]) * np.log(1 - p))


def _np_stable_bce_logits(d):
    x, y = d["input"], d["target"]
    loss = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
    if "pos_weight" in d:  # torch's form: (1-y)*x + (1 + (pw-1)*y) * softplus(-x)
        loss = (1 - y) * x + (1 + (d["pos_weight"] - 1) * y) * (
            np.maximum(-x, 0) + np.log1p(np.exp(-np.abs(x))))
    return loss * d.get("weight", 1.0)


def _np_focal(d, alpha=0.25):
    x, y, gamma = d["input"], d["target"], d["gamma"]
    p = 1 / (1 + np.exp(-x))
    ce = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
    p_t = p * y + (1 - p) * (1 - y)
    return (alpha * y + (1 - alpha) * (1 - y)) * ce * (1 - p_t) ** gamma


def _np_textbook_cross_entropy(d):
    e = np.exp(d["input"])
    return _nll(np.log(e / e.sum(axis=1, keepdims=True)), d["target"])


# ---- torch competitors ----

def _torch_call(name):
    def call(torch, d, reduction):
        import torch.nn.functional as F
        t = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in d.items()}
        x, y = t["input"], t["target"]
        if name == "sigmoid_focal_loss":  # torchvision.ops.sigmoid_focal_loss, in torch ops
            p = torch.sigmoid(x)
            ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
            p_t = p * y + (1 - p) * (1 - y)
            loss = ce * ((1 - p_t) ** t["gamma"]) * (0.25 * y + 0.75 * (1 - y))
        elif name == "softmax_focal_loss":
            log_p_t = F.log_softmax(x, 1).gather(1, y.unsqueeze(1)).squeeze(1)
            loss = -((1 - log_p_t.exp()) ** t["gamma"]) * log_p_t
        else:
            kwargs = {k: t[k] for k in ("weight", "pos_weight") if k in t}
            return getattr(F, name)(x, y, reduction=reduction, **kwargs)
        return loss if reduction == "none" else loss.mean()
    return call


# ---- the cases ----

def _classes_data(rng, n, dtype, classes=10, probabilities=False, spatial=False, **extra):
    if spatial:  # (8, 21, H, W), about n logits
        hw = max(1, n // (8 * 21))
        h = max(1, int(math.sqrt(hw)))
        shape = (8, 21, h, max(1, hw // h))
    else:
        shape = (max(1, n // classes), classes)
    x = rng.standard_normal(shape).astype(dtype)
    if probabilities:
        y = rng.random(shape)
        y = (y / y.sum(axis=1, keepdims=True)).astype(dtype)
    else:
        y = rng.integers(0, shape[1], (shape[0],) + shape[2:])
    return {"input": x, "target": y, **extra}


def _binary_data(rng, n, dtype, logits=True, weights=False, **extra):
    shape = (max(1, n // 10), 10)
    x = rng.standard_normal(shape) * 4 if logits else rng.random(shape)
    d = {"input": x.astype(dtype), "target": (rng.random(shape) < 0.3).astype(dtype), **extra}
    if weights:
        d["weight"] = rng.uniform(0.5, 2, (shape[0], 1)).astype(dtype)
        d["pos_weight"] = np.full(10, 2.0, dtype)
    return d


@dataclass
class Case:
    name: str
    loss: str              # the fastloss function
    make: object           # (rng, n, dtype) -> dict of arrays and parameters
    reference: object      # float64 per-position losses of a data dict
    competitors: dict = field(default_factory=dict)  # name -> (library, fn(lib, data, reduction))
    rtol: float = 1e-6     # fastloss's documented agreement with float64, float32 input
    atol: float = 1e-37


def _np(fn):
    return ("numpy", lambda np_, d, reduction: _reduce(fn(d), reduction))


def _reduce(loss, reduction):
    return loss if reduction == "none" else np.mean(loss)


def _sklearn_log_loss(sklearn, d, reduction):
    if reduction == "none":
        return None
    from sklearn.metrics import log_loss
    return log_loss(d["target"].ravel(), d["input"].ravel(), labels=[0, 1])


CASES = [
    Case("binary_cross_entropy", "binary_cross_entropy",
         lambda rng, n, dt: _binary_data(rng, n, dt, logits=False), _ref_bce,
         competitors={"numpy": _np(_ref_bce),
                      "torch": ("torch", _torch_call("binary_cross_entropy")),
                      "sklearn log_loss": ("sklearn", _sklearn_log_loss)}),
    Case("binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits",
         _binary_data, _ref_bce_logits,
         competitors={"numpy textbook": _np(_np_textbook_bce_logits),
                      "numpy stable": _np(_np_stable_bce_logits),
                      "torch": ("torch", _torch_call("binary_cross_entropy_with_logits"))}),
    Case("bce_with_logits[weight+pos_weight]", "binary_cross_entropy_with_logits",
         lambda rng, n, dt: _binary_data(rng, n, dt, weights=True), _ref_bce_logits,
         competitors={"numpy stable": _np(_np_stable_bce_logits),
                      "torch": ("torch", _torch_call("binary_cross_entropy_with_logits"))}),
    Case("sigmoid_focal_loss[gamma=2]", "sigmoid_focal_loss",
         lambda rng, n, dt: _binary_data(rng, n, dt, gamma=2.0), _ref_sigmoid_focal,
         competitors={"numpy": _np(_np_focal), "torch": ("torch", _torch_call(
             "sigmoid_focal_loss"))}, rtol=2e-6),
    Case("sigmoid_focal_loss[gamma=1.5]", "sigmoid_focal_loss",
         lambda rng, n, dt: _binary_data(rng, n, dt, gamma=1.5), _ref_sigmoid_focal,
         competitors={"numpy": _np(_np_focal), "torch": ("torch", _torch_call(
             "sigmoid_focal_loss"))}, rtol=2e-6),
    Case("cross_entropy[N x 10]", "cross_entropy", _classes_data, _ref_cross_entropy,
         competitors={"numpy textbook": _np(_np_textbook_cross_entropy),
                      "numpy stable": _np(_ref_cross_entropy),
                      "torch": ("torch", _torch_call("cross_entropy"))}, atol=1e-6),
    Case("cross_entropy[N x 1000]", "cross_entropy",
         lambda rng, n, dt: _classes_data(rng, n, dt, classes=1000), _ref_cross_entropy,
         competitors={"numpy stable": _np(_ref_cross_entropy),
                      "torch": ("torch", _torch_call("cross_entropy"))}, atol=1e-6),
    Case("cross_entropy[probabilities]", "cross_entropy",
         lambda rng, n, dt: _classes_data(rng, n, dt, probabilities=True), _ref_cross_entropy,
         competitors={"numpy stable": _np(_ref_cross_entropy),
                      "torch": ("torch", _torch_call("cross_entropy"))}, atol=1e-6),
    Case("cross_entropy[8 x 21 x H x W]", "cross_entropy",
         lambda rng, n, dt: _classes_data(rng, n, dt, spatial=True), _ref_cross_entropy,
         competitors={"torch": ("torch", _torch_call("cross_entropy"))}, atol=1e-6),
    Case("softmax_focal_loss[gamma=2]", "softmax_focal_loss",
         lambda rng, n, dt: _classes_data(rng, n, dt, gamma=2.0), _ref_softmax_focal,
         competitors={"numpy": _np(_ref_softmax_focal),
                      "torch": ("torch", _torch_call("softmax_focal_loss"))}, rtol=2e-6),
]


def _fastloss_call(case):
    fn = getattr(fastloss, case.loss)
    params = {"sigmoid_focal_loss": ("gamma",), "softmax_focal_loss": ("gamma",)}.get(
        case.loss, ()) + ("weight", "pos_weight")

    def call(_, d, reduction, n_threads=None):
        kwargs = {k: d[k] for k in params if k in d}
        return fn(d["input"], d["target"], reduction=reduction, n_threads=n_threads, **kwargs)
    return call


def _reference(case, d):
    """float64 per-position losses ("none") and their mean, from the same inputs."""
    d64 = {k: v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v
           for k, v in d.items()}
    with np.errstate(all="ignore"):
        loss = case.reference(d64)
    return loss, float(np.mean(loss))


# ---- measuring ----

def _median_min(fn, repeat):
    fn()  # warm-up: page faults, thread start-up, caches
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), float(min(times))


def _rss_peak_reset():
    """Reset the kernel's peak-RSS counter of this process (Linux); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_kib(field_name):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def _libc():
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def _return_freed_memory_to_the_os():
    """Make glibc serve every allocation above 64 KiB with mmap and unmap it when freed, so that
    the peak RSS sees each call's temporaries instead of reusing resident pages freed earlier.
    Changes how fast malloc is, so it runs after all timings."""
    libc = _libc()
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(libc and libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024)
                and libc.mallopt(M_TRIM_THRESHOLD, 64 * 1024))


def _peak_extra_bytes(fn):
    """Peak memory one call allocates beyond what exists before it: the larger of what
    tracemalloc sees (Python and NumPy allocations) and the rise of the peak RSS (any allocator,
    torch's included; Linux only)."""
    libc = _libc()
    if libc:
        libc.malloc_trim(0)  # free heap pages would otherwise be reused without counting
    rss = _rss_peak_reset()
    rss_before = _rss_kib("VmRSS") if rss else 0
    tracemalloc.start()
    try:
        fn()
        traced = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    rss_extra = max(0, _rss_kib("VmHWM") - rss_before) * 1024 if rss else 0
    return max(traced, rss_extra)


def _floor_time(d, n_threads, repeat):
    """Median time of reading every input byte with the plain vectorized read loop."""
    arrays = [np.ascontiguousarray(v) for k, v in d.items()
              if isinstance(v, np.ndarray) and v.size * v.itemsize >= 8]
    return _median_min(lambda: [_kernels.read_words(a, n_threads) for a in arrays], repeat)[0]


def _differences(got, want):
    """Largest absolute and relative differences where the reference is finite."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    finite = np.isfinite(want)
    if not finite.any():
        return 0.0, 0.0
    diff = np.abs(got - want)[finite]
    rel = diff / np.maximum(np.abs(want[finite]), np.finfo(np.float64).tiny)
    return float(diff.max()), float(rel.max())


def _libraries(against):
    """The competitor libraries asked for that import here."""
    libs = {}
    for name in against:
        try:
            libs[name] = importlib.import_module(name)
        except ImportError:
            pass
    return libs


def run(losses=None, sizes=(10**5, 10**7), dtypes=("float32",), threads=(1, 2), repeat=5,
        against=IMPLEMENTATION_LIBRARIES, progress=False, out=print):
    """Measure; return the JSON-ready report (see the module docstring for what it holds)."""
    cases = [c for c in CASES if losses is None or c.name in losses or c.loss in losses]
    libs = _libraries(against)
    torch = libs.get("torch")
    report = {"fastloss": fastloss.__version__, "simd_path": fastloss.simd_path(),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version(), "numpy": np.__version__,
                          "torch": getattr(torch, "__version__", None),
                          "sklearn": getattr(libs.get("sklearn"), "__version__", None)},
              "repeat": repeat, "not_installed": sorted(set(against) - set(libs)),
              "results": []}
    jobs = [(c, n, dt, t) for c in cases for n in sizes for dt in dtypes for t in threads]
    bar = _progress(2 * len(jobs), progress)
    memory_calls = []
    for job, (case, n, dtype, n_threads) in enumerate(jobs):
        d = case.make(np.random.default_rng(job), n, np.dtype(dtype))
        want_none, want_mean = _reference(case, d)
        floor = _floor_time(d, n_threads, repeat)
        n_elements = d["input"].size
        n_bytes = sum(v.nbytes for v in d.values() if isinstance(v, np.ndarray))
        if torch is not None:
            torch.set_num_threads(n_threads)
        impls = {"fastloss": ("fastloss", _fastloss_call(case))}
        impls.update({k: v for k, v in case.competitors.items() if v[0] in libs})
        rows = []
        for impl, (lib, call) in impls.items():
            kw = {"n_threads": n_threads} if impl == "fastloss" else {}
            mean_call = functools.partial(call, libs.get(lib), reduction="mean", **kw)
            with np.errstate(all="ignore"):
                median, best = _median_min(lambda: mean_call(d), repeat)
                got_mean = float(mean_call(d))
                got_none = call(libs.get(lib), d, "none", **kw)
            row = {"loss": case.name, "function": case.loss, "n": n_elements, "dtype": dtype,
                   "threads": n_threads, "implementation": impl, "median_s": median,
                   "min_s": best, "elements_per_s": n_elements / median,
                   "input_gb_per_s": n_bytes / median / 1e9, "percent_of_floor":
                   100 * floor / median, "floor_s": floor, "input_bytes": n_bytes}
            row["mean_abs_diff"], row["mean_rel_diff"] = _differences(got_mean, want_mean)
            if got_none is not None:
                got_none = got_none.numpy() if hasattr(got_none, "numpy") else got_none
                row["none_abs_diff"], row["none_rel_diff"] = _differences(
                    np.reshape(got_none, np.shape(want_none)), want_none)
            if impl == "fastloss":
                rtol, atol = (case.rtol, case.atol) if dtype == "float32" else (1e-12, 1e-12)
                row["tolerance"] = {"rtol": rtol, "atol": atol}
                row["agrees"] = _agrees(got_none, want_none, got_mean, want_mean, rtol, atol)
            rows.append(row)
            memory_calls.append((row, job, mean_call))
        ours = rows[0]["median_s"]
        rows[0]["speedup"] = {r["implementation"]: r["median_s"] / ours for r in rows[1:]}
        for r in rows[1:]:
            r["fastloss_speedup"] = r["median_s"] / ours
        report["results"].extend(rows)
        bar.update()

    # peak memory, after every timing: this changes how malloc behaves
    report["memory_method"] = "tracemalloc and peak RSS" + (
        ", allocations above 64 KiB unmapped when freed" if _return_freed_memory_to_the_os()
        else "")
    for job, (case, n, dtype, n_threads) in enumerate(jobs):
        d = case.make(np.random.default_rng(job), n, np.dtype(dtype))
        for row, _, mean_call in (m for m in memory_calls if m[1] == job):
            with np.errstate(all="ignore"):
                row["peak_extra_bytes"] = _peak_extra_bytes(lambda: mean_call(d))
            out(_table_line(row))
        bar.update()
    bar.close()
    return report


def _agrees(got_none, want_none, got_mean, want_mean, rtol, atol):
    finite = np.isfinite(want_none)
    ok = np.allclose(np.reshape(got_none, np.shape(want_none))[finite], want_none[finite],
                     rtol=rtol, atol=atol)
    return bool(ok and math.isclose(got_mean, want_mean, rel_tol=rtol, abs_tol=atol))


class _NoBar:
    def update(self):
        pass

    def close(self):
        pass


def _progress(total, enabled):
    """A tqdm bar on stderr when it is a terminal and tqdm is installed."""
    if not enabled or not sys.stderr.isatty():
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, file=sys.stderr, unit="step", leave=False)


# (row key, title, width and alignment, format)
COLUMNS = [("loss", "loss", "<34", ""), ("n", "n", ">8", ".0e"), ("dtype", "dtype", "<7", ""),
           ("threads", "thr", ">3", "d"), ("implementation", "implementation", "<16", ""),
           ("median_ms", "median ms", ">9", ".3f"), ("ns_per_element", "ns/elem", ">8", ".3f"),
           ("input_gb_per_s", "GB/s", ">6", ".1f"), ("percent_of_floor", "%floor", ">6", ".0f"),
           ("fastloss_speedup", "fastloss x", ">10", ""),
           ("mean_rel_diff", "rel diff", ">9", ".1e"), ("peak_extra_mb", "extra MB", ">8", ".1f")]


def _cells(row):
    speedup = row.get("fastloss_speedup")
    values = dict(row, median_ms=row["median_s"] * 1e3,
                  ns_per_element=row["median_s"] / row["n"] * 1e9,
                  peak_extra_mb=row["peak_extra_bytes"] / 1e6,
                  fastloss_speedup="-" if speedup is None else f"{speedup:.1f}")
    return [format(format(values[key], fmt), width) for key, _, width, fmt in COLUMNS]


def _header():
    return " ".join(format(title, width) for _, title, width, _ in COLUMNS)


def _table_line(row):
    return " ".join(_cells(row))


def markdown(report):
    titles = [title for _, title, _, _ in COLUMNS]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for row in report["results"]:
        lines.append("| " + " | ".join(c.strip() for c in _cells(row)) + " |")
    return "\n".join(lines) + "\n"


def plot(report, path):
    """Throughput against size (log-log), one panel per loss, a line per implementation, and
    the bandwidth floor as a dashed line."""
    from .plot import require_matplotlib
    require_matplotlib("--plot").use("Agg")
    import matplotlib.pyplot as plt
    rows = report["results"]
    losses = list(dict.fromkeys(r["loss"] for r in rows))
    threads = max(r["threads"] for r in rows)
    dtype = rows[0]["dtype"]
    cols = min(3, len(losses))
    nrows = math.ceil(len(losses) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.8 * nrows), squeeze=False)
    impls = list(dict.fromkeys(r["implementation"] for r in rows))
    colors = dict(zip(impls, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, loss in zip(axes.flat, losses):
        sel = [r for r in rows if r["loss"] == loss and r["threads"] == threads
               and r["dtype"] == dtype]
        for impl in dict.fromkeys(r["implementation"] for r in sel):
            pts = sorted((r["n"], r["elements_per_s"]) for r in sel if r["implementation"] == impl)
            ax.plot(*zip(*pts), marker="o", label=impl, color=colors[impl],
                    lw=2.5 if impl == "fastloss" else 1.2)
        floor = sorted({(r["n"], r["n"] / r["floor_s"]) for r in sel})
        ax.plot(*zip(*floor), "k--", lw=1, label="bandwidth floor")
        ax.set(xscale="log", yscale="log", title=loss, xlabel="elements",
               ylabel="elements / s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(losses):]:
        ax.set_visible(False)
    fig.suptitle(f"fastloss {report['fastloss']} ({report['simd_path']}), {dtype}, "
                 f"{threads} thread(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _split(values):
    """Repeated options and comma lists, flattened."""
    return [v for item in values for v in item.split(",") if v]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastloss bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [c.name for c in CASES]
    parser.add_argument("--loss", action="append", default=[], metavar="NAME",
                        help="a loss (function name or case name; repeatable or comma list; "
                             "default: all): " + "; ".join(names))
    parser.add_argument("--sizes", action="append", default=[],
                        help="element counts, e.g. 1e3,1e5,1e7,1e8 (default: 1e5,1e7; 1e4,1e6 "
                             "with --quick)")
    parser.add_argument("--dtype", action="append", default=[], help="float32,float64")
    parser.add_argument("--threads", action="append", default=[], help="thread counts: 1,2")
    parser.add_argument("--repeat", type=int, help="timed runs (default 5; 3 with --quick)")
    parser.add_argument("--against", action="append", default=[],
                        help="competitor libraries: numpy,torch,sklearn (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--json", metavar="PATH", help="write every figure as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="write the table as Markdown")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG plot (needs matplotlib)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    losses = _split(args.loss) or None
    unknown = [name for name in losses or [] if name not in names
               and name not in {c.loss for c in CASES}]
    if unknown:
        parser.error(f"unknown loss {unknown[0]!r}; choose from: {', '.join(names)}")
    against = _split(args.against) or list(IMPLEMENTATION_LIBRARIES)
    if any(a not in IMPLEMENTATION_LIBRARIES for a in against):
        parser.error(f"--against takes {', '.join(IMPLEMENTATION_LIBRARIES)}")
    sizes = [int(float(s)) for s in _split(args.sizes)] or (
        [10**4, 10**6] if args.quick else [10**5, 10**7])
    dtypes = _split(args.dtype) or ["float32"]
    if any(dt not in ("float32", "float64") for dt in dtypes):
        parser.error("--dtype takes float32 and float64")
    threads = [int(t) for t in _split(args.threads)] or [1, 2]
    if min(threads) < 1 or min(sizes) < 1:
        parser.error("--threads and --sizes take positive numbers")
    repeat = (3 if args.quick else 5) if args.repeat is None else args.repeat
    if repeat < 1:
        parser.error("--repeat takes a positive number")

    print(_header())
    report = run(losses, sizes, dtypes, threads, repeat, against, progress=not args.quiet)
    for lib in report["not_installed"]:
        print(f"{lib}: not installed")
    print(f"fastloss {report['fastloss']}, SIMD path {report['simd_path']}; median of "
          f"{repeat}; %floor = time to read the inputs once / time taken; 'fastloss x' = how "
          "many times longer the implementation takes than fastloss")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(report))
    if args.plot:
        plot(report, args.plot)
    return 0
