/* fl_grad_tmpl.h: gradients and Hessian diagonals of the losses, fused with the losses, for one
 * float type; included by fl_kernels.h after fl_binary_tmpl.h and fl_softmax_tmpl.h, whose
 * formulas it differentiates (the loss values come from those very functions).
 *
 * Notation as there: x a logit, y a target in [0, 1], t = exp(-|x|) in (0, 1], a = 1/(1+t), so
 * that sigmoid(|x|) = a and sigmoid(-|x|) = t*a (no cancellation), and sigmoid(x)*sigmoid(-x)
 * = t*a^2. sgn = +1 for x > 0, else -1. docs/numerics.md ("Gradients") has the derivations.
 */

/* ---- The binary formulas: each returns the loss, and sets *g = dl/dx and *h = d2l/dx2. ---- */

/* BCE with logits (fl_bce_logits): l = c_pos*softplus(-x) + c_neg*softplus(x), c_pos = pw*y,
 * c_neg = 1-y, so
 *     dl/dx   = c_neg*sigmoid(x) - c_pos*sigmoid(-x) = sgn * (c_big - c_small*t) * a,
 *     d2l/dx2 = (c_pos + c_neg) * sigmoid(x)*sigmoid(-x) = (c_pos + c_neg) * t*a^2,
 * with c_big the coefficient of the softplus whose max term is |x| (c_neg for x > 0, c_pos
 * otherwise) and c_small the other: for a hard label one of them is 0, and no digit is lost
 * (the textbook sigmoid(x) - y loses all of them for y = 1 and x << 0 in float32). Infinite
 * logits give the limits (t = 0). */
FL_INLINE FL_T FL_S(fl_bce_logits_grad)(FL_T x, FL_T y, FL_T pw, const int has_pw, FL_T *g,
                                        FL_T *h) {
    FL_T abs_x = x < 0 ? -x : x;
    FL_T t = FL_S(fl_exp_nonpos)(-abs_x), a = 1 / (1 + t);
    FL_T c_pos = has_pw ? pw * y : y, c_neg = 1 - y;
    FL_T c_big = x > 0 ? c_neg : c_pos, c_small = x > 0 ? c_pos : c_neg;
    FL_T d = (c_big - c_small * t) * a;
    *g = x > 0 ? d : -d;
    *h = (has_pw ? c_pos + c_neg : 1) * (t * a * a);
    return FL_S(fl_bce_logits)(x, y, pw, has_pw);
}

/* BCE on a probability p (fl_bce): where neither logarithm is clamped,
 *     dl/dp = -y/p + (1-y)/(1-p) = (p - y) / (p*(1-p)),   d2l/dp2 = y/p^2 + (1-y)/(1-p)^2,
 * the first as one quotient (no cancellation between the two terms near p = y). A clamped
 * logarithm (p <= exp(-100) ~ 3.7e-44, or 1 - p there: p = 0 or 1) is constant, so its term
 * contributes 0 to both: p = 0, y = 0 gives dl/dp = 1, not nan. A zero coefficient times an
 * overflowing 1/p^2 is 0. (torch's backward divides by max(p*(1-p), 1e-12) instead, which
 * differs from the derivative for p within 1e-12 of 0 or 1.) */
FL_INLINE FL_T FL_S(fl_bce_grad)(FL_T p, FL_T y, FL_T *g, FL_T *h) {
    const FL_T P_MIN = (FL_T)3.7200759760208361e-44; /* exp(-100) */
    FL_T q = 1 - p;
    int lo = p > P_MIN, hi = q > P_MIN;
    FL_T one_side = (lo ? -y / p : 0) + (hi ? (1 - y) / q : 0);
    *g = lo & hi ? (p - y) / (p * q) : one_side;
    *h = (lo ? FL_S(fl_coef_inf)(y, 1 / (p * p)) : 0) +
         (hi ? FL_S(fl_coef_inf)(1 - y, 1 / (q * q)) : 0);
    return FL_S(fl_bce)(p, y);
}

