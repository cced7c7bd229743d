"""fastloss bench: how much faster, how close to the memory-bandwidth limit, and does it agree?

    fastloss bench --quick          # or: python -m fastloss bench --quick

Every loss runs on generated data next to NumPy formulas (the textbook one and the stable one),
torch (torch.nn.functional, and torchvision's focal-loss formula in torch ops, on as many threads),
jax.jit of optax's losses (or the jax.numpy formula where optax has none) and scikit-learn's
log_loss where it applies. For each loss, size, dtype, thread count and implementation it reports
the median and minimum time over --repeat runs after a warm-up, elements/s, input GB/s, how many
times faster fastloss is, the percentage of the bandwidth floor (the time a plain vectorized read
of the same input bytes takes, timed alternately with the implementation on the same buffers,
divided by the implementation's time; only a memory limit for inputs larger than the L3 cache),
the peak extra memory of one "mean" call, and the largest absolute and relative differences from
a float64 reference on the same inputs, for reduction="none" and "mean". Each row is printed as
soon as it is measured, with a progress line per case on stderr.
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
from fastloss._validate import MAX_THREADS

IMPLEMENTATION_LIBRARIES = ("numpy", "torch", "sklearn", "jax")
DTYPES = ("float32", "float64")


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

# Written as a textbook writes them, they overflow and take log(0) for confident logits (p
# rounds to 0 or 1): the inf and nan they then give are their result, shown in "rel diff", not
# a fault for NumPy to warn about on every call.
@np.errstate(over="ignore", divide="ignore", invalid="ignore")
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


@np.errstate(over="ignore", divide="ignore", invalid="ignore")
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


# ---- jax competitors: jax.jit of optax's losses, or of the jax.numpy formula where optax has
# none; the inputs are jax arrays made once per case (_jax_inputs), outside the timed calls ----

class NotApplicable(Exception):
    """An implementation that cannot run this case here (reported as "n/a", with the reason)."""


def _jax_inputs(jax, d):
    """The case's arrays as jax arrays (one copy, made before timing); class indices as int32,
    which jax uses unless jax_enable_x64 is on."""
    import jax.numpy as jnp
    out = {}
    for k, v in d.items():
        if isinstance(v, np.ndarray):
            out[k] = jnp.asarray(v.astype(np.int32) if v.dtype.kind in "iu" else v)
            if v.dtype.kind == "f" and out[k].dtype != v.dtype:
                raise NotApplicable(f"{v.dtype} needs jax_enable_x64")
        else:
            out[k] = v
    return out


def _jax_call(formula):
    """fn(jax, d, reduction) running jax.jit(formula) to completion (block_until_ready); scalar
    parameters such as gamma are compile-time constants, as they are Python floats for torch."""
    jitted = {}

    def call(jax, d, reduction):
        scalars = tuple(sorted((k, v) for k, v in d.items() if not hasattr(v, "shape")))
        key = (reduction, scalars)
        if key not in jitted:
            import optax

            def loss(arrays):
                values = formula(jax, optax, dict(arrays, **dict(scalars)))
                return values if reduction == "none" else values.mean()
            jitted[key] = jax.jit(loss)
        arrays = {k: v for k, v in d.items() if hasattr(v, "shape")}
        return jitted[key](arrays).block_until_ready()
    return call


def _jax_bce(jax, optax, d):  # the textbook formula with torch's clamps of each log at -100
    p, y, jnp = d["input"], d["target"], jax.numpy
    return -(y * jnp.maximum(jnp.log(p), -100) + (1 - y) * jnp.maximum(jnp.log1p(-p), -100))


def _jax_bce_logits_weighted(jax, optax, d):  # optax has no pos_weight: torch's formula
    x, y, pw = d["input"], d["target"], d["pos_weight"]
    return ((1 - y) * x - (1 + (pw - 1) * y) * jax.nn.log_sigmoid(x)) * d["weight"]


def _jax_sigmoid_focal(jax, optax, d):
    if not hasattr(optax, "sigmoid_focal_loss"):
        raise NotApplicable("this optax has no sigmoid_focal_loss")
    return optax.sigmoid_focal_loss(d["input"], d["target"], alpha=0.25, gamma=d["gamma"])


def _jax_cross_entropy(jax, optax, d):
    if d["target"].dtype.kind == "f":
        return optax.softmax_cross_entropy(d["input"], d["target"], axis=1)
    return optax.softmax_cross_entropy_with_integer_labels(d["input"], d["target"], axis=1)


def _jax_softmax_focal(jax, optax, d):
    log_p = jax.nn.log_softmax(d["input"], axis=1)
    log_p_t = jax.numpy.take_along_axis(log_p, d["target"][:, None], axis=1)[:, 0]
    return -((1 - jax.numpy.exp(log_p_t)) ** d["gamma"]) * log_p_t


def _jax(formula):
    return ("jax", _jax_call(formula))


# Library -> fn(library module, data dict): the inputs that library's calls take, made once per
# case before anything is timed (torch.from_numpy shares memory, so torch needs none).
PREPARE_INPUTS = {"jax": _jax_inputs}


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
                      "jax": _jax(_jax_bce),
                      "sklearn log_loss": ("sklearn", _sklearn_log_loss)}),
    Case("binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits",
         _binary_data, _ref_bce_logits,
         competitors={"numpy textbook": _np(_np_textbook_bce_logits),
                      "numpy stable": _np(_np_stable_bce_logits),
                      "torch": ("torch", _torch_call("binary_cross_entropy_with_logits")),
                      "jax": _jax(lambda jax, optax, d: optax.sigmoid_binary_cross_entropy(
                          d["input"], d["target"]))}),
    Case("bce_with_logits[weight+pos_weight]", "binary_cross_entropy_with_logits",
         lambda rng, n, dt: _binary_data(rng, n, dt, weights=True), _ref_bce_logits,
         competitors={"numpy stable": _np(_np_stable_bce_logits),
                      "torch": ("torch", _torch_call("binary_cross_entropy_with_logits")),
                      "jax": _jax(_jax_bce_logits_weighted)}),
    Case("sigmoid_focal_loss[gamma=2]", "sigmoid_focal_loss",
         lambda rng, n, dt: _binary_data(rng, n, dt, gamma=2.0), _ref_sigmoid_focal,
         competitors={"numpy": _np(_np_focal), "torch": ("torch", _torch_call(
             "sigmoid_focal_loss")), "jax": _jax(_jax_sigmoid_focal)}, rtol=2e-6),
    Case("sigmoid_focal_loss[gamma=1.5]", "sigmoid_focal_loss",
         lambda rng, n, dt: _binary_data(rng, n, dt, gamma=1.5), _ref_sigmoid_focal,
         competitors={"numpy": _np(_np_focal), "torch": ("torch", _torch_call(
             "sigmoid_focal_loss")), "jax": _jax(_jax_sigmoid_focal)}, rtol=2e-6),
    Case("cross_entropy[N x 10]", "cross_entropy", _classes_data, _ref_cross_entropy,
         competitors={"numpy textbook": _np(_np_textbook_cross_entropy),
                      "numpy stable": _np(_ref_cross_entropy),
                      "torch": ("torch", _torch_call("cross_entropy")),
                      "jax": _jax(_jax_cross_entropy)}, atol=1e-6),
    Case("cross_entropy[N x 1000]", "cross_entropy",
         lambda rng, n, dt: _classes_data(rng, n, dt, classes=1000), _ref_cross_entropy,
         competitors={"numpy stable": _np(_ref_cross_entropy),
                      "torch": ("torch", _torch_call("cross_entropy")),
                      "jax": _jax(_jax_cross_entropy)}, atol=1e-6),
    Case("cross_entropy[probabilities]", "cross_entropy",
         lambda rng, n, dt: _classes_data(rng, n, dt, probabilities=True), _ref_cross_entropy,
         competitors={"numpy stable": _np(_ref_cross_entropy),
                      "torch": ("torch", _torch_call("cross_entropy")),
                      "jax": _jax(_jax_cross_entropy)}, atol=1e-6),
    Case("cross_entropy[8 x 21 x H x W]", "cross_entropy",
         lambda rng, n, dt: _classes_data(rng, n, dt, spatial=True), _ref_cross_entropy,
         competitors={"torch": ("torch", _torch_call("cross_entropy")),
                      "jax": _jax(_jax_cross_entropy)}, atol=1e-6),
    Case("softmax_focal_loss[gamma=2]", "softmax_focal_loss",
         lambda rng, n, dt: _classes_data(rng, n, dt, gamma=2.0), _ref_softmax_focal,
         competitors={"numpy": _np(_ref_softmax_focal),
                      "torch": ("torch", _torch_call("softmax_focal_loss")),
                      "jax": _jax(_jax_softmax_focal)}, rtol=2e-6),
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

def _time_alternately(fn, floor, repeat):
    """Median and minimum time of fn, and median time of floor: each warmed up once (compiling,
    page faults, thread start-up), then run alternately, floor, fn, floor, fn, ..., so that the
    floor sees the same caches, clock speed and neighbours as the implementation it is put
    against."""
    floor()
    fn()
    floor_times, times = [], []
    for _ in range(repeat):
        for f, ts in ((floor, floor_times), (fn, times)):
            start = time.perf_counter()
            f()
            ts.append(time.perf_counter() - start)
    return float(np.median(times)), float(min(times)), float(np.median(floor_times))


def _l3_cache_bytes():
    """The L3 cache size of the first CPU in bytes (Linux sysfs, else sysconf), None if unknown."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    try:
        for index in sorted(i for i in os.listdir(base) if i.startswith("index")):
            with open(os.path.join(base, index, "level")) as f:
                if f.read().strip() != "3":
                    continue
            with open(os.path.join(base, index, "size")) as f:
                size = f.read().strip()
            return int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
    except (OSError, ValueError):
        pass
    try:
        size = os.sysconf("SC_LEVEL3_CACHE_SIZE")
    except (ValueError, OSError):
        size = 0
    return size if size > 0 else None


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


