/* fl_math.h: scalar primitives the loss formulas are built from, for float and double.
 *
 * Every function here is static inline and branch-free (selects only), so that GCC vectorizes the
 * loops that call them without fast-math options (it needs -fno-trapping-math to turn the selects
 * into blends). float uses our own polynomials; double calls libm, which is accurate to ~1 ulp.
 *
 * The polynomial coefficients come from tools/fit_polynomials.py (Chebyshev interpolation, which
 * is within a small factor of minimax); the bounds quoted are the fit errors, before the float32
 * rounding of the arithmetic. End to end, the binary losses built from them stay within 2.5e-7
 * relative of float64 (measured; tests/test_binary_accuracy.py checks 1e-6 over dense sweeps);
 * README.md ("How the numerics stay stable") gives the bounds of the other losses.
 */
#ifndef FL_MATH_H
#define FL_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__)
#define FL_INLINE static inline __attribute__((always_inline))
#else
#define FL_INLINE static inline
#endif

FL_INLINE float fl_as_float(int32_t i) { float f; memcpy(&f, &i, sizeof f); return f; }
FL_INLINE int32_t fl_as_int(float f) { int32_t i; memcpy(&i, &f, sizeof i); return i; }

/* Both guards below select the operands and then multiply, rather than select the product: a
 * sum that adds the result then fuses into the same FMA in the vector loops and in the
 * compiler's scalar code, which therefore round alike (a select of c*v is fused only where it
 * compiles to a branch). */

/* c * v, but 0 when c == 0 and v is not nan: a zero weight removes its element, whatever the
 * loss (+inf: x = +inf, y = 1 is a perfect prediction, loss 0, not nan; negative: a negative
 * pos_weight). nan in c or v still propagates. The selects test c alone, with (v == v ? 0 : v),
 * which is 0 for every v but nan: GCC 12 vectorizes that inside large loops, where a condition
 * combining c == 0 and a test of v keeps the loop scalar. */
FL_INLINE float fl_coef_f32(float c, float v) {
    return (c == 0.0f ? 1.0f : c) * (c == 0.0f ? (v == v ? 0.0f : v) : v);
}
FL_INLINE double fl_coef_f64(double c, double v) {
    return (c == 0.0 ? 1.0 : c) * (c == 0.0 ? (v == v ? 0.0 : v) : v);
}

/* c * v for a term whose nan, if any, reaches the loss through another term as well (x's nan
 * through log1p(exp(-|x|)), a logit's through the softmax's sum of exponentials): only
 * 0 * inf needs a guard, and one select is cheaper than fl_coef's two. */
FL_INLINE float fl_coef_inf_f32(float c, float v) { return c * (c == 0.0f ? 0.0f : v); }
FL_INLINE double fl_coef_inf_f64(double c, double v) { return c * (c == 0.0 ? 0.0 : v); }

/* exp(a) for a <= 0 (and a = -inf).
 * a = n*ln2 + r with n = round(a/ln2), |r| <= ln2/2 (Cody-Waite: ln2 split into a part with few
 * mantissa bits, so n*LN2_HI is exact, and a correction); exp(r) = 1 + r*Q5(r) (relative fit
 * error of Q5 1.1e-8, so 4e-9 for exp(r)); 2^n built in the exponent bits. Adding SHIFT =
 * 1.5*2^23 + 127 to a/ln2 rounds it to an integer and leaves n + 127 in the low mantissa bits,
 * so shifting those bits left by 23 gives the bits of 2^n (the high bits shift out) without a
 * conversion to int. a is clamped at -88 so that n + 127 >= 0; where the result would be
 * subnormal (a < -87.34) it is 0 or tiny (absolute error < 1.2e-38), -inf included. nan
 * propagates. */
FL_INLINE float fl_exp_nonpos_f32(float a) {
    const float LOG2E = 1.44269504088896341f, LN2_HI = 0.693359375f, LN2_LO = -2.12194440e-4f;
    const float SHIFT = 12583039.0f; /* 1.5 * 2^23 + 127 */
    a = a < -88.0f ? -88.0f : a;
    float k = a * LOG2E + SHIFT;
    float n = k - SHIFT;
    float r = (a - n * LN2_HI) - n * LN2_LO;
    float q = 1.393364160e-03f;
    q = q * r + 8.369148709e-03f;
    q = q * r + 4.166646674e-02f;
    q = q * r + 1.666650474e-01f;
    q = q * r + 5.000000000e-01f;
    q = q * r + 1.0f;
    return (q * r + 1.0f) * fl_as_float(fl_as_int(k) << 23);
}
FL_INLINE double fl_exp_nonpos_f64(double a) { return exp(a); }

