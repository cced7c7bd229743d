"""The float64 primitives of src_c/fl_math.h against mpmath, and every float64 loss built from
them, on every instruction-set path.

The primitives are compiled into a small C program with the kernels' flags, once per
instruction-set level this CPU runs, and fed dense sweeps of every exponent range; the losses
are checked element by element at extreme logits (|x| up to 1e300, and 700 to 750, where
exp(-|x|) underflows to subnormal and then to 0).
"""
import functools
import os
import pathlib
import subprocess

import mpmath
import numpy as np
import pytest

import fastloss
from fastloss import _kernels

SRC_C = pathlib.Path(__file__).resolve().parents[1] / "src_c"
KERNEL_FLAGS = ["-std=c11", "-O3", "-ffp-contract=fast", "-fno-trapping-math"]
MARCH = {"scalar": [], "avx2": ["-march=x86-64-v3"], "avx512": ["-march=x86-64-v4"]}
DBL_MIN = np.finfo(np.float64).tiny
DBL_MAX = np.finfo(np.float64).max
SUBNORMAL_MIN = np.nextafter(0.0, 1.0)  # 2^-1074

HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fl_math.h"
/* the loops are those of the kernels: GCC vectorizes them at every -march level */
#define LOOP(F) for (size_t k = 0; k < n; k++) out[k] = F(in[k])
int main(int argc, char **argv) {
    size_t cap = 1 << 16, n = 0, got;
    double *in = malloc(cap * sizeof *in);
    while ((got = fread(in + n, sizeof *in, cap - n, stdin)) > 0)
        if ((n += got) == cap) in = realloc(in, (cap *= 2) * sizeof *in);
    double *out = malloc((n ? n : 1) * sizeof *out);
    if (!strcmp(argv[1], "exp_nonpos")) LOOP(fl_exp_nonpos_f64);
    else if (!strcmp(argv[1], "log1p_unit")) LOOP(fl_log1p_unit_f64);
    else if (!strcmp(argv[1], "log")) LOOP(fl_log_f64);
    else if (!strcmp(argv[1], "log1p_neg")) LOOP(fl_log1p_neg_f64);
    else return 2;
    fwrite(out, sizeof *out, n, stdout);
    return 0;
}
"""


@pytest.fixture(scope="module", params=_kernels.supported_simd_paths())
def primitives(request, tmp_path_factory):
    """fn(name, x) -> the C primitive fl_<name>_f64 applied to x, compiled for one ISA level."""
    assert (SRC_C / "fl_math.h").exists(), "the C sources must lie beside tests/"
    tmp = tmp_path_factory.mktemp("harness")
    (tmp / "harness.c").write_text(HARNESS)
    exe = tmp / "harness"
    subprocess.run([os.environ.get("CC", "cc"), *KERNEL_FLAGS, *MARCH[request.param],
                    f"-I{SRC_C}", str(tmp / "harness.c"), "-o", str(exe)], check=True)

    def run(name, x):
        out = subprocess.run([str(exe), name], check=True, capture_output=True,
                             input=np.ascontiguousarray(x, np.float64).tobytes()).stdout
        return np.frombuffer(out, np.float64)
    return run


REFERENCES = {"exp_nonpos": mpmath.exp, "log1p_unit": mpmath.log1p, "log": mpmath.log,
              "log1p_neg": lambda p: mpmath.log1p(-p)}


def _sweep(name):
    """10^5 log-spaced points over every exponent range of the domain, subnormals included,
    10^4 uniform ones, and the edges of the reductions."""
    n = 10**5
    uniform = np.random.default_rng(5).random(10**4)
    if name == "exp_nonpos":
        return np.concatenate([-np.logspace(-320, np.log10(746), n), -745 * uniform,
                               [0.0, -0.0, -np.log(2) / 2, -708.39641853226408, -708.4,
                                -745.13321910194110, -745.13321910194122, -745.9]])
    if name == "log":
        return np.concatenate([np.logspace(-323.3, 308.25, n), 0.5 + 1.5 * uniform,
                               [SUBNORMAL_MIN, np.nextafter(DBL_MIN, 0), DBL_MIN, 1.0,
                                np.nextafter(1.0, 0), np.nextafter(1.0, 2), np.sqrt(0.5),
                                np.sqrt(2.0), DBL_MAX]])
    edges = [0.0, SUBNORMAL_MIN, DBL_MIN, 0.5, np.nextafter(0.5, 0), np.sqrt(2) - 1,
             1 - np.sqrt(0.5), np.nextafter(1.0, 0), 1.0]
    if name == "log1p_neg":  # also close to 1, where log1p(-p) runs to -inf
        edges += list(1 - np.logspace(-16, -0.01, n // 10))
    return np.concatenate([np.logspace(-323, 0, n), uniform, edges])


@functools.lru_cache(maxsize=None)
def _exact(name):
    """The sweep and mpmath's values of the function on it as a float64 pair hi + lo (lo
    holds what hi's rounding lost, so errors come out exact even for subnormal hi)."""
    x = _sweep(name)
    with mpmath.workdps(50):
        hi, lo = np.empty_like(x), np.empty_like(x)
        for k, v in enumerate(x):
            e = REFERENCES[name](mpmath.mpf(float(v)))
            hi[k] = float(e) if mpmath.isfinite(e) else (-np.inf if e < 0 else np.inf)
            lo[k] = float(e - mpmath.mpf(hi[k])) if mpmath.isfinite(e) else 0.0
    return x, hi, lo


