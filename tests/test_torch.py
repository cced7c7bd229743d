"""fastloss.torch: the losses on torch tensors with autograd, against torch's own.

References: torch.nn.functional (forward and autograd), torchvision's sigmoid focal loss
formula written out in float64, torch.autograd.gradcheck.
"""
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastloss
import fastloss.torch as ft


def _sigmoid_focal(x, y, alpha=0.25, gamma=2.0, reduction="none", weight=None):
    """torchvision.ops.sigmoid_focal_loss, written out."""
    p = torch.sigmoid(x)
    loss = F.binary_cross_entropy_with_logits(x, y, reduction="none") * \
        (1 - (p * y + (1 - p) * (1 - y))) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * y + (1 - alpha) * (1 - y))
    if weight is not None:
        loss = loss * weight
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def _softmax_focal(x, t, gamma=2.0, weight=None, ignore_index=-100, reduction="mean"):
    keep = t != ignore_index
    safe = torch.where(keep, t, 0)
    log_p = torch.log_softmax(x, 1).gather(1, safe.unsqueeze(1)).squeeze(1)
    w = torch.ones(x.shape[1], dtype=x.dtype) if weight is None else weight
    w_t = w[safe] * keep
    loss = -w_t * (1 - log_p.exp()) ** gamma * log_p
    return {"none": loss, "sum": loss.sum(), "mean": loss.sum() / w_t.sum()}[reduction]


