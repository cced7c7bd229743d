"""fastloss.grad: gradients and Hessian diagonals against torch autograd (float64, double
backward for the diagonal) and mpmath at the extremes; threads, out=, errors, a fuzz."""
import mpmath
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

import fastloss


@pytest.fixture(autouse=True)
def _mpmath_digits():
    """Enough digits for differences such as z_t - logsumexp(z) at margins of 200 and for
    mpmath.diff's steps, in every test of this module whatever other modules set globally."""
    with mpmath.workdps(300):
        yield


# ---- torch references (float64 autograd) ----

def torch_sigmoid_focal(x, y, alpha=0.25, gamma=2.0, weight=None):
    """torchvision.ops.sigmoid_focal_loss, written out (torchvision is not a dependency), with
    1 - p_t as y*sigmoid(-x) + (1-y)*sigmoid(x): torchvision's 1 - (p*y + (1-p)*(1-y))
    cancels for confident predictions, which would make the reference the less accurate
    side."""
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    q = y * torch.sigmoid(-x) + (1 - y) * torch.sigmoid(x)
    loss = ce * q ** gamma
    if alpha >= 0:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return loss if weight is None else loss * weight


def torch_softmax_focal(z, t, gamma=2.0, weight=None, ignore_index=-100):
    """-w_t (1 - p_t)^gamma log p_t per position, 0 where ignored; 1 - p_t as the sum of the
    other classes' probabilities (1 - p_t itself cancels for confident rows)."""
    logp = F.log_softmax(z, 1)
    valid = t != ignore_index
    tc = torch.where(valid, t, 0)
    lp = logp.gather(1, tc.unsqueeze(1)).squeeze(1)
    others = 1 - F.one_hot(tc, z.shape[1]).movedim(-1, 1).to(z.dtype)
    u = (F.softmax(z, 1) * others).sum(1)
    w = torch.ones(z.shape[1], dtype=z.dtype) if weight is None else weight
    return torch.where(valid, -w[tc] * u ** gamma * lp, 0.0)


def reduce(l, reduction, denominator=None):
    if reduction == "none":
        return l.sum()
    if reduction == "sum":
        return l.sum()
    return l.sum() / (l.numel() if denominator is None else denominator)


