/* fl_math.h: scalar primitives the loss formulas are built from, for float and double.
 *
 * Every function here is static inline and branch-free (selects only), so that GCC vectorizes the
 * loops that call them without fast-math options (it needs -fno-trapping-math to turn the selects
 * into blends). float uses our own polynomials; double longer ones, within 2 ulp (no libm call).
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
/* For the large steps of a kernel: their vector spills get a frame of their own instead of adding
 * up in the kernel's, whose threads may run on a 16 KiB OpenMP stack. Constant flag arguments are
 * not propagated into them: give each combination its own outlined function (fl_stats_tmpl.h). */
#define FL_OUTLINE static __attribute__((noinline))
#else
#define FL_INLINE static inline
#define FL_OUTLINE static
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
    return (q * r + 1.0f) * fl_as_float((int32_t)((uint32_t)fl_as_int(k) << 23));
}

FL_INLINE double fl_as_double(uint64_t i) { double f; memcpy(&f, &i, sizeof f); return f; }
FL_INLINE uint64_t fl_as_bits(double f) { uint64_t i; memcpy(&i, &f, sizeof i); return i; }

/* exp(a) for a <= 0 (and a = -inf), as fl_exp_nonpos_f32 with exp(r) = 1 + r + r^2*P9(r) (the
 * fit's error in exp(r) is 1.3e-17 relative). The integer ops stay on 64-bit lanes, where AVX2
 * has shifts but no conversion from double: n is read from the low bits of a*LOG2E + 1.5*2^52.
 * 2^n is applied as 2^(n+64) * 2^-64: the first factor is normal for every n >= -1086, so
 * subnormal results underflow gradually (within one unit of 2^-1074, as libm) instead of
 * flushing to 0. Clamping a at -746 (exp(-746) < 2^-1075 rounds to 0) keeps n >= -1077 for
 * every a, -inf included; nan propagates through p. Measured: within 1.01 ulp of mpmath. */
FL_INLINE double fl_exp_nonpos_f64(double a) {
    const double LOG2E = 1.4426950408889634;
    const double LN2_HI = 6.93147180369123816490e-01; /* 32 bits: n*LN2_HI is exact */
    const double LN2_LO = 1.90821492927058770002e-10;
    const double ROUND = 0x1.8p52; /* adding it rounds to an integer, kept in the low bits */
    a = a < -746.0 ? -746.0 : a;
    double shifted = a * LOG2E + ROUND;
    double n = shifted - ROUND;
    double r = (a - n * LN2_HI) - n * LN2_LO;
    double p = 2.5100375832561234e-08;
    p = p * r + 2.7620075879983367e-07;
    p = p * r + 2.7557268480310024e-06;
    p = p * r + 2.4801521322368692e-05;
    p = p * r + 1.9841269863040545e-04;
    p = p * r + 1.3888888917196719e-03;
    p = p * r + 8.333333333330065e-03;
    p = p * r + 4.1666666666624164e-02;
    p = p * r + 1.6666666666666669e-01;
    p = p * r + 5.000000000000001e-01;
    p = (p * r) * r + r + 1.0;
    /* n + 64 + 1023 in the exponent field; unsigned, so that nan's junk bits wrap, not overflow */
    uint64_t scale = (fl_as_bits(shifted) - fl_as_bits(ROUND) + 1087) << 52;
    return p * fl_as_double(scale) * 0x1p-64;
}

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

/* e*ln2 + log1p(f) for f in [sqrt(1/2) - 1, 1/2], the core of the double logarithms.
 * With s = f/(2+f) in [-0.172, 0.2], log1p(f) = 2*atanh(s) = 2s + s*z*Q(z), z = s^2, Q a
 * degree-7 fit (its error in log1p(f) is 1.1e-18 relative). As 2s = f - s*f = f - hfsq + s*hfsq
 * with hfsq = f^2/2, log1p(f) = f - (hfsq - s*(hfsq + z*Q)): the exact f comes first and the
 * rounding of s (its division) only reaches a term of size f^3/4. e*LN2_HI is exact. */
FL_INLINE double fl_log_reduced_f64(double e, double f) {
    const double LN2_HI = 6.93147180369123816490e-01, LN2_LO = 1.90821492927058770002e-10;
    double s = f / (2.0 + f), z = s * s, hfsq = 0.5 * f * f;
    double q = 1.3609030262858499e-01;
    q = q * z + 1.3209708242059462e-01;
    q = q * z + 1.5388867805613718e-01;
    q = q * z + 1.8181737626302938e-01;
    q = q * z + 2.2222223048351590e-01;
    q = q * z + 2.8571428567275936e-01;
    q = q * z + 4.0000000000007940e-01;
    q = q * z + 6.6666666666666660e-01;
    return e * LN2_HI + (f - (hfsq - (s * (hfsq + z * q) + e * LN2_LO)));
}

/* log1p(t) for t in [0, 1]: log1p(t) = log1p(f) with f = t below 1/2, and ln2 + log1p(f) with
 * f = (t - 1)/2 in [-1/4, 0] from 1/2 on, both exact (Sterbenz): no rounded 1 + t, so tiny t
 * keep their relative accuracy without a correction term. */
FL_INLINE double fl_log1p_unit_f64(double t) {
    return fl_log_reduced_f64(t < 0.5 ? 0.0 : 1.0, t < 0.5 ? t : 0.5 * t - 0.5);
}

