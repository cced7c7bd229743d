"""cross_entropy against torch, a float64 NumPy reference and mpmath; layouts, errors, threads."""
import mpmath
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import fastloss
import reference as ref

ce = fastloss.cross_entropy
# (C,), (N, C) with few classes (rows transposed into tiles) and many (rows vectorized across
# classes), (N, C, d), (N, C, H, W)
SHAPES = [(7,), (300, 5), (70, 40), (9, 1000), (20, 6, 33), (3, 4, 17, 19)]


def make(shape, dtype, targets, rng):
    x = np.asarray(rng.standard_normal(shape) * 3, dtype)
    n_classes = shape[0] if len(shape) == 1 else shape[1]
    loss_shape = () if len(shape) == 1 else (shape[0],) + shape[2:]
    if targets == "index":
        t = np.asarray(rng.integers(0, n_classes, loss_shape))
    else:
        t = rng.random(shape)
        t = np.asarray(t / t.sum(axis=0 if len(shape) == 1 else 1, keepdims=True), dtype)
    return x, t, n_classes


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("targets", ["index", "probabilities"])
def test_against_torch(simd_path, shape, dtype, targets):
    """Every combination of weight, ignore_index, label_smoothing and reduction; torch computes
    in float64 from the same inputs."""
    rng = np.random.default_rng(7)
    x, t, n_classes = make(shape, dtype, targets, rng)
    rtol, atol = (1e-6, 1e-6) if dtype == np.float32 else (1e-12, 1e-12)
    for weight in (None, np.asarray(rng.uniform(0.2, 3, n_classes), dtype)):
        for ignore_index in ((-100, 2) if targets == "index" else (-100,)):
            for eps in (0.0, 0.15, 1.0):
                for reduction in ("none", "mean", "sum"):
                    want = F.cross_entropy(
                        torch.from_numpy(np.asarray(x, np.float64)), torch.from_numpy(
                            t if targets == "index" else np.asarray(t, np.float64)),
                        None if weight is None else torch.from_numpy(weight.astype(np.float64)),
                        ignore_index=ignore_index, reduction=reduction,
                        label_smoothing=eps).numpy()
                    got = ce(x, t, weight, ignore_index, reduction, eps)
                    assert np.shape(got) == np.shape(want)
                    assert np.asarray(got).dtype == dtype
                    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=str(
                        (weight is not None, ignore_index, eps, reduction)))


@pytest.mark.parametrize("n_classes", range(1, 18))
@pytest.mark.parametrize("targets", ["index", "probabilities"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_small_class_count(simd_path, n_classes, targets, dtype):
    """Each small C has its own transpose into tiles (16 x 16 or 8 x 8 blocks in registers, the
    rest element by element): rows in whole blocks, in a block's tail and across tiles of 128."""
    rng = np.random.default_rng(n_classes)
    x, t, _ = make((16 * 17 + 5, n_classes), dtype, targets, rng)
    want = F.cross_entropy(torch.from_numpy(np.asarray(x, np.float64)), torch.from_numpy(
        t if targets == "index" else np.asarray(t, np.float64)), reduction="none").numpy()
    got = fastloss.cross_entropy(x, t, reduction="none")
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float32_torch_agreement_in_its_own_dtype(dtype):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1000, 10)).astype(dtype)
    t = rng.integers(0, 10, 1000)
    want = F.cross_entropy(torch.from_numpy(x), torch.from_numpy(t), reduction="none").numpy()
    np.testing.assert_allclose(ce(x, t, reduction="none"), want, rtol=1e-5)


def test_torch_tensors_and_out():
    x = torch.randn(50, 8, 3)
    t = torch.randint(0, 8, (50, 3))
    out = torch.empty(50, 3)
    assert ce(x, t, reduction="none", out=out) is out
    torch.testing.assert_close(out, F.cross_entropy(x, t, reduction="none"))
    assert ce(x, t) == pytest.approx(F.cross_entropy(x, t).item(), rel=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_logits_against_mpmath(simd_path, dtype):
    """Max-subtracted log-sum-exp: finite and accurate for logits of any finite magnitude."""
    scale = {np.float32: [1.0, 50.0, 1e4, 1e30], np.float64: [1.0, 50.0, 1e4, 1e30, 1e300]}
    rng = np.random.default_rng(9)
    for s in scale[dtype]:
        x = np.asarray(rng.standard_normal((40, 6)) * s, dtype)
        x[:, 0] = x[:, 1] * (1 - 1e-3)  # near-ties
        t = rng.integers(0, 6, 40)
        got = ce(x, t, reduction="none")
        mpmath.mp.dps = 60
        want = []
        for row, k in zip(x, t):
            zs = [mpmath.mpf(float(v)) for v in row]
            m = max(zs)
            want.append(float(m + mpmath.log(sum(mpmath.exp(v - m) for v in zs)) - zs[k]))
        with np.errstate(over="ignore"):
            want = np.asarray(want).astype(dtype)
        rtol = 1e-6 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)
        assert np.all(np.isfinite(got))