# glibc malloc settings, (mmap threshold, trim threshold). For timing: the state its adaptive
# threshold reaches once warm, fixed so that every case sees the same: blocks up to 32 MiB (the
# adaptive threshold's ceiling on 64-bit) reuse freed heap memory, larger ones are mapped afresh.
# For the memory figure: every block above 64 KiB is mapped and unmapped when freed, so that the
# peak RSS sees each call's temporaries instead of resident pages freed earlier.
TIMING_MALLOC = (32 << 20, 64 << 20)
MEMORY_MALLOC = (64 << 10, 64 << 10)


def _set_malloc(settings):
    """Apply glibc malloc settings; False where that is not possible."""
    libc = _libc()
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    mmap_threshold, trim_threshold = settings
    return bool(libc and libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold)
                and libc.mallopt(M_TRIM_THRESHOLD, trim_threshold))


def _peak_extra_bytes(fn):
    """Peak memory one call allocates beyond what exists before it: the larger of what
    tracemalloc sees (Python and NumPy allocations) and the rise of the peak RSS (any allocator,
    torch's included; Linux only)."""
    libc = _libc()
    _set_malloc(MEMORY_MALLOC)
    try:
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
    finally:
        _set_malloc(TIMING_MALLOC)
    return max(traced, rss_extra)


