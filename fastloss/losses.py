"""The public loss functions: validate, run the kernel, shape the result.

Names, argument order and defaults follow torch.nn.functional, so code can switch by changing
the module it calls.
"""
import numpy as np

from . import _kernels, _validate

_ERRORS = {1: "all elements of input should be between 0 and 1",   # FL_BAD_INPUT
           2: "all elements of target should be between 0 and 1",  # FL_BAD_TARGET
           4: "all elements of weight should be finite and non-negative"}  # FL_BAD_WEIGHT


def _check_flags(flags):
    """Raise the ValueError of the first FL_BAD_* bit set by a kernel."""
    for bit, message in _ERRORS.items():
        if flags & bit:
            raise ValueError(message)


def _values(reduction, out_arr, shape, dtype):
    """The buffer the kernel writes per-position losses to: None unless reduction is "none";
    out itself when its dtype is the computing dtype (float16 is computed in float32)."""
    if reduction != "none":
        return None
    if out_arr is not None and out_arr.dtype == dtype:
        return out_arr
    return np.empty(shape, dtype)


_FINITE_MAX = {np.dtype(np.float16): 65504.0, np.dtype(np.float32): 3.4028234663852886e38}


def _scalar(value, dtype):
    """The float64 value as a NumPy scalar of dtype, rounded as IEEE does: beyond the dtype's
    range to +-inf (without NumPy's overflow warning, which is not an error here)."""
    if abs(value) > _FINITE_MAX.get(dtype, np.inf):
        with np.errstate(over="ignore"):
            return dtype.type(value)
    return dtype.type(value)


def _result(reduction, total, count, values, out_arr, out, result_dtype):
    """What the loss returns: the sum, the mean total/count, or the per-position values, in the
    result's dtype and in out when given."""
    if reduction == "sum":
        return _scalar(total, result_dtype)
    if reduction == "mean":
        if count:
            return _scalar(total / count, result_dtype)
        with np.errstate(divide="ignore", invalid="ignore"):  # IEEE, as torch: 0/0 is nan
            return result_dtype.type(np.float64(total) / count)
    if out_arr is None:
        return values.astype(result_dtype, copy=False)
    if values is not out_arr:
        np.copyto(out_arr, values, casting="same_kind")
    return out


def _binary_operands(input, target, weight, pos_weight):
    """Validated operands of an elementwise loss: (input, result dtype, target, target type,
    weight and pos_weight as kernel operands)."""
    x, result_dtype = _validate.float_input(input)
    y, target_type = _validate.binary_target(target, x)
    w = _validate.broadcast_operand(weight, "weight", x.shape, x.dtype)
    pw = _validate.broadcast_operand(pos_weight, "pos_weight", x.shape, x.dtype)
    return x, result_dtype, y, target_type, w, pw


def _binary(loss, input, target, weight, pos_weight, reduction, n_threads, out, **params):
    if weight is None and pos_weight is None and out is None:
        small = _kernels.binary_small(loss, input, target, reduction, n_threads, **params)
        if small is not None:  # taken by the typed boundary; else validated below
            total, flags, values = small
            _check_flags(flags)
            return values if values is not None else \
                _result(reduction, total, input.size, None, None, None, input.dtype)
    _validate.check_reduction(reduction)
    _validate.check_out_overlap(out, [("input", input), ("target", target), ("weight", weight),
                                      ("pos_weight", pos_weight)])
    x, result_dtype, y, target_type, w, pw = _binary_operands(input, target, weight, pos_weight)
    out_arr = _validate.out_array(out, reduction, x.shape, result_dtype)
    values = _values(reduction, out_arr, x.shape, x.dtype)
    total, count = _binary_totals(loss, (x, y, target_type, w, pw), values, n_threads, **params)
    return _result(reduction, total, count, values, out_arr, out, result_dtype)


