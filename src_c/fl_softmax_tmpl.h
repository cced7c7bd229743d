/* fl_softmax_tmpl.h: softmax cross-entropy and the softmax focal loss for one float type;
 * included by fl_kernels.h with FL_T and FL_S(name) defined, like fl_binary_tmpl.h.
 *
 * Per position, with m = max_c z_c and se = sum_c exp(z_c - m) (in [1, C], so nothing
 * overflows), -log p_c = (m - z_c) + log(se): a sum of two non-negative terms, for any logits.
 * Nothing of size C is ever materialized: one pass finds m, a second accumulates se and the
 * sums the loss needs. The focal loss also accumulates other = sum_{c != t} exp(z_c - m), so that
 * 1 - p_t = other/se and, for confident predictions, -log p_t = log1p(other/e_t) keep their
 * relative accuracy where 1 - p_t and log(se) - (z_t - m) would be differences of near-equals
 * (cross-entropy skips that: its absolute error there is already below 1e-6 in float32).
 */

/* ---- The formulas ---- */

/* -log p_t of target logit z_t, to full relative accuracy for the focal loss: with
 * e_t = exp(z_t - m), log1p(other/e_t) while p_t >= 1/2 (other <= e_t, so the argument is in
 * [0, 1]), else (m - z_t) + log(se). */
FL_INLINE FL_T FL_S(fl_focal_nll)(FL_T m, FL_T z_t, FL_T log_se, FL_T other) {
    FL_T e_t = FL_S(fl_exp_nonpos)(z_t - m);
    return other <= e_t ? FL_S(fl_log1p_unit)(other / e_t) : (m - z_t) + log_se;
}

/* Index target t with weight w_t and label smoothing eps over C classes (torch's definition):
 *     (1 - eps) * w_t * nll + eps/C * sum_c w_c * (-log p_c),
 * with sum_c w_c * (-log p_c) = dist + w_sum * log(se), dist = sum_c w_c * (m - z_c). */
FL_INLINE FL_T FL_S(fl_ce_smoothed)(FL_T nll, FL_T w_t, FL_T log_se, FL_T dist, FL_T w_sum,
                                    FL_T eps, FL_T eps_over_c) {
    return FL_S(fl_coef)((1 - eps) * w_t, nll) + FL_S(fl_coef)(eps_over_c, dist + w_sum * log_se);
}

/* Probability targets y_c, mixed as q_c = y_c*(1 - eps) + eps/C, with class weights w_c:
 *     sum_c w_c*q_c*(-log p_c) = dist + a_sum * log(se),
 * with a_c = w_c*q_c, a_sum = sum_c a_c and dist = sum_c a_c*(m - z_c). */
FL_INLINE FL_T FL_S(fl_ce_probabilities)(FL_T log_se, FL_T dist, FL_T a_sum) {
    return dist + a_sum * log_se;
}

/* Softmax focal loss w_t * (1 - p_t)^gamma * nll, with 1 - p_t = other/se. Integer gamma
 * (0 to 4) multiplies; other gamma use exp(gamma * (log(other) - log(se))). */
FL_INLINE FL_T FL_S(fl_softmax_focal)(FL_T nll, FL_T w_t, FL_T other, FL_T se, FL_T log_se,
                                      FL_T gamma, int int_gamma) {
    FL_T factor;
    if (int_gamma >= 0) {
        FL_T q = other / se, q2 = q * q;
        factor = (int_gamma & 1 ? q : 1) * (int_gamma & 2 ? q2 : 1) * (int_gamma & 4 ? q2 * q2 : 1);
    } else {
        factor = FL_S(fl_exp_nonpos)(gamma * (FL_S(fl_log)(other) - log_se));
    }
    return FL_S(fl_coef)(w_t, FL_S(fl_coef)(factor, nll));
}

/* ---- Statistics of positions ---- */

/* Per-lane statistics of a (C, lanes) tile: element (c, l) at z[c*cs + l] (y likewise, for
 * probability targets); t holds the lanes' target classes (-1 for none). Vectorized across
 * lanes; m, se, other, dist and a_sum receive one value per lane. */
