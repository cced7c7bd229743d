"""Regressions for the numeric edges an outside audit found: small stacks, zero weights of
negative losses, float32 sums and intermediates near FLT_MAX, tiny focal gammas, huge class
counts, and the relative accuracy of confident softmax rows. References are float64 NumPy
formulas, torch in float64, and mpmath."""
import os
import subprocess
import sys
import textwrap

import mpmath as mp
import numpy as np
import pytest
import torch

import fastloss
import reference as ref

HERE = os.path.dirname(__file__)


def _run(*code, **env):
    """Run the pieces of code in a fresh interpreter with extra environment variables; return
    its stdout."""
    source = "".join(textwrap.dedent(piece) for piece in code)
    out = subprocess.run([sys.executable, "-c", source], cwd=HERE,
                         env=dict(os.environ, **env), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


# ---- small stacks ----

_SMALL_STACK_WORK = """
    import numpy as np, fastloss
    rng = np.random.default_rng(1)
    x = rng.standard_normal(300_000).astype(np.float32)
    y = (rng.random(300_000) < 0.5).astype(np.float32)
    z = rng.standard_normal((40_000, 10)).astype(np.float32)
    zl = rng.standard_normal((5_000, 40)).astype(np.float32)
    t = rng.integers(0, 10, 40_000)
    tl = rng.integers(0, 40, 5_000)
    def work():
        got = [fastloss.binary_cross_entropy_with_logits(x, y, n_threads=2),
               fastloss.sigmoid_focal_loss(x, y, reduction="mean", n_threads=2),
               fastloss.cross_entropy(z, t, n_threads=2, label_smoothing=0.1),
               fastloss.cross_entropy(zl, tl, n_threads=2),
               fastloss.softmax_focal_loss(z, t, n_threads=2)]
        meter = fastloss.StreamingLoss("cross_entropy", bins="log")
        meter.update(z, t, n_threads=2)
        got.append(meter.mean)
        return got
"""


def _small_stack_references():
    import reference as ref
    rng = np.random.default_rng(1)
    x = rng.standard_normal(300_000)
    y = (rng.random(300_000) < 0.5).astype(float)
    z = rng.standard_normal((40_000, 10)).astype(np.float32).astype(float)
    zl = rng.standard_normal((5_000, 40)).astype(np.float32).astype(float)
    t = rng.integers(0, 10, 40_000)
    tl = rng.integers(0, 40, 5_000)
    x = x.astype(np.float32).astype(float)
    return [ref.bce_with_logits(x, y).mean(),
            ref.torchvision_sigmoid_focal_loss(torch.tensor(x), torch.tensor(y)).mean().item(),
            ref.cross_entropy(z, t, label_smoothing=0.1)[0].mean(),
            ref.cross_entropy(zl, tl)[0].mean(),
            ref.torch_softmax_focal_loss(z, t, 2.0)[0].mean(),
            ref.cross_entropy(z, t)[0].mean()]


def _check_small_stack_output(stdout):
    got = [float(v) for v in stdout.split()]
    np.testing.assert_allclose(got, _small_stack_references(), rtol=1e-5)


def test_kernels_run_with_a_16k_openmp_stack():
    out = _run(_SMALL_STACK_WORK, "print(*work())", OMP_STACKSIZE="16K")
    _check_small_stack_output(out)


_SMALL_STACK_GRADIENTS_AND_EXTRAS = """
    import numpy as np, fastloss
    rng = np.random.default_rng(2)
    x = rng.standard_normal(300_000)
    y = (rng.random(300_000) < 0.5).astype(np.float64)
    z = rng.standard_normal((40_000, 10))
    t = rng.integers(0, 10, 40_000)
    groups = rng.integers(0, 4, x.size)
    def work():
        got = [g.sum() for g in fastloss.grad("sigmoid_focal_loss", x, y, hessian=True,
                                              gamma=1.5, n_threads=2)]
        got += [g.sum() for g in fastloss.grad("softmax_focal_loss", z, t, hessian=True,
                                               n_threads=2)]
        meter = fastloss.StreamingLoss("binary_cross_entropy_with_logits", bins="log",
                                       calibration_bins=15, n_groups=4, bootstrap=20)
        meter.update(x, y, groups=groups, n_threads=2)
        ce = fastloss.StreamingLoss("cross_entropy", calibration_bins=15, by_class=True)
        ce.update(z, t, n_threads=2)
        return got + [meter.mean, meter.ece, *meter.group_mean, ce.brier, *ce.class_mean]
"""


def test_gradients_and_streaming_extras_run_with_a_16k_openmp_stack():
    """The float64 kernels have the largest frames; the same values as on the default stack."""
    small = _run(_SMALL_STACK_GRADIENTS_AND_EXTRAS, "print(*work())", OMP_STACKSIZE="16K")
    default = _run(_SMALL_STACK_GRADIENTS_AND_EXTRAS, "print(*work())")
    assert small.split() == default.split()


def test_kernels_run_in_a_thread_with_pythons_smallest_stack():
    out = _run(_SMALL_STACK_WORK, """
    import threading
    threading.stack_size(32768)
    result = []
    thread = threading.Thread(target=lambda: result.extend(work()))
    thread.start()
    thread.join()
    print(*result)
    """)
    _check_small_stack_output(out)


# ---- zero weights ----

def test_zero_weight_removes_a_negative_loss():
    x, y = np.float32([1, 1]), np.float32([1, 1])
    w, pw = np.float32([0, 1]), np.float32([-3, -3])
    got = fastloss.binary_cross_entropy_with_logits(x, y, w, "none", pw)
    want = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64),
        torch.tensor(w, dtype=torch.float64), reduction="none",
        pos_weight=torch.tensor(pw, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got[0] == 0
    # nan still propagates through a zero weight
    got = fastloss.binary_cross_entropy_with_logits(np.float32([np.nan]), np.float32([1]),
                                                    np.float32([0]), "none")
    assert np.isnan(got[0])


def test_zero_sample_weight_removes_a_negative_class_weighted_loss():
    z = np.zeros((2, 2))
    t = np.array([0, 1])
    meter = fastloss.StreamingLoss("cross_entropy", weight=np.array([-1.0, 1.0]))
    meter.update(z, t, np.array([0.0, 1.0]))
    assert meter.sum == pytest.approx(np.log(2), rel=1e-12)


# ---- float32 near FLT_MAX ----

def test_float32_sums_do_not_overflow_where_float64_does_not(simd_path):
    big = np.float32(3e38)
    x = np.full(1000, big)
    y = np.zeros(1000, np.float32)
    assert fastloss.binary_cross_entropy_with_logits(x, y) == pytest.approx(3e38, rel=1e-6)
    assert fastloss.binary_cross_entropy_with_logits(x[:2], y[:2]) == pytest.approx(3e38)
    # a sum beyond float32's range is inf, its rounding
    assert fastloss.binary_cross_entropy_with_logits(x, y, reduction="sum") == np.inf
    w = np.full(1000, 1e-3, np.float32)  # the float64 sum of finite losses is finite
    assert fastloss.binary_cross_entropy_with_logits(x, y, w, "sum") == pytest.approx(3e38,
                                                                                      rel=1e-5)
    rows = np.zeros((1000, 3), np.float32)
    rows[:, 0] = -3e38
    assert fastloss.cross_entropy(rows, np.zeros(1000, np.int64)) == pytest.approx(3e38,
                                                                                   rel=1e-6)


def test_float32_logits_of_opposite_extremes_in_one_row(simd_path):
    import reference as ref
    for classes in (2, 40):  # the transposed tile and the row layout
        z = np.zeros((3, classes), np.float32)
        z[:, 0], z[:, 1] = 3e38, -3e38
        index = np.array([0, 1, classes - 1])
        probabilities = np.zeros((3, classes), np.float32)
        probabilities[:, :2] = 0.5
        for target, eps in [(index, 0.5), (index, 0.0), (probabilities, 0.0),
                            (probabilities, 0.3)]:
            got = fastloss.cross_entropy(z, target, reduction="none", label_smoothing=eps)
            with np.errstate(over="ignore"):  # inf where the true loss exceeds float32
                want = ref.cross_entropy(z, target, label_smoothing=eps)[0].astype(np.float32)
            np.testing.assert_allclose(got, want, rtol=1e-6)
            assert np.isfinite(got).any()
        got = fastloss.softmax_focal_loss(z, index, reduction="none")
        with np.errstate(over="ignore"):
            want = ref.torch_softmax_focal_loss(z.astype(np.float64), index, 2.0)[0]
            want = want.astype(np.float32)
        np.testing.assert_allclose(got, want, rtol=1e-6)


# ---- focal loss with a gamma below float32's smallest subnormal ----

def test_sigmoid_focal_tiny_gamma_is_gamma_zero_in_float32(simd_path):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(1001).astype(np.float32)  # a padded tail
    y = (rng.random(1001) < 0.5).astype(np.float32)
    for reduction in ("sum", "mean"):
        got = fastloss.sigmoid_focal_loss(x, y, gamma=1e-46, reduction=reduction)
        want = fastloss.sigmoid_focal_loss(x.astype(np.float64), y, gamma=1e-46,
                                           reduction=reduction)
        assert np.isfinite(got)
        assert got == pytest.approx(want, rel=1e-6)


# ---- class counts ----

def test_more_classes_than_an_int_holds_are_refused_before_any_copy():
    z = np.broadcast_to(np.float32(0), (1, 2**31))  # no memory behind it (one row: work)
    with pytest.raises(ValueError, match="2147483648 classes; at most 2147483647"):
        fastloss.cross_entropy(z, np.array([0]))
    with pytest.raises(ValueError, match="classes; at most"):
        fastloss.softmax_focal_loss(z, np.array([0]))


def test_long_float32_rows_sum_without_saturating():
    # 2**20 classes of equal logits: se = C exactly; per-lane float sums would lose it
    classes = 2**20 + 3
    z = np.zeros((1, classes), np.float32)
    got = fastloss.cross_entropy(z, np.array([5]))
    assert got == pytest.approx(np.log(classes), rel=1e-6)


# ---- confident rows: relative accuracy against mpmath ----

def _mp_nll(row, t):
    """-log softmax(row)[t] with mpmath at 60 digits."""
    with mp.workdps(60):
        zt = mp.mpf(float(row[t]))
        return mp.log1p(mp.fsum(mp.exp(mp.mpf(float(v)) - zt) for i, v in enumerate(row)
                                if i != t))


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 1e-6)])
def test_confident_rows_keep_their_relative_accuracy(simd_path, dtype, rtol):
    margins = [0.0, 1e-3, 0.5, 3.0, 17.0, 30.0, 35.0, 50.0, 80.0]
    if dtype == np.float64:
        margins += [200.0, 700.0]
    tiny = np.finfo(dtype).tiny
    for classes in (3, 37):  # tile and row layouts
        rng = np.random.default_rng(classes)
        rows = []
        for margin in margins:
            row = -margin - rng.random(classes)  # the others below the target by >= margin
            row[1] = 2.5
            rows.append(row)
        z = np.array(rows, dtype)
        t = np.ones(len(rows), np.int64)
        onehot = np.zeros_like(z)
        onehot[:, 1] = 1
        want = np.array([float(_mp_nll(r, 1)) for r in z])
        q = np.array([float(-mp.expm1(-mp.mpf(float(v)))) for v in want])
        for name, got, ref in [
                ("index", fastloss.cross_entropy(z, t, reduction="none"), want),
                ("probabilities", fastloss.cross_entropy(z, onehot, reduction="none"), want),
                ("focal", fastloss.softmax_focal_loss(z, t, gamma=0.5, reduction="none"),
                 want * np.sqrt(q))]:
            got = got.astype(np.float64)
            err = np.abs(got - ref)
            ok = (err <= rtol * np.abs(ref)) | (np.abs(ref) < tiny)
            assert ok.all(), (name, classes, [(m, g, r) for m, g, r, k in
                                              zip(margins, got, ref, ok) if not k])


