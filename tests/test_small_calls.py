"""Small calls through the typed boundary, empty softmax input, autograd tensors, the namespace.

A small call of the common kind (NumPy arrays, float32/float64 input, native byte order, 1-D or
C-contiguous, no weights) is taken by _kernels.binary_small / softmax_small; every other call
goes through the general path. Both must give the reference's values and the same errors.
"""
import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastloss
from fastloss import _kernels
import reference as ref

BINARY = {
    "binary_cross_entropy": (fastloss.binary_cross_entropy, lambda x, y: ref.bce(x, y)),
    "binary_cross_entropy_with_logits": (fastloss.binary_cross_entropy_with_logits,
                                         lambda x, y: ref.bce_with_logits(x, y)),
    "sigmoid_focal_loss": (lambda x, y, reduction="mean": fastloss.sigmoid_focal_loss(
        x, y, reduction=reduction), lambda x, y: ref.torchvision_sigmoid_focal_loss(
        torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)).numpy()),
}
RTOL = {np.float32: 2e-6, np.float64: 1e-13}


def _operands(name, dtype, shape, target_dtype, rng):
    x = rng.standard_normal(shape) * 3
    if name == "binary_cross_entropy":
        x = rng.random(shape)
    y = rng.random(shape) < 0.5
    if np.dtype(target_dtype).kind == "f":
        y = rng.random(shape)
    return np.asarray(x, dtype), np.asarray(y, target_dtype)


@pytest.mark.parametrize("name", BINARY)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("target_dtype", ["same", np.bool_, np.uint8, np.int64])
@pytest.mark.parametrize("shape", [(100,), (7, 11), (), (1,)])
def test_small_binary_calls_match_the_reference(name, dtype, target_dtype, shape):
    rng = np.random.default_rng(1)
    x, y = _operands(name, dtype, shape, dtype if target_dtype == "same" else target_dtype, rng)
    fn, reference = BINARY[name]
    want = reference(x, y)
    assert _kernels.binary_small(name, x, y, "mean", None) is not None  # the typed path
    for reduction in ("none", "sum", "mean"):
        got = fn(x, y, reduction=reduction)
        assert np.asarray(got).dtype == dtype and np.shape(got) == np.shape(ref.reduce(
            want, reduction))
        np.testing.assert_allclose(got, ref.reduce(want, reduction),
                                   rtol=max(RTOL[dtype], 1e-10 * (name == "sigmoid_focal_loss")))