def _binary_totals(loss, operands, values, n_threads, **params):
    """Run an elementwise loss's kernel on validated operands (input, target, target type,
    weight and pos_weight as from _binary_operands); the per-element losses go to values when
    it is not None. Returns (total, denominator) in float64: the kernel's sum of the weighted
    losses and the number of elements, what "sum" and "mean" (total / denominator) are made
    of."""
    x, y, target_type, w, pw = operands
    threads = _validate.thread_count(n_threads, x.size)
    total = 0.0
    if x.size:
        total, flags = _kernels.binary_loss(
            loss, _validate.flat(x), _validate.flat(y), target_type, *w, *pw,
            None if values is None else values.reshape(-1), threads, **params)
        _check_flags(flags)
    return float(total), float(x.size)


def binary_cross_entropy(input, target, weight=None, reduction="mean", *, n_threads=None,
                         out=None):
    r"""Binary cross-entropy between probabilities and targets.

    Per element, with each logarithm clamped at -100 as torch does (so 0*log 0 contributes 0
    and one element's loss is at most 100*w)::

        loss = -w * (y * max(log(p), -100) + (1 - y) * max(log1p(-p), -100))

    torch counterpart: ``torch.nn.functional.binary_cross_entropy``.

    Parameters
    ----------
    input : array_like of float16, float32 or float64
        Probabilities p in [0, 1], any shape (0-d included). NumPy arrays, memmaps (read-only
        too) and torch CPU tensors are read in place when float32/float64 and C-contiguous or
        1-D with any stride; other layouts are copied, float16 is computed in float32.
    target : array_like
        Targets y in [0, 1] of the input's shape: the input's float dtype, bool, uint8 or int64
        (read in place), or another real dtype (converted to the input's dtype).
    weight : array_like, optional
        Multiplies each element's loss; broadcasts to the input's shape by NumPy's rules
        (e.g. (C,) or (N, 1) for (N, C) input) without being expanded.
    reduction : {"mean", "none", "sum"}
        "none": the per-element loss, input's shape and dtype. "sum": the sum. "mean": the sum
        divided by the number of elements (weights are not in the denominator), nan for empty
        input. "sum" and "mean" accumulate in float64 over fixed blocks, so they are bitwise
        identical for any n_threads, and return a NumPy scalar of the input's dtype.
    n_threads : int, optional
        The most threads to use (1 to 1024). Default: the CPUs the process may use, within
        OMP_NUM_THREADS and threadpoolctl limits. Either way at most one thread per 32768
        elements (a second thread slows smaller calls down), and one in a forked child (the
        OpenMP runtime may hang after fork if any library, torch included, used its threads).
        The GIL is released while the kernel runs.
    out : ndarray or torch tensor, optional
        With reduction="none": a C-contiguous, writable buffer of the input's shape and dtype
        that receives the losses and is returned. It must not overlap any argument (checked
        before any work). If an error is raised, its contents are unspecified.

    Raises
    ------
    TypeError
        input is not a float array, target or weight is not real numeric, or a torch tensor
        requires grad (pass ``x.detach()``, or use :mod:`fastloss.torch` for autograd).
    ValueError
        "all elements of input should be between 0 and 1" (an input outside [0, 1] or nan),
        "all elements of target should be between 0 and 1", target's shape differs from the
        input's, weight does not broadcast to it, an unknown reduction, n_threads outside
        [1, 1024], a wrong out (shape, dtype, layout, read-only, overlapping, or given with a
        reduction other than "none").
    """
    return _binary("binary_cross_entropy", input, target, weight, None, reduction, n_threads,
                   out)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean",
                                     pos_weight=None, *, n_threads=None, out=None):
    r"""Binary cross-entropy between logits and targets, numerically stable.

    Per element, for a logit x, a target y in [0, 1] and pos_weight pw::

        loss = w * (pw * y * softplus(-x) + (1 - y) * softplus(x))
             = w * ((1 - y) * x - (1 + (pw - 1) * y) * logsigmoid(x))

    computed as written in the first line, with softplus(+-x) = max(+-x, 0) + log1p(exp(-|x|)):
    both terms are non-negative, so there is no cancellation for soft labels, and nothing
    overflows for logits of any magnitude. Infinite logits give their limits (x = +inf, y = 1:
    0; x = +inf, y = 0: +inf; torch returns nan for both), and a zero weight times an infinite
    loss is 0. nan logits give nan.

    torch counterpart: ``torch.nn.functional.binary_cross_entropy_with_logits`` (which does not
    check the target's range; this function does).

    Parameters
    ----------
    input : array_like of float16, float32 or float64
        Logits, any shape; read in place as described in :func:`binary_cross_entropy`.
    target : array_like
        Targets in [0, 1] of the input's shape (soft labels allowed); dtypes as in
        :func:`binary_cross_entropy`.
    weight : array_like, optional
        Multiplies each element's loss; broadcasts to the input's shape.
    reduction : {"mean", "none", "sum"}
        As in :func:`binary_cross_entropy`.
    pos_weight : array_like, optional
        Weight of the positive term; broadcasts to the input's shape by NumPy's rules, which
        for torch's usual shapes means (C,) for (N, C) input and (C, 1, 1) for (N, C, H, W).
    n_threads, out
        As in :func:`binary_cross_entropy`.

    Raises
    ------
    TypeError
        input is not a float array, target, weight or pos_weight is not real numeric, or a
        torch tensor requires grad.
    ValueError
        "all elements of target should be between 0 and 1", shapes that differ or do not
        broadcast, an unknown reduction, n_threads outside [1, 1024], a wrong out.
    """
    return _binary("binary_cross_entropy_with_logits", input, target, weight, pos_weight,
                   reduction, n_threads, out)


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0, *, n_threads=None, out=None):
    r"""Softmax cross-entropy between logits and class indices or class probabilities.

    For logits z over C classes (class axis 1, or 0 for 1-D input), with
    -log p_c = logsumexp(z) - z_c computed without forming p:

    - class-index target t, class weights w (1 without ``weight``), smoothing eps::

          loss = (1 - eps) * w_t * (-log p_t) + eps / C * sum_c w_c * (-log p_c)

      positions whose target is ``ignore_index`` have loss 0; "mean" divides the sum by the sum
      of w_t over the positions not ignored (nan if there are none).
    - class-probability target y (the input's shape), mixed as q = y*(1 - eps) + eps/C::

          loss = sum_c w_c * q_c * (-log p_c)

      "mean" divides the sum by the number of positions N*d1*...*dk.

    torch counterpart: ``torch.nn.functional.cross_entropy``, with the same semantics. A zero
    coefficient times an infinite -log p (a logit of -inf) counts 0, where torch gives nan; a
    row containing +inf or nan gives nan, as in torch.

    Parameters
    ----------
    input : array_like of float16, float32 or float64
        Logits of shape (C,), (N, C) or (N, C, d1, ..., dk), read in place when C-contiguous
        (the class axis stays strided: no transposing copy); other layouts are copied, float16
        is computed in float32.
    target : array_like
        Class indices of shape (), (N,) or (N, d1, ..., dk), of any integer dtype (read in
        place when contiguous), or class probabilities of the input's shape (float).
    weight : array_like, optional
        Weight of each class, shape (C,).
    ignore_index : int
        Class-index targets equal to it contribute nothing (index targets only; with
        probability targets it must be negative).
    reduction : {"mean", "none", "sum"}
        "none" returns the loss per position, shape (N, d1, ..., dk) (() for 1-D input); "sum"
        and "mean" return a NumPy scalar of the input's dtype, accumulated in float64 over
        fixed blocks: bitwise identical for any n_threads.
    label_smoothing : float in [0, 1]
        eps above.
    n_threads, out
        As in :func:`binary_cross_entropy`; out has the shape of the "none" result.

    Raises
    ------
    IndexError
        "Target 7 is out of bounds." for a class index outside [0, C) that is not
        ignore_index (raised after the kernel; the inputs are untouched).
    TypeError
        input is not a float array, target is neither integer nor float, weight is not real
        numeric, label_smoothing or ignore_index of the wrong type, a torch tensor requires
        grad.
    ValueError
        input without a class axis, target or weight shapes that do not match the input,
        label_smoothing outside [0, 1], ignore_index >= 0 with probability targets, an unknown
        reduction, n_threads outside [1, 1024], a wrong out.
    """
    return _softmax(input, target, weight, ignore_index, reduction, label_smoothing, n_threads,
                    out)


