"""Argument checks and normalization, done once in Python before any kernel runs.

Each function takes what the user passed and returns arrays the kernels can read in place, or
raises an exception that names the argument and what is wrong with it. Values that need a pass
over the data (probabilities in [0, 1]) are checked inside the kernels instead.
"""
import numbers
import os
import sys
from math import prod

import numpy as np

from . import _kernels

REDUCTIONS = ("none", "mean", "sum")

# Below this many elements per thread, starting a second thread costs more than it saves.
MIN_ELEMENTS_PER_THREAD = _kernels.MIN_ELEMENTS_PER_THREAD
MAX_THREADS = 1024
MAX_CLASSES = 2**31 - 1

# Target dtypes the kernels read in place (bool is read as uint8), with their C type codes.
TARGET_FLOAT, TARGET_U8, TARGET_I64 = 0, 1, 2
_TARGET_TYPES = {np.dtype(np.bool_): TARGET_U8, np.dtype(np.uint8): TARGET_U8,
                 np.dtype(np.int64): TARGET_I64}


def as_array(obj, name):
    """obj as a NumPy array, sharing memory with NumPy arrays, memmaps and torch CPU tensors."""
    torch = sys.modules.get("torch")  # a tensor can only exist if torch is imported
    if torch is not None and isinstance(obj, torch.Tensor):
        if obj.requires_grad:
            raise TypeError(f"{name} is a tensor that requires grad: these functions return "
                            f"NumPy values; pass {name}.detach() to evaluate it, or use "
                            "fastloss.torch (the same losses, with autograd)")
        if obj.device.type != "cpu":
            raise ValueError(f"{name} is a torch tensor on {obj.device}; fastloss computes on "
                             f"the CPU: pass {name}.cpu()")
        if obj.dtype in (torch.bfloat16, torch.complex32):
            raise TypeError(f"{name} has dtype {obj.dtype}, which NumPy cannot hold; convert it "
                            f"with {name}.float()")
        return obj.detach().resolve_conj().resolve_neg().numpy()
    return np.asarray(obj)


def _writable_array(obj, name):
    """obj as a NumPy array that writes through to it: a NumPy array, or a torch CPU tensor
    that can be written in place (no autograd, no lazy negation)."""
    torch = sys.modules.get("torch")
    if isinstance(obj, np.ndarray):
        return obj
    if torch is not None and isinstance(obj, torch.Tensor):
        if obj.requires_grad:
            raise ValueError(f"{name} is a tensor that requires grad; torch does not allow "
                             "writing into it in place")
        if obj.is_neg() or obj.is_conj():
            raise ValueError(f"{name} is a lazily negated or conjugated view; pass a tensor "
                             "that owns its values")
        return as_array(obj, name)
    raise ValueError(f"{name} must be a NumPy array or a torch CPU tensor; got "
                     f"{type(obj).__name__}")


def check_reduction(reduction):
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of 'none', 'mean', 'sum'; got {reduction!r}")


def float_input(obj, name="input"):
    """(array the kernels compute on, dtype of the result).

    float32 and float64 in native byte order are used as they are; float16 is computed in
    float32 (a converted copy) and its result returned as float16.
    """
    a = as_array(obj, name)
    dt = a.dtype
    if dt.kind != "f" or dt.itemsize not in (2, 4, 8):
        raise TypeError(f"{name} must be a float16, float32 or float64 array; got dtype {dt}")
    if dt.itemsize == 2:
        return a.astype(np.float32), np.dtype(np.float16)
    if not dt.isnative:
        a = a.astype(dt.newbyteorder("="))
    return a, a.dtype


def binary_target(obj, x):
    """(target array, its type code) for an input x: same shape; read in place when its dtype is
    x's, bool, uint8 or int64; other real dtypes are converted to x's dtype."""
    t = as_array(obj, "target")
    if t.shape != x.shape:
        raise ValueError(f"target shape {t.shape} does not match input shape {x.shape}")
    dt = t.dtype
    if dt.kind not in "biuf":
        raise TypeError(f"target must be a real numeric or bool array; got dtype {dt}")
    if dt == x.dtype:
        return t, TARGET_FLOAT
    if dt in _TARGET_TYPES:  # dtype equality includes the byte order: only native ones match
        return (t.view(np.uint8) if dt == np.bool_ else t), _TARGET_TYPES[dt]
    if dt.kind == "f" and dt.itemsize > x.dtype.itemsize and not np.all((t >= 0) & (t <= 1)):
        # checked before rounding, which could bring 1 + 1e-12 into range
        raise ValueError("all elements of target should be between 0 and 1")
    return t.astype(x.dtype), TARGET_FLOAT