/* Sigmoid focal loss (fl_sigmoid_focal): l = A * ce * F, F = q^gamma, q = 1 - p_t =
 * (c_big + c_small*t)*a (A = alpha_t; c_big, c_small as in fl_sigmoid_focal_terms, c_big +
 * c_small = 1). With D = c_big - c_small, so that 1 - 2y = sgn*D,
 *     ce'  = (1-y)*sigmoid(x) - y*sigmoid(-x) = sgn*g0,  g0 = (c_big - c_small*t)*a,
 *     ce'' = sigmoid(x)*sigmoid(-x) = s2 = t*a^2,
 *     q'   = (1 - 2y)*s2 = sgn*D*s2,        q'' = (1 - 2y)*s2*(1 - 2 sigmoid(x)) = -D*s2*(1-t)*a.
 * q' and q'' carry s2, which is q*r with
 *     r = s2/q = t*a / (c_big + c_small*t)   (= a/c_small when c_big = 0),
 * bounded by 2 (c_big or c_small is >= 1/2): so F' = gamma*F*q'/q = sgn*gamma*F*D*r and
 * F'' = gamma*F*((gamma-1)*D^2*r^2 - D*r*(1-t)*a) have no q^(gamma-1) or q^(gamma-2) in them,
 * the factors that overflow for gamma < 1 (or 2) where q underflows (hard labels, saturated
 * logits: there r -> 1, ce -> 0 and the derivatives go to 0 with F). Hence
 *     dl/dx   = sgn * A*F * (g0 + gamma*ce*D*r),
 *     d2l/dx2 = A*F * (s2 + 2*gamma*g0*D*r + gamma*ce*r*((gamma-1)*D^2*r - D*(1-t)*a)),
 * every term bounded where the loss is finite. ce*r is taken as 0 when r is (an infinite logit
 * on the wrong side: ce = inf, r = t = 0; the limit of ce*r is 0). */
FL_INLINE FL_T FL_S(fl_sigmoid_focal_grad)(FL_T x, FL_T y, FL_T alpha_t, FL_T gamma,
                                           const int int_gamma, const int has_h, FL_T *g,
                                           FL_T *h) {
    FL_S(fl_focal_terms) f = FL_S(fl_sigmoid_focal_terms)(x, y, gamma, int_gamma, 0);
    FL_T t = f.t, a = f.a;
    FL_T D = f.c_big - f.c_small;
    FL_T u = f.c_big - f.c_small * t, g0 = u * a;
    int small = f.c_big == 0; /* one division for both cases */
    FL_T r = (small ? a : t * a) / (small ? f.c_small : f.c_big + f.c_small * t);
    FL_T ce_r = FL_S(fl_coef_inf)(r, f.ce);
    FL_T AF = alpha_t * f.factor;
    FL_T d = AF * (g0 + gamma * ce_r * D);
    *g = x > 0 ? d : -d;
    /* g0 = u*a is not reused here: a product used twice is not fused into an FMA, so the
     * gradient would round differently with and without the Hessian */
    if (has_h)
        *h = AF * (t * a * a + (2 * gamma * D * r * a) * u +
                   gamma * ce_r * ((gamma - 1) * D * D * r - D * (1 - t) * a));
    return FL_S(fl_sigmoid_focal_value)(f, alpha_t);
}

/* ---- The binary loop and block ---- */

/* One chunk: losses to out (their float sum returned), gradients to g, Hessians to h (has_h),
 * FL_BAD_* flags as fl_binary_loop. Each combination of the constants is its own loop; the
 * formulas share no unfused product between gradient and Hessian, so the gradients are the
 * same in the loops with and without Hessians (tests/test_grad.py checks it). */