def test_infinite_and_nan_logits():
    inf, nan = np.inf, np.nan
    x = np.array([[inf, 0, 1], [nan, 0, 1], [-inf, 0, 1], [-inf, 0, 1], [-inf, -inf, -inf]])
    t = np.array([0, 1, 1, 0, 0])
    got = ce(x, t, reduction="none")
    want = F.cross_entropy(torch.from_numpy(x), torch.from_numpy(t), reduction="none").numpy()
    np.testing.assert_array_equal(got, want)  # nan, nan, finite, inf, nan: as torch
    assert np.isnan(got[0]) and np.isnan(got[1]) and np.isinf(got[3])
    # smoothing over a -inf logit: -log p = inf with a positive weight, 0 with a zero weight
    assert ce(x[2], t[2], label_smoothing=0.1) == np.inf
    assert ce(x[2], t[2], np.array([0.0, 1, 1]), label_smoothing=0.1) == pytest.approx(
        float(ref.cross_entropy(x[2, 1:], 0, np.array([1.0, 1]))[0]) * 0.9
        + 0.1 / 3 * float(-np.log(np.exp(x[2, 1:]) / np.exp(x[2, 1:]).sum()).sum()))
    # a zero probability on a -inf logit contributes 0 (torch: nan)
    assert np.isfinite(ce(x[2], np.array([0.0, 0.5, 0.5])))


@pytest.mark.parametrize("target_dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8,
                                          np.uint16, np.uint32, np.uint64])
def test_index_dtypes(simd_path, target_dtype):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((500, 12)).astype(np.float32)
    t = rng.integers(0, 12, 500)
    got = ce(x, t.astype(target_dtype), reduction="none", ignore_index=3)
    want, _ = ref.cross_entropy(x, t, ignore_index=3)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_non_contiguous_layouts_and_float16():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((6, 5, 40)).astype(np.float32)
    t = rng.integers(0, 5, (6, 40))
    want = ce(x, t, reduction="none")
    strided = np.repeat(x, 2, axis=2)[:, :, ::2]
    np.testing.assert_array_equal(ce(strided, np.asfortranarray(t), reduction="none"), want)
    h = ce(x.astype(np.float16), t, reduction="none")
    assert h.dtype == np.float16
    np.testing.assert_array_equal(h, ce(x.astype(np.float16).astype(np.float32), t,
                                        reduction="none").astype(np.float16))


@pytest.mark.parametrize("bad", [7, -1, 2**40])
def test_out_of_range_index(simd_path, bad):
    x = np.zeros((5000, 7), np.float32)
    t = np.zeros(5000, np.int64)
    t[4000] = bad
    t[4500] = 9  # a later bad one: the first is reported
    x_before, t_before = x.copy(), t.copy()
    with pytest.raises(IndexError, match=f"^Target {bad} is out of bounds.$"):
        ce(x, t)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(t, t_before)
    for ignore_index in (-100, -1, -2):  # 2**64 - 1 must not pass for any negative class
        with pytest.raises(IndexError, match=f"Target {2**64 - 1} is out of bounds."):
            ce(x[:3], np.array([0, 2**64 - 1, 1], np.uint64), ignore_index=ignore_index)


def test_mean_divides_like_torch_when_the_weights_sum_to_zero():
    x = np.array([[0.5, 1, 2], [1, 0, 0], [2, 1, 0], [0, 0, 1]])
    t = np.array([0, 1, 2, 1])
    w = np.array([1.0, -1, 1])
    want = F.cross_entropy(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(w))
    assert np.isinf(want.item())
    assert ce(x, t, w) == want.item()


