"""Fuzz tests (hypothesis) over every public loss function and StreamingLoss.update/merge.

Hypothesis draws shapes (0-d to 4-d, empty ones too), dtypes (float16/32/64, integers, bool,
complex, object, big-endian), layouts (Fortran order, negative and zero strides, slices,
misaligned, read-only), special values (nan, +-inf, subnormals, +-3e38, -0.0, the edges of
[0, 1], soft labels), weights and pos_weight (broadcast shapes, zeros, negatives), reductions,
n_threads and out buffers, right and wrong. Every call is checked for:

(a) no crash: each fuzz function runs in a child process (a segfault, abort or hang fails the
    test and prints the case being run, written to a file before each call);
(b) its array arguments unchanged, byte for byte (and the buffers they view);
(c) the documented exceptions only (TypeError, ValueError, IndexError), with a message; a call
    the docstrings allow must succeed, a call they forbid must raise;
(d) agreement with an independent reference (fuzz_reference.py: reference.py's float64 formulas,
    mpmath where those are not stable, the documented limits at infinite values): per element
    within rtol * magnitude + atol, the magnitude being the sum of the absolute values of the
    terms the loss adds (sums and means: summed over the elements);
(e) the same bits with every n_threads.

The normal run is derandomized (same examples every run, no example database). Set
FASTLOSS_FUZZ_EXAMPLES=N for a longer, randomized run of N examples per fuzz function; a failure
prints the example and a @reproduce_failure blob.
"""
import json
import math
import os
import signal
import subprocess
import sys

import mpmath
import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import fastloss
import fuzz_reference as fref

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = int(os.environ.get("FASTLOSS_FUZZ_EXAMPLES") or 0)
settings.register_profile(
    "fastloss-fuzz", database=None, deadline=None, derandomize=not EXAMPLES, print_blob=True,
    suppress_health_check=list(HealthCheck))


def fuzz_settings(normal_examples):
    return settings(settings.get_profile("fastloss-fuzz"),
                    max_examples=EXAMPLES or normal_examples)


FLOATS = (np.float16, np.float32, np.float64)
TOL = {np.dtype(np.float16): (1e-3, 6e-8),  # the float32 result rounded to float16
       np.dtype(np.float32): (1e-5, 1e-30), np.dtype(np.float64): (1e-10, 1e-300)}
DOCUMENTED = (TypeError, ValueError, IndexError)
N_THREADS = (None, 1, 2, 3)

# ---- drawing values, arrays and layouts ----

LOGITS = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, -2.0, 20.0, -20.0, 88.7, -88.7, 100.0, -104.0, 710.0,
          -745.0, 1e-45, -1e-45, 5e-324, 1e-40, 3e38, -3e38, 3.4e38, -3.4e38, 1e300,
          np.inf, -np.inf, np.nan]
PROBABILITIES = [0.0, -0.0, 1.0, 0.5, 1e-45, 1e-40, 5e-324, 1e-8, 0.9999999, 1 - 2**-53,
                 0.25, 0.75]
OUT_OF_RANGE = [np.nan, -1e-45, -1.0, 1.0000001, 1.5, 2.0, np.inf, -np.inf]
WEIGHTS = [0.0, -0.0, 1.0, 2.0, 0.5, -1.0, -3.5, 1e-3, 1e-30, 1e30, 3e38, 1e-45]


def rare(data, label=None):
    """True about one time in 16: how often an argument is drawn invalid, so that most calls
    are valid and reach the reference (shrinking goes to False)."""
    return data.draw(st.integers(0, 15), label=label) == 15


def pick(data, valid, invalid, label):
    """A draw from the list valid, or rarely from the list invalid."""
    return data.draw(st.sampled_from(invalid if rare(data) else valid), label=label)


def values(kind, invalid=False):
    if kind == "logit":
        special = st.sampled_from(LOGITS)
        return st.one_of(special, special, special, st.floats(-30, 30), st.floats(width=32))
    pool = PROBABILITIES + (OUT_OF_RANGE if invalid else [])
    return st.one_of(st.sampled_from(pool), st.floats(0, 1))


def shape_strategy(min_dims=0, max_dims=4, max_size=24):
    return st.lists(st.integers(0, 4), min_size=min_dims, max_size=max_dims).filter(
        lambda s: math.prod(s) <= max_size)


