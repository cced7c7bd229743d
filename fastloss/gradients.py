"""fastloss.grad: the gradient and Hessian diagonal of a loss, fused with the loss in one pass.

Validation and operand preparation are the loss functions' own (losses.py, _validate.py); the
formulas live in src_c/fl_grad_tmpl.h.
"""
import inspect

import numpy as np

from . import _kernels, _validate, losses

_BINARY = ("binary_cross_entropy", "binary_cross_entropy_with_logits", "sigmoid_focal_loss")
_SOFTMAX = ("cross_entropy", "softmax_focal_loss")
_NOT_PARAMS = {"input", "target", "reduction", "n_threads", "out"}

# Each loss's own parameters and their defaults, from its function's signature.
PARAMETERS = {name: {p.name: p.default
                     for p in inspect.signature(getattr(losses, name)).parameters.values()
                     if p.name not in _NOT_PARAMS}
              for name in _BINARY + _SOFTMAX}


def grad(loss, input, target, *, hessian=False, return_loss=False, reduction="none",
         n_threads=None, out=None, **params):
    r"""The gradient of a loss with respect to its input, and optionally the diagonal of its
    Hessian and the loss itself, computed in one fused pass.

    ``loss`` is one of ``"binary_cross_entropy"``, ``"binary_cross_entropy_with_logits"``,
    ``"sigmoid_focal_loss"``, ``"cross_entropy"``, ``"softmax_focal_loss"``, and ``**params``
    are that function's own parameters with its defaults (``weight``, ``pos_weight``,
    ``alpha``, ``gamma``, ``ignore_index``, ``label_smoothing``): ``weight`` is the elementwise
    weight of the binary losses and the class weight of the softmax ones.

    Derivatives are with respect to ``input``: the probabilities p for binary_cross_entropy,
    the logits otherwise. With x a logit, y its target, sigma the sigmoid and w the weight:

    - binary_cross_entropy_with_logits (pos_weight pw)::

          g = w * ((1 - y) * sigma(x) - pw * y * sigma(-x))
          h = w * (pw * y + 1 - y) * sigma(x) * sigma(-x)

    - binary_cross_entropy (where a logarithm is clamped at -100, p <= exp(-100) or p = 1, its
      term is constant and contributes 0)::

          g = w * (p - y) / (p * (1 - p))
          h = w * (y / p**2 + (1 - y) / (1 - p)**2)

    - sigmoid_focal_loss, l = A * ce * q**gamma with q = 1 - p_t = y*sigma(-x) + (1-y)*sigma(x),
      A = alpha_t, ce = BCE with logits, s2 = sigma(x) * sigma(-x), r = s2 / q::

          g = A * q**gamma * (ce' + gamma * ce * (1 - 2y) * r)
          h = A * q**gamma * (s2 + 2*gamma*ce'*(1 - 2y)*r
                              + gamma * ce * r * ((gamma - 1)*(1 - 2y)**2 * r
                                                  + (1 - 2y)*(1 - 2*sigma(x))))

      with ce' = (1 - y)*sigma(x) - y*sigma(-x): no negative power of q, so gamma in (0, 1)
      gives finite values at saturated logits (the true derivatives go to 0 there with the
      loss). gamma = 0 gives exactly the BCE-with-logits derivatives times A.
    - cross_entropy, per position with p = softmax(z) over the class axis and a_c the
      weighted target distribution (index target t with smoothing eps:
      a_c = (1 - eps) * w_t * [c = t] + eps/C * w_c; probability targets y:
      a_c = w_c * (y_c * (1 - eps) + eps/C)), a_sum = sum_c a_c::

          g_c = a_sum * p_c - a_c
          h_c = a_sum * p_c * (1 - p_c)

    - softmax_focal_loss, l = -w_t * u**gamma * log p_t with u = 1 - p_t, n = -log p_t,
      K = gamma * p_t * n + u::

          g_t = -w_t * u**gamma * K
          g_c = w_t * (p_c / u) * u**gamma * K                          (c != t)
          h_t = w_t * u**gamma * p_t * (gamma**2 * p_t * n + (2*gamma + 1) * u - gamma * u * n)
          h_c = w_t * (p_c / u) * u**gamma * ((1 - p_c) * K + (gamma - 1) * (p_c / u) * p_t * K
                                              + p_c * p_t * (gamma + 1 - gamma * n))

    The Hessian is the diagonal only: d2l/dx_i2 for the elementwise losses (which is the whole
    Hessian of l_i), d2l/dz_c2 for the softmax losses (the off-diagonal d2l/dz_c dz_k are not
    computed), which is what XGBoost's and LightGBM's multi-class objectives take. Focal losses
    are not convex: their Hessian can be negative.

    Reductions, as torch's backward: "none" differentiates each element's (position's) own
    loss; "sum" the sum (the same values); "mean" the mean, i.e. the "none" values divided by
    the denominator of the forward's mean (the number of elements; for class-index targets the
    sum of the targets' class weights over the positions not ignored). Ignored positions get
    0 gradient and 0 Hessian. The formulas are evaluated in the stable forms derived in
    src_c/fl_grad_tmpl.h (docs/numerics.md): accurate for logits of any magnitude, infinite
    logits give the limits, nan gives nan.

    torch counterpart: ``torch.autograd.grad`` of the torch.nn.functional loss (of
    ``torchvision.ops.sigmoid_focal_loss`` for the sigmoid focal loss), and double backward
    for the Hessian diagonal. binary_cross_entropy differs where p is within 1e-12 of 0 or 1:
    torch's backward clamps p*(1-p) at 1e-12, this is the derivative.

    Parameters
    ----------
    loss : str
        The loss's name, as above.
    input, target
        As the loss function takes them (dtypes, shapes, layouts, torch CPU tensors).
    hessian : bool
        Also return the Hessian diagonal.
    return_loss : bool
        Also return the loss (per element or position for "none", else the reduced scalar, as
        the loss function returns it), computed in the same pass.
    reduction : {"none", "mean", "sum"}
        Which loss is differentiated (see above).
    n_threads : int, optional
        As in the loss functions; the results are bitwise identical for any value.
    out : ndarray or tuple of two, optional
        A C-contiguous, writable buffer of the input's shape and float dtype for the gradient,
        or with ``hessian=True`` a tuple (grad_out, hess_out); returned in place of new arrays.
        They must not overlap the arguments or each other.
    **params
        The loss function's parameters.

    Returns
    -------
    grad, or (grad, hess) with hessian=True, preceded by the loss with return_loss=True.
    grad and hess have the input's shape and float dtype (float16 is computed in float32).

    Raises
    ------
    ValueError
        An unknown loss (the message lists them), and everything the loss function raises
        (input or target outside [0, 1], shapes, reduction, n_threads, a wrong out).
    IndexError, TypeError
        As the loss function; TypeError also for a parameter the loss does not take (the
        message lists the valid ones).
    """
    if not isinstance(loss, str) or loss not in PARAMETERS:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(PARAMETERS)}")
    defaults = PARAMETERS[loss]
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise TypeError(f"{loss} takes no parameter {', '.join(unknown)} (its parameters: "
                        f"{', '.join(defaults)})")
    p = {**defaults, **params}
    _validate.check_reduction(reduction)
    if not isinstance(hessian, bool) or not isinstance(return_loss, bool):
        raise TypeError("hessian and return_loss must be True or False")
    outs = _out_buffers(out, hessian)
    arguments = [("input", input), ("target", target)] + [
        (name, p[name]) for name in ("weight", "pos_weight") if p.get(name) is not None]
    for o in outs:
        _validate.check_out_overlap(o, arguments)
    if loss in _BINARY:
        result = _binary_grad(loss, input, target, p, hessian, reduction, n_threads, outs)
    else:
        result = _softmax_grad(loss, input, target, p, hessian, reduction, n_threads, outs)
    value, g, h = result
    derivatives = (g, h) if hessian else (g,)
    if return_loss:
        return (value,) + derivatives
    return derivatives if hessian else g


