/* fl_softmax_tmpl.h: softmax cross-entropy and the softmax focal loss for one float type;
 * included by fl_kernels.h with FL_T and FL_S(name) defined, like fl_binary_tmpl.h.
 *
 * Per position, with m = max_c z_c and se = sum_c exp(z_c - m) (in [1, C], so nothing
 * overflows), -log p_c = (m - z_c) + log(se): a sum of two non-negative terms, for any logits.
 * Nothing of size C is ever materialized: one pass finds m, a second accumulates se and the
 * sums the loss needs. It also accumulates rest = the sum of exp(z_c - m) over the classes below
 * the maximum, which gives log(se) to full relative accuracy for confident rows (fl_log_se).
 * A row's own values are combined in double (fl_acc): a float32 difference such as m - z_t can
 * overflow for logits near +-FLT_MAX where the weighted loss is finite.
 */

typedef double fl_acc;

/* ---- The formulas ---- */

/* log(se), with se = ties + rest: ties >= 1 classes at the maximum (each adding exactly 1) and
 * rest from the others. With one maximum and rest <= 1 (every confident row), log(se) =
 * log1p(rest): rounding 1 + rest would keep only the leading digits of rest (at a logit margin
 * of 30, se - 1 ~ 1e-13 keeps 3 digits in double), and for a confident target the loss is log(se)
 * alone. se - rest is ties up to rounding: an integer, so 1.5 separates one maximum from more. */
FL_INLINE int FL_S(fl_one_maximum)(FL_T se, FL_T rest) { return se - rest < (FL_T)1.5; }

FL_INLINE FL_T FL_S(fl_log_se)(FL_T se, FL_T rest) {
    return FL_S(fl_one_maximum)(se, rest) && rest <= 1 ? FL_S(fl_log1p_unit)(rest)
                                                       : FL_S(fl_log)(se);
}

/* -log p_t = (m - z_t) + log(se) for the target logit z_t. */
FL_INLINE fl_acc FL_S(fl_nll)(FL_T m, FL_T z_t, FL_T log_se) {
    return ((fl_acc)m - (fl_acc)z_t) + (fl_acc)log_se;
}

/* Index target t with weight w_t and label smoothing eps over C classes (torch's definition):
 *     (1 - eps) * w_t * nll + eps/C * sum_c w_c * (-log p_c),
 * with eps/C * sum_c w_c * (-log p_c) = 2*half_dist + eps/C * w_sum * log(se), where
 * half_dist = sum_c (eps/C * w_c) * (m - z_c)/2: halved and scaled before it is summed, so that
 * the float sum cannot overflow where the loss does not. */
FL_INLINE fl_acc FL_S(fl_ce_smoothed)(fl_acc nll, FL_T w_t, FL_T log_se, FL_T half_dist,
                                      FL_T w_sum, FL_T eps, FL_T eps_over_c) {
    return fl_coef_f64((fl_acc)((1 - eps) * w_t), nll) + 2 * (fl_acc)half_dist +
           (fl_acc)eps_over_c * (fl_acc)w_sum * (fl_acc)log_se;
}

/* Probability targets y_c, mixed as q_c = y_c*(1 - eps) + eps/C, with class weights w_c:
 *     sum_c w_c*q_c*(-log p_c) = 2*half_dist + a_sum * log(se),
 * with a_c = w_c*q_c, a_sum = sum_c a_c and half_dist = sum_c a_c*(m - z_c)/2. */
FL_INLINE fl_acc FL_S(fl_ce_probabilities)(FL_T log_se, FL_T half_dist, FL_T a_sum) {
    return 2 * (fl_acc)half_dist + (fl_acc)a_sum * (fl_acc)log_se;
}

/* Softmax focal loss w_t * (1 - p_t)^gamma * nll, with 1 - p_t = other/se and other the sum of
 * exp(z_c - m) over c != t, from the row's sums without cancellation: for a target below the
 * maximum, other = se - e_t >= se/2 (e_t < 1 <= other); for a target at the maximum, rest when it
 * is the only one, else se - 1 >= se/2. Integer gamma (0 to 4) multiplies; other gamma use
 * exp(gamma * (log(other) - log(se))), accurate where other/se would underflow. */