FL_INLINE FL_T FL_S(fl_binary_grad_loop)(const FL_T *restrict x, const FL_T *restrict y,
                                         const FL_T *restrict w, const FL_T *restrict pw,
                                         FL_T *restrict out, FL_T *restrict g,
                                         FL_T *restrict h, ptrdiff_t len,
                                         FL_S(fl_focal_params) f, FL_T scale, int *flags,
                                         const int loss, const int has_w, const int has_pw,
                                         const int general_gamma, const int has_h) {
    FL_T sum = 0, x_lo = 0, x_sum = 0, y_lo = 0, y_sum = 0;
#pragma omp simd reduction(+ : sum, x_sum, y_sum) reduction(min : x_lo, y_lo)
    for (ptrdiff_t k = 0; k < len; k++) {
        FL_T xk = x[k], yk = y[k], l, gk, hk = 0;
        FL_T y_dist = yk < 1 - yk ? yk : 1 - yk;
        y_lo = y_dist < y_lo ? y_dist : y_lo;
        y_sum += yk;
        if (loss == FL_LOSS_BCE) {
            FL_T x_dist = xk < 1 - xk ? xk : 1 - xk;
            x_lo = x_dist < x_lo ? x_dist : x_lo;
            x_sum += xk;
            l = FL_S(fl_bce_grad)(xk, yk, &gk, &hk);
        } else if (loss == FL_LOSS_BCE_LOGITS) {
            l = FL_S(fl_bce_logits_grad)(xk, yk, has_pw ? pw[k] : (FL_T)1, has_pw, &gk, &hk);
        } else {
            l = FL_S(fl_sigmoid_focal_grad)(xk, yk, f.alpha_pos * yk + f.alpha_neg * (1 - yk),
                                            f.gamma, general_gamma ? -1 : f.int_gamma, has_h,
                                            &gk, &hk);
        }
        if (has_w) {
            l = FL_S(fl_coef)(w[k], l);
            gk = FL_S(fl_coef)(w[k], gk);
            if (has_h) hk = FL_S(fl_coef)(w[k], hk);
        }
        out[k] = l;
        sum += l;
        g[k] = gk * scale;
        if (has_h) h[k] = hk * scale;
    }
    *flags = (!(x_lo >= 0) | (x_sum != x_sum) ? FL_BAD_INPUT : 0) |
             (!(y_lo >= 0) | (y_sum != y_sum) ? FL_BAD_TARGET : 0);
    return sum;
}

/* As fl_binary_block (chunks, padded tail, sums in double, the overflow re-sum), with the
 * gradients and Hessians staged beside the losses. */
FL_INLINE void FL_S(fl_binary_grad_block)(const void *args, ptrdiff_t start, ptrdiff_t len,
                                          fl_block_result *result, const int loss) {
    const fl_binary_grad_args *ga = (const fl_binary_grad_args *)args;
    const fl_binary_args *a = &ga->loss;
    FL_S(fl_focal_params) f;
    f.alpha_pos = a->alpha < 0 ? 1 : (FL_T)a->alpha;
    f.alpha_neg = a->alpha < 0 ? 1 : (FL_T)(1 - a->alpha);
    f.gamma = a->gamma < FL_MAX ? (FL_T)a->gamma : FL_MAX;
    f.int_gamma = f.gamma <= 4 && f.gamma == (int)f.gamma ? (int)f.gamma : -1;
    const FL_T scale = (FL_T)ga->scale;
    _Static_assert(7 * FL_CHUNK * sizeof(FL_T) <= FL_KERNEL_SCRATCH,
                   "the staging buffers exceed the scratch memory");
    FL_T *xbuf = (FL_T *)result->scratch, *ybuf = xbuf + FL_CHUNK, *wbuf = ybuf + FL_CHUNK;
    FL_T *pwbuf = wbuf + FL_CHUNK, *lbuf = pwbuf + FL_CHUNK, *gbuf = lbuf + FL_CHUNK;
    FL_T *hbuf = gbuf + FL_CHUNK;
    double sum = 0;
    int flags = 0;
    for (ptrdiff_t at = start, n; at < start + len; at += n) {
        n = start + len - at < FL_CHUNK ? start + len - at : FL_CHUNK;
        const FL_T *x = FL_S(fl_read_input)(a, at, n, xbuf);
        const FL_T *y = FL_S(fl_read_target)(a, at, n, ybuf);
        const FL_T *w = FL_S(fl_read_operand)(&a->weight, at, n, wbuf);
        const FL_T *pw = loss == FL_LOSS_BCE_LOGITS
                             ? FL_S(fl_read_operand)(&a->pos_weight, at, n, pwbuf) : NULL;
        FL_T *out = a->out ? (FL_T *)a->out + at : lbuf;
        FL_T *g = (FL_T *)ga->grad + at;
        FL_T *h = ga->hess ? (FL_T *)ga->hess + at : hbuf;
        ptrdiff_t n_loop = n;
        if (n % FL_LANES) { /* the data's tail: padded, staged (see FL_LANES) */
            n_loop = FL_PADDED(n);
            x = FL_S(fl_pad)(x, n, n_loop, loss == FL_LOSS_BCE ? 0 : -(FL_T)INFINITY, xbuf);
            y = FL_S(fl_pad)(y, n, n_loop, 0, ybuf);
            w = w ? FL_S(fl_pad)(w, n, n_loop, 0, wbuf) : NULL;
            pw = pw ? FL_S(fl_pad)(pw, n, n_loop, 1, pwbuf) : NULL;
            out = lbuf;
            g = gbuf;
            h = hbuf;
        }
        int chunk_flags;
        const int has_h = ga->hess != NULL;
#define FL_CALL(has_w, has_pw, general, hh)                                                 \
    FL_S(fl_binary_grad_loop)(x, y, w, pw, out, g, h, n_loop, f, scale, &chunk_flags, loss,  \
                              has_w, has_pw, general, hh)
#define FL_HESS(has_w, has_pw, general) \
    (has_h ? FL_CALL(has_w, has_pw, general, 1) : FL_CALL(has_w, has_pw, general, 0))
#define FL_VARIANTS(has_pw, general) \
    (w ? FL_HESS(1, has_pw, general) : FL_HESS(0, has_pw, general))
        FL_T chunk_sum = pw                                                 ? FL_VARIANTS(1, 0)
                         : f.int_gamma < 0 && loss == FL_LOSS_SIGMOID_FOCAL ? FL_VARIANTS(0, 1)
                                                                            : FL_VARIANTS(0, 0);
#undef FL_VARIANTS
#undef FL_HESS
#undef FL_CALL
        if (!(chunk_sum - chunk_sum == 0)) { /* inf or nan: float32 overflow perhaps */
            double exact = 0;
            for (ptrdiff_t k = 0; k < n; k++) exact += (double)out[k];
            sum += exact;
        } else {
            sum += chunk_sum;
        }
        flags |= chunk_flags;
        if (n_loop != n) {
            if (a->out) memcpy((FL_T *)a->out + at, lbuf, (size_t)n * sizeof(FL_T));
            memcpy((FL_T *)ga->grad + at, gbuf, (size_t)n * sizeof(FL_T));
            if (ga->hess) memcpy((FL_T *)ga->hess + at, hbuf, (size_t)n * sizeof(FL_T));
        }
    }
    result->loss = sum;
    result->flags |= flags;
}