def test_sigmoid_focal_zero_alpha_t_times_an_infinite_loss_is_zero(simd_path):
    # alpha = 1 gives negatives (y = 0) the weight 0; x = +inf is then 0 * inf: the limit is 0
    for dtype in (np.float32, np.float64):
        x = np.array([np.inf, -np.inf, np.inf, np.nan], dtype)
        y = np.array([0, 1, 1, 0], dtype)
        got = fastloss.sigmoid_focal_loss(x, y, alpha=1.0, reduction="none")
        np.testing.assert_array_equal(got[:3], [0, np.inf, 0])
        assert np.isnan(got[3])


def test_bce_of_a_negative_zero_probability(simd_path):
    # -0.0 is a probability of 0 (loss 100, torch's clamp), not a number with a sign bit set
    for dtype in (np.float16, np.float32, np.float64):
        p = np.array([-0.0, 0.0, 1.0, 1.0], dtype)
        y = np.array([1, 1, 0, 1], dtype)
        want = torch.nn.functional.binary_cross_entropy(
            torch.tensor(p.astype(np.float64)), torch.tensor(y.astype(np.float64)),
            reduction="none").numpy()
        np.testing.assert_array_equal(fastloss.binary_cross_entropy(p, y, reduction="none"), want)


def test_parameters_beyond_float_range_are_value_errors():
    x = np.zeros(2)
    with pytest.raises(ValueError, match="gamma must be a finite float"):
        fastloss.sigmoid_focal_loss(x, x, gamma=10**400)
    with pytest.raises(ValueError, match="label_smoothing must be a finite float"):
        fastloss.cross_entropy(np.zeros((2, 3)), np.zeros(2, np.int64), label_smoothing=10**400)