FL_INLINE FL_T FL_S(fl_softmax_focal_factor)(FL_T m, FL_T z_t, FL_T se, FL_T rest, FL_T log_se,
                                             FL_T gamma, int int_gamma,
                                             const int general /* int_gamma is -1 */,
                                             FL_T *other_out) {
    FL_T e_t = FL_S(fl_exp_nonpos)(z_t - m);
    FL_T other = z_t == m && FL_S(fl_one_maximum)(se, rest) ? rest : se - e_t;
    FL_T factor;
    if (!general) {
        FL_T q = other / se, q2 = q * q;
        factor = (int_gamma & 1 ? q : 1) * (int_gamma & 2 ? q2 : 1) * (int_gamma & 4 ? q2 * q2 : 1);
    } else {
        factor = FL_S(fl_exp_nonpos)(gamma * (FL_S(fl_log)(other) - log_se));
    }
    *other_out = other;
    return factor;
}

FL_INLINE fl_acc FL_S(fl_softmax_focal)(fl_acc nll, FL_T w_t, FL_T m, FL_T z_t, FL_T se,
                                        FL_T rest, FL_T log_se, FL_T gamma, int int_gamma,
                                        const int general) {
    FL_T other;
    FL_T factor = FL_S(fl_softmax_focal_factor)(m, z_t, se, rest, log_se, gamma, int_gamma,
                                                general, &other);
    return fl_coef_f64((fl_acc)w_t, fl_coef_f64((fl_acc)factor, nll));
}

/* ---- Statistics of positions ---- */

/* The sums of one class c of one position, with d = z_c - m <= 0 and m_half = m/2: se and rest
 * (see fl_log_se), with want_sq (calibration's Brier score) sq, the sum of exp(z_c - m)^2 over
 * the classes below the maximum, and for smoothing or probability targets half_dist and a_sum (see
 * fl_ce_smoothed and fl_ce_probabilities). */
#define FL_CE_ACCUMULATE(kind, z_c, y_c, w_c, m_half, d, se, rest, half_dist, a_sum, sq)       \
    do {                                                                                       \
        FL_T e_ = FL_S(fl_exp_nonpos)(d);                                                      \
        se += e_;                                                                              \
        rest += (d) == 0 ? 0 : e_;                                                             \
        if (want_sq) sq += (d) == 0 ? 0 : e_ * e_;                                             \
        /* m/2 - z/2 is exact up to one rounding and cannot overflow */                        \
        if (kind == FL_CE_SMOOTHED)                                                            \
            half_dist += FL_S(fl_coef_inf)((w_c) * eps_over_c, (m_half) - (z_c) * (FL_T)0.5);  \
        if (kind == FL_CE_PROBABILITIES) {                                                     \
            FL_T a_ = (w_c) * ((y_c) * keep + eps_over_c);                                     \
            a_sum += a_;                                                                       \
            half_dist += FL_S(fl_coef_inf)(a_, (m_half) - (z_c) * (FL_T)0.5);                  \
        }                                                                                      \
    } while (0)

/* Per-lane statistics of a (C, lanes) tile: element (c, l) at z[c*cs + l] (y likewise, for
 * probability targets). Vectorized across lanes; m, se, rest, half_dist and a_sum receive one
 * value per lane. */
