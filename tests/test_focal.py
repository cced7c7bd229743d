"""Focal losses against the torchvision formula and a torch softmax focal loss (float64),
mpmath at extreme logits, and properties."""
import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastloss
import reference as ref

sfl = fastloss.sigmoid_focal_loss
smfl = fastloss.softmax_focal_loss
GAMMAS = [0.0, 1.0, 2.0, 3.0, 4.0, 0.5, 1.5, 2.5]
TOL = {np.float32: dict(rtol=2e-6, atol=1e-37), np.float64: dict(rtol=1e-12, atol=0)}


def _torch64(a):
    return torch.from_numpy(np.asarray(a, np.float64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("labels", ["hard", "soft"])
@pytest.mark.parametrize("gamma", GAMMAS)
def test_sigmoid_focal_against_torchvision_formula(simd_path, dtype, labels, gamma):
    """Where the torchvision formula is itself accurate in float64: |x| <= 5 keeps 1 - p_t
    above 6e-3, so its 1 - p_t cancellation costs < 1e-13 even raised to the 4th power (larger
    logits: the mpmath test)."""
    rng = np.random.default_rng(20)
    x = np.concatenate([rng.uniform(-5, 5, 20_000), np.linspace(-5, 5, 2001)]).astype(dtype)
    y = (rng.random(x.size) < 0.3) if labels == "hard" else rng.random(x.size)
    y = y.astype(dtype)
    for alpha in (0.25, -1.0, 0.0, 1.0):
        got = sfl(x, y, alpha, gamma)
        want = ref.torchvision_sigmoid_focal_loss(_torch64(x), _torch64(y), alpha, gamma).numpy()
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, **TOL[dtype])


def mp_sigmoid_focal(x, y, alpha, gamma):
    mpmath.mp.dps = 120
    x, y = mpmath.mpf(float(x)), mpmath.mpf(float(y))
    q = y / (1 + mpmath.exp(x)) + (1 - y) / (1 + mpmath.exp(-x))  # y*(1-p) + (1-y)*p
    ce = y * mpmath.log1p(mpmath.exp(-x)) + (1 - y) * mpmath.log1p(mpmath.exp(x))
    a = alpha * y + (1 - alpha) * (1 - y) if alpha >= 0 else 1
    return float(a * ce * q ** gamma)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("gamma", [0.5, 1.5, 2.0, 3.0])
def test_sigmoid_focal_extremes_against_mpmath(simd_path, dtype, gamma):
    mags = [0.0, 1e-20, 0.7, 5.0, 20.0, 40.0, 60.0, 87.0, 100.0, 300.0, 1e4]
    x = np.array(mags + [-m for m in mags], dtype)
    for y in (0.0, 1.0, 0.3, 0.999):
        yy = np.full(x.size, y, dtype)
        got = sfl(x, yy, 0.25, gamma)
        want = np.array([mp_sigmoid_focal(a, b, 0.25, gamma) for a, b in zip(x, yy)]).astype(dtype)
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, **TOL[dtype])


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_sigmoid_focal_infinite_logits(gamma):
    x = np.array([np.inf, np.inf, -np.inf, -np.inf, np.nan])
    y = np.array([1.0, 0.0, 1.0, 0.0, 1.0])
    got = sfl(x, y, 0.25, gamma)
    np.testing.assert_array_equal(got, [0, np.inf, np.inf, 0, np.nan])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gamma_0_without_alpha_is_bce_with_logits(simd_path, dtype):
    rng = np.random.default_rng(21)
    x = (rng.standard_normal(100_000) * 10).astype(dtype)
    y = rng.random(x.size).astype(dtype)
    y[::3] = np.round(y[::3])
    np.testing.assert_array_max_ulp(sfl(x, y, -1, 0), fastloss.binary_cross_entropy_with_logits(
        x, y, reduction="none"), maxulp=2)


def test_sigmoid_focal_weight_reductions_threads_and_out(simd_path):
    rng = np.random.default_rng(22)
    x = rng.standard_normal((3000, 7)).astype(np.float32)
    y = (rng.random((3000, 7)) < 0.5).astype(np.float32)
    w = rng.random(7).astype(np.float32)
    per = sfl(x, y, weight=w)
    want = ref.torchvision_sigmoid_focal_loss(_torch64(x), _torch64(y)).numpy() * w
    np.testing.assert_allclose(per, want, rtol=2e-6)
    for reduction, fn in (("sum", np.sum), ("mean", np.mean)):
        results = {sfl(x, y, weight=w, reduction=reduction, n_threads=t).tobytes()
                   for t in (1, 2, 3)}
        assert len(results) == 1
        assert sfl(x, y, weight=w, reduction=reduction) == pytest.approx(fn(want), rel=1e-6)
    out = np.empty_like(x)
    assert sfl(x, y, weight=w, out=out) is out
    np.testing.assert_array_equal(out, per)


def test_sigmoid_focal_errors():
    x = np.zeros(4, np.float32)
    for gamma in (-0.5, np.nan, np.inf):
        with pytest.raises(ValueError, match="gamma must be a finite number >= 0"):
            sfl(x, x, gamma=gamma)
    for alpha in (1.5, np.nan):
        with pytest.raises(ValueError, match="alpha must be at most 1"):
            sfl(x, x, alpha=alpha)
    with pytest.raises(TypeError, match="gamma must be a float"):
        sfl(x, x, gamma="2")
    with pytest.raises(ValueError, match="all elements of target should be between 0 and 1"):
        sfl(x, np.array([0, 1, 2, 0], np.float32))
    with pytest.raises(ValueError, match="target shape"):
        sfl(x, np.zeros(5, np.float32))
    with pytest.raises(TypeError, match="input must be a float16, float32 or float64 array"):
        sfl(np.zeros(4, int), x)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([np.float32, np.float64]),
       st.floats(-1, 1), st.sampled_from(["sum", "mean"]))
