"""Derive the polynomial coefficients of src_c/fl_math.h.

Each polynomial interpolates its function at the Chebyshev nodes of its interval, which is
within a small factor of the minimax polynomial, with the function evaluated in mpmath. Prints
the coefficients (lowest degree first, rounded to float32 as the C code uses them) and the fit
error measured on a dense grid. Run: python tools/fit_polynomials.py (needs numpy and mpmath).
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


FITS = {  # name: (function, interval, degree)
    "fl_log1p_unit_f32: log1p(t)/t": (log1p_over_t, (0.0, 1.0), 9),
    "fl_log_f32: log1p(f)/f": (log1p_over_t, (math.sqrt(0.5) - 1, math.sqrt(2) - 1), 9),
    "fl_exp_nonpos_f32: (exp(r)-1-r)/r^2": (exp_tail, (-math.log(2) / 2, math.log(2) / 2), 5),
}


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


if __name__ == "__main__":
    main()