/* For positive normal v: f = m - 1 (exact) with v = 2^e * m, m in [sqrt(1/2), sqrt(2)), and e.
 * As in fl_log_f32, but biased by 1023 << 52 so that the bits stay non-negative and a logical
 * shift extracts e (AVX2 has no arithmetic shift of 64-bit lanes); e is converted to double by
 * placing it in the mantissa of 2^52 (nor has AVX2 an int64 to double conversion). */
FL_INLINE double fl_log_split_f64(double v, double *e) {
    const uint64_t SQRT_HALF_BITS = 0x3fe6a09e667f3bcdu; /* sqrt(1/2) */
    uint64_t bits = fl_as_bits(v) - SQRT_HALF_BITS + ((uint64_t)1023 << 52);
    *e = fl_as_double((bits >> 52) | 0x4330000000000000u) - (0x1p52 + 1023.0);
    return fl_as_double((bits & 0x000fffffffffffffu) + SQRT_HALF_BITS) - 1.0;
}

/* log(v) for v in (0, 1] and subnormal v, without special values: the core of fl_log_f32, and
 * all that BCE on probabilities needs (its -100 clamp covers v = 0, for which this gives about
 * -104, and the loss of an input outside [0, 1] is never returned: it raises).
 * v = 2^e * m with m in [sqrt(1/2), sqrt(2)), so f = m - 1 is exact and small, and
 * log(v) = e*ln2 + log1p(f) with log1p(f) = f*P9(f) (relative fit error 5.5e-9). Subnormal v are
 * scaled by 2^23 first, since their exponent field does not hold e. */
FL_INLINE float fl_log_unit_f32(float v) {
    const float LN2_HI = 0.693359375f, LN2_LO = -2.12194440e-4f;
    const int32_t SQRT_HALF_BITS = 0x3f3504f3; /* sqrt(1/2) */
    float vs = v < 0x1p-126f ? v * 0x1p23f + 0.0f : v; /* + 0: -0 becomes +0, not a sign bit */
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

/* log(v) for v in (0, 1] and subnormal v, without special values (see fl_log_unit_f32; v = 0
 * gives about -746); subnormal v are scaled by 2^54 first, as in fl_log_unit_f32. */
FL_INLINE double fl_log_unit_split_f64(double v, double *e) {
    int subnormal = v < 0x1p-1022;
    double f = fl_log_split_f64(subnormal ? v * 0x1p54 + 0.0 : v, e); /* -0 -> +0 */
    *e -= subnormal ? 54.0 : 0.0;
    return f;
}

FL_INLINE double fl_log_unit_f64(double v) {
    double e, f = fl_log_unit_split_f64(v, &e);
    return fl_log_reduced_f64(e, f);
}

/* log(v) for v >= 0 (0 -> -inf, +inf -> +inf, nan and v < 0 -> nan), and any finite v > 0. */
FL_INLINE double fl_log_f64(double v) {
    double r = fl_log_unit_f64(v);
    r = v == 0.0 ? -INFINITY : r;
    r = v == INFINITY ? INFINITY : r;
    return v < 0.0 ? NAN : (v != v ? v : r);
}

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

/* log1p(-p) where q is true, else log(p) (p in [0, 1], as fl_log_unit_f32): the one logarithm
 * that BCE needs for a hard label, the same value as the function it picks. */
FL_INLINE float fl_log_p_or_q_f32(float p, int q) {
    float s = 1.0f - p;
    float d = (1.0f - s) - p;
    return fl_log_unit_f32(q ? s : p) + (q ? d : 0.0f);
}

/* log1p(-p) for p in [0, 1] (p = 1 -> -inf, p > 1 and nan -> nan), with an exact f throughout:
 * f = -p while 1 - p >= sqrt(1/2); then f = 2(1 - p) - 1 = 1 - 2p and e = -1 up to p = 1/2
 * (Sterbenz); from there on 1 - p is exact (Sterbenz) and split as in fl_log_f64 (it is 0 or
 * at least 2^-53, never subnormal). */
FL_INLINE double fl_log1p_neg_split_f64(double p, double *e) {
    const double ONE_MINUS_SQRT_HALF = 0.29289321881345248;
    double e_u, f_u = fl_log_split_f64(1.0 - p, &e_u);
    *e = p < 0.5 ? (p < ONE_MINUS_SQRT_HALF ? 0.0 : -1.0) : e_u;
    return p < 0.5 ? (p < ONE_MINUS_SQRT_HALF ? -p : 1.0 - 2.0 * p) : f_u;
}

FL_INLINE double fl_log1p_neg_f64(double p) {
    double u = 1.0 - p, e, f = fl_log1p_neg_split_f64(p, &e);
    double r = fl_log_reduced_f64(e, f);
    return u > 0.0 ? r : (u == 0.0 ? -INFINITY : NAN);
}

/* log1p(-p) where q is true, else log(p) (p in [0, 1]; as fl_log1p_neg_f64 and
 * fl_log_unit_f64): both reductions are a few bit operations, and only the picked one goes
 * through the division and polynomial. */
FL_INLINE double fl_log_p_or_q_f64(double p, int q) {
    double e_p, f_p = fl_log_unit_split_f64(p, &e_p);
    double e_q, f_q = fl_log1p_neg_split_f64(p, &e_q);
    double r = fl_log_reduced_f64(q ? e_q : e_p, q ? f_q : f_p);
    return q && !(1.0 - p > 0.0) ? (p == 1.0 ? -INFINITY : NAN) : r;
}

#endif /* FL_MATH_H */