def _softmax_operands(input, target, weight, ignore_index, label_smoothing, focal):
    """Validated operands of a softmax loss: (input as (N, C, S), result dtype, input shape,
    loss shape, target, target type, class weights, ignore_index, label_smoothing)."""
    x, result_dtype, input_shape, loss_shape = _validate.class_input(input)
    ignore = _validate.ignore_index(ignore_index)
    eps = _validate.label_smoothing(label_smoothing)
    t, target_type = _validate.class_target(target, input_shape, loss_shape, x.dtype, ignore)
    if focal and target_type == _validate.TARGET_PROBABILITIES:
        raise ValueError("softmax_focal_loss takes class-index targets (an integer dtype); got "
                         "class probabilities")
    w = _validate.class_weight(weight, x.shape[1], x.dtype)
    return x, result_dtype, input_shape, loss_shape, t, target_type, w, ignore, eps


def _check_indices(bad, t):
    if bad >= 0:
        raise IndexError(f"Target {t[bad]} is out of bounds.")


def _softmax(input, target, weight, ignore_index, reduction, label_smoothing, n_threads, out,
             focal_gamma=None):
    """cross_entropy, or the softmax focal loss when focal_gamma is given (gamma = 0 is
    cross-entropy, and computed as such)."""
    if weight is None and out is None:
        small = _kernels.softmax_small(input, target, ignore_index, label_smoothing, reduction,
                                       n_threads, bool(focal_gamma), focal_gamma or 0.0)
        if small is not None:  # taken by the typed boundary; else validated below
            total, denominator, bad, values = small
            _check_indices(bad, target)
            return values if values is not None else \
                _result(reduction, total, denominator, None, None, None, input.dtype)
    _validate.check_reduction(reduction)
    _validate.check_out_overlap(out, [("input", input), ("target", target), ("weight", weight)])
    x, result_dtype, input_shape, loss_shape, t, target_type, w, ignore, eps = \
        _softmax_operands(input, target, weight, ignore_index, label_smoothing,
                          focal_gamma is not None)
    out_arr = _validate.out_array(out, reduction, loss_shape, result_dtype)
    values = _values(reduction, out_arr, loss_shape, x.dtype)
    total, denominator = _softmax_totals((x, t, target_type, w, ignore, eps), values, n_threads,
                                         focal_gamma)
    return _result(reduction, total, denominator, values, out_arr, out, result_dtype)


