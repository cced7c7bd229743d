/* fl_softmax_tmpl.h: softmax cross-entropy for one float type; included by fl_kernels.h with
 * FL_T and FL_S(name) defined, like fl_binary_tmpl.h.
 *
 * Per position, with m = max_c z_c and se = sum_c exp(z_c - m) (in [1, C], so log(se) is exact
 * enough and nothing overflows), lse = m + log(se) and -log p_c = (m - z_c) + log(se): a sum of
 * two non-negative terms, for any logits. Nothing of size C is ever materialized: one pass finds
 * m, a second accumulates se and, when needed, sums of (m - z_c) with per-class coefficients.
 */

/* ---- The formulas ---- */

/* Index target t with weight w_t and label smoothing eps over C classes (torch's definition):
 *     (1 - eps) * w_t * nll + eps/C * sum_c w_c * (-log p_c),
 * with nll = -log p_t = (m - z_t) + log(se) and sum_c w_c * (-log p_c) = dist + w_sum * log(se),
 * dist = sum_c w_c * (m - z_c). Without smoothing it is w_t * nll. */
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

/* ---- Statistics of positions ---- */

/* Per-lane statistics of a (C, lanes) tile: element (c, l) at z[c*cs + l] (y likewise, for
 * probability targets). Vectorized across lanes; m, se, dist, a_sum receive one value per lane. */
FL_INLINE void FL_S(fl_ce_tile_stats)(const FL_T *restrict z, const FL_T *restrict y,
                                      ptrdiff_t cs, ptrdiff_t C, ptrdiff_t lanes,
                                      const FL_T *restrict w, FL_T keep, FL_T eps_over_c,
                                      FL_T *restrict m, FL_T *restrict se,
                                      FL_T *restrict dist, FL_T *restrict a_sum,
                                      const int kind) {
    for (ptrdiff_t l = 0; l < lanes; l++) m[l] = z[l];
    for (ptrdiff_t c = 1; c < C; c++) {
        const FL_T *zc = z + c * cs;
#pragma omp simd
        for (ptrdiff_t l = 0; l < lanes; l++) m[l] = zc[l] > m[l] ? zc[l] : m[l];
    }
    for (ptrdiff_t l = 0; l < lanes; l++) se[l] = dist[l] = a_sum[l] = 0;
    for (ptrdiff_t c = 0; c < C; c++) {
        const FL_T *zc = z + c * cs;
        const FL_T *yc = kind == FL_CE_PROBABILITIES ? y + c * cs : NULL;
        const FL_T wc = w[c];
#pragma omp simd
        for (ptrdiff_t l = 0; l < lanes; l++) {
            FL_T d = zc[l] - m[l];
            se[l] += FL_S(fl_exp_nonpos)(d);
            if (kind == FL_CE_PROBABILITIES) {
                FL_T a = wc * (yc[l] * keep + eps_over_c);
                a_sum[l] += a;
                dist[l] += FL_S(fl_coef)(a, -d);
            } else if (kind == FL_CE_SMOOTHED) {
                dist[l] += FL_S(fl_coef)(wc, -d);
            }
        }
    }
}

/* The same statistics for one row of C contiguous logits (y: its probabilities), vectorized
 * across classes: the layout of (N, C) input with many classes. */