def flat(a):
    """a as a 1-D array in C order: a view when a is C-contiguous or 1-D (any stride); N-d
    non-contiguous and misaligned arrays are copied."""
    if a.flags.aligned and (a.ndim == 1 and a.strides[0] % a.itemsize == 0
                            or a.flags.c_contiguous):
        return a.reshape(-1)
    return np.require(a, requirements="CA").reshape(-1)


def broadcast_operand(obj, name, shape, dtype):
    """A weight-like argument broadcast to an input of `shape`, as (data, period, repeat) for
    the kernels (fl_operand in src_c/fl_binary.h): element i of the input reads
    data[(i // repeat) % period]. (None, 1, 1) when obj is None.

    Never expanded to the input's size when its non-broadcast dimensions are adjacent, as in
    (C,) for (N, C), (N, 1) for (N, C) and (C, 1, 1) for (N, C, H, W); a weight that skips
    dimensions, such as (N, 1, W) for (N, C, W), is expanded (a copy of the input's size).
    """
    if obj is None:
        return None, 1, 1
    w = as_array(obj, name)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array; got dtype {w.dtype}")
    try:
        fits = np.broadcast_shapes(w.shape, shape) == shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{name} of shape {w.shape} cannot be broadcast to the input's "
                         f"shape {shape}")
    w = w.astype(dtype, copy=False)
    n = prod(shape)
    padded = (1,) * (len(shape) - w.ndim) + w.shape
    full = [d for d, (size, wsize) in enumerate(zip(shape, padded)) if size != 1 and wsize != 1]
    skips = any(shape[d] != 1 and padded[d] == 1 for d in range(full[0], full[-1] + 1)) \
        if full else False
    if skips:
        data, period, repeat = np.broadcast_to(w, shape).ravel(), n, 1
    else:
        data = np.ascontiguousarray(w).reshape(-1)
        period = data.size
        repeat = prod(shape[full[-1] + 1:]) if full else 1
    if repeat == 1 and period < n:
        # tile, so that any block of the input reads data[i % period:] contiguously
        data = np.resize(data, period + _kernels.BLOCK - 1)
    return data, period, repeat


def check_out_overlap(out, arguments):
    """Reject an out= that shares memory with any (name, argument) as the user passed it. Done
    before any conversion: a converted copy (float16, byte-swapped, a non-contiguous softmax
    input) would hide the overlap, and writing the losses would overwrite the user's input."""
    if out is None:
        return
    a = _writable_array(out, "out")
    for name, obj in arguments:
        if obj is not None and np.may_share_memory(a, as_array(obj, name)):
            raise ValueError(f"out shares memory with {name}; pass a separate buffer")


def out_array(out, reduction, shape, dtype, what="loss", name="out"):
    """The user's out= buffer as a NumPy array, checked (its overlap with the arguments by
    check_out_overlap, first); None when not given. what names the result it receives, name
    the argument, in the messages."""
    if out is None:
        return None
    if reduction != "none":
        raise ValueError(f"out= is only used with reduction='none'; got reduction={reduction!r}")
    a = _writable_array(out, name)
    if a.shape != shape:
        raise ValueError(f"{name} has shape {a.shape}; the {what} has shape {shape}")
    if a.dtype != dtype:
        raise ValueError(f"{name} has dtype {a.dtype}; the {what} has dtype {dtype}")
    if not (a.flags.c_contiguous and a.flags.aligned):
        raise ValueError(f"{name} must be a C-contiguous, aligned array")
    if not a.flags.writeable:
        raise ValueError(f"{name} is read-only")
    return a