def _softmax_totals(operands, values, n_threads, focal_gamma=None):
    """Run a softmax loss's kernel on validated operands (input as (N, C, S), target, target
    type, class weights, ignore_index, label_smoothing, as from _softmax_operands); the
    per-position losses go to values when it is not None. Returns (total, denominator) in
    float64: the kernel's sum of the losses, and what "mean" divides it by: the sum of the
    targets' class weights over the positions not ignored (index targets), or the number of
    positions (probability targets)."""
    x, t, target_type, w, ignore, eps = operands
    n, _, n_spatial = x.shape
    threads = _validate.thread_count(n_threads, x.size)
    total = denominator = 0.0
    if n * n_spatial:
        total, denominator, bad = _kernels.cross_entropy_loss(
            x, t, target_type, w, ignore, eps, None if values is None else values.reshape(-1),
            threads, bool(focal_gamma), focal_gamma or 0.0)
        _check_indices(bad, t)
    if target_type == _validate.TARGET_PROBABILITIES:
        denominator = n * n_spatial
    return float(total), float(denominator)


def sigmoid_focal_loss(input, target, alpha=0.25, gamma=2.0, reduction="none", *, weight=None,
                       n_threads=None, out=None):
    r"""Sigmoid focal loss between logits and binary targets (torchvision's formula), fused.

    Per element, with p = sigmoid(x) and p_t = p*y + (1-p)*(1-y)::

        loss = w * alpha_t * bce_with_logits(x, y) * (1 - p_t)**gamma
        alpha_t = alpha*y + (1 - alpha)*(1 - y)      (1 when alpha < 0)

    computed from the logits in log space: 1 - p_t = y*sigmoid(-x) + (1-y)*sigmoid(x) from
    t = exp(-|x|) with no cancellation, and for non-integer gamma log(1 - p_t) from
    log-sigmoid, so the loss is finite and accurate for logits of any magnitude (infinite ones
    give their limits, as in :func:`binary_cross_entropy_with_logits`) and gamma in (0, 1)
    gives no nan at saturated logits. Integer gamma (0 to 4) multiplies instead of calling pow.

    torch counterpart: ``torchvision.ops.sigmoid_focal_loss`` (same defaults: alpha=0.25,
    gamma=2, reduction="none"; soft targets allowed). ``weight`` is an addition.

    Parameters
    ----------
    input, target, reduction, n_threads, out
        As in :func:`binary_cross_entropy_with_logits`; targets must be in [0, 1].
    alpha : float <= 1
        Weight of the positive class; negative disables the alpha term.
    gamma : float >= 0
        Focusing exponent.
    weight : array_like, optional
        Multiplies each element's loss; broadcasts to the input's shape.

    Raises
    ------
    TypeError, ValueError
        As in :func:`binary_cross_entropy_with_logits`, and ValueError for gamma < 0 (or not
        finite) and alpha > 1.
    """
    return _binary("sigmoid_focal_loss", input, target, weight, None, reduction, n_threads, out,
                   alpha=_validate.focal_alpha(alpha), gamma=_validate.focal_gamma(gamma))


