"""Binary losses: input forms, layouts, broadcasting, out=, errors, and inputs left untouched."""
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastloss
from fastloss import _kernels
import reference as ref
from memory import peak_allocation

bce = fastloss.binary_cross_entropy
bcel = fastloss.binary_cross_entropy_with_logits
LOSSES = {"bce": (bce, ref.bce), "bce_with_logits": (bcel, ref.bce_with_logits)}


def inputs_for(name, shape, dtype, rng):
    x = rng.random(shape) if name == "bce" else rng.standard_normal(shape) * 3
    return np.asarray(x, dtype), np.asarray(rng.random(shape) < 0.5, dtype)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("target_dtype", [np.bool_, np.uint8, np.int64, np.int32, np.int8,
                                          np.float64, np.float16])
def test_target_dtypes(simd_path, rng, name, target_dtype):
    fn, reference = LOSSES[name]
    x, y = inputs_for(name, (3001,), np.float32, rng)
    got = fn(x, y.astype(target_dtype), reduction="none")
    np.testing.assert_allclose(got, reference(x, y), rtol=1e-6)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("bad", [2, -1, 255])
def test_integer_targets_outside_unit_interval(name, bad):
    fn, _ = LOSSES[name]
    y = np.zeros(5000, np.int64)
    y[4321] = bad
    with pytest.raises(ValueError, match="all elements of target should be between 0 and 1"):
        fn(np.full(5000, 0.5, np.float32), y.astype(np.uint8) if bad > 0 else y)


@pytest.mark.parametrize("name", LOSSES)
def test_float16_is_computed_in_float32(rng, name):
    fn, reference = LOSSES[name]
    x, y = inputs_for(name, (100, 7), np.float16, rng)
    got = fn(x, y, reduction="none")
    assert got.dtype == np.float16 and got.shape == x.shape
    np.testing.assert_array_equal(got, fn(x.astype(np.float32), y.astype(np.float32),
                                          reduction="none").astype(np.float16))
    assert fn(x, y).dtype == np.float16
    out = np.empty_like(x)
    assert fn(x, y, reduction="none", out=out) is out
    np.testing.assert_array_equal(out, got)
    big_endian = fn(x.astype(">f2"), y.astype(">f4"), reduction="none")
    assert big_endian.dtype == np.float16 and big_endian.dtype.isnative
    np.testing.assert_array_equal(big_endian, got)


def _layouts(a):
    """The same values in other memory layouts: strided, reversed, transposed (N-d)."""
    big = np.repeat(a.reshape(-1), 3).reshape(a.size, 3)
    yield "1-D strided", big[:, 1]
    yield "1-D reversed", np.ascontiguousarray(a.reshape(-1)[::-1])[::-1]
    if a.ndim >= 2:
        yield "transposed", np.asfortranarray(a)
    yield "misaligned", np.frombuffer(b"\0" + a.tobytes(), a.dtype, a.size, 1).reshape(a.shape)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layouts_give_the_same_values(simd_path, rng, name, dtype):
    fn, _ = LOSSES[name]
    x, y = inputs_for(name, (70, 130), dtype, rng)
    want = fn(x, y, reduction="none")
    for x_name, x_layout in _layouts(x):
        for y_name, y_layout in _layouts(y):
            if x_layout.ndim != y_layout.ndim:  # a 1-D layout pairs with a flat counterpart
                x_layout, y_layout = x_layout.reshape(-1), y_layout.reshape(-1)
            got = fn(x_layout, y_layout, reduction="none")
            np.testing.assert_array_equal(got.reshape(x.shape), want, err_msg=x_name + y_name)
            assert fn(x_layout, y_layout, reduction="sum") == pytest.approx(float(want.sum()),
                                                                           rel=1e-6)


@pytest.mark.parametrize("name", LOSSES)
def test_read_only_memmaps(tmp_path, rng, name):
    fn, reference = LOSSES[name]
    x, y = inputs_for(name, (1000, 10), np.float32, rng)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    ym = np.load(tmp_path / "y.npy", mmap_mode="r")
    assert not xm.flags.writeable
    np.testing.assert_allclose(fn(xm, ym, reduction="none"), reference(x, y), rtol=1e-6)
    assert fn(xm, ym) == pytest.approx(reference(x, y).mean(), rel=1e-6)