def test_strided_and_read_only_operands_take_the_typed_path(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(300).astype(np.float32)
    y = rng.random(300).astype(np.float32)
    path = tmp_path / "x.npy"
    np.save(path, x)
    xm = np.load(path, mmap_mode="r")  # a read-only memmap: const memoryviews take it
    yr = y.copy()
    yr.flags.writeable = False
    for xs, ys in ((x[::3], y[::-3]), (xm, yr), (xm[::2], yr[1::2])):
        assert _kernels.binary_small("binary_cross_entropy_with_logits", xs, ys, "sum", 1)
        got = fastloss.binary_cross_entropy_with_logits(xs, ys, reduction="sum")
        assert got == pytest.approx(ref.bce_with_logits(xs, ys).sum(), rel=1e-6)


@pytest.mark.parametrize("x,y", [
    (np.zeros(10, np.float16), np.zeros(10, np.float16)),              # converted dtype
    (np.zeros(10, ">f4"), np.zeros(10, ">f4")),                         # byte-swapped
    (np.zeros((4, 6), np.float32)[:, ::2], np.zeros((4, 3), np.float32)),  # N-d strided
    (np.zeros(10, np.float32), np.zeros(10, np.float64)),              # mixed float types
    (np.zeros(10, np.float32), np.zeros(10, np.int32)),                 # converted target
    (np.zeros(10, np.float32), np.zeros(11, np.float32)),               # bad shape
    (np.zeros(10, np.int64), np.zeros(10, np.int64)),                   # bad input dtype
    (np.zeros(10**5, np.float32), np.zeros(10**5, np.float32)),         # not small
    (np.zeros(0, np.float32), np.zeros(0, np.float32)),                 # empty
    (torch.zeros(10), torch.zeros(10)),
    ([0.0, 1.0], [0.0, 1.0]),
])
def test_other_calls_take_the_general_path(x, y):
    assert _kernels.binary_small("binary_cross_entropy_with_logits", x, y, "mean", None) is None


@pytest.mark.parametrize("reduction,n_threads", [
    ("avg", None), (None, None), (np.array(["mean"]), None), ("mean", 0), ("mean", True),
    ("mean", 2.0), ("mean", 1025)])
def test_bad_arguments_are_handed_to_the_general_path(reduction, n_threads):
    x = np.zeros(10, np.float32)
    assert _kernels.binary_small("binary_cross_entropy", x, x, reduction, n_threads) is None
    assert _kernels.softmax_small(x.reshape(2, 5), np.zeros(2, np.int64), -100, 0.0, reduction,
                                  n_threads) is None


def test_small_calls_keep_the_errors():
    x = np.full(100, 0.5, np.float32)
    bad = x.copy()
    bad[7] = 1.5
    with pytest.raises(ValueError, match="all elements of input should be between 0 and 1"):
        fastloss.binary_cross_entropy(bad, x)
    with pytest.raises(ValueError, match="all elements of target should be between 0 and 1"):
        fastloss.binary_cross_entropy_with_logits(x, bad)
    with pytest.raises(ValueError, match="reduction must be one of"):
        fastloss.binary_cross_entropy(x, x, reduction="avg")
    with pytest.raises(ValueError, match="n_threads must be between 1 and 1024"):
        fastloss.binary_cross_entropy(x, x, n_threads=0)
    with pytest.raises(TypeError, match="n_threads must be an int"):
        fastloss.binary_cross_entropy(x, x, n_threads=True)
    z = np.zeros((100, 10), np.float32)
    t = np.zeros(100, np.int64)
    t[3] = 12
    with pytest.raises(IndexError, match="Target 12 is out of bounds."):
        fastloss.cross_entropy(z, t)
    with pytest.raises(ValueError, match="label_smoothing must be between 0.0 and 1.0"):
        fastloss.cross_entropy(z, t, label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"class indices must have shape \(100,\)"):
        fastloss.cross_entropy(z, t[:50])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("index_dtype", [np.int8, np.uint8, np.int32, np.int64, np.uint64])
def test_small_softmax_calls_match_torch(dtype, index_dtype):
    rng = np.random.default_rng(3)
    z = (rng.standard_normal((100, 10)) * 3).astype(dtype)
    t = rng.integers(0, 10, 100).astype(index_dtype)
    assert _kernels.softmax_small(z, t, -100, 0.0, "mean", None) is not None
    zt, tt = torch.from_numpy(z.astype(np.float64)), torch.from_numpy(t.astype(np.int64))
    for reduction in ("none", "sum", "mean"):
        for eps in (0.0, 0.2):
            want = F.cross_entropy(zt, tt, reduction=reduction, label_smoothing=eps).numpy()
            got = fastloss.cross_entropy(z, t, reduction=reduction, label_smoothing=eps)
            assert np.asarray(got).dtype == dtype and np.shape(got) == want.shape
            np.testing.assert_allclose(got, want, rtol=RTOL[dtype] * 5)
        want, _ = ref.cross_entropy(z, t)
        got = fastloss.softmax_focal_loss(z, t, gamma=0.0, reduction=reduction)
        np.testing.assert_allclose(got, ref.reduce(want, reduction) if reduction != "mean"
                                   else want.mean(), rtol=RTOL[dtype] * 5)
    got = fastloss.softmax_focal_loss(z, t, gamma=2.0, reduction="none")
    want, _ = ref.torch_softmax_focal_loss(np.float64(z), t.astype(np.int64), 2.0)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_small_softmax_ignore_index():
    z = np.random.default_rng(4).standard_normal((6, 3)).astype(np.float32)
    t = np.array([0, 2, -100, 1, -100, 2])
    want = F.cross_entropy(torch.from_numpy(z), torch.from_numpy(t)).item()
    assert fastloss.cross_entropy(z, t) == pytest.approx(want, rel=1e-6)
    t[:] = 1
    want = F.cross_entropy(torch.from_numpy(z), torch.from_numpy(t), ignore_index=1).item()
    assert np.isnan(want) and np.isnan(fastloss.cross_entropy(z, t, ignore_index=1))


# ---- empty softmax input costs nothing of the class count's size ----

@pytest.mark.parametrize("loss", ["cross_entropy", "softmax_focal_loss"])
def test_empty_softmax_input_with_a_huge_class_count(loss):
    fn = getattr(fastloss, loss)
    for n_classes in (2**31, 2**40):  # ones(C) would be 8 GiB and 4 TiB
        x = np.empty((0, n_classes), np.float32)
        t = np.empty(0, np.int64)
        assert fn(x, t, reduction="sum") == 0
        assert np.isnan(fn(x, t, reduction="mean"))
        none = fn(x, t, reduction="none")
        assert none.shape == (0,) and none.dtype == np.float32


def test_empty_softmax_input_matches_torch():
    x, t = torch.empty(0, 5), torch.empty(0, dtype=torch.int64)
    for reduction in ("sum", "mean", "none"):
        want = F.cross_entropy(x, t, reduction=reduction).numpy()
        got = fastloss.cross_entropy(x.numpy(), t.numpy(), reduction=reduction)
        np.testing.assert_array_equal(got, want)
        assert np.shape(got) == want.shape


# ---- autograd tensors: NumPy values; fastloss.torch for autograd ----

def test_tensors_that_require_grad_are_refused():
    x = torch.randn(10, 3, requires_grad=True)
    y = torch.rand(10, 3)
    t = torch.randint(0, 3, (10,))
    calls = [lambda: fastloss.binary_cross_entropy_with_logits(x, y),
             lambda: fastloss.binary_cross_entropy_with_logits(y, y, pos_weight=x[0]),
             lambda: fastloss.sigmoid_focal_loss(x, y),
             lambda: fastloss.cross_entropy(x, t),
             lambda: fastloss.softmax_focal_loss(x, t, weight=torch.ones(3, requires_grad=True)),
             lambda: fastloss.StreamingLoss("cross_entropy").update(x, t)]
    for call in calls:
        with pytest.raises(TypeError, match=r"requires grad: these functions return NumPy "
                                            r"values; pass \w+\.detach\(\) to evaluate it, or "
                                            r"use fastloss\.torch"):
            call()
    want = torch.nn.functional.binary_cross_entropy_with_logits(x, y).item()
    got = fastloss.binary_cross_entropy_with_logits(x.detach(), y)
    assert got == pytest.approx(want, rel=1e-6)


def test_public_namespace():
    public = {name for name in dir(fastloss) if not name.startswith("_")}
    assert "os" not in public and "warnings" not in public
    assert set(fastloss.__all__) <= public
    # the package's own submodules appear once imported (by it, or by other tests)
    modules = {name for name in public if inspect.ismodule(getattr(fastloss, name))
               and getattr(fastloss, name).__name__ == f"fastloss.{name}"}
    assert public - modules == set(fastloss.__all__)


def test_array_subclasses_are_read_as_plain_arrays():
    rng = np.random.default_rng(5)
    z = rng.standard_normal((20, 4))
    y = (rng.random((20, 4)) < 0.5).astype(np.float64)
    t = rng.integers(0, 4, 20)
    for loss, args in ((fastloss.binary_cross_entropy_with_logits, (z, y)),
                       (fastloss.cross_entropy, (z, t))):
        for reduction in ("none", "mean"):
            want = loss(*args, reduction=reduction)
            np.testing.assert_array_equal(loss(np.asmatrix(args[0]), args[1],
                                               reduction=reduction), want)
            np.testing.assert_array_equal(loss(*map(np.ma.asarray, args), reduction=reduction),
                                          want)