FL_INLINE void FL_S(fl_ce_tile_stats)(const FL_T *restrict z, const FL_T *restrict y,
                                      ptrdiff_t cs, ptrdiff_t C, ptrdiff_t lanes,
                                      const FL_T *restrict w, FL_T keep, FL_T eps_over_c,
                                      FL_T *restrict m, FL_T *restrict se, FL_T *restrict rest,
                                      FL_T *restrict half_dist, FL_T *restrict a_sum,
                                      FL_T *restrict sq, const int kind, const int want_sq) {
    for (ptrdiff_t l = 0; l < lanes; l++) m[l] = z[l];
    for (ptrdiff_t c = 1; c < C; c++) {
        const FL_T *zc = z + c * cs;
#pragma omp simd
        for (ptrdiff_t l = 0; l < lanes; l++) m[l] = zc[l] > m[l] ? zc[l] : m[l];
    }
#pragma omp simd
    for (ptrdiff_t l = 0; l < lanes; l++) {
        se[l] = rest[l] = 0;
        if (want_sq) sq[l] = 0;
        if (kind != FL_CE_PLAIN) half_dist[l] = a_sum[l] = 0;
    }
    for (ptrdiff_t c = 0; c < C; c++) {
        const FL_T *zc = z + c * cs;
        const FL_T *yc = kind == FL_CE_PROBABILITIES ? y + c * cs : NULL;
        const FL_T wc = w[c];
#pragma omp simd
        for (ptrdiff_t l = 0; l < lanes; l++) {
            FL_T d = zc[l] - m[l];
            FL_CE_ACCUMULATE(kind, zc[l], yc[l], wc, m[l] * (FL_T)0.5, d, se[l], rest[l],
                             half_dist[l], a_sum[l], sq[l]);
        }
    }
}

/* The same statistics for one row of C contiguous logits (y: its probabilities), vectorized
 * across classes: the layout of (N, C) input with many classes. Sums run over chunks of
 * FL_CE_CLASS_CHUNK classes in FL_T, added in double. */
FL_INLINE void FL_S(fl_ce_row_stats)(const FL_T *restrict z, const FL_T *restrict y,
                                     ptrdiff_t C, const FL_T *restrict w, FL_T keep,
                                     FL_T eps_over_c, FL_T *m_out, FL_T *se_out, FL_T *rest_out,
                                     FL_T *half_dist_out, FL_T *a_sum_out, FL_T *sq_out,
                                     const int kind, const int want_sq) {
    FL_T m = z[0];
#pragma omp simd reduction(max : m)
    for (ptrdiff_t c = 0; c < C; c++) m = z[c] > m ? z[c] : m;
    const FL_T m_half = m * (FL_T)0.5;
    double se_all = 0, rest_all = 0, half_dist_all = 0, a_sum_all = 0, sq_all = 0;
    for (ptrdiff_t c0 = 0; c0 < C; c0 += FL_CE_CLASS_CHUNK) {
        const ptrdiff_t c1 = C - c0 < FL_CE_CLASS_CHUNK ? C : c0 + FL_CE_CLASS_CHUNK;
        FL_T se = 0, rest = 0, half_dist = 0, a_sum = 0, sq = 0;
#pragma omp simd reduction(+ : se, rest, half_dist, a_sum, sq)
        for (ptrdiff_t c = c0; c < c1; c++) {
            FL_T d = z[c] - m;
            FL_CE_ACCUMULATE(kind, z[c], y[c], w[c], m_half, d, se, rest, half_dist, a_sum, sq);
        }
        se_all += se;
        rest_all += rest;
        half_dist_all += half_dist;
        a_sum_all += a_sum;
        sq_all += sq;
    }
    *m_out = m;
    *se_out = (FL_T)se_all;
    *rest_out = (FL_T)rest_all;
    *half_dist_out = (FL_T)half_dist_all;
    *a_sum_out = (FL_T)a_sum_all;
    if (want_sq) *sq_out = (FL_T)sq_all;
}

#undef FL_CE_ACCUMULATE

/* ---- Block entry point (fl_block_fn) ---- */