def _differences(got, want):
    """Largest absolute and relative differences where the reference is finite."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    finite = np.isfinite(want)
    if not finite.any():
        return 0.0, 0.0
    diff = np.abs(got - want)[finite]
    rel = diff / np.maximum(np.abs(want[finite]), np.finfo(np.float64).tiny)
    return float(diff.max()), float(rel.max())


# Libraries a competitor needs besides the one it is named after.
ALSO_NEEDS = {"jax": ("optax",)}


def _libraries(against):
    """The competitor libraries asked for that import here (with what they also need)."""
    libs = {}
    for name in against:
        try:
            for extra in ALSO_NEEDS.get(name, ()):
                importlib.import_module(extra)
            libs[name] = importlib.import_module(name)
        except ImportError:
            pass
    return libs


def _version(module):
    return getattr(module, "__version__", None)


def run(losses=None, sizes=(10**5, 10**7), dtypes=("float32",), threads=(1, 2), repeat=5,
        against=IMPLEMENTATION_LIBRARIES, progress=False, out=None):
    """Measure; return the JSON-ready report (see the module docstring for what it holds).

    out(line) receives each table line as soon as its row is measured (default: print it,
    flushed); progress=True writes a line to stderr before each case. Asking for float64 with jax
    among the competitors turns on jax_enable_x64 (jax computes in float32 otherwise)."""
    out = out or functools.partial(print, flush=True)
    cases = [c for c in CASES if losses is None or c.name in losses or c.loss in losses]
    libs = _libraries(against)
    torch, jax = libs.get("torch"), libs.get("jax")
    if jax is not None and "float64" in dtypes:
        jax.config.update("jax_enable_x64", True)
    l3 = _l3_cache_bytes()
    malloc_set = _set_malloc(TIMING_MALLOC)  # the same malloc behaviour for every timing
    report = {"fastloss": fastloss.__version__, "simd_path": fastloss.simd_path(),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "l3_cache_bytes": l3, "python": platform.python_version(),
                          "numpy": np.__version__, "torch": _version(torch),
                          "sklearn": _version(libs.get("sklearn")), "jax": _version(jax),
                          "optax": _version(sys.modules.get("optax")) if jax else None},
              "repeat": repeat, "not_installed": sorted(set(against) - set(libs)),
              "memory_method": "tracemalloc and peak RSS" + (
                  ", allocations above 64 KiB unmapped when freed" if malloc_set else ""),
              "results": [], "not_applicable": []}
    jobs = [(c, n, dt, t) for c in cases for n in sizes for dt in dtypes for t in threads]
    for job, (case, n, dtype, n_threads) in enumerate(jobs):
        d = case.make(np.random.default_rng(job), n, np.dtype(dtype))
        n_elements = d["input"].size
        if progress:
            print(f"[{job + 1}/{len(jobs)}] {case.name} n={n_elements:.0e} {dtype} {n_threads} "
                  f"thread{'s' if n_threads > 1 else ''} ...", file=sys.stderr, flush=True)
        want_none, want_mean = _reference(case, d)
        n_bytes = sum(v.nbytes for v in d.values() if isinstance(v, np.ndarray))
        if torch is not None:
            torch.set_num_threads(n_threads)
        impls = {"fastloss": ("fastloss", _fastloss_call(case))}
        impls.update({k: v for k, v in case.competitors.items() if v[0] in libs})
        fastloss_row = None
        for impl, (lib, call) in impls.items():
            row = {"loss": case.name, "function": case.loss, "n": n_elements, "dtype": dtype,
                   "threads": n_threads, "implementation": impl}
            try:
                row.update(_measure(case, call, libs.get(lib), PREPARE_INPUTS.get(lib), d,
                                    n_threads, impl == "fastloss", repeat, want_none, want_mean))
            except NotApplicable as e:
                report["not_applicable"].append(dict(row, reason=str(e)))
                out(_not_applicable_line(row, str(e)))
                continue
            row.update(elements_per_s=n_elements / row["median_s"],
                       input_gb_per_s=n_bytes / row["median_s"] / 1e9, input_bytes=n_bytes,
                       percent_of_floor=100 * row["floor_s"] / row["median_s"],
                       floor_in_cache=None if l3 is None else n_bytes <= l3)
            if fastloss_row is None:
                fastloss_row = row
                row["speedup"] = {}
            else:
                row["fastloss_speedup"] = fastloss_row["speedup"][impl] = (
                    row["median_s"] / fastloss_row["median_s"])
            report["results"].append(row)
            out(_table_line(row))
    return report


def _measure(case, call, library, prepare, d, n_threads, ours, repeat, want_none, want_mean):
    """Time one implementation on one case (alternately with the read floor, on n_threads,
    over the buffers it reads), then its differences from the reference and its peak memory;
    ours: fastloss, which takes n_threads and is held to its documented tolerance."""
    inputs = prepare(library, d) if prepare else d
    kw = {"n_threads": n_threads} if ours else {}
    mean_call = functools.partial(call, library, inputs, "mean", **kw)
    words = [a for a in (np.ascontiguousarray(v) for v in inputs.values() if hasattr(v, "shape"))
             if a.nbytes >= 8]
    with np.errstate(all="ignore"):
        median, best, floor = _time_alternately(
            mean_call, lambda: [_kernels.read_words(a, n_threads) for a in words], repeat)
        got_mean = float(mean_call())
        got_none = call(library, inputs, "none", **kw)
        row = {"median_s": median, "min_s": best, "floor_s": floor,
               "peak_extra_bytes": _peak_extra_bytes(mean_call)}
    row["mean_abs_diff"], row["mean_rel_diff"] = _differences(got_mean, want_mean)
    if got_none is not None:
        got_none = np.reshape(np.asarray(got_none), np.shape(want_none))
        row["none_abs_diff"], row["none_rel_diff"] = _differences(got_none, want_none)
    if ours:
        rtol, atol = (case.rtol, case.atol) if d["input"].dtype == np.float32 else (1e-12, 1e-12)
        row["tolerance"] = {"rtol": rtol, "atol": atol}
        row["agrees"] = _agrees(got_none, want_none, got_mean, want_mean, rtol, atol)
    return row


def _agrees(got_none, want_none, got_mean, want_mean, rtol, atol):
    finite = np.isfinite(want_none)
    ok = np.allclose(got_none[finite], want_none[finite], rtol=rtol, atol=atol)
    return bool(ok and math.isclose(got_mean, want_mean, rel_tol=rtol, abs_tol=atol))


# ---- the table ----

def _floor_cell(row):
    """%floor where the inputs are larger than the L3 cache; below that a read runs at the
    cache's bandwidth, which is no memory limit, and the cell says "(cache)"."""
    return "(cache)" if row["floor_in_cache"] else format(row["percent_of_floor"], ".0f")