def test_ignored_and_empty():
    x = np.ones((4, 3), np.float32)
    t = np.full(4, -100)
    assert np.isnan(ce(x, t)) and ce(x, t, reduction="sum") == 0
    np.testing.assert_array_equal(ce(x, t, reduction="none"), 0)
    assert np.isnan(ce(np.ones((0, 3)), np.zeros(0, int)))
    assert np.isnan(ce(np.ones((0, 3)), np.ones((0, 3))))
    assert ce(np.ones((0, 3)), np.zeros(0, int), reduction="none").shape == (0,)
    assert ce(np.ones((2, 3, 0)), np.zeros((2, 0), int), reduction="none").shape == (2, 0)


def test_errors():
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"target of shape \(5,\) does not match input of "
                                         r"shape \(4, 3\): class indices must have shape \(4,\)"):
        ce(x, np.zeros(5, int))
    with pytest.raises(ValueError, match="class probabilities must have the input's shape"):
        ce(x, np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        ce(x, np.zeros(4, int), np.ones(4))
    for eps in (-0.1, 1.5, np.nan):
        with pytest.raises(ValueError, match="label_smoothing must be between 0.0 and 1.0"):
            ce(x, np.zeros(4, int), label_smoothing=eps)
    with pytest.raises(TypeError, match="label_smoothing must be a float"):
        ce(x, np.zeros(4, int), label_smoothing="0.1")
    with pytest.raises(ValueError, match="ignore_index is only for class-index targets"):
        ce(x, np.zeros((4, 3)), ignore_index=0)
    with pytest.raises(TypeError, match="ignore_index must be an int"):
        ce(x, np.zeros(4, int), ignore_index=1.5)
    with pytest.raises(TypeError, match="input must be a float16, float32 or float64 array"):
        ce(np.zeros((4, 3), int), np.zeros(4, int))
    with pytest.raises(TypeError, match="target must hold class indices"):
        ce(x, np.zeros(4, bool))
    with pytest.raises(ValueError, match="input must have a class dimension"):
        ce(np.float32(1), np.int64(0))
    with pytest.raises(ValueError, match="out has shape"):
        ce(x, np.zeros(4, int), reduction="none", out=np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="reduction must be one of"):
        ce(x, np.zeros(4, int), reduction="batchmean")


@pytest.mark.parametrize("targets", ["index", "probabilities"])
@pytest.mark.parametrize("shape", [(20_000, 10), (2_000, 100), (4, 21, 64, 64)])
def test_reductions_bitwise_identical_for_any_thread_count(simd_path, targets, shape):
    rng = np.random.default_rng(12)
    x, t, n_classes = make(shape, np.float32, targets, rng)
    w = rng.uniform(0.5, 2, n_classes).astype(np.float32)
    for reduction in ("sum", "mean"):
        results = {ce(x, t, w, reduction=reduction, label_smoothing=0.1,
                      n_threads=n).tobytes() for n in (1, 2, 3)}
        assert len(results) == 1


@st.composite
def ce_arguments(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n_classes = draw(st.integers(1, 40))
    spatial = tuple(draw(st.lists(st.integers(0, 5), max_size=2)))
    one_row = draw(st.booleans()) and not spatial
    shape = (n_classes,) if one_row else (draw(st.integers(0, 30)), n_classes) + spatial
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = np.asarray(rng.standard_normal(shape) * draw(st.sampled_from([0.1, 3, 30])), dtype)
    if draw(st.booleans()):
        loss_shape = () if one_row else (shape[0],) + spatial
        t = np.asarray(rng.integers(-1, n_classes, loss_shape))
        ignore = -1
    else:
        t = np.asarray(rng.random(shape), dtype)
        ignore = -100
    w = draw(st.none() | st.just(np.asarray(rng.uniform(0, 2, n_classes), dtype)))
    eps = draw(st.sampled_from([0.0, 0.3]))
    reduction = draw(st.sampled_from(["none", "mean", "sum"]))
    return x, t, w, ignore, eps, reduction, draw(st.sampled_from([1, 2]))


@settings(max_examples=300, deadline=None)
@given(ce_arguments())
def test_property_agrees_with_float64_reference(args):
    x, t, w, ignore, eps, reduction, threads = args
    got = ce(x, t, w, ignore, reduction, eps, n_threads=threads)
    loss, denominator = ref.cross_entropy(x, t, w, ignore, eps)
    want = ref.reduce(loss, reduction) if reduction != "mean" else (
        loss.sum() / denominator if denominator else np.nan)
    rtol = 1e-6 if x.dtype == np.float32 else 1e-12
    atol = rtol * (1 + (np.abs(loss).sum() / (denominator or 1) if reduction != "none" else 1))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