/* log1p(t) for t in [0, 1] as t*P9(t), P9 a fit of log1p(t)/t (relative fit error 5.3e-9). */
FL_INLINE float fl_log1p_unit_f32(float t) {
    float p = -3.176057013e-03f;
    p = p * t + 1.954252645e-02f;
    p = p * t - 5.637361109e-02f;
    p = p * t + 1.054362357e-01f;
    p = p * t - 1.526966691e-01f;
    p = p * t + 1.966327429e-01f;
    p = p * t - 2.495161593e-01f;
    p = p * t + 3.332971036e-01f;
    p = p * t - 4.999989271e-01f;
    p = p * t + 1.0f;
    return t * p;
}
FL_INLINE double fl_log1p_unit_f64(double t) { return log1p(t); }

/* log(v) for v in (0, 1] and subnormal v, without special values: the core of fl_log_f32, and
 * all that BCE on probabilities needs (its -100 clamp covers v = 0, for which this gives about
 * -104, and the loss of an input outside [0, 1] is never returned: it raises).
 * v = 2^e * m with m in [sqrt(1/2), sqrt(2)), so f = m - 1 is exact and small, and
 * log(v) = e*ln2 + log1p(f) with log1p(f) = f*P9(f) (relative fit error 5.5e-9). Subnormal v are
 * scaled by 2^23 first, since their exponent field does not hold e. */
FL_INLINE float fl_log_unit_f32(float v) {
    const float LN2_HI = 0.693359375f, LN2_LO = -2.12194440e-4f;
    const int32_t SQRT_HALF_BITS = 0x3f3504f3; /* sqrt(1/2) */
    float vs = v < 0x1p-126f ? v * 0x1p23f : v;
    /* subtracting the bits of sqrt(1/2) puts the mantissas of [sqrt(1/2), sqrt(2)) in one binade */
    int32_t bits = fl_as_int(vs) - SQRT_HALF_BITS;
    int32_t e = bits >> 23;
    float m = fl_as_float((bits & 0x007fffff) + SQRT_HALF_BITS);
    float ef = (float)e - (v < 0x1p-126f ? 23.0f : 0.0f);
    float f = m - 1.0f;
    float p = -7.451186329e-02f;
    p = p * f + 1.280661076e-01f;
    p = p * f - 1.326603144e-01f;
    p = p * f + 1.419965029e-01f;
    p = p * f - 1.660836935e-01f;
    p = p * f + 2.000093907e-01f;
    p = p * f - 2.500157952e-01f;
    p = p * f + 3.333334625e-01f;
    p = p * f - 4.999998808e-01f;
    p = p * f + 1.0f;
    return ef * LN2_HI + (f * p + ef * LN2_LO);
}

/* log(v) for v >= 0 (0 -> -inf, +inf -> +inf, nan and v < 0 -> nan), and any finite v > 0. */
FL_INLINE float fl_log_f32(float v) {
    float r = fl_log_unit_f32(v);
    r = v == 0.0f ? -INFINITY : r;
    r = v == INFINITY ? INFINITY : r;
    return v < 0.0f ? NAN : (v != v ? v : r);
}
FL_INLINE double fl_log_f64(double v) { return log(v); }
FL_INLINE double fl_log_unit_f64(double v) { return log(v); }

/* A cheap log2(v) for normal positive v, to guess histogram bins (fl_stats.h): the exponent
 * plus log2(m) = t*P6(t) for the mantissa m = 1 + t in [1, 2) (least-squares fit, error 4.5e-6).
 * Checked over every normal float, with and without FMA: the error is at most 8.3e-6 (the rest
 * is the rounding of e + t*p at the largest exponents). No handling of 0, subnormals, inf or
 * nan: callers clamp. */
FL_INLINE float fl_log2_coarse_f32(float v) {
    int32_t bits = fl_as_int(v);
    float e = (float)((bits >> 23) - 127);
    float t = fl_as_float((bits & 0x007fffff) | 0x3f800000) - 1.0f;
    float p = -2.606731839e-02f;
    p = p * t + 1.219168752e-01f;
    p = p * t - 2.773678005e-01f;
    p = p * t + 4.568954110e-01f;
    p = p * t - 7.178986073e-01f;
    p = p * t + 1.442517042e+00f;
    return e + t * p;
}

/* log1p(-p) for p in [0, 1], for BCE on probabilities (so, like fl_log_unit_f32, about -104
 * for p = 1, which the loss clamps at -100). s = 1 - p is exact for p >= 1/2 (Sterbenz); below,
 * d = (1 - s) - p is exactly the rounding error of s, and log(1 - p) = log(s + d) = log(s) +
 * d/s + O((d/s)^2). d/s is replaced by d: that changes the result by d*(1 - s)/s, and since
 * |log(1 - p)| >= p ~ 1 - s, by at most |d|/s <= 2^-25/(1/2) = 6e-8 of the result, where the
 * division would cost more than the whole log. */
FL_INLINE float fl_log1p_neg_f32(float p) {
    float s = 1.0f - p;
    float d = (1.0f - s) - p;
    return fl_log_unit_f32(s) + d;
}
FL_INLINE double fl_log1p_neg_f64(double p) { return log1p(-p); }

#endif /* FL_MATH_H */