FL_INLINE void FL_S(fl_read_indices)(const fl_softmax_args *a, ptrdiff_t p, ptrdiff_t lanes,
                                     long long *idx) {
#define FL_READ(T)                                                                   \
    for (ptrdiff_t l = 0; l < lanes; l++) idx[l] = (long long)((const T *)a->target)[p + l]; \
    break
    switch (a->target_type) {
    case FL_INDEX_I8: FL_READ(signed char);
    case FL_INDEX_I16: FL_READ(short);
    case FL_INDEX_I32: FL_READ(int);
    case FL_INDEX_I64: FL_READ(long long);
    case FL_INDEX_U8: FL_READ(unsigned char);
    case FL_INDEX_U16: FL_READ(unsigned short);
    case FL_INDEX_U32: FL_READ(unsigned int);
    default: {
        /* a value above 2^63 - 1 fits no long long: make it a negative class other than
         * ignore_index, so that it is reported out of range (Python prints the real value) */
        const long long too_big = a->ignore_index == -1 ? -2 : -1;
        for (ptrdiff_t l = 0; l < lanes; l++) {
            unsigned long long v = ((const unsigned long long *)a->target)[p + l];
            idx[l] = v > (unsigned long long)LLONG_MAX ? too_big : (long long)v;
        }
    }
    }
#undef FL_READ
}

/* Each lane's class of positions [p, p + lanes) in target: the index, or -1 where it is
 * ignore_index or out of range; *bad becomes the first out-of-range position unless it is set
 * already. Vectorized; the first bad index is searched only if there is one. */
FL_INLINE void FL_S(fl_ce_read_targets)(const fl_softmax_args *a, ptrdiff_t p, ptrdiff_t lanes,
                                        long long *restrict idx, int *restrict target,
                                        ptrdiff_t *bad) {
    const ptrdiff_t C = a->n_classes;
    const long long ignore = a->ignore_index;
    FL_S(fl_read_indices)(a, p, lanes, idx);
    int any_bad = 0;
#pragma omp simd reduction(| : any_bad)
    for (ptrdiff_t l = 0; l < lanes; l++) {
        long long v = idx[l];
        int in_range = (v >= 0) & (v < C), ignored = v == ignore;
        any_bad |= !in_range & !ignored;
        target[l] = in_range & !ignored ? (int)v : -1;
    }
    for (ptrdiff_t l = 0; any_bad && *bad < 0 && l < lanes; l++)
        if (!(idx[l] >= 0 && idx[l] < C) && idx[l] != ignore) *bad = p + l;
}

/* Transpose rows [l0, lanes) of a (lanes, C) row-major array into columns [l0, lanes) of a
 * (C, lanes) tile. */
FL_INLINE void FL_S(fl_transpose_body)(const FL_T *restrict src, const ptrdiff_t C,
                                       ptrdiff_t l0, ptrdiff_t lanes, FL_T *restrict tile) {
    for (ptrdiff_t c = 0; c < C; c++)
#pragma omp simd
        for (ptrdiff_t l = l0; l < lanes; l++) tile[c * lanes + l] = src[l * C + c];
}

/* Each lane's target logit z_t (element (t, l) at z[t*cs + l*ls]) and class weight w_t, 0 for
 * t = -1: gathered after the class pass (from the tile in L1 when there is one), cheaper than
 * picking them up in it with a compare and two blends per class. */
FL_INLINE void FL_S(fl_ce_gather_targets)(const FL_T *restrict z, const int *restrict target,
                                          const FL_T *restrict w, ptrdiff_t cs, ptrdiff_t ls,
                                          ptrdiff_t lanes, FL_T *restrict z_t,
                                          FL_T *restrict w_t) {
#pragma omp simd
    for (ptrdiff_t l = 0; l < lanes; l++) {
        int t = target[l], c = t >= 0 ? t : 0;
        FL_T z_c = z[c * cs + l * ls], w_c = w[c];
        z_t[l] = t >= 0 ? z_c : 0;
        w_t[l] = t >= 0 ? w_c : 0;
    }
}

/* With C a constant in each case, the compiler turns the strided loads into whole-vector loads
 * and permutations: the copy then costs a small fraction of the exponentials, where a runtime
 * C left it scalar, a third of the time of (N, 10) cross-entropy. */