def fill(data, shape, dtype, elements):
    """An array of shape and dtype, its elements drawn (through float64, with overflow to inf
    as a cast gives)."""
    n = math.prod(shape)
    v = np.array(data.draw(st.lists(elements, min_size=n, max_size=n)), np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        if np.dtype(dtype).kind in "iub":
            v = np.nan_to_num(v, nan=0, posinf=1, neginf=-1)
            v = np.trunc(np.clip(v, -1e18, 1e18))
        return v.astype(dtype).reshape(shape)


LAYOUTS = ("C", "F", "reversed", "sliced", "broadcast", "big-endian", "misaligned", "read-only")


def layout(data, a, allowed=LAYOUTS):
    """a in a drawn memory layout: the same values (except "broadcast", which repeats one
    slice along an axis through a zero stride)."""
    kind = data.draw(st.sampled_from(allowed), label="layout")
    if a.ndim == 0 and kind not in ("C", "big-endian", "read-only"):
        kind = "C"
    if kind == "F":
        return np.asfortranarray(a)
    if kind == "reversed":
        axis = data.draw(st.integers(0, a.ndim - 1))
        return np.flip(np.ascontiguousarray(np.flip(a, axis)), axis)
    if kind == "sliced":
        axis = data.draw(st.integers(0, a.ndim - 1))
        shape = list(a.shape)
        shape[axis] *= 2
        big = np.zeros(shape, a.dtype)
        index = (slice(None),) * axis + (slice(None, None, 2),)
        big[index] = a
        return big[index]
    if kind == "broadcast":
        axes = [d for d in range(a.ndim) if a.shape[d] > 1]
        if not axes:
            return a
        axis = data.draw(st.sampled_from(axes))
        return np.broadcast_to(a[(slice(None),) * axis + (slice(0, 1),)], a.shape)
    if kind == "big-endian" and a.dtype.kind in "fiu" and a.dtype.itemsize > 1:
        return a.astype(a.dtype.newbyteorder(">"))
    if kind == "misaligned" and a.dtype.kind != "O" and a.dtype.itemsize > 1:
        m = np.zeros(a.nbytes + 1, np.uint8)[1:].view(a.dtype).reshape(a.shape)
        m[...] = a
        return m
    if kind == "read-only":
        a = a.copy()
        a.flags.writeable = False
    return a


def as_object(a):
    """An object array holding the same numbers: no dtype the losses take."""
    o = np.empty(a.shape, object)
    for i in np.ndindex(a.shape):
        o[i] = float(a[i])
    return o


BAD_FLOAT_DTYPES = (np.int32, np.int64, np.bool_, np.complex64, object)


def float_dtype(data):
    """A dtype for input: mostly float16/32/64; sometimes one the losses reject (TypeError)."""
    return pick(data, FLOATS, BAD_FLOAT_DTYPES, "input dtype")


def make_array(data, shape, dtype, elements, **kw):
    if dtype is object:
        return as_object(fill(data, shape, np.float64, elements))
    return layout(data, fill(data, shape, dtype, elements), **kw)


def compute_dtype(a):
    """The dtype the kernels compute in for an input array (float16 in float32)."""
    if a.dtype.kind != "f" or a.dtype.itemsize not in (2, 4, 8):
        return None
    return np.dtype(np.float32) if a.dtype.itemsize == 2 else a.dtype.newbyteorder("=")


def result_dtype(a):
    return np.dtype(np.float16) if a.dtype.itemsize == 2 else compute_dtype(a)


def broadcast_weight(data, name, shape, dtype_pool=(np.float32, np.float64, np.int32, np.bool_),
                     elements=st.sampled_from(WEIGHTS)):
    """None, or an array that broadcasts to shape (fewer dimensions, 1s), sometimes one that does
    not (ValueError) or of a non-numeric dtype (TypeError). Returns (array, errors it implies)."""
    choice = pick(data, ["none", "none", "broadcast", "full", "scalar"], ["wrong shape", "object"],
                  name)
    if choice == "none":
        return None, set()
    errors = set()
    if choice == "scalar":
        wshape = ()
    elif choice == "wrong shape":
        wshape = tuple(shape) + (2,) if data.draw(st.booleans()) else (3,) * (len(shape) + 1)
        errors.add(ValueError)
    else:
        keep = data.draw(st.integers(0, len(shape)))
        wshape = tuple(d if (choice == "full" or data.draw(st.booleans())) else 1
                       for d in shape[len(shape) - keep:])
    if choice == "object":
        wshape = tuple(shape)
        errors.add(TypeError)
        return as_object(fill(data, wshape, np.float64, elements)), errors
    dtype = data.draw(st.sampled_from(dtype_pool))
    return make_array(data, wshape, dtype, elements), errors


def reduction_of(data):
    r = pick(data, ["mean", "sum", "none", "none"], ["avg", None], "reduction")
    return r, (set() if r in ("mean", "sum", "none") else {ValueError})


def n_threads_of(data):
    n = pick(data, N_THREADS, (0, 1025, 2.0, True), "n_threads")
    if n is None or (type(n) is int and 1 <= n <= 1024):
        return n, set()
    return n, {ValueError} if type(n) is int else {TypeError}


def out_of(data, reduction, loss_shape, res_dtype, operands):
    """None, or an out buffer: the right one, or one wrong in a drawn way; with the errors it
    implies, from its properties as the docstrings list them."""
    kind = pick(data, ["none", "none", "right"], ["wrong shape", "wrong dtype", "Fortran",
                                                  "read-only", "aliases input", "aliases target",
                                                  "a list"], "out")
    if kind == "none":
        return None, set()
    dtype = res_dtype or np.dtype(np.float64)
    shape = tuple(loss_shape)
    if kind == "aliases input" or kind == "aliases target":
        out = operands[0] if kind == "aliases input" else operands[1]
    elif kind == "a list":
        out = np.zeros(shape, dtype).tolist()
    else:
        out = np.full(shape + ((1,) if kind == "wrong shape" else ()),
                      7, np.float64 if kind == "wrong dtype" and dtype != np.float64 else
                      np.float32 if kind == "wrong dtype" else dtype)
        if kind == "Fortran":
            out = np.asfortranarray(out)
        out.flags.writeable = kind != "read-only"
    right = reduction == "none" and isinstance(out, np.ndarray) and out.shape == shape and \
        out.dtype == dtype and out.flags.c_contiguous and out.flags.aligned and \
        out.flags.writeable and not any(isinstance(a, np.ndarray) and a.size and
                                        np.may_share_memory(a, out) for a in operands)
    return out, set() if right else {ValueError}


# ---- running a call and checking it ----

def _root(a):
    while isinstance(a, np.ndarray) and isinstance(a.base, np.ndarray):
        a = a.base
    return a


def snapshot(args):
    """Bytes of every array argument and of the buffer it views."""
    snap = []
    for a in args:
        if isinstance(a, np.ndarray):
            snap.append((a.tobytes(), _root(a).tobytes(), a.dtype, a.shape, a.strides))
        else:
            snap.append(repr(a))
    return snap


LAST_CASE = os.environ.get("FASTLOSS_FUZZ_LAST_CASE")


def record(description):
    """Write the case about to run where the parent test reads it after a crash or hang."""
    note(description)
    if LAST_CASE:
        with open(LAST_CASE, "w") as f:
            f.write(description)


def describe(name, args, kwargs):
    with np.printoptions(threshold=200, floatmode="unique"):
        parts = [f"{a!r} (dtype={getattr(a, 'dtype', None)}, strides="
                 f"{getattr(a, 'strides', None)})" for a in args]
        parts += [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"fastloss.{name}(\n    " + ",\n    ".join(parts) + ")"


def call(function, args, kwargs, errors, watched):
    """Run function(*args, **kwargs); check (b) and (c). Returns (result, raised)."""
    before = snapshot(watched)
    try:
        result, raised = function(*args, **kwargs), None
    except Exception as e:  # checked below
        result, raised = None, e
    assert snapshot(watched) == before, "an argument (or the buffer it views) was modified"
    if raised is not None:
        assert isinstance(raised, DOCUMENTED), f"undocumented exception {raised!r}"
        assert str(raised), f"{type(raised).__name__} without a message"
        assert errors, f"a valid call raised {raised!r}"
        assert isinstance(raised, tuple(errors)), \
            f"raised {raised!r}; the docstrings say {sorted(e.__name__ for e in errors)}"
    else:
        assert not errors, f"no error raised; expected {sorted(e.__name__ for e in errors)}"
    return result, raised


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    both_nan = np.isnan(a) & np.isnan(b)
    return a.dtype == b.dtype and a.shape == b.shape and \
        np.array_equal(np.where(both_nan, 0, a).tobytes(), np.where(both_nan, 0, b).tobytes())


def check_close(got, want, magnitude, res_dtype, what):
    """(d): got within rtol * magnitude + atol of want, per element; +-inf allowed where want
    (plus the tolerance) overflows the result dtype; want UNDEFINED (nan in `defined`) skipped."""
    rtol, atol = TOL[np.dtype(res_dtype)]
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    magnitude = np.maximum(np.asarray(magnitude, np.float64), np.abs(want))
    big = float(np.finfo(res_dtype).max)
    with np.errstate(invalid="ignore", over="ignore"):
        ok = (np.isnan(got) & np.isnan(want)) | (got == want) \
            | (np.isfinite(got) & (np.abs(got - want) <= rtol * magnitude + atol)) \
            | (np.isinf(got) & np.isfinite(want) & (np.sign(got) == np.sign(want))
               & (np.abs(want) + rtol * magnitude >= big))
    if not np.all(ok):
        bad = np.argwhere(~ok) if got.ndim else [()]
        i = tuple(bad[0])
        raise AssertionError(f"{what}: got {got[i]!r}, reference {want[i]!r} (magnitude "
                             f"{magnitude[i]!r}, rtol {rtol}) at {i}; {len(bad)} elements off")


def check_extreme(got, v, magnitude, res_dtype, extreme, what):
    """meter.min or .max (extreme np.min or np.max) of loss values v: between the extremes of
    the values shifted by their tolerances."""
    rtol, atol = TOL[np.dtype(res_dtype)]
    tol = np.where(np.isfinite(v), rtol * np.maximum(magnitude, np.abs(v)) + atol, 0.0)
    big = float(np.finfo(res_dtype).max)
    with np.errstate(invalid="ignore", over="ignore"):
        lo, hi = v - tol, v + tol
    lo = np.where(lo <= -big, -np.inf, lo)
    hi = np.where(hi >= big, np.inf, hi)
    assert extreme(lo) <= got <= extreme(hi), \
        f"{what}: got {got!r}, the reference lies in [{extreme(lo)!r}, {extreme(hi)!r}]"


def check_result(result, out, reduction, loss_shape, res_dtype, value, magnitude, denominator,
                 denominator_magnitude=None):
    """(d) for one call's result: value/magnitude per position (np.nan in value where the
    reference is undefined, marked by defined=False), denominator of "mean"."""
    defined = ~np.isnan(magnitude)
    value = np.where(defined, value, 0.0)
    magnitude = np.where(defined, magnitude, 0.0)
    if reduction == "none":
        assert isinstance(result, np.ndarray), type(result)
        assert result.shape == tuple(loss_shape) and result.dtype == res_dtype, \
            (result.shape, result.dtype)
        if out is not None:
            assert result is out, "out= given: the result must be out itself"
        check_close(np.where(defined, result, value), value, magnitude, res_dtype, "loss")
        return
    assert isinstance(result, np.generic) and result.dtype == res_dtype, \
        (type(result), getattr(result, "dtype", None))
    if not np.all(defined):
        return
    total = float(mpmath.fsum(mpmath.mpf(float(v)) for v in value.ravel()))
    total_magnitude = float(np.sum(magnitude, dtype=np.float64))
    if reduction == "sum":
        check_close(result, total, total_magnitude, res_dtype, "sum")
        return
    d = np.float64(denominator)
    if d == 0 and denominator_magnitude:
        return  # a denominator that cancels to 0 has no relative accuracy
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        mean = np.float64(total) / d
        mean_magnitude = total_magnitude / abs(d) + abs(mean) * (denominator_magnitude or 0) / abs(d)
    check_close(result, mean, mean_magnitude if np.isfinite(mean_magnitude) else np.abs(mean),
                res_dtype, "mean")


def check_threads(function, args, kwargs, result, out):
    """(e): the same bits with every n_threads (a fresh out buffer for each)."""
    for n in (1, 2, 3):
        kw = dict(kwargs, n_threads=n)
        if out is not None:
            kw["out"] = np.full_like(out, 7)
        again = function(*args, **kw)
        assert same_bits(again, result), f"n_threads={n} gives {again!r}, not {result!r}"


# ---- the binary losses ----

BINARY = {"binary_cross_entropy": fastloss.binary_cross_entropy,
          "binary_cross_entropy_with_logits": fastloss.binary_cross_entropy_with_logits,
          "sigmoid_focal_loss": fastloss.sigmoid_focal_loss}
TARGET_DTYPES = ("input", np.bool_, np.uint8, np.int64, np.int32, np.float16, np.float32,
                 np.float64, object)
GAMMAS = [0.0, 1.0, 2.0, 3.0, 4.0, 0.5, 1.5, 2.5, 0.25, 1e-3, 1e-50, 5e-324, 7.5]


def gamma_of(data):
    if rare(data):
        g = data.draw(st.sampled_from([-1.0, np.inf, np.nan, "2", True, None]), label="gamma")
    else:
        g = data.draw(st.one_of(st.sampled_from(GAMMAS), st.floats(0, 5)), label="gamma")
    if isinstance(g, float) and 0 <= g < np.inf:
        return g, set()
    return g, {ValueError} if isinstance(g, float) else {TypeError}


def binary_target(data, x, shape, elements):
    """A target for input x: shape, dtype and values drawn. Returns (target, errors, values the
    kernel computes with as float64 or None)."""
    tdtype = pick(data, TARGET_DTYPES[:-1], [object], "target dtype")
    errors = set()
    tshape = tuple(shape)
    if rare(data, "wrong target shape"):
        tshape = tshape + (1,)
        errors.add(ValueError)
    if tdtype == "input":
        tdtype = x.dtype if x.dtype.kind == "f" else np.float32
    if tdtype is object:
        return as_object(fill(data, tshape, np.float64, elements)), errors | {TypeError}, None
    if np.dtype(tdtype).kind in "iub":
        hard = st.sampled_from([0, 1, 2, -1] if rare(data) else [0, 1])
        t = layout(data, fill(data, tshape, tdtype, hard))
    else:
        t = layout(data, fill(data, tshape, tdtype, elements))
    if not np.all((t >= 0) & (t <= 1)):
        errors.add(ValueError)
    cdt = compute_dtype(x)
    if cdt is None or errors:
        return t, errors, None
    td = np.dtype(t.dtype)
    in_place = td == cdt or td in (np.dtype(np.bool_), np.dtype(np.uint8), np.dtype(np.int64))
    y = t if in_place else t.astype(cdt)  # the documented conversion
    return t, errors, np.asarray(y, np.float64)


def operand_values(w, cdt, shape):
    """A weight as the kernels see it: converted to the computing dtype, broadcast."""
    if w is None:
        return np.ones(shape)
    with np.errstate(over="ignore"):
        return np.broadcast_to(np.asarray(w).astype(cdt).astype(np.float64), shape)


def binary_case(data, name):
    kind = "prob" if name == "binary_cross_entropy" else "logit"
    shape = tuple(data.draw(shape_strategy(), label="shape"))
    dtype = float_dtype(data)
    elements = values(kind, invalid=rare(data))
    x = make_array(data, shape, dtype, elements)
    errors = set() if compute_dtype(x) is not None else {TypeError}
    cdt = compute_dtype(x)
    if kind == "prob" and cdt is not None and not np.all((x >= 0) & (x <= 1)):
        errors.add(ValueError)
    tel = values("prob", invalid=rare(data))
    t, terr, y = binary_target(data, x, shape, tel)
    errors |= terr
    w, werr = broadcast_weight(data, "weight", shape)
    errors |= werr
    kwargs, params = {}, {}
    pw = None
    if name == "binary_cross_entropy_with_logits":
        pw, perr = broadcast_weight(data, "pos_weight", shape)
        errors |= perr
        kwargs["pos_weight"] = pw
    if name == "sigmoid_focal_loss":
        alpha = pick(data, [0.25, -1.0, 0.0, 1.0, 0.5], [1.5, np.nan, "a"], "alpha")
        if isinstance(alpha, str):
            errors.add(TypeError)
        elif not alpha <= 1:
            errors.add(ValueError)
        gamma, gerr = gamma_of(data)
        errors |= gerr
        kwargs.update(alpha=alpha, gamma=gamma)
        params = dict(alpha=alpha, gamma=gamma)
    kwargs["weight"] = w
    reduction, rerr = reduction_of(data)
    errors |= rerr
    n_threads, nerr = n_threads_of(data)
    errors |= nerr
    res_dtype = result_dtype(x) if cdt is not None else None
    out, oerr = out_of(data, reduction, shape, res_dtype, (x, t, w, pw))
    errors |= oerr
    kwargs.update(reduction=reduction, n_threads=n_threads, out=out)
    reference = None
    if not errors:
        xv = np.asarray(x.astype(cdt), np.float64)
        wv = operand_values(w, cdt, shape)
        if name == "binary_cross_entropy":
            reference = fref.bce(xv, y, wv)
        elif name == "binary_cross_entropy_with_logits":
            reference = fref.bce_with_logits(xv, y, wv, operand_values(pw, cdt, shape))
        else:
            reference = fref.sigmoid_focal(xv, y, wv, float(params["alpha"]),
                                           float(params["gamma"]))
    return (x, t), kwargs, errors, reference, res_dtype, shape


def run_binary(data, name):
    args, kwargs, errors, reference, res_dtype, shape = binary_case(data, name)
    function = BINARY[name]
    watched = [*args, kwargs["weight"], kwargs.get("pos_weight")]
    record(describe(name, args, kwargs))
    result, raised = call(function, args, kwargs, errors, watched)
    if raised is not None:
        return
    value, magnitude = reference
    check_result(result, kwargs["out"], kwargs["reduction"], shape, res_dtype, value, magnitude,
                 math.prod(shape))
    check_threads(function, args, kwargs, result, kwargs["out"])


@fuzz_settings(500)
@given(st.data())
def fuzz_binary_cross_entropy(data):
    run_binary(data, "binary_cross_entropy")


@fuzz_settings(500)
@given(st.data())
def fuzz_binary_cross_entropy_with_logits(data):
    run_binary(data, "binary_cross_entropy_with_logits")


@fuzz_settings(350)
@given(st.data())
def fuzz_sigmoid_focal_loss(data):
    run_binary(data, "sigmoid_focal_loss")


# ---- the softmax losses ----

INDEX_DTYPES = (np.int64, np.int32, np.int16, np.int8, np.uint8, np.uint16, np.uint32,
                np.uint64)


def softmax_case(data, name):
    focal = name == "softmax_focal_loss"
    ndim = data.draw(st.sampled_from([1, 2, 2, 3, 4, 0]), label="ndim")
    c = data.draw(st.sampled_from([1, 2, 3, 5, 0] if ndim else [1]), label="classes")
    dims = [data.draw(st.integers(0, 4), label="N")] if ndim >= 2 else []
    dims += [data.draw(st.integers(0, 3)) for _ in range(ndim - 2)]
    shape = (c,) if ndim == 1 else () if ndim == 0 else (dims[0], c, *dims[1:])
    loss_shape = () if ndim <= 1 else (dims[0], *dims[1:])
    n_positions = math.prod(loss_shape)
    dtype = float_dtype(data)
    x = make_array(data, shape, dtype, values("logit"))
    cdt = compute_dtype(x)
    errors = set() if cdt is not None else {TypeError}
    if ndim == 0 or (c == 0 and n_positions):
        errors.add(ValueError)
    kwargs = {}
    ignore = pick(data, [-100, -100, -1, 0, 1, 255], [1.5, True, 2**64], "ignore_index")
    if type(ignore) is not int:
        errors.add(TypeError)
    elif not -2**63 <= ignore < 2**63:
        errors.add(ValueError)
    eps = 0.0
    if not focal:
        eps = pick(data, [0.0, 0.0, 0.1, 0.5, 1.0, 1e-8], [-0.1, 1.1, np.nan, "0"],
                   "label_smoothing")
        if isinstance(eps, str):
            errors.add(TypeError)
        elif not 0 <= eps <= 1:
            errors.add(ValueError)
        kwargs["label_smoothing"] = eps
    else:
        gamma, gerr = gamma_of(data)
        errors |= gerr
        kwargs["gamma"] = gamma
    # target: class indices or probabilities
    kind = pick(data, ["index", "index", "probabilities"], ["bool", "object"], "target kind")
    if kind == "index":
        tdtype = data.draw(st.sampled_from(INDEX_DTYPES))
        tshape = loss_shape + (1,) if rare(data, "wrong target shape") else loss_shape
        if tshape != loss_shape:
            errors.add(ValueError)
        classes = st.integers(0, max(c - 1, 0))
        pool = st.one_of(classes, st.sampled_from([ignore] if type(ignore) is int else [0]))
        if rare(data, "targets out of range"):
            pool = st.one_of(pool, st.sampled_from([c, -1, -100, 255]))
        n = math.prod(tshape)
        raw = data.draw(st.lists(pool, min_size=n, max_size=n))
        info = np.iinfo(tdtype)  # values that do not fit wrap around, as a C cast would
        raw = [(v - int(info.min)) % (int(info.max) - int(info.min) + 1) + int(info.min)
               for v in raw]
        t = layout(data, np.array(raw, tdtype).reshape(tshape))
        if type(ignore) is int and tshape == loss_shape and any(
                int(v) != ignore and not 0 <= int(v) < c for v in t.ravel().tolist()):
            errors.add(IndexError)
    elif kind == "probabilities":
        tdtype = data.draw(st.sampled_from([x.dtype if cdt is not None else np.float32,
                                            np.float64, np.float32, np.float16]))
        tshape = tuple(shape) + (1,) if rare(data, "wrong target shape") else shape
        if tshape != shape:
            errors.add(ValueError)
        t = make_array(data, tshape, tdtype, values("prob"))
        if focal:
            errors.add(ValueError)
        if type(ignore) is int and ignore >= 0:
            errors.add(ValueError)
    else:
        t = np.zeros(loss_shape, bool) if kind == "bool" else as_object(np.zeros(loss_shape))
        errors.add(TypeError)
    # class weight
    wkind = pick(data, ["none", "right"], ["wrong shape", "object"], "weight")
    w = None
    if wkind == "right":
        w = make_array(data, (c,), data.draw(st.sampled_from([np.float32, np.float64,
                                                              np.int32])),
                       st.sampled_from(WEIGHTS))
    elif wkind == "wrong shape":
        w = np.ones((c + 1,))
        errors.add(ValueError)
    elif wkind == "object":
        w = as_object(np.ones(c))
        errors.add(TypeError)
    kwargs.update(weight=w, ignore_index=ignore)
    reduction, rerr = reduction_of(data)
    n_threads, nerr = n_threads_of(data)
    errors |= rerr | nerr
    res_dtype = result_dtype(x) if cdt is not None else None
    out, oerr = out_of(data, reduction, loss_shape, res_dtype, (x, t, w))
    errors |= oerr
    kwargs.update(reduction=reduction, n_threads=n_threads, out=out)
    reference = None
    if not errors:
        reference = softmax_reference(x, t, w, ignore, eps, kwargs.get("gamma"), cdt)
    return (x, t), kwargs, errors, reference, res_dtype, loss_shape


def softmax_reference(x, t, w, ignore, eps, gamma, cdt):
    """Per position (value, magnitude), the "mean" denominator and its magnitude; values the
    kernels see: input, weight and probability targets in the computing dtype."""
    z = np.asarray(x.astype(cdt), np.float64)
    if z.ndim == 1:
        z = z[None]
        t = np.asarray(t)[None]
    c = z.shape[1]
    rows = np.moveaxis(z, 1, -1)  # (N, d..., C)
    wv = np.ones(c) if w is None else np.asarray(np.asarray(w).astype(cdt), np.float64)
    index = t.dtype.kind in "iu"
    if not index:
        # (no classes: no positions either, or the case expects an error)
        q = np.moveaxis(np.asarray(t.astype(cdt), np.float64), 1, -1) * (1 - eps) + (
            eps / c if c else 0.0)
    value = np.zeros(rows.shape[:-1])
    magnitude = np.zeros(rows.shape[:-1])
    denominator = denominator_magnitude = 0.0
    for i in np.ndindex(value.shape):
        if index:
            k = int(t[i])
            if k == ignore:
                continue
            denominator += wv[k]
            denominator_magnitude += abs(wv[k])
            if gamma is not None:
                v, m = fref.softmax_row(rows[i], wv, (gamma, k))
            else:
                coefficients = eps / c * wv
                coefficients[k] += (1 - eps) * wv[k]
                v, m = fref.softmax_row(rows[i], coefficients)
        else:
            v, m = fref.softmax_row(rows[i], wv * q[i])
        if v is fref.UNDEFINED:
            v, m = np.nan, np.nan
        value[i], magnitude[i] = v, m
    if not index:
        denominator, denominator_magnitude = value.size, 0.0
    if x.ndim == 1:
        value, magnitude = value[0], magnitude[0]
    return value, magnitude, denominator, denominator_magnitude


SOFTMAX = {"cross_entropy": fastloss.cross_entropy,
           "softmax_focal_loss": fastloss.softmax_focal_loss}


def run_softmax(data, name):
    args, kwargs, errors, reference, res_dtype, loss_shape = softmax_case(data, name)
    function = SOFTMAX[name]
    watched = [*args, kwargs["weight"]]
    record(describe(name, args, kwargs))
    result, raised = call(function, args, kwargs, errors, watched)
    if raised is not None:
        return
    value, magnitude, denominator, denominator_magnitude = reference
    check_result(result, kwargs["out"], kwargs["reduction"], loss_shape, res_dtype, value,
                 magnitude, denominator, denominator_magnitude)
    check_threads(function, args, kwargs, result, kwargs["out"])


@fuzz_settings(500)
@given(st.data())
def fuzz_cross_entropy(data):
    run_softmax(data, "cross_entropy")


@fuzz_settings(400)
@given(st.data())
def fuzz_softmax_focal_loss(data):
    run_softmax(data, "softmax_focal_loss")


# ---- many blocks, several threads ----

@fuzz_settings(150)
@given(st.data())
def fuzz_threads(data):
    """(e) over inputs of a few kernel blocks, where n_threads does split the work: each loss,
    every reduction, n_threads 1, 2, 3 and None give the same bits."""
    name = data.draw(st.sampled_from(sorted(BINARY) + sorted(SOFTMAX)))
    dtype = data.draw(st.sampled_from(FLOATS))
    n = data.draw(st.integers(1, 3)) * 4096 + data.draw(st.integers(0, 4095))
    base = fill(data, (data.draw(st.integers(1, 64)),), np.float64, values(
        "prob" if name == "binary_cross_entropy" else "logit"))
    kwargs = {}
    if name in BINARY:
        x = np.resize(base, n).astype(dtype)
        t = np.resize(fill(data, (17,), np.float64, values("prob")), n).astype(dtype)
        if name == "binary_cross_entropy_with_logits":
            kwargs["pos_weight"] = np.resize(fill(data, (7,), np.float64,
                                                  st.sampled_from(WEIGHTS)), n)
    else:
        c = data.draw(st.sampled_from([1, 3, 10]))
        x = np.resize(base, (n // c, c)).astype(dtype)
        t = np.resize(fill(data, (13,), np.int64, st.integers(0, c - 1)), n // c)
    args = (x, t)
    record(describe(name, args, kwargs))
    function = {**BINARY, **SOFTMAX}[name]
    before = snapshot([x, t, *kwargs.values()])
    for reduction in ("none", "sum", "mean"):
        results = [function(*args, reduction=reduction, n_threads=k, **kwargs)
                   for k in N_THREADS]
        for k, r in zip(N_THREADS, results):
            assert same_bits(r, results[1]), f"{reduction}: n_threads={k} differs from 1"
    assert snapshot([x, t, *kwargs.values()]) == before


# ---- StreamingLoss ----

def streaming_params(data, loss):
    """The meter's parameters, drawn (valid or not) with the errors they imply."""
    params, errors = {}, set()
    if loss == "binary_cross_entropy_with_logits":
        pw = pick(data, [None, 2.0, [0.5, 3.0], -1.0], [np.inf, "x"], "pos_weight")
        if pw is not None:
            params["pos_weight"] = pw
        if pw is np.inf:
            errors.add(ValueError)
        if pw == "x":
            errors.add(TypeError)
    if loss == "sigmoid_focal_loss":
        params["alpha"] = pick(data, [0.25, -1.0, 1.0], [2.0], "alpha")
        if params["alpha"] > 1:
            errors.add(ValueError)
    if loss in ("sigmoid_focal_loss", "softmax_focal_loss"):
        params["gamma"], gerr = gamma_of(data)
        errors |= gerr
    if loss in ("cross_entropy", "softmax_focal_loss"):
        params["ignore_index"] = data.draw(st.sampled_from([-100, 0]))
        params["weight"] = data.draw(st.sampled_from([None, [1.0, 2.0, 0.0], [1.0, 1.0]]))
    if loss == "cross_entropy":
        params["label_smoothing"] = data.draw(st.sampled_from([0.0, 0.2]))
    if rare(data):
        params["reduction"] = "sum"  # not a parameter of a meter
        errors.add(TypeError)
    return params, errors


def _broadcasts(a, b):
    try:
        np.broadcast_shapes(a, b)
        return True
    except ValueError:
        return False


def state(meter):
    return json.dumps(meter.to_dict(), sort_keys=True)


def streaming_batch(data, loss, params):
    """(input, target), sample weight, errors, per-position reference (value, magnitude, and
    the per-position denominator factor d) or None, per-position shape."""
    if loss in BINARY:
        name = loss
        kind = "prob" if loss == "binary_cross_entropy" else "logit"
        shape = tuple(data.draw(shape_strategy(), label="shape"))
        x = make_array(data, shape, float_dtype(data), values(kind))
        cdt = compute_dtype(x)
        errors = set() if cdt is not None else {TypeError}
        if kind == "prob" and cdt is not None and not np.all((x >= 0) & (x <= 1)):
            errors.add(ValueError)
        t, terr, y = binary_target(data, x, shape, values("prob"))
        errors |= terr
        loss_shape = shape
        pw = params.get("pos_weight")
        if pw is not None and not (_broadcasts(pw.shape, shape)
                                   and np.broadcast_shapes(pw.shape, shape) == shape):
            errors.add(ValueError)
    else:
        c = 3 if params.get("weight") is not None and len(params["weight"]) == 3 else 2
        n = data.draw(st.integers(0, 5))
        shape = (n, c)
        x = make_array(data, shape, float_dtype(data), values("logit"))
        cdt = compute_dtype(x)
        errors = set() if cdt is not None else {TypeError}
        pool = st.one_of(st.integers(0, c - 1), st.sampled_from(
            [params["ignore_index"]] + ([c] if rare(data) else [])))
        t = layout(data, fill(data, (n,), np.int64, pool))
        if any(int(v) != params["ignore_index"] and not 0 <= v < c for v in t.tolist()):
            errors.add(IndexError)
        loss_shape = (n,)
    skind = pick(data, ["none", "ones", "drawn"], ["negative", "nan", "wrong"], "sample weight")
    s = None
    if skind == "ones":
        s = np.ones(loss_shape)
    elif skind == "drawn":
        s = make_array(data, loss_shape, np.float64, st.sampled_from([0.0, 1.0, 2.5, 1e-3, 1e30]))
    elif skind in ("negative", "nan"):
        s = np.full(loss_shape, -1.0 if skind == "negative" else np.nan)
        if s.size:
            errors.add(ValueError)
    elif skind == "wrong":
        s = np.ones(loss_shape + (2,))
        errors.add(ValueError)
    if errors:
        return (x, t), s, errors, None, loss_shape
    if loss in BINARY:
        xv = np.asarray(x.astype(cdt), np.float64)
        ones = np.ones(shape)
        if loss == "binary_cross_entropy":
            value, magnitude = fref.bce(xv, y, ones)
        elif loss == "binary_cross_entropy_with_logits":
            value, magnitude = fref.bce_with_logits(xv, y, ones, operand_values(
                params.get("pos_weight"), cdt, shape))
        else:
            value, magnitude = fref.sigmoid_focal(xv, y, ones, params["alpha"],
                                                  float(params["gamma"]))
        keep = np.ones(shape, bool)
        d = np.ones(shape)
    else:
        ignore = params["ignore_index"]
        w = None if params["weight"] is None else np.array(params["weight"])
        value, magnitude, _, _ = softmax_reference(
            x, t, w, ignore, params.get("label_smoothing", 0.0),
            params.get("gamma") if loss == "softmax_focal_loss" else None, cdt)
        keep = np.array([int(v) != ignore for v in t.tolist()], bool).reshape(loss_shape)
        wv = np.ones(c) if w is None else np.asarray(w.astype(cdt), np.float64)
        d = np.where(keep, wv[np.where(keep, t, 0)], 0.0)
    sv = np.ones(loss_shape) if s is None else np.asarray(s.astype(cdt), np.float64)
    return (x, t), s, errors, (value, magnitude, d, keep, sv), loss_shape


@fuzz_settings(400)
@given(st.data())
def fuzz_streaming(data):
    loss = data.draw(st.sampled_from(sorted(fastloss.streaming.LOSSES)), label="loss")
    params, errors = streaming_params(data, loss)
    bins = data.draw(st.sampled_from([{}, {"bins": 4, "range": (0.0, 2.0)}, {"bins": "log"}]))
    record(f"StreamingLoss({loss!r}, **{bins!r}, **{params!r})")
    try:
        meter = fastloss.StreamingLoss(loss, **bins, **params)
    except DOCUMENTED as e:
        assert errors and isinstance(e, tuple(errors)) and str(e), repr(e)
        return
    assert not errors, f"the meter accepted invalid parameters; expected {errors}"
    (x, t), s, errors, reference, loss_shape = streaming_batch(data, loss, meter.params)
    n_threads = data.draw(st.sampled_from(N_THREADS))
    record(describe(f"StreamingLoss({loss!r}, **{params!r}).update", (x, t),
                    dict(weight=s, n_threads=n_threads)))
    before = state(meter)
    _, raised = call(meter.update, (x, t), dict(weight=s, n_threads=n_threads), errors,
                     [a for a in (x, t, s) if a is not None])
    if raised is not None:
        assert state(meter) == before, "a failed update changed the meter"
        return
    value, magnitude, d, keep, sv = reference
    cdt = compute_dtype(x)
    res = cdt
    kept = keep & ~np.isnan(magnitude)
    if not np.all(kept | ~keep):
        return  # a row of -inf only: no reference
    v = value[keep]
    assert meter.count == v.size, (meter.count, v.size)
    assert meter.nan_count == int(np.isnan(v).sum()), meter.nan_count
    finite_v = v[~np.isnan(v)]
    if finite_v.size:
        finite_m = magnitude[keep][~np.isnan(v)]
        check_extreme(meter.min, finite_v, finite_m, res, np.min, "min")
        check_extreme(meter.max, finite_v, finite_m, res, np.max, "max")
    else:
        assert math.isnan(meter.min) and math.isnan(meter.max)
    # a zero sample weight removes any loss but nan (infinite ones too), and its magnitude
    contributions = [0.0 if a == 0 and b == b else a * b for a, b in zip(sv[keep], v)]
    want = float(mpmath.fsum(mpmath.mpf(float(a)) for a in contributions))
    with np.errstate(invalid="ignore"):  # 0 * inf, replaced by 0
        weighted_magnitude = np.where(sv[keep] == 0, 0.0, sv[keep] * magnitude[keep])
    check_close(np.float64(meter.sum), want, float(np.sum(weighted_magnitude)), res, "sum")
    check_close(np.float64(meter.weight_sum), float(np.sum(sv[keep] * d[keep])),
                float(np.sum(np.abs(sv[keep] * d[keep]))), np.float64, "weight_sum")
    if meter.histogram is not None:
        counts, _ = meter.histogram
        assert counts.sum() + meter.underflow + meter.overflow + meter.nan_count == meter.count
    # merge: the batch in two meters, merged, is the meter of the whole batch
    if x.ndim >= 1 and x.shape[0] >= 2:
        k = x.shape[0] // 2
        parts = [fastloss.StreamingLoss(loss, **bins, **params) for _ in range(2)]
        for part, rows in zip(parts, (slice(None, k), slice(k, None))):
            part.update(x[rows], t[rows], None if s is None else
                        np.broadcast_to(s, loss_shape)[rows], n_threads=n_threads)
        merged = parts[0].merge(parts[1])
        assert merged is parts[0]
        for key in ("count", "nan_count", "underflow", "overflow"):
            assert getattr(merged, key) == getattr(meter, key), key
        for key in ("min", "max"):
            assert same_bits(getattr(merged, key), getattr(meter, key)), key
        check_close(np.float64(merged.sum), meter.sum, 1e-3 * float(np.sum(weighted_magnitude)),
                    np.float64, "merged sum")
        if meter.histogram is not None:
            assert np.array_equal(merged.histogram[0], meter.histogram[0])
    other = fastloss.StreamingLoss("binary_cross_entropy" if loss != "binary_cross_entropy"
                                   else "cross_entropy")
    for bad, error in ((other, ValueError), (object(), TypeError)):
        before = state(meter)
        with pytest.raises(error) as info:
            meter.merge(bad)
        assert str(info.value) and state(meter) == before


FUZZ = {f.__name__[len("fuzz_"):]: f for f in (
    fuzz_binary_cross_entropy, fuzz_binary_cross_entropy_with_logits, fuzz_sigmoid_focal_loss,
    fuzz_cross_entropy, fuzz_softmax_focal_loss, fuzz_threads, fuzz_streaming)}


# ---- the tests: each fuzz function in a child process ----

# A bound on a child's time, far above its normal run (a few seconds to ~15 s on a busy
# 2-core machine): only a hang reaches it.
TIMEOUT = 300 + EXAMPLES // 5


@pytest.mark.parametrize("name", list(FUZZ))
def test_fuzz(name, tmp_path):
    last = tmp_path / "last_case.txt"
    script = f"import test_fuzz; test_fuzz.FUZZ[{name!r}]()"
    env = dict(os.environ, FASTLOSS_FUZZ_LAST_CASE=str(last), PYTHONFAULTHANDLER="1")
    command = [sys.executable, "-c", script]
    try:
        run = subprocess.run(command, cwd=HERE, env=env, capture_output=True, text=True,
                             timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        case = last.read_text() if last.exists() else "(none recorded)"
        pytest.fail(f"fuzz {name} hung for {TIMEOUT} s; the case running:\n{case}")
    if run.returncode:
        how = f"exit status {run.returncode}"
        if run.returncode < 0:
            how = f"killed by {signal.Signals(-run.returncode).name}"
            case = last.read_text() if last.exists() else "(none recorded)"
            how += f"; the case running:\n{case}"
        pytest.fail(f"fuzz {name} failed ({how}); rerun: cd tests && {sys.executable} -c "
                    f"{script!r}\n--- stdout\n{run.stdout[-20000:]}\n--- stderr\n"
                    f"{run.stderr[-20000:]}")