static void FL_S(fl_bce_grad_block)(const void *args, ptrdiff_t start, ptrdiff_t len,
                                    fl_block_result *result) {
    FL_S(fl_binary_grad_block)(args, start, len, result, FL_LOSS_BCE);
}

static void FL_S(fl_bce_logits_grad_block)(const void *args, ptrdiff_t start, ptrdiff_t len,
                                           fl_block_result *result) {
    FL_S(fl_binary_grad_block)(args, start, len, result, FL_LOSS_BCE_LOGITS);
}

static void FL_S(fl_sigmoid_focal_grad_block)(const void *args, ptrdiff_t start, ptrdiff_t len,
                                              fl_block_result *result) {
    FL_S(fl_binary_grad_block)(args, start, len, result, FL_LOSS_SIGMOID_FOCAL);
}

/* ---- The softmax formulas ---- */

/* Cross-entropy, index or probability targets, as sum_c a_c * (-log p_c) with a_c the weighted
 * target distribution (index target t: a_c = (1-eps)*w_t*[c = t] + eps/C*w_c; probabilities:
 * a_c = w_c*(y_c*(1-eps) + eps/C)) and a_sum = sum_c a_c. As d(-log p_k)/dz_c = p_c - [k = c],
 *     dl/dz_c   = a_sum*p_c - a_c = p_c*(a_sum - a_c) - a_c*(1 - p_c),
 *     d2l/dz_c2 = a_sum * p_c*(1 - p_c),
 * where 1 - p_c = other_c/se, other_c the sum of exp(z_k - m) over k != c (rest for the only
 * maximum, else se - e_c >= se/2): the second form of dl/dz_c has no cancellation for a hard
 * target (its a_sum - a_t is 0), and a confident target's -(1 - p_t)*w_t keeps its digits.
 * a_rest = a_sum - a_c is passed in, computed per target kind without cancellation where the
 * kind allows (index targets: (1-eps)*w_t*[c != t] + eps/C*(w_sum - w_c)). */
FL_INLINE void FL_S(fl_ce_grad_terms)(FL_T p, FL_T one_minus_p, FL_T a_sum, FL_T a_c,
                                      FL_T a_rest, FL_T *g, FL_T *h) {
    *g = p * a_rest - a_c * one_minus_p;
    *h = a_sum * p * one_minus_p;
}