def test_focal_gamma_beyond_float32_range(simd_path):
    # gamma = 1e39 is finite in float64 but inf in float32: the factor must still be 0 or 1
    z = np.array([[0.0, -200.0], [5.0, 0.0]])
    t = np.array([1, 0])
    x, y = np.array([-200.0, 200.0, 3.0]), np.array([1.0, 0.0, 1.0])
    for gamma in (1e39, 3e38):
        want = fastloss.softmax_focal_loss(z, t, gamma=gamma, reduction="none")
        np.testing.assert_allclose(want, [200.0, 0.0], rtol=1e-12)  # (1 - p_t) of 1 and < 1
        got = fastloss.softmax_focal_loss(z.astype(np.float32), t, gamma=gamma, reduction="none")
        np.testing.assert_allclose(got, want, rtol=1e-6)
        want = ref.torchvision_sigmoid_focal_loss(torch.tensor(x), torch.tensor(y),
                                                  gamma=gamma).numpy()
        got = fastloss.sigmoid_focal_loss(x.astype(np.float32), y.astype(np.float32),
                                          gamma=gamma, reduction="none")
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_uint64_class_beyond_int64_is_out_of_range_even_with_ignore_index_minus_one():
    z = np.zeros((1, 3))
    with pytest.raises(IndexError, match="Target 18446744073709551615 is out of bounds"):
        fastloss.cross_entropy(z, np.array([2**64 - 1], np.uint64), ignore_index=-1)
