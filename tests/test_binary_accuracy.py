"""Binary losses against float64 references, mpmath at the extremes, and torch."""
import mpmath
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastloss
import reference as ref

F32_TOL = dict(rtol=1e-6, atol=1e-37)  # the bound: 1e-6 relative, 1e-37 below normals
F64_TOL = dict(rtol=1e-13, atol=0)
TOL = {np.float32: F32_TOL, np.float64: F64_TOL}


def dense_logits(dtype):
    """Logits of every magnitude the polynomials see, plus random ones."""
    rng = np.random.default_rng(0)
    grid = np.linspace(-110, 110, 400_001)
    return np.concatenate([grid, rng.standard_normal(200_000) * 20,
                           np.geomspace(1e-30, 1e4, 2000), -np.geomspace(1e-30, 1e4, 2000)]
                          ).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("labels", ["zeros", "ones", "soft", "soft_near_one"])
def test_logits_elementwise_against_float64(simd_path, dtype, labels):
    x = dense_logits(dtype)
    rng = np.random.default_rng(1)
    y = {"zeros": np.zeros(x.size), "ones": np.ones(x.size), "soft": rng.random(x.size),
         "soft_near_one": 1 - rng.random(x.size) * 1e-3}[labels].astype(dtype)
    pw = np.asarray(rng.uniform(0.1, 10), dtype)
    got = fastloss.binary_cross_entropy_with_logits(x, y, pos_weight=pw, reduction="none")
    assert got.dtype == dtype and got.shape == x.shape
    np.testing.assert_allclose(got, ref.bce_with_logits(x, y, pos_weight=pw), **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_probabilities_elementwise_against_float64(simd_path, dtype):
    rng = np.random.default_rng(2)
    p = np.concatenate([rng.random(200_000), np.geomspace(1e-45, 1, 20_000),
                        1 - np.geomspace(1e-17, 1, 20_000), [0.0, 1.0, 0.5]]).astype(dtype)
    p = np.clip(p, 0, 1)  # 1 - 1e-17 rounds to 1; geomspace can overshoot by an ulp
    for y in (np.zeros(p.size), np.ones(p.size), rng.random(p.size)):
        y = y.astype(dtype)
        got = fastloss.binary_cross_entropy(p, y, reduction="none")
        np.testing.assert_allclose(got, ref.bce(p, y), **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_probabilities_hard_labels_take_one_log_with_the_same_values(simd_path, dtype):
    """A chunk of targets that are all 0 or 1 computes only the logarithm its label keeps: the
    same values as a chunk with a soft label in it, which computes both."""
    rng = np.random.default_rng(3)
    chunk = 512  # FL_CHUNK
    p = np.concatenate([rng.random(chunk), np.geomspace(1e-45, 1, chunk),
                        1 - np.geomspace(1e-17, 1, chunk), [0.0, 1.0] * (chunk // 2)])
    p = np.clip(p, 0, 1).astype(dtype)
    y = rng.integers(0, 2, p.size).astype(dtype)
    hard = fastloss.binary_cross_entropy(p, y, reduction="none", n_threads=1)
    np.testing.assert_allclose(hard, ref.bce(p, y), **TOL[dtype])
    y_with_soft = y.copy()
    y_with_soft[::chunk] = 0.5  # one soft label in each chunk: the two-logarithm loop
    both = fastloss.binary_cross_entropy(p, y_with_soft, reduction="none", n_threads=1)
    kept = y_with_soft != 0.5
    np.testing.assert_array_equal(hard[kept], both[kept])


# mpmath at the extremes: the torch formula evaluated with 100 digits, so its cancellation
# (x - x*y for large x) costs nothing.
EXTREME_LOGITS = [0.0, 1e-30, 1e-8, 0.5, 1.0, 15.0, 17.0, 30.0, 50.0, 87.0, 88.0, 89.0, 100.0,
                  1e3, 1e4, 1e30, 3e38]


def mp_bce_with_logits(x, y, pw):
    mpmath.mp.dps = 100
    x, y, pw = mpmath.mpf(float(x)), mpmath.mpf(float(y)), mpmath.mpf(float(pw))
    log_sigmoid = -mpmath.log1p(mpmath.exp(-x))
    return float((1 - y) * x - (1 + (pw - 1) * y) * log_sigmoid)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("y", [0.0, 1.0, 0.25, 0.999])
def test_logits_extremes_against_mpmath(simd_path, dtype, y):
    x = np.array(EXTREME_LOGITS + [-v for v in EXTREME_LOGITS], dtype)
    yy = np.full(x.size, y, dtype)
    pw = dtype(3.0)
    got = fastloss.binary_cross_entropy_with_logits(x, yy, pos_weight=pw, reduction="none")
    want = np.array([mp_bce_with_logits(a, b, pw) for a, b in zip(x, yy)])
    with np.errstate(over="ignore"):
        want = want.astype(dtype)  # 3 * 3e38 overflows float32, as it should
    np.testing.assert_allclose(got, want, **TOL[dtype])


def mp_bce(p, y):
    mpmath.mp.dps = 50
    p, y = mpmath.mpf(float(p)), mpmath.mpf(float(y))
    log_p = max(mpmath.log(p), -100) if p > 0 else mpmath.mpf(-100)
    log_q = max(mpmath.log1p(-p), -100) if p < 1 else mpmath.mpf(-100)
    return float((y - 1) * log_q - y * log_p)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_probabilities_extremes_against_mpmath(simd_path, dtype):
    tiny = np.finfo(dtype).smallest_subnormal
    eps = np.finfo(dtype).eps
    p = np.array([0, tiny, 1e-40, 1e-30, 1e-10, 1e-4, 0.3, 0.5, 0.7, 1 - 1e-4, 1 - eps, 1],
                 dtype)
    for y in (0.0, 1.0, 0.3):
        yy = np.full(p.size, y, dtype)
        got = fastloss.binary_cross_entropy(p, yy, reduction="none")
        want = np.array([mp_bce(a, b) for a, b in zip(p, yy)])
        np.testing.assert_allclose(got, want, **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_infinite_and_nan_logits(simd_path, dtype):
    inf, nan = np.inf, np.nan
    x = np.array([inf, inf, -inf, -inf, inf, nan, nan], dtype)
    y = np.array([1, 0, 0, 1, 0.5, 0, 1], dtype)
    got = fastloss.binary_cross_entropy_with_logits(x, y, reduction="none")
    np.testing.assert_array_equal(got, [0, inf, 0, inf, inf, nan, nan])
    # a zero weight or pos_weight removes an infinite term instead of making it nan
    got = fastloss.binary_cross_entropy_with_logits(x[:4], y[:4], weight=np.zeros(4, dtype),
                                                    reduction="none")
    np.testing.assert_array_equal(got, 0)
    got = fastloss.binary_cross_entropy_with_logits(x[:4], y[:4], pos_weight=dtype(0),
                                                    reduction="none")
    np.testing.assert_array_equal(got, [0, inf, 0, 0])
    assert np.isnan(fastloss.binary_cross_entropy_with_logits(x, y))
    # nan stays nan, whatever multiplies it
    got = fastloss.binary_cross_entropy_with_logits(x[5:], y[5:], weight=np.zeros(2, dtype),
                                                    pos_weight=dtype(0), reduction="none")
    assert np.isnan(got).all()


def test_mean_of_1e8_float32_within_1e7_of_float64():
    """The reduction the issue names: float64 accumulation over blocks, not a float32 sum."""
    n = 10**8
    rng = np.random.default_rng(3)
    x = rng.standard_normal(n, dtype=np.float32)
    y = (rng.random(n, dtype=np.float32) < 0.3).astype(np.float32)
    got = fastloss.binary_cross_entropy_with_logits(x, y)
    # the float64 reference in slices, so the test's memory stays near its inputs' 0.8 GB
    step = 10**7
    want = sum(np.sum(ref.bce_with_logits(x[i:i + step], y[i:i + step]))
               for i in range(0, n, step)) / n
    assert got.dtype == np.float32
    assert abs(float(got) - want) <= 1e-7 * want


# ---- torch ----

TORCH_SHAPES = [(), (7,), (33, 5), (4, 3, 17), (2, 3, 9, 11)]


def _weight_shapes(shape):
    """Weight shapes torch broadcasts: scalar, trailing dimension, per-row, per-channel."""
    shapes = [(), shape]
    if len(shape) >= 1:
        shapes.append(shape[-1:])
    if len(shape) >= 2:
        shapes.append(shape[:1] + (1,) * (len(shape) - 1))
    if len(shape) == 4:
        shapes.append((shape[1], 1, 1))
    return shapes


@pytest.mark.parametrize("shape", TORCH_SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_against_torch(simd_path, shape, dtype, reduction):
    """Semantics (broadcasting, weights, reductions, shapes) against torch, which computes in
    float64 from the same inputs: torch's float32 formula is itself off by a few 1e-6."""
    rng = np.random.default_rng(4)
    x = np.asarray(rng.standard_normal(shape) * 4, dtype)
    p = np.asarray(rng.random(shape), dtype)
    y = np.asarray(rng.random(shape), dtype)
    rtol = 2e-6 if dtype == np.float32 else 1e-12

    def t(a):
        return torch.from_numpy(np.asarray(a, np.float64))

    for wshape in _weight_shapes(shape):
        w = np.asarray(rng.uniform(0.1, 2, wshape), dtype)
        for pwshape in _weight_shapes(shape):
            pw = np.asarray(rng.uniform(0.1, 5, pwshape), dtype)
            want = F.binary_cross_entropy_with_logits(t(x), t(y), weight=t(w), pos_weight=t(pw),
                                                      reduction=reduction).numpy()
            got = fastloss.binary_cross_entropy_with_logits(x, y, w, reduction, pw)
            np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-30)
            assert np.shape(got) == np.shape(want) and np.asarray(got).dtype == dtype
        want = F.binary_cross_entropy(t(p), t(y), weight=t(w), reduction=reduction).numpy()
        got = fastloss.binary_cross_entropy(p, y, w, reduction)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-30)
        assert np.shape(got) == np.shape(want) and np.asarray(got).dtype == dtype


def test_torch_tensors_in_and_out():
    x = torch.randn(100, 10)
    y = (torch.rand(100, 10) < 0.5).float()
    pw = torch.full((10,), 2.0)
    want = F.binary_cross_entropy_with_logits(x, y, pos_weight=pw).item()
    got = fastloss.binary_cross_entropy_with_logits(x, y, pos_weight=pw)
    assert got == pytest.approx(want, rel=1e-6)
    out = torch.empty(100, 10)
    assert fastloss.binary_cross_entropy_with_logits(x, y, reduction="none", out=out) is out
    torch.testing.assert_close(out, F.binary_cross_entropy_with_logits(x, y, reduction="none"))
    with pytest.raises(TypeError, match="bfloat16"):
        fastloss.binary_cross_entropy_with_logits(x.bfloat16(), y)