/* Softmax focal loss l = w_t * U * n, U = u^gamma, u = 1 - p_t = other/se, n = -log p_t. With
 * dn/dz_c = p_c - [c = t], du/dz_c = p_t*(p_c - [c = t]):
 *     dl/dz_c = w_t*(p_c - [c = t]) * u^(gamma-1) * K,   K = gamma*p_t*n + u,
 * so dl/dz_t = -w_t*U*K and, for c != t, dl/dz_c = w_t*rho_c*U*K with rho_c = p_c/u =
 * e_c/other in [0, 1] (the gradient sums to 0 over the classes). Differentiating again
 * (dp_c/dz_c = p_c*(1-p_c), du/dz_c = p_t*p_c, dK/dz_c = p_t*p_c*(gamma*(1-n) + 1) for c != t;
 * du/dz_t = -p_t*u):
 *     d2l/dz_t2 = w_t*U * (gamma^2*p_t*(p_t*n) + (2*gamma+1)*u*p_t - gamma*u*(p_t*n)),
 *     d2l/dz_c2 = w_t*U*rho_c * ((1-p_c)*K + (gamma-1)*rho_c*p_t*K
 *                                + p_c*((gamma+1)*p_t - gamma*(p_t*n))),
 * with no negative power of u anywhere (u^(gamma-1) became rho_c*U), so gamma in (0, 1) gives
 * finite values at any margin. p_t*n is taken as 0 when p_t is (z_t = -inf, n = inf: the limit
 * of p*log p). The per-row values (lane coefficients) come from fl_ce_focal_lane. */
typedef struct {
    FL_T wUK, wU, K, p_t, pn, other, hess_t;
} FL_S(fl_focal_lane);

/* ---- The softmax block ---- */

/* The gradient and Hessian of class c of one position (lane): z_c, its target probability y_c
 * (probability targets) and class weight w_c; valid = 0 for an ignored position (both 0). */
FL_INLINE void FL_S(fl_ce_grad_elem)(FL_T z_c, FL_T y_c, FL_T w_c, int is_t, int valid, FL_T m,
                                     FL_T se, FL_T inv_se, FL_T rest, FL_T k_sum, FL_T k_t,
                                     FL_T k_K, FL_T k_p_t, FL_T k_pn, FL_T k_inv_other,
                                     FL_T k_hess_t, FL_T keep, FL_T eps_over_c, FL_T w_sum,
                                     FL_T gamma, FL_T scale, FL_T *g, FL_T *h, const int kind) {
    /* divisions by the row's se and other are multiplications by their inverses, taken once
     * per position (one more rounding, a division per class less) */
    FL_T d = z_c - m;
    FL_T e = FL_S(fl_exp_nonpos)(d), p = e * inv_se;
    FL_T other_c = d == 0 && FL_S(fl_one_maximum)(se, rest) ? rest : se - e;
    FL_T omp = other_c * inv_se;
    FL_T gc, hc;
    if (kind == FL_CE_FOCAL) { /* k_sum = w_t*U*K, k_t = w_t*U; 1/other is 0 for other = 0 */
        FL_T rho = e * k_inv_other;
        gc = is_t ? -k_sum : rho * k_sum;
        hc = is_t ? k_hess_t
                  : k_t * rho * (omp * k_K + (gamma - 1) * rho * k_p_t * k_K +
                                 p * ((gamma + 1) * k_p_t - gamma * k_pn));
    } else if (kind == FL_CE_PROBABILITIES) { /* k_sum = a_sum */
        FL_T a_c = w_c * (y_c * keep + eps_over_c);
        FL_S(fl_ce_grad_terms)(p, omp, k_sum, a_c, k_sum - a_c, &gc, &hc);
    } else { /* k_sum = a_sum, k_t = (1-eps)*w_t */
        FL_T a_c = (is_t ? k_t : 0) + eps_over_c * w_c;
        FL_T a_rest = (is_t ? 0 : k_t) + eps_over_c * (w_sum - w_c);
        FL_S(fl_ce_grad_terms)(p, omp, k_sum, a_c, a_rest, &gc, &hc);
    }
    *g = valid ? gc * scale : 0;
    *h = valid ? hc * scale : 0;
}