def test_property_alpha_and_gamma_0(seed, dtype, alpha, reduction):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(0, 6, rng.integers(0, 4)))
    x = np.asarray(rng.standard_normal(shape) * 5, dtype)
    y = np.asarray(rng.random(shape) < 0.5, dtype)
    w = np.asarray(rng.random(shape[-1:]), dtype)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    # gamma = 0 without alpha: BCE with logits, whatever the reduction and weights
    assert sfl(x, y, -1, 0, reduction, weight=w) == pytest.approx(
        fastloss.binary_cross_entropy_with_logits(x, y, w, reduction), rel=rtol, abs=1e-30,
        nan_ok=True)  # empty input: "mean" is nan
    # alpha weighs hard labels: alpha for y = 1, 1 - alpha for y = 0
    if alpha >= 0:
        alpha_t = np.where(y == 1, alpha, 1 - alpha)
        np.testing.assert_allclose(sfl(x, y, alpha, 1.5), alpha_t * sfl(x, y, -1, 1.5),
                                   rtol=rtol, atol=1e-30)


# ---- softmax focal loss ----

SHAPES = [(7,), (300, 5), (9, 1000), (70, 40), (20, 6, 33), (3, 4, 17, 19)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("gamma", [0.0, 2.0, 0.5, 1.5])
def test_softmax_focal_against_torch(simd_path, shape, dtype, gamma):
    rng = np.random.default_rng(23)
    z = np.asarray(rng.standard_normal(shape) * 3, dtype)
    n_classes = shape[0] if len(shape) == 1 else shape[1]
    t = np.asarray(rng.integers(0, n_classes, () if len(shape) == 1
                                else (shape[0],) + shape[2:]))
    rtol = 2e-6 if dtype == np.float32 else 1e-12
    # gamma = 0 is cross_entropy, whose float32 error is 1e-6 absolute for losses below 1;
    # gamma > 0 computes -log p_t to full relative accuracy
    atol = rtol * (1 if gamma == 0 else 1e-3)
    for weight in (None, np.asarray(rng.uniform(0.2, 3, n_classes), dtype)):
        for ignore_index in (-100, 1):
            per, divisor = ref.torch_softmax_focal_loss(
                _torch64(z), torch.from_numpy(t), gamma,
                None if weight is None else _torch64(weight), ignore_index)
            for reduction in ("none", "sum", "mean"):
                got = smfl(z, t, gamma, weight, ignore_index, reduction)
                want = {"none": per, "sum": per.sum(),
                        "mean": per.sum() / divisor if divisor else np.nan}[reduction]
                assert np.asarray(got).dtype == dtype
                np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_focal_gamma_0_is_cross_entropy(simd_path, shape):
    """gamma = 0 takes the cross_entropy path (bitwise equal); the focal kernel itself, at a
    gamma of 1e-9, must come within rounding of it."""
    rng = np.random.default_rng(26)
    z = rng.standard_normal(shape)
    n_classes = shape[0] if len(shape) == 1 else shape[1]
    t = np.asarray(rng.integers(-1, n_classes, () if len(shape) == 1
                                else (shape[0],) + shape[2:]))
    w = rng.random(n_classes)
    for reduction in ("none", "sum", "mean"):
        want = fastloss.cross_entropy(z, t, w, -1, reduction)
        np.testing.assert_array_equal(smfl(z, t, 0, w, -1, reduction), want)
        np.testing.assert_allclose(smfl(z, t, 1e-9, w, -1, reduction), want, rtol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_softmax_focal_confident_logits_against_mpmath(simd_path, dtype, gamma):
    """p_t near 1: 1 - p_t comes from the other classes' sum, not from 1 minus a rounded p_t."""
    z = np.array([[s, 0.0, -s / 2, 1.0] for s in (5.0, 20.0, 30.0, 40.0, 80.0)], dtype)
    t = np.zeros(len(z), int)
    got = smfl(z, t, gamma, reduction="none")
    mpmath.mp.dps = 80
    want = []
    for row in z:
        zs = [mpmath.mpf(float(v)) for v in row]
        lse = mpmath.log(sum(mpmath.exp(v) for v in zs))
        log_p = zs[0] - lse
        one_minus_p = sum(mpmath.exp(v - lse) for v in zs[1:])
        want.append(float(-(one_minus_p ** gamma) * log_p))
    want = np.array(want).astype(dtype)
    np.testing.assert_allclose(got, want, **TOL[dtype])
    assert np.all(got[:3] > 0)


def test_softmax_focal_errors():
    z = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="class-index targets"):
        smfl(z, np.zeros((4, 3), np.float32))
    with pytest.raises(IndexError, match="Target 3 is out of bounds."):
        smfl(z, np.array([0, 3, 1, 2]))
    with pytest.raises(ValueError, match="gamma must be a finite number >= 0"):
        smfl(z, np.zeros(4, int), gamma=-1)
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        smfl(z, np.zeros(4, int), weight=np.ones(2))


def test_softmax_focal_reductions_bitwise_identical_for_any_thread_count(simd_path):
    rng = np.random.default_rng(25)
    z = rng.standard_normal((30_000, 10)).astype(np.float32)
    t = rng.integers(0, 10, 30_000)
    for gamma in (2.0, 1.5):
        assert len({smfl(z, t, gamma, n_threads=n).tobytes() for n in (1, 2, 3)}) == 1