@pytest.mark.parametrize("name", list(REFERENCES))
def test_primitive_within_2_ulp_of_mpmath(primitives, name):
    """Within 2 ulp (4.4e-16 relative) wherever the result is normal; subnormal results
    (exp below -708.4) within one unit of 2^-1074, where libm is too."""
    x, hi, lo = _exact(name)
    got = primitives(name, x)
    finite = np.isfinite(hi)
    assert np.array_equal(got[~finite], hi[~finite])  # -inf at log(0), log1p(-1)
    error = np.abs((got[finite] - hi[finite]) - lo[finite])
    allowed = np.where(np.abs(hi[finite]) >= DBL_MIN, 2 * np.spacing(np.abs(hi[finite])),
                       SUBNORMAL_MIN)
    worst = np.argmax(error / allowed)
    assert error[worst] <= allowed[worst], (x[finite][worst], got[finite][worst], hi[finite][worst])


def test_primitive_edges(primitives):
    """Exact results at the edges of each domain, and nan propagation."""
    nan, inf = np.nan, np.inf
    cases = {
        "exp_nonpos": ([0.0, -0.0, -inf, -746.0, -1e300, -DBL_MAX, nan],
                       [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, nan]),
        "log1p_unit": ([0.0, SUBNORMAL_MIN, DBL_MIN, 1e-300, nan],
                       [0.0, SUBNORMAL_MIN, DBL_MIN, 1e-300, nan]),
        "log": ([0.0, -0.0, 1.0, inf, nan, -1.0, -SUBNORMAL_MIN, -inf],
                [-inf, -inf, 0.0, inf, nan, nan, nan, nan]),
        "log1p_neg": ([0.0, 1.0, SUBNORMAL_MIN, 1e-300, nan, 1.5],
                      [0.0, -inf, -SUBNORMAL_MIN, -1e-300, nan, nan]),
    }
    for name, (x, expected) in cases.items():
        np.testing.assert_array_equal(primitives(name, np.array(x)), expected, err_msg=name)
    # the extremes of the ranges against the correctly rounded values
    assert primitives("log", np.array([DBL_MAX, SUBNORMAL_MIN])) == pytest.approx(
        [709.782712893384, -744.4400719213812], rel=4e-16)
    assert primitives("log1p_unit", np.array([1.0]))[0] == pytest.approx(np.log(2), rel=2.3e-16)


# ---- The losses, element by element against mpmath. ----

LOSS_REL = 1e-13
LOSS_ABS = 1e-320  # where the exact loss is subnormal or underflows: a few units of 2^-1074


def _logits():
    grid = np.logspace(-300, 300, 241)
    return np.concatenate([grid, -grid, np.linspace(700, 750, 51), -np.linspace(700, 750, 51),
                           np.linspace(-40, 40, 161), [0.0, 1e-320, -1e-320, DBL_MAX, -DBL_MAX]])


LABELS = np.array([0.0, 1.0, 0.3, 1e-12, 1 - 2.0**-30])


def _binary_grid():
    x, y = np.meshgrid(_logits(), LABELS, indexing="ij")
    pw = np.random.default_rng(7).uniform(0.1, 10, x.size)
    return x.ravel(), y.ravel(), pw


def _softplus(x):
    return mpmath.log1p(mpmath.exp(x))


def _sigmoid(x):
    return 1 / (1 + mpmath.exp(-x))


def _to_float(e):
    """e rounded to float64, also where it exceeds DBL_MAX (float() gives inf there, while
    rounding to nearest gives DBL_MAX below DBL_MAX + half an ulp)."""
    if abs(e) <= DBL_MAX:
        return float(e)
    return float(mpmath.sign(e)) * (np.inf if abs(e) >= mpmath.mpf(2)**1024 - mpmath.mpf(2)**970
                                                    else DBL_MAX)


def _mp_loss(f, *columns):
    """f of each element (as mpf) at 50 digits, rounded to float64."""
    with mpmath.workdps(50):
        return np.array([_to_float(f(*(mpmath.mpf(float(v)) for v in vs)))
                         for vs in zip(*columns)])


@functools.lru_cache(maxsize=None)
def _binary_reference(loss, gamma=None):
    x, y, pw = _binary_grid()
    if loss == "bce_logits":
        return _mp_loss(lambda x, y, pw: pw * y * _softplus(-x) + (1 - y) * _softplus(x), x, y, pw)

    def focal(x, y):
        q = y * _sigmoid(-x) + (1 - y) * _sigmoid(x)
        ce = y * _softplus(-x) + (1 - y) * _softplus(x)
        return (0.25 * y + 0.75 * (1 - y)) * ce * q ** mpmath.mpf(gamma)
    return _mp_loss(focal, x, y)