static void FL_S(fl_ce_grad_block)(const void *args, ptrdiff_t start, ptrdiff_t len,
                                   fl_block_result *result) {
    const fl_softmax_grad_args *ga = (const fl_softmax_grad_args *)args;
    const fl_softmax_args *a = &ga->loss;
    const ptrdiff_t C = a->n_classes, S = a->n_spatial;
    const int probabilities = a->target_type == FL_TARGET_PROBABILITIES;
    const FL_T *w = (const FL_T *)a->weight;
    const FL_T eps = (FL_T)a->label_smoothing, eps_over_c = eps / (FL_T)C, keep = 1 - eps;
    const int kind = probabilities ? FL_CE_PROBABILITIES
                     : a->focal    ? FL_CE_FOCAL
                     : eps != 0    ? FL_CE_SMOOTHED
                                   : FL_CE_PLAIN;
    const FL_T gamma = a->gamma < FL_MAX ? (FL_T)a->gamma : FL_MAX;
    const int int_gamma = gamma <= 4 && gamma == (int)gamma ? (int)gamma : -1;
    const FL_T scale = (FL_T)ga->scale;
    FL_T *G = (FL_T *)ga->grad, *H = (FL_T *)ga->hess;
    FL_T w_sum = 0;
    for (ptrdiff_t c = 0; c < C; c++) w_sum += w[c];
    const int transpose = S == 1 && C < FL_CE_ROW_MIN_CLASSES;

    /* the staging buffers, in the thread's scratch memory: fl_ce_block's, and per lane the
     * coefficients of the class pass */
    _Static_assert((4 * FL_CE_ROW_MIN_CLASSES * FL_GRAD_TILE_LANES + 14 * FL_CE_LANES) * sizeof(FL_T)
                   + FL_CE_LANES * (sizeof(long long) + sizeof(int)) <= FL_KERNEL_SCRATCH,
                   "the softmax gradient's staging buffers exceed the scratch memory");
    const ptrdiff_t TILE = FL_CE_ROW_MIN_CLASSES * FL_GRAD_TILE_LANES;
    FL_T *ztile = (FL_T *)result->scratch, *ytile = ztile + TILE, *gtile = ytile + TILE;
    FL_T *htile = gtile + TILE, *m = htile + TILE;
    FL_T *se = m + FL_CE_LANES, *rest = se + FL_CE_LANES, *half_dist = rest + FL_CE_LANES;
    FL_T *a_sum = half_dist + FL_CE_LANES, *z_t = a_sum + FL_CE_LANES, *w_t = z_t + FL_CE_LANES;
    FL_T *losses = w_t + FL_CE_LANES, *k_sum = losses + FL_CE_LANES, *k_t = k_sum + FL_CE_LANES;
    FL_T *k_K = k_t + FL_CE_LANES, *k_p_t = k_K + FL_CE_LANES, *k_pn = k_p_t + FL_CE_LANES;
    FL_T *inv_se = k_pn + FL_CE_LANES;
    FL_T *k_inv_other = half_dist, *k_hess_t = a_sum; /* unused by the focal loss's statistics */
    long long *idx = (long long *)(inv_se + FL_CE_LANES);
    int *target = (int *)(idx + FL_CE_LANES);
    double loss_sum = 0, weight_sum = 0;
    ptrdiff_t bad = -1;

    for (ptrdiff_t p = start, lanes; p < start + len; p += lanes) {
        ptrdiff_t n = p / S, s = p % S;
        lanes = start + len - p;
        if (lanes > (transpose ? FL_GRAD_TILE_LANES : FL_CE_LANES))
            lanes = transpose ? FL_GRAD_TILE_LANES : FL_CE_LANES;
        if (S > 1 && lanes > S - s) lanes = S - s;
        const FL_T *z = (const FL_T *)a->input + n * C * S + s;
        const FL_T *y = probabilities ? (const FL_T *)a->target + n * C * S + s : NULL;
        ptrdiff_t cs = S, ls = 1;

        if (!probabilities) FL_S(fl_ce_read_targets)(a, p, lanes, idx, target, &bad);

        /* the statistics of fl_ce_block */
        const int stats_kind = kind == FL_CE_FOCAL ? FL_CE_PLAIN : kind;
#define FL_BY_KIND(CALL)                                        \
    switch (stats_kind) {                                       \
    case FL_CE_SMOOTHED: CALL(FL_CE_SMOOTHED); break;           \
    case FL_CE_PROBABILITIES: CALL(FL_CE_PROBABILITIES); break; \
    default: CALL(FL_CE_PLAIN);                                 \
    }
#define FL_ROWS(kind)                                                                   \
    for (ptrdiff_t l = 0; l < lanes; l++)                                               \
        FL_S(fl_ce_row_stats)(z + l * C, y ? y + l * C : NULL, C, w, keep, eps_over_c,  \
                              &m[l], &se[l], &rest[l], &half_dist[l], &a_sum[l], NULL, kind, 0)
#define FL_TILE(kind)                                                                  \
    FL_S(fl_ce_tile_stats)(z, y, cs, C, lanes, w, keep, eps_over_c, m, se, rest, half_dist, \
                           a_sum, NULL, kind, 0)
        if (S == 1 && !transpose) {
            cs = 1;
            ls = C;
            FL_BY_KIND(FL_ROWS)
        } else {
            if (transpose) {
                FL_S(fl_transpose)(z, C, lanes, ztile);
                z = ztile;
                if (y) {
                    FL_S(fl_transpose)(y, C, lanes, ytile);
                    y = ytile;
                }
                cs = lanes;
            }
            FL_BY_KIND(FL_TILE)
        }
#undef FL_TILE
#undef FL_ROWS
#undef FL_BY_KIND
        if (!probabilities) FL_S(fl_ce_gather_targets)(z, target, w, cs, ls, lanes, z_t, w_t);

        /* each lane's loss and the coefficients of its class pass */
        double sum = 0;
        if (probabilities) {
#pragma omp simd reduction(+ : sum)
            for (ptrdiff_t l = 0; l < lanes; l++) {
                FL_T log_se = FL_S(fl_log_se)(se[l], rest[l]);
                losses[l] = (FL_T)FL_S(fl_ce_probabilities)(log_se, half_dist[l], a_sum[l]);
                sum += losses[l];
                k_sum[l] = a_sum[l];
            }
        } else {
            double step_weight = 0;
#pragma omp simd reduction(+ : step_weight)
            for (ptrdiff_t l = 0; l < lanes; l++) step_weight += w_t[l];
            weight_sum += step_weight;
            if (kind == FL_CE_FOCAL) {
#define FL_FOCAL_LOSSES(general)                                                          \
    _Pragma("omp simd reduction(+ : sum)") for (ptrdiff_t l = 0; l < lanes; l++) {       \
        FL_T log_se = FL_S(fl_log_se)(se[l], rest[l]);                                    \
        fl_acc nll = FL_S(fl_nll)(m[l], z_t[l], log_se);                                  \
        fl_acc loss = FL_S(fl_softmax_focal)(nll, w_t[l], m[l], z_t[l], se[l], rest[l],   \
                                             log_se, gamma, int_gamma, general);          \
        losses[l] = target[l] >= 0 ? (FL_T)loss : 0;                                      \
        sum += losses[l];                                                                 \
        FL_T other, U = FL_S(fl_softmax_focal_factor)(m[l], z_t[l], se[l], rest[l], log_se, \
                                                       gamma, int_gamma, general, &other); \
        FL_T u = other / se[l];                                                           \
        FL_T p_t = FL_S(fl_exp_nonpos)(z_t[l] - m[l]) / se[l];                            \
        FL_T pn = FL_S(fl_coef_inf)(p_t, (FL_T)nll);                                      \
        FL_T K = gamma * pn + u, wU = w_t[l] * U;                                         \
        k_sum[l] = wU * K;                                                                \
        k_t[l] = wU;                                                                      \
        k_K[l] = K;                                                                       \
        k_p_t[l] = p_t;                                                                   \
        k_pn[l] = pn;                                                                     \
        k_inv_other[l] = other == 0 ? 0 : 1 / other;                                      \
        k_hess_t[l] = wU * (gamma * gamma * p_t * pn + (2 * gamma + 1) * u * p_t -        \
                            gamma * u * pn);                                              \
    }
                /* integer gamma or not: a constant in each loop (a branch inside stops GCC from
                 * vectorizing it) */
                if (int_gamma >= 0) {
                    FL_FOCAL_LOSSES(0)
                } else {
                    FL_FOCAL_LOSSES(1)
                }
#undef FL_FOCAL_LOSSES
            } else {
#define FL_LOSSES(kind)                                                                       \
    _Pragma("omp simd reduction(+ : sum)") for (ptrdiff_t l = 0; l < lanes; l++) {           \
        FL_T log_se = FL_S(fl_log_se)(se[l], rest[l]);                                        \
        fl_acc nll = FL_S(fl_nll)(m[l], z_t[l], log_se);                                      \
        fl_acc loss = kind == FL_CE_PLAIN                                                     \
                          ? fl_coef_f64((fl_acc)w_t[l], nll)                                  \
                          : FL_S(fl_ce_smoothed)(nll, w_t[l], log_se, half_dist[l], w_sum,    \
                                                 eps, eps_over_c);                            \
        losses[l] = target[l] >= 0 ? (FL_T)loss : 0;                                          \
        sum += losses[l];                                                                     \
        k_sum[l] = (1 - eps) * w_t[l] + eps_over_c * w_sum;                                   \
        k_t[l] = (1 - eps) * w_t[l];                                                          \
    }
                if (kind == FL_CE_PLAIN) {
                    FL_LOSSES(FL_CE_PLAIN)
                } else {
                    FL_LOSSES(FL_CE_SMOOTHED)
                }
#undef FL_LOSSES
            }
        }
        if (a->out) memcpy((FL_T *)a->out + p, losses, (size_t)lanes * sizeof(FL_T));
        loss_sum += sum;
#pragma omp simd
        for (ptrdiff_t l = 0; l < lanes; l++) inv_se[l] = 1 / se[l];

        /* the class pass: element (c, l) of the input is z[c*cs + l*ls] (transposed into the
         * tile for few classes), of the gradient gp[c*gcs + l*gls] (the tiles transposed
         * back after the pass) */
        const ptrdiff_t at = n * C * S + s;
        FL_T *gp = transpose ? gtile : G + at, *hp = transpose ? htile : H ? H + at : NULL;
        const ptrdiff_t gcs = transpose ? lanes : S, gls = S == 1 && !transpose ? C : 1;
#define FL_ELEM(kind, has_h, c, l)                                                            \
    do {                                                                                      \
        FL_T g_, h_;                                                                          \
        FL_S(fl_ce_grad_elem)(z[(c) * cs + (l) * ls], y ? y[(c) * cs + (l) * ls] : 0, w[c],   \
                              target[l] == (c), probabilities || target[l] >= 0, m[l], se[l], \
                              inv_se[l], rest[l], k_sum[l], k_t[l], k_K[l], k_p_t[l],         \
                              k_pn[l], k_inv_other[l], k_hess_t[l], keep, eps_over_c, w_sum,  \
                              gamma, scale, &g_, &h_, kind);                                  \
        gp[(c) * gcs + (l) * gls] = g_;                                                       \
        if (has_h) hp[(c) * gcs + (l) * gls] = h_;                                            \
    } while (0)
#define FL_LOOPS(kind, has_h)                                                           \
    if (S == 1 && !transpose) {                                                         \
        for (ptrdiff_t l = 0; l < lanes; l++)                                           \
            _Pragma("omp simd") for (ptrdiff_t c = 0; c < C; c++)                       \
                FL_ELEM(kind, has_h, c, l);                                             \
    } else {                                                                            \
        for (ptrdiff_t c = 0; c < C; c++)                                               \
            _Pragma("omp simd") for (ptrdiff_t l = 0; l < lanes; l++)                   \
                FL_ELEM(kind, has_h, c, l);                                             \
    }
#define FL_PASS(kind) \
    if (H) { FL_LOOPS(kind, 1) } else { FL_LOOPS(kind, 0) }
        switch (kind) {
        case FL_CE_FOCAL: FL_PASS(FL_CE_FOCAL) break;
        case FL_CE_PROBABILITIES: FL_PASS(FL_CE_PROBABILITIES) break;
        default: FL_PASS(FL_CE_PLAIN)
        }
        if (transpose) { /* the (C, lanes) tiles back to (lanes, C) rows */
            FL_S(fl_transpose_body)(gtile, lanes, 0, C, G + p * C);
            if (H) FL_S(fl_transpose_body)(htile, lanes, 0, C, H + p * C);
        }
#undef FL_LOOPS
#undef FL_PASS
#undef FL_ELEM
    }
    result->loss = loss_sum;
    result->weight = weight_sum;
    result->bad = bad;
}