def softmax_focal_loss(input, target, gamma=2.0, weight=None, ignore_index=-100,
                       reduction="mean", *, n_threads=None, out=None):
    r"""Softmax focal loss between logits and class indices, fused.

    Per position, with p_t the softmax probability of the target class t and w the class
    weights (1 without ``weight``)::

        loss = -w_t * (1 - p_t)**gamma * log(p_t)

    with -log p_t = logsumexp(z) - z_t, and 1 - p_t = sum over the other classes of
    exp(z_c - logsumexp(z)), accumulated directly (never 1 minus a rounded probability).
    Positions whose target is ``ignore_index`` have loss 0; "mean" divides the sum by the sum
    of w_t over the positions not ignored, so gamma=0 gives exactly :func:`cross_entropy`.

    torch counterpart: none in torch itself; with gamma=0 it is
    ``torch.nn.functional.cross_entropy``.

    Parameters
    ----------
    input, weight, ignore_index, reduction, n_threads, out
        As in :func:`cross_entropy`.
    target : array_like of integers
        Class indices, shape (), (N,) or (N, d1, ..., dk).
    gamma : float >= 0
        Focusing exponent.

    Raises
    ------
    IndexError, TypeError, ValueError
        As in :func:`cross_entropy`; ValueError also for probability targets and for gamma < 0
        (or not finite).
    """
    return _softmax(input, target, weight, ignore_index, reduction, 0.0, n_threads, out,
                    focal_gamma=_validate.focal_gamma(gamma))
