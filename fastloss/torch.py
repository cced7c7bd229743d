"""fastloss's losses for torch CPU tensors, with autograd.

Each function takes and returns torch tensors and has the signature of its namesake in
:mod:`fastloss` (so of ``torch.nn.functional``). Forward and backward run fastloss's kernels:
when the input requires grad, one fused pass computes the loss and its gradient
(:func:`fastloss.grad` with ``return_loss=True``), the gradient is saved, and the backward pass
only scales it by the incoming gradient. Otherwise the plain loss kernel runs.

Limits, each a clear error: CPU tensors only; gradients with respect to ``input`` only (a
target, weight or pos_weight that requires grad is refused); differentiable once (a backward
with ``create_graph=True``, as for a gradient penalty or double backward, is refused).
Not imported by ``import fastloss``: torch is optional.
"""
import numpy as np
import torch

from . import losses

__all__ = ["binary_cross_entropy", "binary_cross_entropy_with_logits", "cross_entropy",
           "sigmoid_focal_loss", "softmax_focal_loss"]


class _Loss(torch.autograd.Function):
    """loss(input) by fastloss, its gradient from the same pass saved for backward."""

    @staticmethod
    def forward(ctx, input, name, target, reduction, n_threads, params):
        from . import grad  # built with the extension: looked up when first used
        loss, g = grad(name, input.detach(), target, return_loss=True, reduction=reduction,
                       n_threads=n_threads, **params)
        gradient = torch.from_numpy(np.asarray(g))
        # reduction "none" of a softmax loss: one loss per position, one gradient per class
        # of it, so the incoming gradient gets the class axis (1, or 0 for 1-D input) back.
        ctx.class_axis = 1 if name in _SOFTMAX and reduction == "none" and input.ndim > 1 \
            else None
        ctx.name = name
        ctx.save_for_backward(gradient)
        return _tensor(loss)

    @staticmethod
    def backward(ctx, grad_output):
        # Not once_differentiable: that refuses a second derivative only when grad_output
        # requires grad, so torch.autograd.grad(loss, x, create_graph=True) (a gradient
        # penalty) would silently drop this loss's Hessian term. Grad mode is on here exactly
        # when the caller asked for a differentiable backward: refuse it.
        if torch.is_grad_enabled():
            raise RuntimeError(f"fastloss.torch.{ctx.name} is differentiable once: its "
                               "backward cannot build a graph (create_graph=True, double "
                               "backward); use torch.nn.functional for higher derivatives")
        gradient, = ctx.saved_tensors
        if ctx.class_axis is not None:
            grad_output = grad_output.unsqueeze(ctx.class_axis)
        return gradient * grad_output, None, None, None, None, None


_SOFTMAX = ("cross_entropy", "softmax_focal_loss")


def _tensor(value):
    """A fastloss result (an array, or a NumPy scalar for "mean"/"sum") as a tensor."""
    return torch.from_numpy(np.asarray(value))  # copies a 0-d scalar only


def _apply(name, input, target, reduction, n_threads, **params):
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"fastloss.torch.{name} takes torch tensors; got input of type "
                        f"{type(input).__name__} (use fastloss.{name} for NumPy arrays)")
    for arg, value in (("input", input), ("target", target), *params.items()):
        if isinstance(value, torch.Tensor):
            if value.device.type != "cpu":
                raise ValueError(f"{arg} is on {value.device}; fastloss.torch computes on the "
                                 f"CPU: pass {arg}.cpu()")
            if arg != "input" and value.requires_grad:
                raise ValueError(f"{arg} requires grad; fastloss.torch differentiates with "
                                 f"respect to input only: pass {arg}.detach()")
    if input.requires_grad and torch.is_grad_enabled():
        return _Loss.apply(input, name, target, reduction, n_threads, params)
    return _tensor(getattr(losses, name)(input.detach(), target, reduction=reduction,
                                         n_threads=n_threads, **params))


