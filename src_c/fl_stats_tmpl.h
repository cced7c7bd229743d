/* fl_stats_tmpl.h: reading broadcast operands and accumulating streaming statistics
 * (fl_stats.h) for one float type; included by fl_kernels.h with FL_T and FL_S(name) defined,
 * before the loss templates that use it.
 */

/* NULL when the operand is absent. Periodic operands (repeat == 1) come tiled, so a pointer into
 * them serves the whole block; operands constant over runs of `repeat` elements are expanded
 * into buf run by run. */
FL_INLINE const FL_T *FL_S(fl_read_operand)(const fl_operand *op, ptrdiff_t start,
                                            ptrdiff_t len, FL_T *buf) {
    const FL_T *d = (const FL_T *)op->data;
    if (d == NULL) return NULL;
    if (op->repeat == 1) return d + start % op->period;
    ptrdiff_t j = (start / op->repeat) % op->period;
    ptrdiff_t run = op->repeat - start % op->repeat;
    for (ptrdiff_t k = 0; k < len; run = op->repeat, j = (j + 1 == op->period) ? 0 : j + 1) {
        ptrdiff_t end = k + run < len ? k + run : len;
        FL_T v = d[j];
        for (; k < end; k++) buf[k] = v;
    }
    return buf;
}

/* Each loss's counter (index into r->hist, copy included), computed in float32 and vectorized:
 * the slot guessed from g (see fl_stats.h), FL_SLOT_NEAR when g is within the tolerance of a
 * bin boundary (the caller then searches the edges), FL_SLOT_SKIP for nan and positions
 * without a loss. Returns whether any was near. spacing, shift (st->copy_shift) and has_rows
 * are constants after inlining. */
FL_INLINE int FL_S(fl_hist_guess)(const fl_stats *st, const FL_T *restrict l,
                                  const int *restrict row, ptrdiff_t n, int *restrict counter,
                                  const int spacing, const int shift, const int has_rows) {
    const float origin = (float)st->origin, scale = (float)st->scale;
    const float tol_abs = (float)st->tol_abs, tol_rel = (float)st->tol_rel;
    const float top = (float)st->n_bins + 0.5f;
    const int copy_mask = (1 << shift) - 1;
    const int skip = (int)FL_SLOT_SKIP(st->n_bins) << shift;
    const int near_slot = (int)FL_SLOT_NEAR(st->n_bins) << shift;
    int any_near = 0;
#pragma omp simd reduction(| : any_near)
    for (int k = 0; k < (int)n; k++) { /* int lanes: n <= FL_CHUNK */
        float v = (float)l[k], g;
        if (spacing == FL_BINS_LOG) {
            float c = v > 1e-30f ? v : 1e-30f; /* keep to normal floats: far from any bin */
            c = c < 1e30f ? c : 1e30f;
            g = (fl_log2_coarse_f32(c) - origin) * scale;
        } else {
            /* subnormal operands slow the arithmetic down 100-fold: flush them to 0 (the
             * caller's tolerance covers it) */
            g = ((fabsf(v) < FLT_MIN ? 0.0f : v) - origin) * scale;
        }
        /* g from -1 (underflow) to n_bins (overflow), clamped half a bin away from any
         * boundary, so that far-out losses are not sent to the search (nor is nan) */
        g = g > -0.5f ? g : -0.5f;
        g = g < top ? g : top;
        float whole = floorf(g), frac = g - whole; /* exact */
        float tol = tol_abs + tol_rel * fabsf(g);
        int near = (frac < tol) | (frac > 1.0f - tol);
        int slot = (int)whole + 1;
        int on = has_rows ? (row[k] >= 0) & (v == v) : v == v;
        int i = near ? near_slot : (slot << shift) + (k & copy_mask);
        any_near |= near & on;
        counter[k] = on ? i : skip;
    }
    return any_near;
}