def _out_buffers(out, hessian):
    """out as a tuple (grad_out, hess_out or None), or (None, None)."""
    if out is None:
        return None, None
    if hessian:
        if not (isinstance(out, tuple) and len(out) == 2):
            raise ValueError("with hessian=True, out must be a tuple (grad_out, hess_out)")
        return out
    if isinstance(out, tuple):
        raise ValueError("out must be one array for the gradient (a tuple only with "
                         "hessian=True)")
    return out, None


def _outputs(outs, shape, result_dtype, dtype, hessian):
    """The gradient and Hessian buffers the kernel writes ((None for no Hessian), of the
    computing dtype) and the user's out arrays (or None), checked."""
    user = [None if o is None else _validate.out_array(o, "none", shape, result_dtype, what,
                                                       "out" if not hessian else f"out[{i}]")
            for i, (o, what) in enumerate(zip(outs, ("gradient", "Hessian")))]
    if user[0] is not None and user[1] is not None and np.may_share_memory(user[0], user[1]):
        raise ValueError("out's gradient and Hessian buffers overlap; pass separate buffers")
    buffers = [u if u is not None and u.dtype == dtype else np.empty(shape, dtype)
               for u in user]
    if not hessian:
        buffers[1] = None
    return buffers, user


def _finish(buffer, user, out, result_dtype):
    """A computed gradient or Hessian as returned: in the user's out, or in result_dtype."""
    if buffer is None:
        return None
    if user is None:
        return buffer.astype(result_dtype, copy=False)
    if buffer is not user:
        np.copyto(user, buffer, casting="same_kind")
    return out