def _assert_close(got, exact, absolute=LOSS_ABS):
    """Within LOSS_REL relative or `absolute`; equal where the exact loss overflows float64
    (x = -DBL_MAX with pos_weight > 1)."""
    assert np.array_equal(got[np.isinf(exact)], exact[np.isinf(exact)])
    got, exact = got[np.isfinite(exact)], exact[np.isfinite(exact)]
    error = np.abs(got - exact)
    allowed = LOSS_REL * np.abs(exact) + absolute
    worst = np.argmax(error / allowed)
    assert error[worst] <= allowed[worst], (worst, got[worst], exact[worst])


def test_bce_with_logits_pos_weight_against_mpmath(simd_path):
    x, y, pw = _binary_grid()
    got = fastloss.binary_cross_entropy_with_logits(x, y, pos_weight=pw, reduction="none")
    _assert_close(got, _binary_reference("bce_logits"))


@pytest.mark.parametrize("gamma", [2.0, 1.5])
def test_sigmoid_focal_against_mpmath(simd_path, gamma):
    x, y, _ = _binary_grid()
    got = fastloss.sigmoid_focal_loss(x, y, alpha=0.25, gamma=gamma, reduction="none")
    _assert_close(got, _binary_reference("focal", gamma))


@functools.lru_cache(maxsize=None)
def _bce_probabilities_reference():
    p = np.concatenate([np.logspace(-323, 0, 2000), 1 - np.logspace(-16, 0, 1000),
                        np.random.default_rng(3).random(1000), [0.0, 1.0, 0.5]])
    p, y = (a.ravel() for a in np.meshgrid(p, [0.0, 1.0, 0.3], indexing="ij"))

    def bce(p, y):
        log_p = max(mpmath.log(p), -100) if p > 0 else mpmath.mpf(-100)
        log_q = max(mpmath.log1p(-p), -100) if p < 1 else mpmath.mpf(-100)
        return (y - 1) * log_q - y * log_p
    return p, y, _mp_loss(bce, p, y)


def test_bce_probabilities_against_mpmath(simd_path):
    p, y, exact = _bce_probabilities_reference()
    _assert_close(fastloss.binary_cross_entropy(p, y, reduction="none"), exact)


@functools.lru_cache(maxsize=None)
def _softmax_case():
    """Rows of 7 logits drawn from the extreme grid (and some rows of near-equal logits), a
    target per row, and mpmath's -log p_t and 1 - p_t. -log p_t is (m - z_t) + log(se), a sum of
    two non-negative terms: with z_t = 1e300, lse - z_t would lose log(se) to the 50 digits."""
    rng = np.random.default_rng(11)
    z = rng.choice(_logits(), size=(3000, 7))
    z[:200] = rng.choice([-1e300, 1e300, 745.0, -745.0], size=(200, 1)) + rng.normal(0, 1, (200, 7))
    t = rng.integers(0, 7, len(z))
    nll, rest = np.empty(len(z)), []
    with mpmath.workdps(50):
        for k, (row, target) in enumerate(zip(z, t)):
            row = [mpmath.mpf(float(v)) for v in row]
            m = max(row)
            se = sum(mpmath.exp(v - m) for v in row)
            # log(se) as log1p of its part beyond 1, which 50 digits of 1 + 1e-298 would lose
            beyond_one = sum(1 for v in row if v == m) - 1 + sum(mpmath.exp(v - m) for v in row
                                                                 if v < m)
            nll[k] = float((m - row[target]) + mpmath.log1p(beyond_one))
            rest.append(sum(mpmath.exp(v - m) for c, v in enumerate(row) if c != target) / se)
    return z, t, nll, rest


def test_cross_entropy_against_mpmath(simd_path):
    """Relative accuracy, confident rows included (log(se) = log1p(rest), fl_softmax_tmpl.h)."""
    z, t, nll, _ = _softmax_case()
    _assert_close(fastloss.cross_entropy(z, t, reduction="none"), nll)


@pytest.mark.parametrize("gamma", [2.0, 1.5])
def test_softmax_focal_against_mpmath(simd_path, gamma):
    z, t, nll, rest = _softmax_case()
    with mpmath.workdps(50):
        exact = np.array([float(q ** mpmath.mpf(gamma) * mpmath.mpf(float(v)))
                          for q, v in zip(rest, nll)])
    _assert_close(fastloss.softmax_focal_loss(z, t, gamma=gamma, reduction="none"), exact)


def test_float64_kernels_call_no_libm():
    """The double primitives are our own polynomials: the extension imports no exp/log/log1p
    (libm's scalar calls would keep the float64 loops from vectorizing)."""
    nm = subprocess.run(["nm", "-D", "--undefined-only", _kernels.__file__], check=True,
                        capture_output=True, text=True).stdout
    imported = {line.split()[-1].split("@")[0] for line in nm.splitlines() if line.strip()}
    assert not imported & {"exp", "log", "log1p", "expf", "logf", "log1pf", "pow"}