def _cpus_available():
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def thread_count(n_threads, n_elements):
    """The number of threads to run n_elements on: at most n_threads (checked) or, by default,
    the CPUs this process may use within OMP_NUM_THREADS and threadpoolctl's limits; and never
    more than one per MIN_ELEMENTS_PER_THREAD elements, since below that a second thread costs
    more than it saves (the kernels also never use more threads than blocks, and run serially
    in a forked child)."""
    by_work = max(1, n_elements // MIN_ELEMENTS_PER_THREAD)
    if n_threads is None:
        if by_work == 1:
            return 1
        return min(by_work, _kernels.max_threads(), _cpus_available())
    if isinstance(n_threads, bool) or not isinstance(n_threads, numbers.Integral):
        raise TypeError(f"n_threads must be an int or None; got {type(n_threads).__name__}")
    if not 1 <= n_threads <= MAX_THREADS:
        raise ValueError(f"n_threads must be between 1 and {MAX_THREADS}; got {n_threads}")
    return min(int(n_threads), by_work)


# ---- softmax losses: a class axis ----

# Class-index dtypes the kernels read in place, with their C codes (FL_INDEX_* in fl_softmax.h).
_INDEX_TYPES = {np.dtype(t): code for code, t in enumerate(
    [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64])}
TARGET_PROBABILITIES = len(_INDEX_TYPES)


def class_input(obj):
    """(input as a C-contiguous (N, C, S) array, dtype of the result, the input's shape, the
    shape of the "none" result).

    (C,) is one row: (1, C, 1) with a 0-d result; (N, C, d1, ..., dk) has S = d1*...*dk. The
    reshape is a view of C-contiguous input; other layouts are copied.
    """
    x, result_dtype = float_input(obj)
    if x.ndim == 0:
        raise ValueError("input must have a class dimension: shape (C,), (N, C) or "
                         "(N, C, d1, ..., dk); got a 0-d array")
    if x.ndim == 1:
        n, c, s, loss_shape = 1, x.shape[0], 1, ()
    else:
        n, c, s = x.shape[0], x.shape[1], prod(x.shape[2:])
        loss_shape = (x.shape[0],) + x.shape[2:]
    if c == 0 and n * s:
        raise ValueError(f"input of shape {x.shape} has no classes")
    if c > MAX_CLASSES and n * s:  # the kernels hold a class index in a C int
        raise ValueError(f"input of shape {x.shape} has {c} classes; at most {MAX_CLASSES} "
                         "are supported")
    return np.require(x, requirements="CA").reshape(n, c, s), result_dtype, x.shape, loss_shape


def class_target(obj, input_shape, loss_shape, dtype, ignore_index):
    """(target, its C type code): class indices of the loss's shape, read in place when
    contiguous, or class probabilities of the input's shape (converted to its dtype)."""
    t = as_array(obj, "target")
    if t.dtype.kind in "iu":
        if t.shape != loss_shape:
            raise ValueError(f"target of shape {t.shape} does not match input of shape "
                             f"{input_shape}: class indices must have shape {loss_shape}")
        t = np.require(t, t.dtype.newbyteorder("="), requirements="CA")
        return t.reshape(-1), _INDEX_TYPES[t.dtype]
    if t.dtype.kind == "f":
        if t.shape != input_shape:
            raise ValueError(f"target of shape {t.shape} does not match input of shape "
                             f"{input_shape}: class probabilities must have the input's shape")
        if ignore_index >= 0:
            raise ValueError("ignore_index is only for class-index targets; got "
                             f"ignore_index={ignore_index} with probability targets")
        return np.require(t, dtype, requirements="CA").reshape(-1), TARGET_PROBABILITIES
    raise TypeError("target must hold class indices (an integer dtype) or class probabilities "
                    f"(a float dtype); got dtype {t.dtype}")


def class_weight(obj, n_classes, dtype):
    """A (C,) weight per class as a contiguous array of dtype; None when obj is None (the
    driver then reads ones, and an empty input allocates nothing of C's size)."""
    if obj is None:
        return None
    w = as_array(obj, "weight")
    if w.dtype.kind not in "biuf":
        raise TypeError(f"weight must be a real numeric array; got dtype {w.dtype}")
    if w.shape != (n_classes,):
        raise ValueError(f"weight must have shape ({n_classes},), one value per class; got "
                         f"shape {w.shape}")
    return np.require(w, dtype, requirements="CA")


def label_smoothing(value):
    eps = _real(value, "label_smoothing")
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0; got {value}")
    return eps


def ignore_index(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"ignore_index must be an int; got {type(value).__name__}")
    if not -2**63 <= value < 2**63:
        raise ValueError(f"ignore_index must fit in 64 bits; got {value}")
    return int(value)


# ---- focal losses ----

def _real(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float; got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:  # an int beyond float's range
        raise ValueError(f"{name} must be a finite float; got an int beyond float's range") \
            from None


def focal_gamma(value):
    gamma = _real(value, "gamma")
    if not 0.0 <= gamma < float("inf"):
        raise ValueError(f"gamma must be a finite number >= 0; got {value}")
    return gamma


def focal_alpha(value):
    alpha = _real(value, "alpha")
    if not alpha <= 1.0:
        raise ValueError(f"alpha must be at most 1 (a negative alpha disables the alpha term); "
                         f"got {value}")
    return alpha