def _binary_grad(loss, input, target, p, hessian, reduction, n_threads, outs):
    x, result_dtype, y, target_type, w, pw = losses._binary_operands(
        input, target, p.get("weight"), p.get("pos_weight"))
    kw = {}
    if loss == "sigmoid_focal_loss":
        kw = {"alpha": _validate.focal_alpha(p["alpha"]), "gamma": _validate.focal_gamma(p["gamma"])}
    (g, h), user = _outputs(outs, x.shape, result_dtype, x.dtype, hessian)
    values = np.empty(x.shape, x.dtype) if reduction == "none" else None
    scale = 1.0 / x.size if reduction == "mean" and x.size else 1.0
    total = 0.0
    if x.size:
        threads = _validate.thread_count(n_threads, x.size)
        total, flags = _kernels.binary_grad(
            loss, _validate.flat(x), _validate.flat(y), target_type, *w, *pw,
            None if values is None else values.reshape(-1), g.reshape(-1),
            None if h is None else h.reshape(-1), scale, threads, **kw)
        losses._check_flags(flags)
    value = losses._result(reduction, float(total), float(x.size), values, None, None,
                           result_dtype)
    return (value, _finish(g, user[0], outs[0], result_dtype),
            _finish(h, user[1], outs[1], result_dtype))


def _softmax_grad(loss, input, target, p, hessian, reduction, n_threads, outs):
    focal_gamma = None
    if loss == "softmax_focal_loss":
        focal_gamma = _validate.focal_gamma(p["gamma"])
    x, result_dtype, input_shape, loss_shape, t, target_type, w, ignore, eps = \
        losses._softmax_operands(input, target, p["weight"], p["ignore_index"],
                                 p.get("label_smoothing", 0.0), focal_gamma is not None)
    (g, h), user = _outputs(outs, input_shape, result_dtype, x.dtype, hessian)
    n, _, n_spatial = x.shape
    probabilities = target_type == _validate.TARGET_PROBABILITIES
    values = np.empty(loss_shape, x.dtype) if reduction == "none" else None
    # "mean" of probability targets divides by the number of positions, known now; that of
    # class indices by the sum of the targets' weights, known after the pass: applied then.
    scale = 1.0 / (n * n_spatial) if reduction == "mean" and probabilities and n * n_spatial \
        else 1.0
    total = denominator = 0.0
    if n * n_spatial:
        threads = _validate.thread_count(n_threads, x.size)
        total, denominator, bad = _kernels.cross_entropy_grad(
            x, t, target_type, w, ignore, eps, None if values is None else values.reshape(-1),
            g.reshape(x.shape), None if h is None else h.reshape(x.shape), scale, threads,
            bool(focal_gamma), focal_gamma or 0.0)
        losses._check_indices(bad, t)
    if probabilities:
        denominator = n * n_spatial
    elif reduction == "mean" and denominator:
        # torch's backward: d mean/d z = (d sum/d z) / denominator
        for a in (g, h):
            if a is not None:
                np.divide(a, a.dtype.type(denominator), out=a)
    elif reduction == "mean" and n * n_spatial:
        # a zero denominator (the targets' class weights are all 0): nan, as torch's backward
        # gives, except at ignored positions, whose gradient stays 0 (all ignored: all 0)
        ignored = (t == ignore).reshape(n, 1, n_spatial)
        for a in (g, h):
            if a is not None:
                np.copyto(a.reshape(x.shape), np.nan, where=~ignored)
    value = losses._result(reduction, total, denominator, values, None, None, result_dtype)
    return (value, _finish(g, user[0], outs[0], result_dtype),
            _finish(h, user[1], outs[1], result_dtype))
