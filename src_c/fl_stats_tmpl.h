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

/* ---- Extras (fl_stats.h): calibration, Brier, breakdowns, bootstrap ---- */

#ifndef FL_QUAD_DEFINED
#define FL_QUAD_DEFINED
/* One slot of four doubles, added with one vector operation where the target has one. */
typedef double fl_quad __attribute__((vector_size(32), aligned(8)));
#endif

/* Add one quad per position k to slot[k] (in its section's copy k & mask): the slots are
 * scratch-terminated, so positions left out add to the scratch slot. */
#define FL_SCATTER(section, slot, mask, QUAD)                                       \
    do {                                                                            \
        fl_quad *q_ = (fl_quad *)(section);                                         \
        for (ptrdiff_t k = 0; k < n; k++) q_[((ptrdiff_t)(slot)[k] << shift) + (k & (mask))] += (QUAD); \
    } while (0)

/* The extras of a chunk of n positions starting at position `at` of the update: l the losses,
 * s the sample weights, d the "mean" weights and row the targets (has_rows), as fl_stats_chunk
 * takes them; conf, outcome: each position's confidence and outcome (the target, or whether the
 * top-1 class is the target); brier: each position's Brier term, or NULL for the binary
 * (conf - outcome)^2. */
FL_INLINE void FL_S(fl_extras_chunk)(const fl_stats *st, const FL_T *restrict l,
                                     const FL_T *restrict s, const FL_T *restrict d,
                                     const int *restrict row, ptrdiff_t at, ptrdiff_t n,
                                     const FL_T *restrict conf, const FL_T *restrict outcome,
                                     const FL_T *restrict brier, fl_block_result *r,
                                     const int has_s, const int has_rows) {
    int *restrict slot = (int *)((char *)r->scratch + FL_KERNEL_SCRATCH) + FL_CHUNK;
    double *x = r->extra;
    const int shift = st->x_shift, mask = (1 << shift) - 1;
    if (st->cal_bins) {
        const int nb = (int)st->cal_bins, skip = nb, near_slot = nb + 1;
        double b_sum = 0;
        if (st->cal_uniform) {
            /* floor(c * nb) in FL_T, vectorized: trusted unless within a few roundings of a
             * boundary (then, rarely, fl_cal_bin decides against the edges) */
            const FL_T nb_t = (FL_T)nb, tol = 8 * nb_t * (sizeof(FL_T) == 4 ? FLT_EPSILON
                                                                           : DBL_EPSILON);
            int any_near = 0;
#pragma omp simd reduction(| : any_near)
            for (int k = 0; k < (int)n; k++) { /* int lanes: n <= FL_CHUNK */
                FL_T c = conf[k];
                int on = (has_rows ? row[k] >= 0 : 1) & (c == c);
                FL_T g = on ? c * nb_t : 0;
                FL_T whole = sizeof(FL_T) == 4 ? (FL_T)floorf((float)g) : (FL_T)floor((double)g);
                FL_T frac = g - whole;
                /* outside [0, nb] (invalid input, flagged elsewhere) the edges decide too: no
                 * clamp, whose branches GCC threaded through the rest of the body, leaving the
                 * loop scalar in the hot kernels */
                int near = (frac < tol) | (frac > 1 - tol) | (g < 0) | (g > nb_t);
                any_near |= near & on;
                slot[k] = !on ? skip : near ? near_slot : (int)whole;
            }
            for (ptrdiff_t k = 0; any_near && k < n; k++)
                if (slot[k] == near_slot) slot[k] = (int)fl_cal_bin(st, (double)conf[k]);
            /* brier tested outside the loops: a test inside left them scalar */
#define FL_BRIER_SUM(B)                                                                  \
    _Pragma("omp simd reduction(+ : b_sum)") for (int k = 0; k < (int)n; k++) {          \
        double sk = has_s ? (double)s[k] : 1.0;                                          \
        b_sum += slot[k] != skip ? sk * (B) : 0.0;                                       \
    }
#define FL_GAP(k) ((double)conf[k] - (double)outcome[k])
            if (brier) {
                FL_BRIER_SUM((double)brier[k])
            } else {
                FL_BRIER_SUM(FL_GAP(k) * FL_GAP(k))
            }
#undef FL_GAP
#undef FL_BRIER_SUM
        } else {
            for (ptrdiff_t k = 0; k < n; k++) {
                double c = (double)conf[k], o = (double)outcome[k];
                int on = (has_rows ? row[k] >= 0 : 1) & (c == c);
                slot[k] = on ? (int)fl_cal_bin(st, c) : skip;
                double sk = has_s ? (double)s[k] : 1.0;
                double b = brier ? (double)brier[k] : (c - o) * (c - o);
                b_sum += on ? sk * b : 0.0;
            }
        }
        x[st->off_brier] += b_sum;
        FL_SCATTER(x + st->off_cal, slot, mask,
                   ((fl_quad){1.0, has_s ? (double)s[k] : 1.0,
                              (has_s ? (double)s[k] : 1.0) * (double)conf[k],
                              (has_s ? (double)s[k] : 1.0) * (double)outcome[k]}));
    }
    /* the terms of sum and weight_sum, as fl_stats_chunk adds them */
#define FL_TERM_L(k) (has_s ? fl_coef_f64((double)s[k], (double)l[k]) : (double)l[k])
#define FL_TERM_W(k) ((has_s ? (double)s[k] : 1.0) * (has_rows ? (double)d[k] : 1.0))
    if (st->n_classes) {
        const int skip = (int)st->n_classes;
        if (has_rows) {
            for (ptrdiff_t k = 0; k < n; k++) slot[k] = row[k] >= 0 ? row[k] : skip;
        } else { /* (i / repeat) % n_classes, run by run */
            const ptrdiff_t rep = st->class_repeat, nc = st->n_classes;
            ptrdiff_t c = ((at / rep) % nc), left = rep - at % rep;
            for (ptrdiff_t k = 0; k < n; k++) {
                slot[k] = (int)c;
                if (--left == 0) {
                    left = rep;
                    c = c + 1 == nc ? 0 : c + 1;
                }
            }
        }
        FL_SCATTER(x + st->off_class, slot, mask,
                   ((fl_quad){1.0, FL_TERM_W(k), FL_TERM_L(k), 0.0}));
    }
    if (st->n_groups) {
        const long long ng = st->n_groups;
        int bad = 0;
        if (st->groups_i64) {
            const long long *g = (const long long *)st->groups + at;
            for (ptrdiff_t k = 0; k < n; k++) {
                int ok = (unsigned long long)g[k] < (unsigned long long)ng;
                bad |= !ok;
                slot[k] = ok && (has_rows ? row[k] >= 0 : 1) ? (int)g[k] : (int)ng;
            }
        } else {
            const int *g = (const int *)st->groups + at;
            for (ptrdiff_t k = 0; k < n; k++) {
                int ok = (unsigned)g[k] < (unsigned)ng; /* n_groups < 2^31 */
                bad |= !ok;
                slot[k] = ok && (has_rows ? row[k] >= 0 : 1) ? g[k] : (int)ng;
            }
        }
        r->flags |= bad ? FL_BAD_GROUP : 0;
        FL_SCATTER(x + st->off_group, slot, mask,
                   ((fl_quad){1.0, FL_TERM_W(k), FL_TERM_L(k), 0.0}));
    }
    if (st->n_boot) {
        /* unit by unit: the unit's sums, then its Poisson count in each replicate */
        static const int T[12] = FL_POISSON_THRESHOLDS;
        double *restrict boot_l = x + st->off_boot, *restrict boot_w = boot_l + st->n_boot;
        const int n_boot = (int)st->n_boot;
        for (ptrdiff_t k0 = 0, k1; k0 < n; k0 = k1) {
            const long long pos = st->position + at + k0, unit = pos / FL_BOOT_UNIT;
            k1 = k0 + (FL_BOOT_UNIT - pos % FL_BOOT_UNIT);
            k1 = k1 < n ? k1 : n;
            double u_l = 0, u_w = 0;
            for (ptrdiff_t k = k0; k < k1; k++) {
                int on = has_rows ? row[k] >= 0 : 1;
                u_l += on ? FL_TERM_L(k) : 0.0;
                u_w += on ? FL_TERM_W(k) : 0.0;
            }
            const unsigned long long key = fl_boot_key(st->seed, (unsigned long long)unit);
            /* each replicate's Poisson count: thresholds unrolled, vectorized across replicates */
#pragma omp simd
            for (int rep = 0; rep < n_boot; rep++) {
                int u = fl_boot_uniform(key, (unsigned)rep);
                int count = (u >= T[0]) + (u >= T[1]) + (u >= T[2]) + (u >= T[3]) + (u >= T[4]) +
                            (u >= T[5]) + (u >= T[6]) + (u >= T[7]) + (u >= T[8]) +
                            (u >= T[9]) + (u >= T[10]) + (u >= T[11]);
                boot_l[rep] += fl_coef_f64((double)count, u_l); /* 0 * inf: 0 */
                boot_w[rep] += (double)count * u_w;
            }
        }
    }
#undef FL_TERM_L
#undef FL_TERM_W
}
#undef FL_SCATTER