FL_OUTLINE void FL_S(fl_transpose)(const FL_T *restrict src, ptrdiff_t C, ptrdiff_t lanes,
                                  FL_T *restrict tile) {
    ptrdiff_t l0 = 0;
#ifdef FL_TRANSPOSE_16
    /* GCC still gathers element by element for a C that is not a power of 2 (a third of the
     * time of (N, 10) float32 cross-entropy): whole 16 x 16 blocks in registers instead */
    if (sizeof(FL_T) == sizeof(float) && C <= 16)
        for (; l0 + 16 <= lanes; l0 += 16)
            fl_transpose_16((const float *)src + l0 * C, C, (float *)tile + l0, lanes);
    if (sizeof(FL_T) == sizeof(double) && C <= 16)
        for (; l0 + 8 <= lanes; l0 += 8)
            for (ptrdiff_t c0 = 0; c0 < C; c0 += 8)
                fl_transpose_8((const double *)src + l0 * C, C, c0, (double *)tile + l0, lanes);
#endif
    switch (C) {
#define FL_CASE(K) case K: FL_S(fl_transpose_body)(src, K, l0, lanes, tile); break;
    FL_CASE(2) FL_CASE(3) FL_CASE(4) FL_CASE(5) FL_CASE(6) FL_CASE(7) FL_CASE(8) FL_CASE(9)
    FL_CASE(10) FL_CASE(11) FL_CASE(12) FL_CASE(13) FL_CASE(14) FL_CASE(15)
#undef FL_CASE
    default: FL_S(fl_transpose_body)(src, C, l0, lanes, tile);
    }
}