@pytest.mark.parametrize("name", LOSSES)
def test_inputs_are_not_modified(rng, name):
    fn, _ = LOSSES[name]
    x, y = inputs_for(name, (50, 8), np.float32, rng)
    w = rng.random(8).astype(np.float32)
    copies = [a.copy() for a in (x, y, w)]
    fn(x, y, w, reduction="none")
    fn(x, y, w)
    for a, c in zip((x, y, w), copies):
        np.testing.assert_array_equal(a, c)


WEIGHT_CASES = [  # (input shape, weight shape): every broadcast pattern, contiguous or not
    ((1000, 10), ()), ((1000, 10), (10,)), ((1000, 10), (1000, 1)), ((1000, 10), (1000, 10)),
    ((1000, 3), (1000, 1)), ((4, 6, 8, 9), (6, 1, 1)), ((4, 6, 8, 9), (1, 6, 8, 1)),
    ((40, 3, 50), (40, 1, 50)), ((5000,), (1,)), ((7, 1, 5), (1, 5)), ((2, 5000), (5000,)),
]


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("shape,wshape", WEIGHT_CASES)
def test_weight_broadcasting(simd_path, rng, name, shape, wshape):
    fn, reference = LOSSES[name]
    x, y = inputs_for(name, shape, np.float32, rng)
    w = np.asarray(rng.uniform(0.5, 2, wshape))  # float64: converted to the input's dtype
    np.testing.assert_allclose(fn(x, y, w, reduction="none"), reference(x, y, w), rtol=2e-6)
    if name == "bce_with_logits":
        got = bcel(x, y, pos_weight=w, reduction="none")
        np.testing.assert_allclose(got, ref.bce_with_logits(x, y, pos_weight=w), rtol=2e-6)
        strided = w[..., ::-1] if w.ndim else w
        got = bcel(x, y, strided, pos_weight=w, reduction="sum")
        want = ref.bce_with_logits(x, y, strided, w).sum()
        assert got == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("name", LOSSES)
def test_empty_and_0d(name):
    fn, reference = LOSSES[name]
    empty = np.zeros((0, 3), np.float32)
    assert np.isnan(fn(empty, empty)) and fn(empty, empty).dtype == np.float32
    assert fn(empty, empty, reduction="sum") == 0
    assert fn(empty, empty, reduction="none").shape == (0, 3)
    x, y = np.float64(0.25), np.float64(1.0)
    got = fn(x, y, reduction="none")
    assert got.shape == () and got == pytest.approx(float(reference(x, y)), rel=1e-13)
    assert fn(0.25, 1.0) == pytest.approx(float(reference(x, y)), rel=1e-13)


# ---- out= ----

def test_out_is_filled_and_returned(rng):
    x, y = inputs_for("bce_with_logits", (300, 3), np.float64, rng)
    out = np.full(x.shape, np.nan)
    assert bcel(x, y, reduction="none", out=out) is out
    np.testing.assert_allclose(out, ref.bce_with_logits(x, y), rtol=1e-13)


@pytest.mark.parametrize("out,message", [
    (np.empty((10, 4), np.float32), "shape"),
    (np.empty((10, 3), np.float64), "dtype"),
    (np.empty((3, 10), np.float32).T, "C-contiguous"),
    ([[0.0] * 3] * 10, "NumPy array"),
])
def test_bad_out(out, message):
    x = np.zeros((10, 3), np.float32)
    with pytest.raises(ValueError, match=message):
        bcel(x, x, reduction="none", out=out)


def test_out_tensors_that_cannot_be_written_in_place():
    x = np.zeros((10, 3), np.float32)
    with pytest.raises(ValueError, match="requires grad"):
        bcel(x, x, reduction="none", out=torch.zeros(10, 3, requires_grad=True))
    with pytest.raises(ValueError, match="lazily negated"):
        bcel(x, x, reduction="none", out=torch._neg_view(torch.zeros(10, 3)))