/* Accumulate a chunk of n <= FL_CHUNK losses l into r (see fl_stats.h): with has_s, times the
 * sample weights s; with has_rows (cross-entropy with class indices), only the positions whose
 * target row[k] is >= 0, each with its "mean" weight d[k]. The flags are constants after
 * inlining. */
FL_INLINE void FL_S(fl_stats_chunk)(const fl_stats *st, const FL_T *restrict l,
                                    const FL_T *restrict s, const FL_T *restrict d,
                                    const int *restrict row, ptrdiff_t n, fl_block_result *r,
                                    const int has_s, const int has_rows) {
    double sum = 0, weight = 0;
    FL_T lo = (FL_T)INFINITY, hi = -(FL_T)INFINITY;
    int count = 0, nans = 0, bad_s = 0; /* int lanes: n <= FL_CHUNK */
#pragma omp simd reduction(+ : sum, weight, count, nans) reduction(min : lo) \
    reduction(max : hi) reduction(| : bad_s)
    for (int k = 0; k < (int)n; k++) {
        FL_T v = l[k];
        int on = has_rows ? row[k] >= 0 : 1;
        if (has_s) bad_s |= !(s[k] >= 0) | (s[k] > FL_MAX);
        double term = has_s ? fl_coef_f64((double)s[k], (double)v) : (double)v;
        sum += on ? term : 0.0;
        if (has_s || has_rows) {
            double w = (has_s ? (double)s[k] : 1.0) * (has_rows ? (double)d[k] : 1.0);
            weight += on ? w : 0.0;
        }
        if (has_rows) count += on;
        nans += on & (v != v);
        FL_T v_lo = on ? v : (FL_T)INFINITY, v_hi = on ? v : -(FL_T)INFINITY;
        lo = v_lo < lo ? v_lo : lo; /* nan compares false: left out */
        hi = v_hi > hi ? v_hi : hi;
    }
    r->loss += sum;
    r->weight += has_s || has_rows ? weight : (double)n;
    r->count += has_rows ? count : n;
    r->nan_count += nans;
    r->min = (double)lo < r->min ? (double)lo : r->min;
    r->max = (double)hi > r->max ? (double)hi : r->max;
    r->flags |= bad_s ? FL_BAD_WEIGHT : 0;
    if (st->edges == NULL) return;

    /* each loss's counter, guessed (vectorized) where the spacing allows, then counted; the
     * losses near a boundary (all of them with explicit edges) then search the edges */
    int *counter = (int *)((char *)r->scratch + FL_KERNEL_SCRATCH); /* FL_CHUNK of them */
    const int shift = st->copy_shift;
    const int skip = (int)FL_SLOT_SKIP(st->n_bins) << shift;
    const int near_slot = (int)FL_SLOT_NEAR(st->n_bins) << shift;
    int any_near = 1;
#define FL_GUESS(spacing)                                                                  \
    (shift ? FL_S(fl_hist_guess)(st, l, row, n, counter, spacing, 3, has_rows)             \
           : FL_S(fl_hist_guess)(st, l, row, n, counter, spacing, 0, has_rows))
    if (st->spacing == FL_BINS_UNIFORM)
        any_near = FL_GUESS(FL_BINS_UNIFORM);
    else if (st->spacing == FL_BINS_LOG)
        any_near = FL_GUESS(FL_BINS_LOG);
    else
        for (ptrdiff_t k = 0; k < n; k++)
            counter[k] = l[k] == l[k] && !(has_rows && row[k] < 0) ? near_slot : skip;
#undef FL_GUESS
    long long *h = r->hist;
#pragma GCC unroll 8
    for (ptrdiff_t k = 0; k < n; k++) h[counter[k]]++;
    if (!any_near) return;
    for (ptrdiff_t k = 0; k < n; k++) {
        if (counter[k] != near_slot) continue;
        h[near_slot]--;
        h[fl_hist_slot(st, (double)l[k]) << shift]++;
    }
}