def _speedup_cell(row):
    """How many times longer than fastloss the implementation takes; SLOWER marks where fastloss
    takes longer."""
    speedup = row.get("fastloss_speedup")
    if speedup is None:
        return "-"
    return f"{speedup:.2f} SLOWER" if speedup < 1 else f"{speedup:.1f}"


# (row key, title, width and alignment, format)
COLUMNS = [("loss", "loss", "<34", ""), ("n", "n", ">8", ".0e"), ("dtype", "dtype", "<7", ""),
           ("threads", "thr", ">3", "d"), ("implementation", "implementation", "<16", ""),
           ("median_ms", "median ms", ">9", ".3f"), ("ns_per_element", "ns/elem", ">8", ".3f"),
           ("input_gb_per_s", "GB/s", ">6", ".1f"), ("floor", "%floor", ">7", ""),
           ("speedup", "fastloss x", ">11", ""),
           ("mean_rel_diff", "rel diff", ">9", ".1e"), ("peak_extra_mb", "extra MB", ">8", ".1f")]
# the columns that identify a row, shown also where an implementation cannot run
KEY_COLUMNS = 5


def _cells(row):
    values = dict(row, median_ms=row["median_s"] * 1e3,
                  ns_per_element=row["median_s"] / row["n"] * 1e9,
                  peak_extra_mb=row["peak_extra_bytes"] / 1e6,
                  floor=_floor_cell(row), speedup=_speedup_cell(row))
    return [format(format(values[key], fmt), width) for key, _, width, fmt in COLUMNS]