FL_INLINE void FL_S(fl_ce_tile_stats)(const FL_T *restrict z, const FL_T *restrict y,
                                      const int *restrict t, ptrdiff_t cs, ptrdiff_t C,
                                      ptrdiff_t lanes, const FL_T *restrict w, FL_T keep,
                                      FL_T eps_over_c, FL_T *restrict m, FL_T *restrict se,
                                      FL_T *restrict other, FL_T *restrict dist,
                                      FL_T *restrict a_sum, const int kind) {
    for (ptrdiff_t l = 0; l < lanes; l++) m[l] = z[l];
    for (ptrdiff_t c = 1; c < C; c++) {
        const FL_T *zc = z + c * cs;
#pragma omp simd
        for (ptrdiff_t l = 0; l < lanes; l++) m[l] = zc[l] > m[l] ? zc[l] : m[l];
    }
    for (ptrdiff_t l = 0; l < lanes; l++) se[l] = other[l] = dist[l] = a_sum[l] = 0;
    for (ptrdiff_t c = 0; c < C; c++) {
        const FL_T *zc = z + c * cs;
        const FL_T *yc = kind == FL_CE_PROBABILITIES ? y + c * cs : NULL;
        const FL_T wc = w[c];
#pragma omp simd
        for (ptrdiff_t l = 0; l < lanes; l++) {
            FL_T d = zc[l] - m[l], e = FL_S(fl_exp_nonpos)(d);
            se[l] += e;
            if (kind == FL_CE_FOCAL) other[l] += t[l] == c ? 0 : e;
            if (kind == FL_CE_SMOOTHED) dist[l] += FL_S(fl_coef_inf)(wc, -d);
            if (kind == FL_CE_PROBABILITIES) {
                FL_T a = wc * (yc[l] * keep + eps_over_c);
                a_sum[l] += a;
                dist[l] += FL_S(fl_coef_inf)(a, -d);
            }
        }
    }
}

/* The same statistics for one row of C contiguous logits (y: its probabilities; t: its target
 * class), vectorized across classes: the layout of (N, C) input with many classes. */
FL_INLINE void FL_S(fl_ce_row_stats)(const FL_T *restrict z, const FL_T *restrict y, int t,
                                     ptrdiff_t C, const FL_T *restrict w, FL_T keep,
                                     FL_T eps_over_c, FL_T *m_out, FL_T *se_out,
                                     FL_T *other_out, FL_T *dist_out, FL_T *a_sum_out,
                                     const int kind) {
    FL_T m = z[0];
#pragma omp simd reduction(max : m)
    for (ptrdiff_t c = 0; c < C; c++) m = z[c] > m ? z[c] : m;
    FL_T se = 0, other = 0, dist = 0, a_sum = 0;
#pragma omp simd reduction(+ : se, other, dist, a_sum)
    for (ptrdiff_t c = 0; c < C; c++) {
        FL_T d = z[c] - m, e = FL_S(fl_exp_nonpos)(d);
        se += e;
        if (kind == FL_CE_FOCAL) other += t == c ? 0 : e;
        if (kind == FL_CE_SMOOTHED) dist += FL_S(fl_coef_inf)(w[c], -d);
        if (kind == FL_CE_PROBABILITIES) {
            FL_T a = w[c] * (y[c] * keep + eps_over_c);
            a_sum += a;
            dist += FL_S(fl_coef_inf)(a, -d);
        }
    }
    *m_out = m;
    *se_out = se;
    *other_out = other;
    *dist_out = dist;
    *a_sum_out = a_sum;
}

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

