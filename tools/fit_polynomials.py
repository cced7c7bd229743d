"""Derive the polynomial coefficients of src_c/fl_math.h.

Each polynomial interpolates its function at the Chebyshev nodes of its interval, which is
within a small factor of the minimax polynomial, with the function evaluated in mpmath. Prints
the coefficients (lowest degree first, rounded to float32 or float64 as the C code uses them)
and the fit error measured on a dense grid. Run: python tools/fit_polynomials.py (needs numpy
and mpmath).
"""
import math

import mpmath
import numpy as np
from numpy.polynomial import chebyshev, polynomial

mpmath.mp.dps = 40


def log1p_over_t(t):
    return mpmath.log1p(t) / t if t != 0 else mpmath.mpf(1)


def exp_tail(r):
    """(exp(r) - 1 - r) / r^2, so exp(r) = 1 + r + r^2 * P(r)."""
    return (mpmath.exp(r) - 1 - r) / r**2 if r != 0 else mpmath.mpf(0.5)


def expm1_over_r(r):
    """(exp(r) - 1) / r, so exp(r) = 1 + r * Q(r)."""
    return mpmath.expm1(r) / r if r != 0 else mpmath.mpf(1)


FITS = {  # name: (function, interval, degree)
    "fl_log1p_unit_f32: log1p(t)/t": (log1p_over_t, (0.0, 1.0), 9),
    "fl_log_unit_f32: log1p(f)/f": (log1p_over_t, (math.sqrt(0.5) - 1, math.sqrt(2) - 1), 9),
    "fl_exp_nonpos_f32: (exp(r)-1)/r": (expm1_over_r, (-math.log(2) / 2, math.log(2) / 2), 5),
}


def atanh_tail(z):
    """Q(z) with 2*atanh(s) = 2s + s*z*Q(z), z = s^2: log1p(f) = 2*atanh(f/(2+f))."""
    if z == 0:
        return mpmath.mpf(2) / 3
    s = mpmath.sqrt(z)
    return (2 * mpmath.atanh(s) / s - 2) / z


# The float64 fits, with the part of the result each one's error reaches: exp(r) = 1 + r +
# r^2*P(r), so P's relative error counts r^2*P/exp(r) <= 0.07 times; log1p(f) = 2s + s*z*Q(z)
# with s = f/(2+f), so Q's counts z*Q/2 <= 0.014 times, for f in [sqrt(1/2) - 1, 1/2]
# (|s| <= 1/5, z <= 1/25: fl_log1p_unit_f64 reaches f = 1/2). Interpolated in mpmath
# (numpy's float64 change of basis would cost the last digits) and measured with the
# coefficients rounded to float64.
FITS_F64 = {  # name: (function, interval, degree, weight of the error in the result)
    "fl_exp_nonpos_f64: (exp(r)-1-r)/r^2":
        (exp_tail, (-math.log(2) / 2, math.log(2) / 2), 9, lambda r: r * r / 2),
    "fl_log_reduced_f64: Q(z)": (atanh_tail, (0.0, 0.0401), 7, lambda z: z / 2),
}


def fit_f64(f, lo, hi, degree, weight):
    """Float64 monomial coefficients (lowest degree first) of the interpolant of f at Chebyshev
    nodes of [lo, hi], and the largest error they give in the result, relative."""
    coef = [float(c) for c in mpmath.chebyfit(f, [lo, hi], degree + 1)]
    error = max(abs(mpmath.polyval(coef, v) / f(v) - 1) * weight(v)
                for v in (mpmath.mpf(lo + (hi - lo) * k / 2000) for k in range(2001)))
    return coef[::-1], float(error)


def fit(f, lo, hi, degree):
    """Monomial coefficients in t of the interpolant of f at Chebyshev nodes of [lo, hi]."""
    u = np.cos((2 * np.arange(degree + 1) + 1) * np.pi / (2 * degree + 2))
    t = (lo + hi) / 2 + (hi - lo) / 2 * u
    values = [float(f(mpmath.mpf(float(v)))) for v in t]
    in_u = chebyshev.cheb2poly(chebyshev.chebfit(u, values, degree))
    # substitute u = a*t + b
    a, b = 2 / (hi - lo), -(lo + hi) / (hi - lo)
    coef, power = np.zeros(1), np.ones(1)
    for c in in_u:
        coef = polynomial.polyadd(coef, c * power)
        power = polynomial.polymul(power, [b, a])
    return coef


def main():
    for name, (f, (lo, hi), degree) in FITS.items():
        coef = fit(f, lo, hi, degree)
        grid = np.linspace(lo, hi, 2001)
        error = max(abs(float(f(mpmath.mpf(float(v)))) - polynomial.polyval(v, coef))
                    for v in grid)
        print(f"{name} on [{lo:.4f}, {hi:.4f}], degree {degree}, fit error {error:.2g}")
        print("   ", ", ".join(f"{np.float32(c):.9e}f" for c in coef))
    for name, (f, (lo, hi), degree, weight) in FITS_F64.items():
        coef, error = fit_f64(f, lo, hi, degree, weight)
        print(f"{name} on [{lo:.4f}, {hi:.4f}], degree {degree}, "
              f"error in the result {error:.2g}")
        print("   ", ", ".join(repr(c) for c in coef))


if __name__ == "__main__":
    main()