def test_out_read_only_overlapping_or_with_a_reduction():
    x = np.zeros((10, 3), np.float32)
    y = np.zeros((10, 3), np.float32)
    ro = np.zeros((10, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        bcel(x, y, reduction="none", out=ro)
    with pytest.raises(ValueError, match="shares memory with input"):
        bcel(x, y, reduction="none", out=x)
    with pytest.raises(ValueError, match="shares memory with target"):
        bcel(x, y, reduction="none", out=y)
    with pytest.raises(ValueError, match="only used with reduction='none'"):
        bcel(x, y, out=np.empty_like(x))


# ---- errors ----

@pytest.mark.parametrize("name", LOSSES)
def test_shape_mismatch_names_both_shapes(name):
    fn, _ = LOSSES[name]
    with pytest.raises(ValueError, match=r"target shape \(4, 3\) does not match input shape "
                                         r"\(3, 4\)"):
        fn(np.zeros((3, 4)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"weight of shape \(4,\) cannot be broadcast to the "
                                         r"input's shape \(4, 3\)"):
        fn(np.zeros((4, 3)), np.zeros((4, 3)), np.ones(4))
    with pytest.raises(ValueError, match="cannot be broadcast"):  # would enlarge the input
        fn(np.zeros(3), np.zeros(3), np.ones((2, 3)))


def test_pos_weight_not_broadcastable():
    with pytest.raises(ValueError, match=r"pos_weight of shape \(5,\) cannot be broadcast"):
        bcel(np.zeros((2, 3)), np.zeros((2, 3)), pos_weight=np.ones(5))


@pytest.mark.parametrize("bad", [1.5, -0.5, np.nan, np.inf])
def test_probabilities_outside_unit_interval(simd_path, bad):
    for i in (0, 4095, 4096, 9999):  # first, last and next block, tail
        p = np.full(10000, 0.5, np.float32)
        p[i] = bad
        with pytest.raises(ValueError, match="all elements of input should be between 0 and 1"):
            bce(p, np.ones_like(p))


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("bad", [1.0001, -1e-30, np.nan, -np.inf])
def test_targets_outside_unit_interval(simd_path, name, bad):
    fn, _ = LOSSES[name]
    y = np.full(10000, 0.5)
    y[7777] = bad
    with pytest.raises(ValueError, match="all elements of target should be between 0 and 1"):
        fn(np.full(10000, 0.5), y)
    with pytest.raises(ValueError, match="target"):  # also where a zero weight hides the loss
        fn(np.full(10000, 0.5), y, np.zeros(10000), reduction="none")


@pytest.mark.parametrize("name", LOSSES)
def test_target_range_is_checked_before_rounding_to_the_input_dtype(name):
    fn, _ = LOSSES[name]
    for bad in (1 + 1e-12, -1e-50):
        with pytest.raises(ValueError, match="all elements of target should be between 0 and 1"):
            fn(np.full(3, 0.5, np.float32), np.array([0.5, bad, 0.5]))


@pytest.mark.parametrize("bad_input", [np.arange(4), np.zeros(4, np.complex64),
                                       np.array(["a", "b"]), np.zeros(4, bool),
                                       np.array([object()] * 4)])
@pytest.mark.parametrize("name", LOSSES)
def test_non_float_input_is_a_type_error(name, bad_input):
    fn, _ = LOSSES[name]
    with pytest.raises(TypeError, match="input must be a float16, float32 or float64 array; "
                                        f"got dtype {bad_input.dtype}"):
        fn(bad_input, np.zeros(bad_input.shape))


def test_non_numeric_target_and_weight():
    x = np.zeros(3)
    with pytest.raises(TypeError, match="target must be a real numeric or bool array"):
        bcel(x, np.zeros(3, np.complex128))
    with pytest.raises(TypeError, match="weight must be a real numeric array"):
        bcel(x, x, np.array(["a", "b", "c"]))
    with pytest.raises(TypeError, match="pos_weight must be a real numeric array"):
        bcel(x, x, pos_weight=np.zeros(3, np.complex64))


@pytest.mark.parametrize("reduction", ["avg", "Mean", None, 1])
def test_unknown_reduction(reduction):
    with pytest.raises(ValueError, match="reduction must be one of 'none', 'mean', 'sum'"):
        bcel(np.zeros(3), np.zeros(3), reduction=reduction)


@pytest.mark.parametrize("n_threads,error", [(0, ValueError), (-2, ValueError),
                                             (5000, ValueError), (1.5, TypeError),
                                             (True, TypeError), ("2", TypeError)])
def test_bad_n_threads(n_threads, error):
    with pytest.raises(error, match="n_threads"):
        bcel(np.zeros(3), np.zeros(3), n_threads=n_threads)


def test_torch_tensor_on_another_device_is_refused():
    meta = torch.zeros(3, device="meta")
    with pytest.raises(ValueError, match="fastloss computes on the CPU"):
        bcel(meta, np.zeros(3))


# ---- properties over shapes, dtypes, strides and values ----

@st.composite
def loss_arguments(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=40))
    logits = draw(st.booleans())
    values = (st.floats(-200, 200, width=32) if logits
              else st.floats(0, 1, width=32))
    x = draw(hnp.arrays(dtype, shape, elements=values))
    y = draw(hnp.arrays(dtype, shape, elements=st.floats(0, 1, width=32)))
    if x.ndim >= 2 and draw(st.booleans()):
        x, y = x.T, y.T  # non-contiguous N-d
    elif x.ndim == 1 and draw(st.booleans()):
        x, y = x[::-1], y[::2].repeat(2)[:x.size]  # negative stride, and a copied target
    wshape = draw(hnp.broadcastable_shapes(x.shape, min_side=0, max_dims=x.ndim).filter(
        lambda s: np.broadcast_shapes(s, x.shape) == x.shape))
    w = draw(st.none() | hnp.arrays(dtype, wshape, elements=st.floats(0, 10, width=32)))
    reduction = draw(st.sampled_from(["none", "mean", "sum"]))
    threads = draw(st.sampled_from([1, 2, None]))
    return logits, x, y, w, reduction, threads


@settings(max_examples=300, deadline=None)
@given(loss_arguments())
def test_property_agrees_with_float64_reference(args):
    logits, x, y, w, reduction, threads = args
    if logits:
        got = bcel(x, y, w, reduction, w, n_threads=threads)  # w also as pos_weight
        loss = ref.bce_with_logits(x, y, w, w)
    else:
        got = bce(x, y, w, reduction, n_threads=threads)
        loss = ref.bce(x, y, w)
    want = ref.reduce(loss, reduction)
    # float32 results below the normal range (1.2e-38) may flush to 0: the 1e-37 absolute bound
    rtol, atol = (2e-6, 1e-37) if x.dtype == np.float32 else (1e-12, 0)
    assert np.asarray(got).dtype == x.dtype
    assert np.shape(got) == (x.shape if reduction == "none" else ())
    if reduction != "none":
        atol += rtol * np.sum(np.abs(loss))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


# ---- no hidden copies ----

def test_read_in_place_for_documented_layouts_and_dtypes(tmp_path):
    """mean and sum allocate only the per-block partial sums: no copy of any operand."""
    n = 4_000_000
    x = np.linspace(-3, 3, n, dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    memmap = np.load(tmp_path / "x.npy", mmap_mode="r")
    strided = np.repeat(x, 2)[::2]
    cases = {
        "float target": (x, np.zeros(n, np.float32)),
        "bool target": (x, np.zeros(n, bool)),
        "uint8 target": (x, np.zeros(n, np.uint8)),
        "int64 target": (x, np.zeros(n, np.int64)),
        "1-D strided": (strided, strided > 0),
        "read-only memmap": (memmap, np.zeros(n, np.float32)),
        "torch tensors": (torch.from_numpy(x), torch.zeros(n)),
        "2-D with pos_weight": (x.reshape(-1, 8), np.zeros((n // 8, 8), np.float32)),
    }
    # 1% of one operand: the per-block results (24 bytes per 4096), plus each thread's fixed
    # scratch memory for the staging buffers
    threads = len(os.sched_getaffinity(0))
    budget = n * 4 // 100 + threads * (_kernels.SCRATCH_BYTES + 64)
    for name, (a, b) in cases.items():
        pw = np.ones(8, np.float32) if name.startswith("2-D") else None
        peak = peak_allocation(lambda: bcel(a, b, pos_weight=pw, reduction="sum"))
        assert peak < budget, f"{name}: {peak} bytes allocated"
    probs, labels = np.clip(x, 0, 1), np.zeros(n, bool)
    assert peak_allocation(lambda: bce(probs, labels)) < budget
    assert peak_allocation(lambda: fastloss.sigmoid_focal_loss(
        x, labels, gamma=1.5, reduction="mean")) < budget
    # the softmax losses: (N, C) rows and (N, C, H, W), index and probability targets
    rows, classes = x.reshape(-1, 10), np.zeros(n // 10, np.int32)
    spatial, pixels = x.reshape(4, 10, 100, -1), np.ones((4, 100, n // 4000), np.uint8)
    probabilities = np.abs(rows)
    for call in (lambda: fastloss.cross_entropy(rows, classes, label_smoothing=0.1),
                 lambda: fastloss.cross_entropy(rows, probabilities),
                 lambda: fastloss.cross_entropy(spatial, pixels, np.ones(10)),
                 lambda: fastloss.softmax_focal_loss(rows, classes, gamma=1.5)):
        assert peak_allocation(call) < budget


def _overlap_cases():
    """(call, the arrays the user passed, the argument out overlaps): out shares memory with an
    argument that fastloss would otherwise convert (a copy), so the kernel would not see it."""
    rng = np.random.default_rng(12)
    cases = []
    x16 = rng.standard_normal(64).astype(np.float16)  # computed on a float32 copy
    cases.append((lambda: bcel(x16, np.zeros(64, np.float16), reduction="none", out=x16),
                  [x16], "input"))
    xbe = rng.standard_normal(64).astype(">f4")  # byte-swapped: a native copy
    out_le = xbe.view("<f4")
    cases.append((lambda: bcel(xbe, np.zeros(64, ">f4"), reduction="none", out=out_le), [xbe],
                  "input"))
    buf = rng.standard_normal(40 * 6).astype(np.float32)
    z = buf.reshape(40, 6)[:, ::2]  # a non-contiguous softmax input: a contiguous copy
    cases.append((lambda: fastloss.cross_entropy(z, np.zeros(40, np.int64), reduction="none",
                                                 out=buf[:40]), [buf], "input"))
    x32 = rng.standard_normal(64).astype(np.float32)
    y16 = np.zeros(64, np.float32)
    cases.append((lambda: bcel(x32, y16.view(np.float16)[::2], reduction="none", out=y16),
                  [y16], "target"))
    w = np.ones(64, np.float64)  # converted to float32
    cases.append((lambda: bcel(x32, np.zeros(64, np.float32), w, reduction="none",
                               out=w.view(np.float32)[:64]), [w], "weight"))
    pw = np.ones(64, np.float32)
    cases.append((lambda: bcel(x32[::-1].astype(np.float16), np.zeros(64, np.float16),
                               pos_weight=pw.view(np.float16)[:64], reduction="none",
                               out=pw.view(np.float16)[:64]), [pw], "pos_weight"))
    xt = torch.from_numpy(rng.standard_normal(64).astype(np.float16))
    cases.append((lambda: bcel(xt, torch.zeros(64, dtype=torch.float16), reduction="none",
                               out=xt), [xt.numpy()], "input"))
    zt = torch.from_numpy(buf.reshape(40, 6).copy())
    cases.append((lambda: fastloss.softmax_focal_loss(
        zt[:, ::2], torch.zeros(40, dtype=torch.int64), reduction="none", out=zt.view(-1)[:40]),
        [zt.numpy()], "input"))
    return cases


@pytest.mark.parametrize("case", range(8))
def test_out_overlapping_any_argument_is_refused_before_any_work(case):
    call, arrays, name = _overlap_cases()[case]
    before = [a.copy() for a in arrays]
    with pytest.raises(ValueError, match=f"out shares memory with {name}; pass a separate "
                                         "buffer"):
        call()
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b)  # untouched