static void FL_S(fl_ce_block)(const void *args, ptrdiff_t start, ptrdiff_t len,
                              fl_block_result *result) {
    const fl_softmax_args *a = (const fl_softmax_args *)args;
    const fl_stats *st = a->stats; /* with statistics, fl_stats.h */
    const ptrdiff_t C = a->n_classes, S = a->n_spatial;
    const int probabilities = a->target_type == FL_TARGET_PROBABILITIES;
    const FL_T *w = (const FL_T *)a->weight;
    const FL_T eps = (FL_T)a->label_smoothing, eps_over_c = eps / (FL_T)C, keep = 1 - eps;
    const int kind = probabilities ? FL_CE_PROBABILITIES
                     : a->focal    ? FL_CE_FOCAL
                     : eps != 0    ? FL_CE_SMOOTHED
                                   : FL_CE_PLAIN;
    const FL_T gamma = a->gamma < FL_MAX ? (FL_T)a->gamma : FL_MAX; /* see fl_binary_block */
    const int int_gamma = gamma <= 4 && gamma == (int)gamma ? (int)gamma : -1;
    FL_T w_sum = 0;
    for (ptrdiff_t c = 0; c < C; c++) w_sum += w[c];
    const int transpose = S == 1 && C < FL_CE_ROW_MIN_CLASSES;

    /* the staging buffers, in the thread's scratch memory (FL_KERNEL_SCRATCH) */
    _Static_assert((2 * FL_CE_ROW_MIN_CLASSES * FL_CE_TILE_LANES + 13 * FL_CE_LANES) * sizeof(FL_T)
                   + FL_CE_LANES * (sizeof(long long) + sizeof(int)) <= FL_KERNEL_SCRATCH,
                   "the softmax staging buffers exceed the scratch memory");
    FL_T *ztile = (FL_T *)result->scratch;
    FL_T *ytile = ztile + FL_CE_ROW_MIN_CLASSES * FL_CE_TILE_LANES;
    FL_T *m = ytile + FL_CE_ROW_MIN_CLASSES * FL_CE_TILE_LANES;
    FL_T *se = m + FL_CE_LANES, *rest = se + FL_CE_LANES, *half_dist = rest + FL_CE_LANES;
    FL_T *a_sum = half_dist + FL_CE_LANES, *z_t = a_sum + FL_CE_LANES, *w_t = z_t + FL_CE_LANES;
    FL_T *losses = w_t + FL_CE_LANES, *swbuf = losses + FL_CE_LANES;
    long long *idx = (long long *)(swbuf + FL_CE_LANES);
    int *target = (int *)(idx + FL_CE_LANES); /* each lane's class, or -1: ignored, out of range */
    /* calibration (index targets): sq (see FL_CE_ACCUMULATE), each lane's confidence, outcome
     * and Brier term */
    FL_T *sq = (FL_T *)(target + FL_CE_LANES), *conf = sq + FL_CE_LANES;
    FL_T *outcome = conf + FL_CE_LANES, *brier = outcome + FL_CE_LANES;
    const int want_sq = st && st->cal_bins && !probabilities;
    double loss_sum = 0, weight_sum = 0;
    ptrdiff_t bad = -1;

    for (ptrdiff_t p = start, lanes; p < start + len; p += lanes) {
        ptrdiff_t n = p / S, s = p % S;
        lanes = start + len - p;
        if (lanes > (transpose ? FL_CE_TILE_LANES : FL_CE_LANES))
            lanes = transpose ? FL_CE_TILE_LANES : FL_CE_LANES;
        if (S > 1 && lanes > S - s) lanes = S - s; /* spatial lanes stay within one n */
        const FL_T *z = (const FL_T *)a->input + n * C * S + s;
        const FL_T *y = probabilities ? (const FL_T *)a->target + n * C * S + s : NULL;
        /* element (class c, lane l) of this step is z[c*cs + l*ls] */
        ptrdiff_t cs = S, ls = 1;

        if (!probabilities) FL_S(fl_ce_read_targets)(a, p, lanes, idx, target, &bad);

        /* the statistics, with kind a constant in each instantiated loop (focal as plain) */
#define FL_BY_KIND(CALL)                                                             \
    switch (kind) {                                                                  \
    case FL_CE_SMOOTHED:                                                             \
        if (want_sq) CALL(FL_CE_SMOOTHED, 1); else CALL(FL_CE_SMOOTHED, 0);          \
        break;                                                                       \
    case FL_CE_PROBABILITIES: CALL(FL_CE_PROBABILITIES, 0); break;                   \
    case FL_CE_FOCAL: /* the same sums as plain */                                   \
    default:                                                                         \
        if (want_sq) CALL(FL_CE_PLAIN, 1); else CALL(FL_CE_PLAIN, 0);                \
    }
#define FL_ROWS(kind, want_sq)                                                           \
    for (ptrdiff_t l = 0; l < lanes; l++)                                                \
        FL_S(fl_ce_row_stats)(z + l * C, y ? y + l * C : NULL, C, w, keep, eps_over_c,   \
                              &m[l], &se[l], &rest[l], &half_dist[l], &a_sum[l], &sq[l], \
                              kind, want_sq)
#define FL_TILE(kind, want_sq)                                                           \
    FL_S(fl_ce_tile_stats)(z, y, cs, C, lanes, w, keep, eps_over_c, m, se, rest,         \
                           half_dist, a_sum, sq, kind, want_sq)
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

        /* the losses, vectorized; their sum in double (a float sum could overflow) */
        double sum = 0;
        if (probabilities) {
#pragma omp simd reduction(+ : sum)
            for (ptrdiff_t l = 0; l < lanes; l++) {
                FL_T log_se = FL_S(fl_log_se)(se[l], rest[l]);
                losses[l] = (FL_T)FL_S(fl_ce_probabilities)(log_se, half_dist[l], a_sum[l]);
                sum += losses[l];
            }
        } else {
        /* each lane's target logit and weight, and the sum of the weights, in double */
        FL_S(fl_ce_gather_targets)(z, target, w, cs, ls, lanes, z_t, w_t);
        double step_weight = 0;
#pragma omp simd reduction(+ : step_weight)
        for (ptrdiff_t l = 0; l < lanes; l++) step_weight += w_t[l];
        weight_sum += step_weight;
#define FL_LOSSES(kind, general_gamma)                                                        \
    _Pragma("omp simd reduction(+ : sum)") for (ptrdiff_t l = 0; l < lanes; l++) {           \
        FL_T log_se = FL_S(fl_log_se)(se[l], rest[l]);                                        \
        fl_acc nll = FL_S(fl_nll)(m[l], z_t[l], log_se);                                      \
        fl_acc loss = kind == FL_CE_PLAIN ? fl_coef_f64((fl_acc)w_t[l], nll)                  \
                    : kind == FL_CE_FOCAL                                                     \
                        ? FL_S(fl_softmax_focal)(nll, w_t[l], m[l], z_t[l], se[l], rest[l],   \
                                                 log_se, gamma, int_gamma, general_gamma)     \
                        : FL_S(fl_ce_smoothed)(nll, w_t[l], log_se, half_dist[l], w_sum, eps, \
                                               eps_over_c);                                   \
        losses[l] = target[l] >= 0 ? (FL_T)loss : 0; /* ignored: 0, whatever the logits */    \
        sum += losses[l];                                                                     \
    }
        /* one loop per kind and focal gamma (integer or not): a branch inside stops GCC from
         * vectorizing it */
        if (kind == FL_CE_PLAIN) {
            FL_LOSSES(FL_CE_PLAIN, 0)
        } else if (kind == FL_CE_FOCAL && int_gamma >= 0) {
            FL_LOSSES(FL_CE_FOCAL, 0)
        } else if (kind == FL_CE_FOCAL) {
            FL_LOSSES(FL_CE_FOCAL, 1)
        } else {
            FL_LOSSES(FL_CE_SMOOTHED, 0)
        }
#undef FL_LOSSES
        }
        if (a->out) memcpy((FL_T *)a->out + p, losses, (size_t)lanes * sizeof(FL_T));
        if (!st) {
            loss_sum += sum;
            continue;
        }
        if (want_sq) {
            /* top-label calibration: the top-1 probability is 1/se; the row is right when its
             * target's logit is the maximum (ties count as right). Brier: sum_c (p_c - y_c)^2 =
             * (1 - p_t)^2 + sum_{c != t} p_c^2 = (other^2 + other_sq) / se^2, with other as in
             * fl_softmax_focal (no cancellation) and other_sq = sum_{c != t} exp(z_c - m)^2 =
             * (ties - e_t^2) + sq, ties the number of maxima (se - rest, an integer). */
#pragma omp simd
            for (ptrdiff_t l = 0; l < lanes; l++) {
                FL_T e_t = FL_S(fl_exp_nonpos)(z_t[l] - m[l]);
                int at_max = z_t[l] == m[l];
                FL_T other = at_max && FL_S(fl_one_maximum)(se[l], rest[l]) ? rest[l]
                                                                           : se[l] - e_t;
                FL_T ties = (FL_T)(int)(se[l] - rest[l] + (FL_T)0.5);
                FL_T other_sq = (ties - e_t * e_t) + sq[l];
                conf[l] = 1 / se[l];
                outcome[l] = at_max ? 1 : 0;
                brier[l] = (other * other + other_sq) / (se[l] * se[l]);
            }
        }
        const FL_T *sw = FL_S(fl_read_operand)(&st->sample_weight, p, lanes, swbuf);
        const int *rows = probabilities ? NULL : target;
#define FL_STATS(s, d, r, has_s, has_rows)                                                 \
    FL_S(fl_stats_chunk)(st, losses, s, d, r, p, lanes, conf, outcome, brier, \
                         result, has_s, has_rows)
        if (sw && rows) FL_STATS(sw, w_t, rows, 1, 1);
        else if (sw) FL_STATS(sw, NULL, NULL, 1, 0);
        else if (rows) FL_STATS(NULL, w_t, rows, 0, 1);
        else FL_STATS(NULL, NULL, NULL, 0, 0);
#undef FL_STATS
    }
    if (!st) {
        result->loss = loss_sum;
        result->weight = weight_sum;
    }
    result->bad = bad;
}