def autograd_reference(fn, x, elementwise, class_axis=1):
    """(loss value, gradient, Hessian diagonal) of fn (a scalar function of a float64 tensor)
    at x. Elementwise losses: the diagonal is the gradient of the gradient's sum; softmax ones:
    of each class's column sum in turn (positions are independent of each other)."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    value = fn(xt)
    (g,) = torch.autograd.grad(value, xt, create_graph=True)
    if elementwise:
        (h,) = torch.autograd.grad(g.sum(), xt)
    else:
        h = torch.zeros_like(xt)
        axis = class_axis if x.ndim > 1 else 0
        for c in range(x.shape[axis]):
            (hc,) = torch.autograd.grad(g.select(axis, c).sum(), xt, retain_graph=True)
            h.select(axis, c).copy_(hc.select(axis, c))
    return value.detach().numpy(), g.detach().numpy(), h.numpy()


def assert_close(got, want, rel, floor=0.0):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    assert np.all(np.isfinite(got) == np.isfinite(want))
    err = np.abs(got - want)
    bound = rel * np.abs(want) + floor
    assert np.all(err <= bound), f"worst {np.max(err - bound)} over the bound"


REDUCTIONS = ["none", "mean", "sum"]


def check_against_torch(loss, x, target, torch_loss, reduction, elementwise, denominator=None,
                        hess_rel=1e-12, **params):
    """fastloss.grad in float64 against autograd to 1e-12 relative, and in float32 (same
    rounded inputs) against the float64 reference to 1e-6 relative plus a small floor."""
    value, g, h = autograd_reference(
        lambda xt: reduce(torch_loss(xt), reduction, denominator), x, elementwise)
    got = fastloss.grad(loss, x, target, hessian=True, return_loss=True, reduction=reduction,
                        **params)
    # the floor: autograd's own rounding (its double backward of the focal formulas loses a
    # few digits where the Hessian is small; the mpmath tests below settle those values)
    scale = np.max(np.abs(g)) + np.max(np.abs(h))
    assert_close(got[1], g, 1e-12, 1e-14 * scale)
    assert_close(got[2], h, hess_rel, 1e-14 * scale)
    if reduction != "none":
        assert float(got[0]) == pytest.approx(float(value), rel=1e-12, abs=1e-300)
    # float32: the reference at the float32 inputs
    x32 = x.astype(np.float32)
    t32 = target.astype(np.float32) if target.dtype.kind == "f" else target
    _, g, h = autograd_reference(
        lambda xt: reduce(torch_loss(xt), reduction, denominator), x32.astype(np.float64),
        elementwise)
    got = fastloss.grad(loss, x32, t32, hessian=True, reduction=reduction, **params)
    assert got[0].dtype == np.float32 and got[1].dtype == np.float32
    assert_close(got[0], g, 1e-6, 1e-7 * scale)
    assert_close(got[1], h, 1e-6, 1e-7 * scale)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight_shape", [None, (3,), (4, 1)])
@pytest.mark.parametrize("pos_weight", [None, [0.5, 2.0, 3.0]])
@pytest.mark.parametrize("soft", [False, True])
def test_bce_with_logits_against_torch(simd_path, rng, reduction, weight_shape, pos_weight,
                                       soft):
    x = rng.normal(size=(4, 3)) * 4
    y = rng.uniform(size=(4, 3))
    y = y if soft else np.round(y)
    w = None if weight_shape is None else rng.uniform(0, 2, size=weight_shape)
    pw = None if pos_weight is None else np.array(pos_weight)

    def torch_loss(xt):
        return F.binary_cross_entropy_with_logits(
            xt, torch.tensor(y, dtype=xt.dtype),
            weight=None if w is None else torch.tensor(w), reduction="none",
            pos_weight=None if pw is None else torch.tensor(pw))
    check_against_torch("binary_cross_entropy_with_logits", x, y, torch_loss, reduction, True,
                        weight=w, pos_weight=pw)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_bce_on_probabilities_against_torch(simd_path, rng, reduction, weighted):
    p = rng.uniform(1e-3, 1 - 1e-3, size=(5, 4))
    y = rng.uniform(size=(5, 4))
    y[0] = np.round(y[0])
    w = rng.uniform(0, 2, size=4) if weighted else None

    def torch_loss(pt):
        return F.binary_cross_entropy(pt, torch.tensor(y), reduction="none",
                                      weight=None if w is None else torch.tensor(w))
    # torch's double backward forms y - 2py + p^2, which cancels for p and y near 1: its
    # Hessian is held to 1e-8 here, ours to 1e-13 of the sum of the two positive terms
    check_against_torch("binary_cross_entropy", p, y, torch_loss, reduction, True,
                        hess_rel=1e-8, weight=w)
    h = fastloss.grad("binary_cross_entropy", p, y, hessian=True, reduction=reduction,
                      weight=w)[1]
    want = (y / p**2 + (1 - y) / (1 - p)**2) * (1 if w is None else w)
    assert_close(h, want / (p.size if reduction == "mean" else 1), 1e-13)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("alpha", [0.25, -1.0])
@pytest.mark.parametrize("soft", [False, True])
def test_sigmoid_focal_against_torch(simd_path, rng, reduction, gamma, alpha, soft):
    x = rng.normal(size=(6, 5)) * 4
    y = rng.uniform(size=(6, 5))
    y = y if soft else np.round(y)
    w = rng.uniform(0, 2, size=5)

    def torch_loss(xt):
        return torch_sigmoid_focal(xt, torch.tensor(y), alpha, gamma, torch.tensor(w))
    check_against_torch("sigmoid_focal_loss", x, y, torch_loss, reduction, True, alpha=alpha,
                        gamma=gamma, weight=w)


def test_focal_gamma_zero_is_bce(rng):
    x = rng.normal(size=1000) * 10
    y = rng.uniform(size=1000)
    for dtype in (np.float32, np.float64):
        want = fastloss.grad("binary_cross_entropy_with_logits", x.astype(dtype),
                             y.astype(dtype), hessian=True)
        got = fastloss.grad("sigmoid_focal_loss", x.astype(dtype), y.astype(dtype),
                            hessian=True, alpha=-1, gamma=0)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(7, 4), (3, 20), (2, 3, 5), (5,)])
def test_cross_entropy_index_targets_against_torch(simd_path, rng, reduction, smoothing,
                                                   weighted, shape):
    z = rng.normal(size=shape) * 3
    c = shape[1] if len(shape) > 1 else shape[0]
    t_shape = (shape[0],) + shape[2:] if len(shape) > 1 else ()
    t = rng.integers(0, c, size=t_shape)
    if t.ndim:
        t.reshape(-1)[1] = -100  # ignored
    w = rng.uniform(0.2, 2, size=c) if weighted else None

    def torch_loss(zt):
        return F.cross_entropy(zt, torch.tensor(t), weight=None if w is None else torch.tensor(w),
                               label_smoothing=smoothing, reduction="sum")
    denominator = None
    if reduction == "mean":
        valid = t[t != -100]
        denominator = float(np.sum(w[valid]) if weighted else valid.size)
    check_against_torch("cross_entropy", z, t, torch_loss, reduction, False, denominator,
                        weight=w, label_smoothing=smoothing)
    # the mean as torch computes it, for the record
    if reduction == "mean":
        zt = torch.tensor(z, requires_grad=True)
        F.cross_entropy(zt, torch.tensor(t), weight=None if w is None else torch.tensor(w),
                        label_smoothing=smoothing).backward()
        assert_close(fastloss.grad("cross_entropy", z, t, reduction="mean", weight=w,
                                   label_smoothing=smoothing), zt.grad.numpy(), 1e-12, 1e-16)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("shape", [(6, 3), (3, 17), (2, 4, 3)])
def test_cross_entropy_probability_targets_against_torch(simd_path, rng, reduction, smoothing,
                                                         shape):
    z = rng.normal(size=shape) * 3
    y = rng.dirichlet(np.ones(shape[1]), size=(shape[0],) + shape[2:])
    y = np.moveaxis(y, -1, 1)
    w = rng.uniform(0.2, 2, size=shape[1])

    def torch_loss(zt):
        return F.cross_entropy(zt, torch.tensor(y), weight=torch.tensor(w),
                               label_smoothing=smoothing, reduction="none")
    check_against_torch("cross_entropy", z, y, torch_loss, reduction, False, weight=w,
                        label_smoothing=smoothing)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("shape", [(8, 5), (3, 18), (2, 3, 4)])
def test_softmax_focal_against_torch(simd_path, rng, reduction, gamma, shape):
    z = rng.normal(size=shape) * 3
    t = rng.integers(0, shape[1], size=(shape[0],) + shape[2:])
    t.reshape(-1)[0] = -100
    w = rng.uniform(0.2, 2, size=shape[1])

    def torch_loss(zt):
        return torch_softmax_focal(zt, torch.tensor(t), gamma, torch.tensor(w))
    denominator = float(np.sum(w[t[t != -100]])) if reduction == "mean" else None
    check_against_torch("softmax_focal_loss", z, t, torch_loss, reduction, False, denominator,
                        gamma=gamma, weight=w)


def test_return_loss_is_the_loss_functions_value(rng):
    x = rng.normal(size=(300, 7))
    y = rng.uniform(size=(300, 7))
    t = rng.integers(0, 7, size=300)
    for reduction in REDUCTIONS:
        for loss, target, params in [
                ("binary_cross_entropy_with_logits", y, {"pos_weight": np.arange(7.0)}),
                ("sigmoid_focal_loss", y, {"gamma": 0.7}),
                ("binary_cross_entropy", y, {}),
                ("cross_entropy", t, {"label_smoothing": 0.1}),
                ("softmax_focal_loss", t, {"gamma": 1.5})]:
            inp = 1 / (1 + np.exp(-x)) if loss == "binary_cross_entropy" else x
            want = getattr(fastloss, loss)(inp, target, reduction=reduction, **params)
            value, g = fastloss.grad(loss, inp, target, return_loss=True, reduction=reduction,
                                     **params)
            np.testing.assert_allclose(value, want, rtol=1e-14)
            assert g.shape == x.shape


# ---- mpmath at the extremes (float64 to 1e-12 relative) ----

def mp_sigmoid(x):
    return 1 / (1 + mpmath.exp(-x))


def mp_bce_logits(x, y, pw=1):
    return pw * y * mpmath.log1p(mpmath.exp(-x)) + (1 - y) * mpmath.log1p(mpmath.exp(x))


def mp_focal(x, y, alpha, gamma):
    q = y * mp_sigmoid(-x) + (1 - y) * mp_sigmoid(x)
    a = 1 if alpha < 0 else alpha * y + (1 - alpha) * (1 - y)
    return a * mp_bce_logits(x, y) * q ** gamma


def mp_derivatives(f, x):
    x = mpmath.mpf(x)
    return float(mpmath.diff(f, x, 1)), float(mpmath.diff(f, x, 2))


EXTREME_LOGITS = [-1e4, -100.0, -30.0, -5.0, -1e-3, 0.0, 1e-8, 2.5, 30.0, 100.0, 1e4]


TINY = 1e-100  # below: mpmath.diff's own noise at large logits; our values there are 0 or tiny


def check_mp(loss, x, y, f, **params):
    g, h = fastloss.grad(loss, np.array(x), np.array(y), hessian=True, **params)
    for dtype in (np.float32,):  # no nan, no inf where finite
        g32, h32 = fastloss.grad(loss, np.array(x, dtype), np.array(y, dtype), hessian=True,
                                 **params)
        assert np.all(np.isfinite(g32)) and np.all(np.isfinite(h32))
    for i, (xi, yi) in enumerate(zip(x, y)):
        want_g, want_h = mp_derivatives(lambda v: f(v, mpmath.mpf(yi)), xi)
        assert g[i] == pytest.approx(want_g, rel=1e-12, abs=TINY), (xi, yi)
        assert h[i] == pytest.approx(want_h, rel=1e-12, abs=TINY), (xi, yi)


@pytest.mark.parametrize("y", [0.0, 1.0, 0.3, 1e-6])
def test_bce_with_logits_at_extremes_against_mpmath(simd_path, y):
    x = EXTREME_LOGITS
    check_mp("binary_cross_entropy_with_logits", x, [y] * len(x), mp_bce_logits)


@pytest.mark.parametrize("gamma", [0.5, 0.25, 1.0, 2.0, 3.7])
@pytest.mark.parametrize("y", [0.0, 1.0, 0.3])
@pytest.mark.parametrize("alpha", [0.25, -1.0])
def test_sigmoid_focal_at_extremes_against_mpmath(simd_path, gamma, y, alpha):
    x = EXTREME_LOGITS
    check_mp("sigmoid_focal_loss", x, [y] * len(x),
             lambda v, yy: mp_focal(v, yy, alpha, gamma), alpha=alpha, gamma=gamma)


def test_bce_on_probabilities_near_0_and_1_against_mpmath(simd_path):
    p = [1e-300, 1e-30, 1e-10, 1e-3, 0.5, 1 - 1e-3, 1 - 1e-10, 1 - 2.0**-52]
    for y in (0.0, 1.0, 0.25):
        g, h = fastloss.grad("binary_cross_entropy", np.array(p), np.full(len(p), y),
                             hessian=True)
        for i, pi in enumerate(p):
            # the derivatives written out (mpmath.diff's steps would cross p = 1); a log
            # clamped at -100 (p = 1e-300) is constant: its term is 0
            v = mpmath.mpf(pi)
            y_p = y if mpmath.log(v) > -100 else 0
            want_g = float(-y_p / v + (1 - y) / (1 - v))
            want_h = float(y_p / v**2 + (1 - y) / (1 - v)**2)
            assert h[i] == pytest.approx(want_h, rel=1e-12), (pi, y)
            assert g[i] == pytest.approx(want_g, rel=1e-12), (pi, y)


def test_bce_on_probabilities_at_clamped_ends():
    # a clamped logarithm is constant: its term contributes 0 (no nan at p = 0 or 1)
    g, h = fastloss.grad("binary_cross_entropy", np.array([0.0, 1.0, 0.0, 1.0]),
                         np.array([0.0, 1.0, 0.25, 0.25]), hessian=True)
    np.testing.assert_array_equal(g, [1.0, -1.0, 0.75, -0.25])
    np.testing.assert_array_equal(h, [1.0, 1.0, 0.75, 0.25])


def mp_softmax_losses(z, t, gamma):
    z = [mpmath.mpf(v) for v in z]
    m = max(z)
    lse = m + mpmath.log(sum(mpmath.exp(v - m) for v in z))
    logp = z[t] - lse
    return -(1 - mpmath.exp(logp)) ** gamma * logp


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_softmax_losses_at_extremes_against_mpmath(simd_path, gamma):
    rows = np.array([[0.0, 1e4, -1e4], [100.0, 0.0, -100.0], [30.0, 0.0, 1.0],
                     [1e-8, 0.0, -1e-8], [-50.0, 50.0, 49.0]])
    for t in range(3):
        target = np.full(len(rows), t)
        g, h = fastloss.grad("softmax_focal_loss" if gamma else "cross_entropy", rows, target,
                             hessian=True, **({"gamma": gamma} if gamma else {}))
        assert np.all(np.isfinite(g)) and np.all(np.isfinite(h))
        for n, row in enumerate(rows):
            for c in range(3):
                def f(v):
                    z = list(row)
                    z[c] = v
                    return mp_softmax_losses(z, t, gamma)
                want_g, want_h = mp_derivatives(f, row[c])
                assert g[n, c] == pytest.approx(want_g, rel=1e-12, abs=TINY), (row, t, c)
                assert h[n, c] == pytest.approx(want_h, rel=1e-12, abs=TINY), (row, t, c)


def test_infinite_logits_give_limits():
    x = np.array([np.inf, -np.inf, np.inf, -np.inf])
    y = np.array([1.0, 0.0, 0.0, 1.0])
    for loss in ("binary_cross_entropy_with_logits", "sigmoid_focal_loss"):
        for gamma in ([0.5, 2.0] if loss == "sigmoid_focal_loss" else [None]):
            params = {} if gamma is None else {"gamma": gamma, "alpha": -1}
            g, h = fastloss.grad(loss, x, y, hessian=True, **params)
            np.testing.assert_array_equal(g, [0.0, 0.0, 1.0, -1.0])
            np.testing.assert_array_equal(h, [0.0, 0.0, 0.0, 0.0])


# ---- threads, out=, errors ----

@pytest.mark.parametrize("loss", ["binary_cross_entropy_with_logits", "sigmoid_focal_loss",
                                  "binary_cross_entropy", "cross_entropy",
                                  "softmax_focal_loss"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bitwise_identical_for_any_thread_count(simd_path, rng, loss, dtype):
    n, c = 40001, 5  # 200005 elements: two threads
    x = rng.normal(size=(n, c)).astype(dtype) * 5
    if loss == "binary_cross_entropy":
        x = (1 / (1 + np.exp(-x))).astype(dtype)
    target = (rng.uniform(size=(n, c)).astype(dtype) if "binary" in loss or "sigmoid" in loss
              else rng.integers(0, c, size=n))
    params = {"gamma": 0.5} if "focal" in loss else {}
    for reduction in ("none", "mean"):
        one = fastloss.grad(loss, x, target, hessian=True, return_loss=True,
                            reduction=reduction, n_threads=1, **params)
        two = fastloss.grad(loss, x, target, hessian=True, return_loss=True,
                            reduction=reduction, n_threads=2, **params)
        for a, b in zip(one, two):
            np.testing.assert_array_equal(a, b)


def test_out_buffers(rng):
    x = rng.normal(size=(50, 3)).astype(np.float32)
    y = rng.uniform(size=(50, 3)).astype(np.float32)
    want_g, want_h = fastloss.grad("sigmoid_focal_loss", x, y, hessian=True)
    g, h = np.empty_like(x), np.empty_like(x)
    got = fastloss.grad("sigmoid_focal_loss", x, y, hessian=True, out=(g, h))
    assert got[0] is g and got[1] is h
    np.testing.assert_array_equal(g, want_g)
    np.testing.assert_array_equal(h, want_h)
    g2 = torch.empty(50, 3)
    assert fastloss.grad("sigmoid_focal_loss", x, y, out=g2) is g2
    np.testing.assert_array_equal(g2.numpy(), want_g)
    t = rng.integers(0, 3, size=50)
    g3 = np.empty_like(x)
    value, got = fastloss.grad("cross_entropy", x, t, reduction="mean", return_loss=True, out=g3)
    assert got is g3
    np.testing.assert_array_equal(g3, fastloss.grad("cross_entropy", x, t, reduction="mean"))


def test_float16_input(rng):
    x = rng.normal(size=(20, 3)).astype(np.float16)
    y = (rng.uniform(size=(20, 3)) < 0.5).astype(np.float16)
    g, h = fastloss.grad("binary_cross_entropy_with_logits", x, y, hessian=True)
    assert g.dtype == h.dtype == np.float16
    want = fastloss.grad("binary_cross_entropy_with_logits", x.astype(np.float32),
                         y.astype(np.float32))
    np.testing.assert_array_equal(g, want.astype(np.float16))


def test_inputs_untouched_and_empty(rng):
    x = rng.normal(size=(10, 4))
    t = rng.integers(0, 4, size=10)
    x0, t0 = x.copy(), t.copy()
    fastloss.grad("cross_entropy", x, t, hessian=True)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(t, t0)
    g = fastloss.grad("binary_cross_entropy_with_logits", np.empty((0, 3)), np.empty((0, 3)),
                      reduction="mean")
    assert g.shape == (0, 3)


def test_errors(rng):
    x = rng.normal(size=(4, 3))
    y = rng.uniform(size=(4, 3))
    t = np.array([0, 1, 2, 1])
    with pytest.raises(ValueError, match="unknown loss 'mse'; choose one of"):
        fastloss.grad("mse", x, y)
    with pytest.raises(TypeError, match=r"takes no parameter pos_weight \(its parameters: "
                                        r"weight\)"):
        fastloss.grad("binary_cross_entropy", y, y, pos_weight=np.ones(3))
    with pytest.raises(TypeError, match="takes no parameter label_smoothing"):
        fastloss.grad("softmax_focal_loss", x, t, label_smoothing=0.1)
    with pytest.raises(ValueError, match="all elements of input should be between 0 and 1"):
        fastloss.grad("binary_cross_entropy", x, y)
    with pytest.raises(ValueError, match="all elements of target should be between 0 and 1"):
        fastloss.grad("sigmoid_focal_loss", x, y + 1)
    with pytest.raises(IndexError, match="Target 7 is out of bounds."):
        fastloss.grad("cross_entropy", x, np.array([0, 7, 1, 1]))
    with pytest.raises(ValueError, match="reduction must be one of"):
        fastloss.grad("cross_entropy", x, t, reduction="avg")
    with pytest.raises(ValueError, match="gamma must be a finite number >= 0"):
        fastloss.grad("sigmoid_focal_loss", x, y, gamma=-1)
    with pytest.raises(ValueError, match=r"out has shape \(4,\); the gradient has shape "
                                         r"\(4, 3\)"):
        fastloss.grad("cross_entropy", x, t, out=np.empty(4))
    with pytest.raises(ValueError, match="out has dtype float32; the gradient has dtype float64"):
        fastloss.grad("cross_entropy", x, t, out=np.empty((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"out\[1\] is read-only"):
        ro = np.empty_like(x)
        ro.flags.writeable = False
        fastloss.grad("cross_entropy", x, t, hessian=True, out=(np.empty_like(x), ro))
    with pytest.raises(ValueError, match="out shares memory with input"):
        fastloss.grad("binary_cross_entropy_with_logits", x, y, out=x)
    with pytest.raises(ValueError, match="tuple"):
        fastloss.grad("binary_cross_entropy_with_logits", x, y, hessian=True,
                      out=np.empty_like(x))
    with pytest.raises(ValueError, match="tuple only with hessian=True"):
        fastloss.grad("binary_cross_entropy_with_logits", x, y,
                      out=(np.empty_like(x), np.empty_like(x)))
    buf = np.empty_like(x)
    with pytest.raises(ValueError, match="overlap"):
        fastloss.grad("binary_cross_entropy_with_logits", x, y, hessian=True, out=(buf, buf))
    with pytest.raises(TypeError, match="requires grad"):
        fastloss.grad("cross_entropy", torch.tensor(x, requires_grad=True), torch.tensor(t))


def test_all_ignored_mean_gives_zero_gradient_as_torch():
    z = np.array([[1.0, 2.0], [0.5, -1.0]])
    t = np.array([-100, -100])
    zt = torch.tensor(z, requires_grad=True)
    F.cross_entropy(zt, torch.tensor(t)).backward()
    value, g = fastloss.grad("cross_entropy", z, t, reduction="mean", return_loss=True)
    assert np.isnan(value)
    np.testing.assert_array_equal(g, zt.grad.numpy())


# ---- fuzz ----

@settings(max_examples=40, deadline=None)
@given(loss=st.sampled_from(["binary_cross_entropy_with_logits", "sigmoid_focal_loss",
                             "cross_entropy", "softmax_focal_loss"]),
       n=st.integers(1, 40), c=st.integers(1, 20), scale=st.sampled_from([1.0, 30.0, 1e4]),
       gamma=st.sampled_from([0.0, 0.3, 1.0, 2.0, 4.5]), seed=st.integers(0, 2**32 - 1),
       dtype=st.sampled_from([np.float32, np.float64]),
       reduction=st.sampled_from(REDUCTIONS))
def test_fuzz_finite_and_close_to_float64(loss, n, c, scale, gamma, seed, dtype, reduction):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, c)) * scale).astype(dtype)
    if loss in ("cross_entropy", "softmax_focal_loss"):
        target = rng.integers(0, c, size=n)
    else:
        target = rng.uniform(size=(n, c)).astype(dtype)
        hard = rng.uniform(size=(n, c)) < 0.5
        target[hard] = np.round(target[hard])
    params = {"gamma": gamma} if "focal" in loss else {}
    g, h = fastloss.grad(loss, x, target, hessian=True, reduction=reduction, **params)
    assert g.dtype == h.dtype == dtype and g.shape == h.shape == x.shape
    assert np.all(np.isfinite(g)) and np.all(np.isfinite(h))
    # float64 reference: torch autograd on the same values
    t_ref = torch.tensor(target if target.dtype.kind == "i" else target.astype(np.float64))
    fns = {"binary_cross_entropy_with_logits":
           lambda xt: F.binary_cross_entropy_with_logits(xt, t_ref, reduction="none"),
           "sigmoid_focal_loss": lambda xt: torch_sigmoid_focal(xt, t_ref, 0.25, gamma),
           "cross_entropy": lambda xt: F.cross_entropy(xt, t_ref, reduction="none"),
           "softmax_focal_loss": lambda xt: torch_softmax_focal(xt, t_ref, gamma)}
    denominator = n if loss in ("cross_entropy", "softmax_focal_loss") else None
    _, g_ref, h_ref = autograd_reference(
        lambda xt: reduce(fns[loss](xt), reduction, denominator), x.astype(np.float64),
        "binary" in loss or "sigmoid" in loss)
    finite = np.isfinite(g_ref) & np.isfinite(h_ref)  # torch's own nan at saturated logits
    rel = 1e-5 if dtype == np.float32 else 1e-11
    # the float64 floor is autograd's own rounding: its double backward through the focal
    # terms and its softmax Hessian p - p^2 of a confident class lose digits that ours keeps
    # (the mpmath tests hold ours to 1e-12 relative)
    floor = (1e-6 if dtype == np.float32 else 1e-13) * (np.max(np.abs(g_ref[finite]), initial=0)
                                                       + np.max(np.abs(h_ref[finite]),
                                                                initial=0)) + 1e-15
    assert_close(g[finite], g_ref[finite], rel, floor)
    assert_close(h[finite], h_ref[finite], rel, floor)


@pytest.mark.parametrize("loss", ["binary_cross_entropy_with_logits", "sigmoid_focal_loss",
                                  "binary_cross_entropy", "cross_entropy",
                                  "softmax_focal_loss"])
@pytest.mark.parametrize("shape", [(300, 4), (40, 37), (6, 3, 50)])
def test_gradient_does_not_depend_on_what_else_is_asked(simd_path, rng, loss, shape):
    x = rng.normal(size=shape).astype(np.float32) * 4
    if loss == "binary_cross_entropy":
        x = 1 / (1 + np.exp(-x))
    softmax = loss in ("cross_entropy", "softmax_focal_loss")
    target = (rng.integers(0, shape[1], size=(shape[0],) + shape[2:]) if softmax
              else rng.uniform(size=shape).astype(np.float32))
    params = {"gamma": 0.5} if "focal" in loss else {}
    alone = fastloss.grad(loss, x, target, **params)
    value, g, h = fastloss.grad(loss, x, target, hessian=True, return_loss=True, **params)
    np.testing.assert_array_equal(alone, g)
    np.testing.assert_array_equal(value, getattr(fastloss, loss)(x, target, reduction="none",
                                                                  **params))


def test_mean_with_a_zero_denominator_is_nan_where_torch_is():
    """Class weights 0 for every target (label smoothing keeps the sum non-zero): torch's
    "mean" backward divides by 0 (nan) except at ignored positions (0)."""
    x = np.array([[1.0, 2, 3], [0, 1, -1], [2, 0, 1]])
    w = np.array([0.0, 1, 1])
    for t in (np.array([0, 0, 0]), np.array([0, -100, 0])):
        xt = torch.tensor(x, requires_grad=True)
        F.cross_entropy(xt, torch.tensor(t), weight=torch.tensor(w), label_smoothing=0.1,
                        reduction="mean").backward()
        g, h = fastloss.grad("cross_entropy", x, t, hessian=True, weight=w, label_smoothing=0.1,
                             reduction="mean")
        np.testing.assert_array_equal(g, xt.grad.numpy())
        np.testing.assert_array_equal(np.isnan(h), np.isnan(g))