/* Accumulate a chunk of n <= FL_CHUNK losses l, at position `at` of the update, into r (see
 * fl_stats.h): with has_s, times the sample weights s; with has_rows (cross-entropy with class
 * indices), only the positions whose target row[k] is >= 0, each with its "mean" weight d[k];
 * the extras too when the spec asks for any (conf, outcome, brier: see fl_extras_chunk). The
 * flags are constants after inlining. */
FL_INLINE void FL_S(fl_stats_chunk_body)(const fl_stats *st, const FL_T *restrict l,
                                         const FL_T *restrict s, const FL_T *restrict d,
                                         const int *restrict row, ptrdiff_t at, ptrdiff_t n,
                                         const FL_T *conf, const FL_T *outcome,
                                         const FL_T *brier, fl_block_result *r,
                                         const int has_s, const int has_rows) {
    if (st->n_extra)
        FL_S(fl_extras_chunk)(st, l, s, d, row, at, n, conf, outcome, brier, r, has_s, has_rows);
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

/* fl_stats_chunk_body out of line, one function per combination of its flags: its vector
 * spills then take a frame of their own instead of adding up in each kernel's, whose threads may
 * run on a 16 KiB OpenMP stack. */
#define FL_STATS_VARIANT(has_s, has_rows)                                                     \
    FL_OUTLINE void FL_S(fl_stats_chunk_##has_s##_##has_rows)(                               \
        const fl_stats *st, const FL_T *restrict l, const FL_T *restrict s,                  \
        const FL_T *restrict d, const int *restrict row, ptrdiff_t at, ptrdiff_t n,          \
        const FL_T *conf, const FL_T *outcome, const FL_T *brier, fl_block_result *r) {      \
        FL_S(fl_stats_chunk_body)(st, l, s, d, row, at, n, conf, outcome, brier, r, has_s,   \
                                  has_rows);                                                 \
    }
FL_STATS_VARIANT(0, 0)
FL_STATS_VARIANT(0, 1)
FL_STATS_VARIANT(1, 0)
FL_STATS_VARIANT(1, 1)
#undef FL_STATS_VARIANT

FL_INLINE void FL_S(fl_stats_chunk)(const fl_stats *st, const FL_T *restrict l,
                                    const FL_T *restrict s, const FL_T *restrict d,
                                    const int *restrict row, ptrdiff_t at, ptrdiff_t n,
                                    const FL_T *conf, const FL_T *outcome, const FL_T *brier,
                                    fl_block_result *r, const int has_s, const int has_rows) {
    if (has_s && has_rows) FL_S(fl_stats_chunk_1_1)(st, l, s, d, row, at, n, conf, outcome, brier, r);
    else if (has_s) FL_S(fl_stats_chunk_1_0)(st, l, s, d, row, at, n, conf, outcome, brier, r);
    else if (has_rows) FL_S(fl_stats_chunk_0_1)(st, l, s, d, row, at, n, conf, outcome, brier, r);
    else FL_S(fl_stats_chunk_0_0)(st, l, s, d, row, at, n, conf, outcome, brier, r);
}