def _header():
    return " ".join(format(title, width) for _, title, width, _ in COLUMNS)


def _table_line(row):
    return " ".join(_cells(row))


def _not_applicable_line(row, reason):
    return " ".join(format(format(row[key], fmt), width)
                    for key, _, width, fmt in COLUMNS[:KEY_COLUMNS]) + f" n/a: {reason}"


def legend(report):
    """The lines that say how to read the table."""
    l3 = report["machine"]["l3_cache_bytes"]
    where = (f"inputs larger than the {l3 / 2**20:.0f} MiB L3 cache; '(cache)' below that, "
             "where a read is no memory limit" if l3 else "the L3 cache size is unknown here, "
             "so below it the figure is a cache's bandwidth, not the memory limit")
    return [f"fastloss {report['fastloss']}, SIMD path {report['simd_path']}; median of "
            f"{report['repeat']} runs after a warm-up.",
            "'fastloss x' = how many times longer the implementation takes than fastloss; "
            "SLOWER = fastloss takes longer than this implementation.",
            "%floor = time to read the inputs once (timed alternately with the implementation, "
            f"on the same buffers) / time taken; 100 is the memory-bandwidth limit; shown for "
            f"{where}.",
            "'thr' is the thread count of fastloss and torch; jax runs on XLA's own thread pool "
            "whatever it says, NumPy and scikit-learn on one thread."]


def markdown(report):
    titles = [title for _, title, _, _ in COLUMNS]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for row in report["results"]:
        lines.append("| " + " | ".join(c.strip() for c in _cells(row)) + " |")
    return "\n".join(lines) + "\n\n" + "\n".join(legend(report)) + "\n"