def _cases(dtype):
    """(name, reference, args after input, keyword parameters, input) for every loss."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=g, dtype=dtype) * 3
    probs = torch.rand(6, 4, generator=g, dtype=dtype) * 0.98 + 0.01
    soft = torch.rand(6, 4, generator=g, dtype=dtype)
    hard = (soft > 0.5).to(dtype)
    t = torch.randint(0, 4, (6,), generator=g)
    t_ignored = t.clone()
    t_ignored[2] = -100
    seg = torch.randn(2, 3, 4, 5, generator=g, dtype=dtype)
    seg_t = torch.randint(0, 3, (2, 4, 5), generator=g)
    w_class = torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=dtype)
    w_elem = torch.rand(4, generator=g, dtype=dtype)
    return [
        ("binary_cross_entropy", F.binary_cross_entropy, probs, (soft,), {}),
        ("binary_cross_entropy", F.binary_cross_entropy, probs, (hard,), {"weight": w_elem}),
        ("binary_cross_entropy_with_logits", F.binary_cross_entropy_with_logits, x, (soft,),
         {}),
        ("binary_cross_entropy_with_logits", F.binary_cross_entropy_with_logits, x, (hard,),
         {"weight": w_elem, "pos_weight": w_class}),
        ("sigmoid_focal_loss", _sigmoid_focal, x, (soft,), {}),
        ("sigmoid_focal_loss", _sigmoid_focal, x, (hard,),
         {"alpha": -1.0, "gamma": 0.5, "weight": w_elem}),
        ("sigmoid_focal_loss", _sigmoid_focal, x, (hard,), {"alpha": 0.7, "gamma": 3.0}),
        ("cross_entropy", F.cross_entropy, x, (t,), {}),
        ("cross_entropy", F.cross_entropy, x, (t_ignored,),
         {"weight": w_class, "label_smoothing": 0.2}),
        ("cross_entropy", F.cross_entropy, x, (torch.softmax(soft, 1),),
         {"label_smoothing": 0.1}),
        ("cross_entropy", F.cross_entropy, seg, (seg_t,), {"weight": w_class[:3]}),
        ("cross_entropy", F.cross_entropy, x[0], (t[0],), {}),
        ("softmax_focal_loss", _softmax_focal, x, (t_ignored,),
         {"gamma": 2.0, "weight": w_class}),
        ("softmax_focal_loss", _softmax_focal, seg, (seg_t,), {"gamma": 0.5}),
    ]


def _ids():
    return [f"{c[0]}-{i}" for i, c in enumerate(_cases(torch.float64))]


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("case", range(len(_ids())), ids=_ids())
def test_forward_and_gradient_equal_torch(case, dtype, rtol, reduction):
    name, reference, x, args, params = _cases(dtype)[case]
    x_ours = x.clone().requires_grad_()
    x_ref = x.clone().requires_grad_()
    ours = getattr(ft, name)(x_ours, *args, reduction=reduction, **params)
    want = reference(x_ref, *args, reduction=reduction, **params)
    assert isinstance(ours, torch.Tensor) and ours.dtype == dtype
    assert ours.shape == want.shape
    torch.testing.assert_close(ours, want.detach(), rtol=rtol, atol=rtol * 1e-2)
    grad_output = torch.randn(want.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    got, = torch.autograd.grad(ours, x_ours, grad_output)
    expected, = torch.autograd.grad(want, x_ref, grad_output)
    torch.testing.assert_close(got, expected, rtol=rtol, atol=rtol * 1e-2)


@pytest.mark.parametrize("case", range(len(_ids())), ids=_ids())
def test_gradcheck_float64(case):
    name, _, x, args, params = _cases(torch.float64)[case]
    loss = getattr(ft, name)
    for reduction in ("none", "mean"):
        assert torch.autograd.gradcheck(lambda x: loss(x, *args, reduction=reduction,
                                                       **params),
                                        (x.clone().requires_grad_(),))


def test_gradient_in_a_larger_graph():
    x = torch.randn(100, 5, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 5, (100,))
    scale = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    (ft.cross_entropy(x * scale, t) * 3).backward()
    x2 = x.detach().clone().requires_grad_()
    scale2 = scale.detach().clone().requires_grad_()
    (F.cross_entropy(x2 * scale2, t) * 3).backward()
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(scale.grad, scale2.grad)


def test_without_grad_it_returns_the_plain_loss():
    x = torch.randn(10, 3)
    y = torch.rand(10, 3)
    loss = ft.binary_cross_entropy_with_logits(x, y)
    assert loss.grad_fn is None and not loss.requires_grad
    with torch.no_grad():
        loss = ft.binary_cross_entropy_with_logits(x.requires_grad_(), y, reduction="none")
    assert loss.grad_fn is None
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(x.detach(), y,
                                                                        reduction="none"))


def test_errors():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.rand(4, 3, dtype=torch.float64)
    t = torch.randint(0, 3, (4,))
    with pytest.raises(ValueError, match="target requires grad.*input only"):
        ft.binary_cross_entropy_with_logits(x, y.clone().requires_grad_())
    with pytest.raises(ValueError, match="weight requires grad"):
        ft.cross_entropy(x, t, weight=torch.ones(3, dtype=torch.float64, requires_grad=True))
    with pytest.raises(ValueError, match="pos_weight requires grad"):
        ft.binary_cross_entropy_with_logits(x, y, pos_weight=torch.ones(
            3, dtype=torch.float64, requires_grad=True))
    with pytest.raises(ValueError, match="input is on meta.*cpu"):
        ft.cross_entropy(torch.empty(4, 3, device="meta"), t)
    with pytest.raises(TypeError, match="takes torch tensors.*fastloss.cross_entropy"):
        ft.cross_entropy(x.detach().numpy(), t)
    with pytest.raises(ValueError, match="between 0 and 1"):  # fastloss's own checks apply
        ft.binary_cross_entropy(x, y)
    with pytest.raises(IndexError, match="Target 5 is out of bounds"):
        ft.cross_entropy(x, torch.tensor([0, 1, 5, 2]))

    # A differentiable backward (gradient penalty, double backward) is refused, not built
    # without this loss's Hessian term.
    loss = ft.sigmoid_focal_loss(x, y, reduction="sum")
    with pytest.raises(RuntimeError, match="sigmoid_focal_loss is differentiable once"):
        torch.autograd.grad(loss, x, create_graph=True)
    linear = torch.nn.Linear(3, 3).double()
    loss = ft.cross_entropy(linear(x), t)
    with pytest.raises(RuntimeError, match="create_graph=True"):
        torch.autograd.grad(loss, x, create_graph=True)


def test_numpy_api_refuses_grad_tensors_and_points_here():
    x = torch.randn(3, requires_grad=True)
    with pytest.raises(TypeError, match="use fastloss.torch"):
        fastloss.binary_cross_entropy_with_logits(x, torch.rand(3))


def test_import_fastloss_does_not_import_torch_module():
    code = "import sys, fastloss; print('fastloss.torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
