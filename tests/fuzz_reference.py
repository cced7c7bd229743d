"""References for the fuzz tests (test_fuzz.py): the loss of every element or row, with the limits
the docstrings promise at infinite values, and the magnitude its rounding error scales with.

Each function returns (value, magnitude) as float64 arrays. value is the exact loss rounded to
float64 (inf where it overflows float64); magnitude is the sum of the absolute values of the terms
the loss is made of, so a computation in a precision with unit roundoff u may be off by about
u * magnitude (a softmax loss is the difference logsumexp(z) - z_t, so it is only as accurate as
|logsumexp(z)| + |z_t|; a focal factor exp(gamma * log q) only as accurate as gamma * |log q|).

The binary cross-entropies reuse reference.py's float64 formulas, which are accurate wherever
they are defined, and put in the documented limits where they give 0 * inf (infinite logits:
"a zero weight times an infinite loss is 0"). The focal losses and the softmax rows use mpmath:
torchvision's and torch's formulas cancel in 1 - p_t (reference.py's versions are accurate only
for |x| <= 5), and the softmax rows must give their limits for logits of -inf.
"""
import functools

import mpmath
import numpy as np

import reference as ref

mpmath.mp.dps = 40
_INF = mpmath.inf


def _times(a, b):
    """a * b, where a zero coefficient times any factor but nan is 0 (infinite ones included);
    nan propagates, as the docstrings say."""
    return 0 if a == 0 and b == b else a * b


def bce(p, y, w):
    """binary_cross_entropy: the terms are non-negative, so the magnitude is |value|."""
    value = ref.bce(p, y, w)
    return value, np.abs(value)


def bce_with_logits(x, y, w, pw):
    """binary_cross_entropy_with_logits: w * (pw*y*softplus(-x) + (1-y)*softplus(x)).

    reference.py's formula is exact where x is finite; for x = +-inf one softplus is 0 and the
    other infinite, and only a zero coefficient (y = 1 for +inf, pw*y = 0 for -inf, w = 0)
    makes the limit finite (0)."""
    x, y, w, pw = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in (x, y, w, pw)))
    with np.errstate(invalid="ignore", over="ignore"):
        value = np.array(ref.bce_with_logits(x, y, w, pw), np.float64)
        magnitude = np.array(np.abs(w) * (np.abs(pw * y) * np.logaddexp(0, -x)
                                          + (1 - y) * np.logaddexp(0, x)), np.float64)
    for i in np.ndindex(x.shape):
        if not np.isinf(x[i]):
            continue
        pos = _times(pw[i] * y[i], np.inf if x[i] < 0 else 0.0)
        neg = _times(1 - y[i], np.inf if x[i] > 0 else 0.0)
        value[i] = _times(w[i], pos + neg)
        magnitude[i] = abs(value[i])
    magnitude[np.isnan(x)] = 0.0
    return value, magnitude


@functools.lru_cache(maxsize=None)
def _sigmoid_focal(x, y, alpha, gamma):
    if np.isnan(x):
        return np.nan, 0.0
    x, y = mpmath.mpf(x), mpmath.mpf(y)
    # softplus(x) = -log sigmoid(-x) and softplus(-x) = -log sigmoid(x), exact at +-inf
    sp_pos = x + mpmath.log1p(mpmath.exp(-x)) if x > 0 else mpmath.log1p(mpmath.exp(x))
    sp_neg = -x + mpmath.log1p(mpmath.exp(x)) if x < 0 else mpmath.log1p(mpmath.exp(-x))
    ce = _times(y, sp_neg) + _times(1 - y, sp_pos)
    q = _times(y, mpmath.exp(-sp_pos)) + _times(1 - y, mpmath.exp(-sp_neg))  # 1 - p_t
    factor = 1 if gamma == 0 else (0 if q == 0 else mpmath.exp(gamma * mpmath.log(q)))
    alpha_t = alpha * y + (1 - alpha) * (1 - y) if alpha >= 0 else 1
    value = _times(alpha_t, _times(factor, ce))
    log_q = abs(mpmath.log(q)) if 0 < q < _INF else 0
    return float(value), float(abs(value) * (1 + gamma * log_q))


def sigmoid_focal(x, y, w, alpha, gamma):
    """sigmoid_focal_loss: w * alpha_t * ce * (1 - p_t)**gamma, in mpmath; an infinite logit
    gives the limit (0 where y or alpha_t makes the infinite part vanish)."""
    x, y, w = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in (x, y, w)))
    value, magnitude = np.empty(x.shape), np.empty(x.shape)
    for i in np.ndindex(x.shape):
        v, m = _sigmoid_focal(float(x[i]), float(y[i]), alpha, gamma)
        value[i], magnitude[i] = _times(w[i], v), abs(w[i]) * m
    return value, magnitude


def _softmax_row(z):
    """(-log p_c for every class as mpf, |logsumexp| + |z_c|, log(1 - p_c), a bound on the
    magnitudes) for one row; NAN for a row with nan or +inf, whose loss is nan as in torch;
    UNDEFINED for a row of nothing but -inf (no softmax; the docstrings promise nothing)."""
    if any(np.isnan(v) or v == np.inf for v in z):
        return NAN
    z = [mpmath.mpf(v) for v in z]
    finite = [v for v in z if v != -_INF]
    if not finite:
        return UNDEFINED
    m = max(finite)
    lse = m + mpmath.log(mpmath.fsum(mpmath.exp(v - m) for v in finite))
    nlp = [lse - v for v in z]  # +inf for a logit of -inf
    mag = [abs(lse) + abs(v) for v in z]
    log_rest = []  # log(1 - p_c) = log(sum over the other classes of p_k), no cancellation
    for c in range(len(z)):
        rest = mpmath.fsum(mpmath.exp(v - lse) for k, v in enumerate(z) if k != c)
        log_rest.append(mpmath.log(rest) if rest > 0 else -_INF)
    return nlp, mag, log_rest, float(abs(lse) + max(abs(v) for v in finite))


NAN, UNDEFINED = "nan", "undefined"


@functools.lru_cache(maxsize=None)
def _softmax_row_cached(z):
    return _softmax_row(z)


def softmax_row(z, coefficients, gamma_target=None):
    """One row's loss: sum_c coefficients[c] * (-log p_c) (a zero coefficient times an infinite
    -log p_c counts 0), or with gamma_target = (gamma, t) the focal loss
    coefficients[t] * (1 - p_t)**gamma * (-log p_t). Returns (value, magnitude) as floats, or
    (UNDEFINED, 0.0) for a row of -inf only."""
    row = _softmax_row_cached(tuple(float(v) for v in z))
    if row == NAN:
        return np.nan, 0.0
    if row == UNDEFINED:
        return UNDEFINED, 0.0
    nlp, mag, log_rest, scale = row
    if gamma_target is not None:
        gamma, t = gamma_target
        w = coefficients[t]
        factor = 1 if gamma == 0 else mpmath.exp(gamma * log_rest[t])
        value = _times(w, _times(factor, nlp[t]))
        magnitude = abs(w) * factor * (mag[t] + abs(nlp[t]) * gamma * scale) \
            if nlp[t] != _INF else abs(value)
        return float(value), float(magnitude)
    value = mpmath.fsum(_times(a, v) for a, v in zip(coefficients, nlp))
    magnitude = mpmath.fsum(abs(a) * v for a, v in zip(coefficients, mag) if a)
    return float(value), float(magnitude)