FL_INLINE void FL_S(fl_ce_row_stats)(const FL_T *restrict z, const FL_T *restrict y, ptrdiff_t C,
                                     const FL_T *restrict w, FL_T keep, FL_T eps_over_c,
                                     FL_T *m_out, FL_T *se_out, FL_T *dist_out, FL_T *a_sum_out,
                                     const int kind) {
    FL_T m = z[0];
#pragma omp simd reduction(max : m)
    for (ptrdiff_t c = 0; c < C; c++) m = z[c] > m ? z[c] : m;
    FL_T se = 0, dist = 0, a_sum = 0;
#pragma omp simd reduction(+ : se, dist, a_sum)
    for (ptrdiff_t c = 0; c < C; c++) {
        FL_T d = z[c] - m;
        se += FL_S(fl_exp_nonpos)(d);
        if (kind == FL_CE_PROBABILITIES) {
            FL_T a = w[c] * (y[c] * keep + eps_over_c);
            a_sum += a;
            dist += FL_S(fl_coef)(a, -d);
        } else if (kind == FL_CE_SMOOTHED) {
            dist += FL_S(fl_coef)(w[c], -d);
        }
    }
    *m_out = m;
    *se_out = se;
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
    default: FL_READ(unsigned long long); /* above 2^63: negative, so out of range */
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
    const ptrdiff_t C = a->n_classes, S = a->n_spatial;
    const int probabilities = a->target_type == FL_TARGET_PROBABILITIES;
    const FL_T *w = (const FL_T *)a->weight;
    const FL_T eps = (FL_T)a->label_smoothing, eps_over_c = eps / (FL_T)C, keep = 1 - eps;
    const int kind = probabilities ? FL_CE_PROBABILITIES : eps != 0 ? FL_CE_SMOOTHED : FL_CE_PLAIN;
    FL_T w_sum = 0;
    for (ptrdiff_t c = 0; c < C; c++) w_sum += w[c];
    const int transpose = S == 1 && C < FL_CE_ROW_MIN_CLASSES;

    FL_T ztile[FL_CE_ROW_MIN_CLASSES * FL_CE_TILE_LANES];
    FL_T ytile[FL_CE_ROW_MIN_CLASSES * FL_CE_TILE_LANES];
    FL_T m[FL_CE_LANES], se[FL_CE_LANES], dist[FL_CE_LANES], a_sum[FL_CE_LANES];
    long long idx[FL_CE_LANES];
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

        if (S == 1 && !transpose) {
            cs = 1;
            ls = C;
#define FL_ROWS(kind)                                                                       \
    for (ptrdiff_t l = 0; l < lanes; l++)                                                   \
        FL_S(fl_ce_row_stats)(z + l * C, y ? y + l * C : NULL, C, w, keep, eps_over_c, &m[l], \
                              &se[l], &dist[l], &a_sum[l], kind)
            if (kind == FL_CE_PLAIN) FL_ROWS(FL_CE_PLAIN);
            else if (kind == FL_CE_SMOOTHED) FL_ROWS(FL_CE_SMOOTHED);
            else FL_ROWS(FL_CE_PROBABILITIES);
#undef FL_ROWS
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
#define FL_TILE(kind) \
    FL_S(fl_ce_tile_stats)(z, y, cs, C, lanes, w, keep, eps_over_c, m, se, dist, a_sum, kind)
            if (kind == FL_CE_PLAIN) FL_TILE(FL_CE_PLAIN);
            else if (kind == FL_CE_SMOOTHED) FL_TILE(FL_CE_SMOOTHED);
            else FL_TILE(FL_CE_PROBABILITIES);
#undef FL_TILE
        }
        for (ptrdiff_t l = 0; l < lanes; l++) se[l] = FL_S(fl_log)(se[l]); /* now log(se) */

        FL_T *out = a->out ? (FL_T *)a->out + p : NULL;
        if (probabilities) {
            FL_T sum = 0;
#pragma omp simd reduction(+ : sum)
            for (ptrdiff_t l = 0; l < lanes; l++) {
                FL_T loss = FL_S(fl_ce_probabilities)(se[l], dist[l], a_sum[l]);
                if (out) out[l] = loss;
                sum += loss;
            }
            loss_sum += sum;
            continue;
        }
        FL_S(fl_read_indices)(a, p, lanes, idx);
        for (ptrdiff_t l = 0; l < lanes; l++) {
            long long t = idx[l];
            FL_T loss = 0;
            if (t != ignore) {
                if (t < 0 || t >= C) {
                    if (bad < 0) bad = p + l;
                } else {
                    FL_T nll = (m[l] - z[t * cs + l * ls]) + se[l];
                    loss = kind == FL_CE_PLAIN
                               ? FL_S(fl_coef)(w[t], nll)
                               : FL_S(fl_ce_smoothed)(nll, w[t], se[l], dist[l], w_sum, eps,
                                                      eps_over_c);
                    weight_sum += w[t];
                }
            }
            if (out) out[l] = loss;
            loss_sum += loss;
        }
    }
    result->loss = loss_sum;
    result->weight = weight_sum;
    result->bad = bad;
}