def plot(report, path):
    """Throughput against size (log-log), one panel per loss, a line per implementation, and
    the read floor (timed next to fastloss) as a dashed line."""
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
        floor = sorted((r["n"], r["n"] / r["floor_s"]) for r in sel
                       if r["implementation"] == "fastloss")
        ax.plot(*zip(*floor), "k--", lw=1, label="read floor")
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


# ---- the command line: every option checked before anything is measured ----

def _comma_list(parse):
    """An argparse type: a comma list, each item converted (or refused) by parse."""
    def convert(text):
        return [parse(item) for item in text.split(",") if item]
    return convert


def _size(text):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 1 and value == int(value)):
        raise argparse.ArgumentTypeError(
            f"sizes are whole element counts of at least 1, such as 1e6; got {text!r}")
    return int(value)


def _whole_number(low, high, rule):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{rule}; got {text!r}")
        return value
    return parse


def _one_of(choices):
    def check(text):
        if text not in choices:
            raise argparse.ArgumentTypeError(f"takes {', '.join(choices)}; got {text!r}")
        return text
    return check


def _cannot_write(path):
    """Why a file cannot be written at path, or None."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return "is a directory"
    if not os.path.isdir(folder):
        return f"directory {folder} does not exist"
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        return "is not writable"
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastloss bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [c.name for c in CASES]
    parser.add_argument("--loss", action="extend", type=_comma_list(str), default=[],
                        metavar="NAME", help="a loss (function name or case name; repeatable or "
                        "comma list; default: all): " + "; ".join(names))
    parser.add_argument("--sizes", action="extend", type=_comma_list(_size), default=[],
                        help="element counts, e.g. 1e3,1e5,1e7,1e8 (default: 1e5,1e7; 1e4,1e6 "
                             "with --quick)")
    parser.add_argument("--dtype", action="extend", type=_comma_list(_one_of(DTYPES)),
                        default=[], help="float32,float64 (default: float32)")
    thread_count = _whole_number(
        1, MAX_THREADS, f"thread counts are whole numbers from 1 to {MAX_THREADS}")
    parser.add_argument("--threads", action="extend", type=_comma_list(thread_count),
                        default=[], help="thread counts for fastloss and torch, e.g. 1,2 "
                        "(default); jax (XLA) runs on its own thread pool, which cannot be set "
                        "to this count, so its rows use every core whatever 'thr' says")
    parser.add_argument("--repeat", type=_whole_number(1, math.inf, "takes a whole number of "
                                                       "at least 1"),
                        help="timed runs (default 5; 3 with --quick)")
    parser.add_argument("--against", action="extend",
                        type=_comma_list(_one_of(IMPLEMENTATION_LIBRARIES)), default=[],
                        help="competitor libraries: " + ",".join(IMPLEMENTATION_LIBRARIES) +
                        " (default: all; jax means jax.jit of optax's losses, timed on jax "
                        "arrays made once per case)")
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--json", metavar="PATH", help="write every figure as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="write the table as Markdown")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG plot (needs matplotlib)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)

    unknown = [name for name in args.loss if name not in names
               and name not in {c.loss for c in CASES}]
    if unknown:
        parser.error(f"unknown loss {unknown[0]!r}; choose from: {', '.join(names)}")
    for option in ("json", "markdown", "plot"):
        path = getattr(args, option)
        problem = path is not None and _cannot_write(path)
        if problem:
            parser.error(f"--{option} {path}: {problem}")
    if args.plot:
        try:
            from .plot import require_matplotlib
            require_matplotlib("--plot")
        except ImportError as e:
            parser.error(str(e))
    sizes = args.sizes or ([10**4, 10**6] if args.quick else [10**5, 10**7])
    repeat = args.repeat or (3 if args.quick else 5)

    print(_header(), flush=True)
    report = run(args.loss or None, sizes, args.dtype or ["float32"], args.threads or [1, 2],
                 repeat, args.against or IMPLEMENTATION_LIBRARIES, progress=not args.quiet)
    for lib in report["not_installed"]:
        needs = " and ".join((lib,) + ALSO_NEEDS.get(lib, ()))
        print(f"{lib}: not installed" + (f" (needs {needs})" if lib in ALSO_NEEDS else ""))
    print("\n".join(legend(report)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(report))
    if args.plot:
        plot(report, args.plot)
    return 0