def binary_cross_entropy(input, target, weight=None, reduction="mean", *, n_threads=None):
    r"""Binary cross-entropy between probabilities and targets, differentiable in ``input``.

    Per element (each log clamped at -100)::

        loss = -w * (y * max(log(p), -100) + (1 - y) * max(log1p(-p), -100))
        d loss / d p = w * ((1 - y) / (1 - p) - y / p)      (0 for a term whose log is clamped)

    torch counterpart: ``torch.nn.functional.binary_cross_entropy``; its backward differs where
    p is within 1e-12 of 0 or 1 (it clamps p * (1 - p) at 1e-12, see :func:`fastloss.grad`). Arguments, values and
    errors as in :func:`fastloss.binary_cross_entropy` (without ``out``), returning a tensor;
    and ValueError for a tensor argument not on the CPU or, other than input, requiring grad.
    """
    return _apply("binary_cross_entropy", input, target, reduction, n_threads, weight=weight)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean",
                                     pos_weight=None, *, n_threads=None):
    r"""Binary cross-entropy between logits and targets, differentiable in ``input``.

    Per element::

        loss = w * (pw * y * softplus(-x) + (1 - y) * softplus(x))
        d loss / d x = w * ((1 - y) * sigmoid(x) - pw * y * sigmoid(-x))

    torch counterpart: ``torch.nn.functional.binary_cross_entropy_with_logits``. Arguments,
    values and errors as in :func:`fastloss.binary_cross_entropy_with_logits` (without
    ``out``), returning a tensor; errors as in :func:`binary_cross_entropy`.
    """
    return _apply("binary_cross_entropy_with_logits", input, target, reduction, n_threads,
                  weight=weight, pos_weight=pos_weight)


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0, *, n_threads=None):
    r"""Softmax cross-entropy between logits and class indices or probabilities,
    differentiable in ``input``.

    Per position, with p = softmax(z) over the class axis and q the (smoothed, weighted)
    target distribution of :func:`fastloss.cross_entropy`::

        loss = sum_c w_c * q_c * (-log p_c)
        d loss / d z_c = p_c * sum_k w_k * q_k - w_c * q_c

    torch counterpart: ``torch.nn.functional.cross_entropy``. Arguments, values and errors as
    in :func:`fastloss.cross_entropy` (without ``out``), returning a tensor; errors as in
    :func:`binary_cross_entropy`.
    """
    return _apply("cross_entropy", input, target, reduction, n_threads, weight=weight,
                  ignore_index=ignore_index, label_smoothing=label_smoothing)


def sigmoid_focal_loss(input, target, alpha=0.25, gamma=2.0, reduction="none", *, weight=None,
                       n_threads=None):
    r"""Sigmoid focal loss (torchvision's formula), differentiable in ``input``.

    Per element, p = sigmoid(x), p_t = p*y + (1-p)*(1-y)::

        loss = w * alpha_t * bce_with_logits(x, y) * (1 - p_t)**gamma

    differentiated in the stable form of :func:`fastloss.grad` (no negative power of 1 - p_t:
    finite for logits of any magnitude and gamma in (0, 1)).

    torch counterpart: ``torchvision.ops.sigmoid_focal_loss``. Arguments, values and errors as
    in :func:`fastloss.sigmoid_focal_loss` (without ``out``), returning a tensor; errors as in
    :func:`binary_cross_entropy`.
    """
    return _apply("sigmoid_focal_loss", input, target, reduction, n_threads, alpha=alpha,
                  gamma=gamma, weight=weight)


def softmax_focal_loss(input, target, gamma=2.0, weight=None, ignore_index=-100,
                       reduction="mean", *, n_threads=None):
    r"""Softmax focal loss between logits and class indices, differentiable in ``input``.

    Per position, p_t the softmax probability of the target class t::

        loss = -w_t * (1 - p_t)**gamma * log(p_t)

    torch counterpart: none in torch; gamma=0 is ``torch.nn.functional.cross_entropy``.
    Arguments, values and errors as in :func:`fastloss.softmax_focal_loss` (without ``out``),
    returning a tensor; errors as in :func:`binary_cross_entropy`.
    """
    return _apply("softmax_focal_loss", input, target, reduction, n_threads, gamma=gamma,
                  weight=weight, ignore_index=ignore_index)