/* Transpose rows [0, lanes) of a (lanes, C) row-major array into a (C, lanes) tile. */
FL_INLINE void FL_S(fl_transpose)(const FL_T *restrict src, ptrdiff_t C, ptrdiff_t lanes,
                                  FL_T *restrict tile) {
    for (ptrdiff_t l = 0; l < lanes; l++)
        for (ptrdiff_t c = 0; c < C; c++) tile[c * lanes + l] = src[l * C + c];
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
    const FL_T gamma = (FL_T)a->gamma;
    const int int_gamma = a->gamma <= 4 && a->gamma == (int)a->gamma ? (int)a->gamma : -1;
    FL_T w_sum = 0;
    for (ptrdiff_t c = 0; c < C; c++) w_sum += w[c];
    const int transpose = S == 1 && C < FL_CE_ROW_MIN_CLASSES;

    FL_T ztile[FL_CE_ROW_MIN_CLASSES * FL_CE_TILE_LANES];
    FL_T ytile[FL_CE_ROW_MIN_CLASSES * FL_CE_TILE_LANES];
    FL_T m[FL_CE_LANES], se[FL_CE_LANES], other[FL_CE_LANES], dist[FL_CE_LANES];
    FL_T a_sum[FL_CE_LANES], z_t[FL_CE_LANES], w_t[FL_CE_LANES], losses[FL_CE_LANES];
    FL_T swbuf[FL_CE_LANES];
    long long idx[FL_CE_LANES];
    int target[FL_CE_LANES]; /* each lane's class, or -1 when ignored or out of range */
    const long long ignore = a->ignore_index;
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

        if (!probabilities) {
            FL_S(fl_read_indices)(a, p, lanes, idx);
            for (ptrdiff_t l = 0; l < lanes; l++) {
                int in_range = idx[l] >= 0 && idx[l] < C;
                if (!in_range && idx[l] != ignore && bad < 0) bad = p + l;
                target[l] = in_range && idx[l] != ignore ? (int)idx[l] : -1;
            }
        }

        /* the statistics, with kind a constant in each instantiated loop */
#define FL_BY_KIND(CALL)                                       \
    switch (kind) {                                            \
    case FL_CE_PLAIN: CALL(FL_CE_PLAIN); break;                \
    case FL_CE_SMOOTHED: CALL(FL_CE_SMOOTHED); break;          \
    case FL_CE_FOCAL: CALL(FL_CE_FOCAL); break;                \
    default: CALL(FL_CE_PROBABILITIES);                        \
    }
#define FL_ROWS(kind)                                                                     \
    for (ptrdiff_t l = 0; l < lanes; l++)                                                 \
        FL_S(fl_ce_row_stats)(z + l * C, y ? y + l * C : NULL, target[l], C, w, keep,     \
                              eps_over_c, &m[l], &se[l], &other[l], &dist[l], &a_sum[l], kind)
#define FL_TILE(kind)                                                                  \
    FL_S(fl_ce_tile_stats)(z, y, target, cs, C, lanes, w, keep, eps_over_c, m, se, other, \
                           dist, a_sum, kind)
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

        FL_T sum = 0;
        if (probabilities) {
#pragma omp simd reduction(+ : sum)
            for (ptrdiff_t l = 0; l < lanes; l++) {
                losses[l] = FL_S(fl_ce_probabilities)(FL_S(fl_log)(se[l]), dist[l], a_sum[l]);
                sum += losses[l];
            }
        } else {
        /* gather each lane's target logit and weight, then the losses, vectorized */
        for (ptrdiff_t l = 0; l < lanes; l++) {
            int t = target[l];
            z_t[l] = t >= 0 ? z[t * cs + l * ls] : 0;
            w_t[l] = t >= 0 ? w[t] : 0;
            weight_sum += w_t[l];
        }
#define FL_LOSSES(kind)                                                                       \
    _Pragma("omp simd reduction(+ : sum)") for (ptrdiff_t l = 0; l < lanes; l++) {           \
        FL_T log_se = FL_S(fl_log)(se[l]);                                                    \
        FL_T nll = kind == FL_CE_FOCAL ? FL_S(fl_focal_nll)(m[l], z_t[l], log_se, other[l])   \
                                       : (m[l] - z_t[l]) + log_se;                            \
        FL_T loss = kind == FL_CE_PLAIN ? FL_S(fl_coef)(w_t[l], nll)                          \
                    : kind == FL_CE_FOCAL                                                     \
                        ? FL_S(fl_softmax_focal)(nll, w_t[l], other[l], se[l], log_se, gamma, \
                                                 int_gamma)                                   \
                        : FL_S(fl_ce_smoothed)(nll, w_t[l], log_se, dist[l], w_sum, eps,      \
                                               eps_over_c);                                   \
        losses[l] = target[l] >= 0 ? loss : 0; /* ignored: 0, whatever the logits */         \
        sum += losses[l];                                                                     \
    }
        if (kind == FL_CE_PLAIN) {
            FL_LOSSES(FL_CE_PLAIN)
        } else if (kind == FL_CE_FOCAL) {
            FL_LOSSES(FL_CE_FOCAL)
        } else {
            FL_LOSSES(FL_CE_SMOOTHED)
        }
#undef FL_LOSSES
        }
        if (a->out) memcpy((FL_T *)a->out + p, losses, (size_t)lanes * sizeof(FL_T));
        if (!st) {
            loss_sum += sum;
            continue;
        }
        const FL_T *sw = FL_S(fl_read_operand)(&st->sample_weight, p, lanes, swbuf);
        const int *rows = probabilities ? NULL : target;
        if (sw && rows) FL_S(fl_stats_chunk)(st, losses, sw, w_t, rows, lanes, result, 1, 1);
        else if (sw) FL_S(fl_stats_chunk)(st, losses, sw, NULL, NULL, lanes, result, 1, 0);
        else if (rows) FL_S(fl_stats_chunk)(st, losses, NULL, w_t, rows, lanes, result, 0, 1);
        else FL_S(fl_stats_chunk)(st, losses, NULL, NULL, NULL, lanes, result, 0, 0);
    }
    if (!st) {
        result->loss = loss_sum;
        result->weight = weight_sum;
    }
    result->bad = bad;
}

