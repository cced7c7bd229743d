/* fl_stats.h: streaming statistics of the per-position losses, fused into the kernels.
 *
 * When a kernel's arguments point to an fl_stats, it does not sum its losses the plain way:
 * each chunk of losses, still in the L1 staging buffers, goes through fl_stats_chunk
 * (fl_stats_tmpl.h), which accumulates into the block's fl_block_result
 *     loss   += s * l      (in double: sums over any split of the data agree to 1e-15)
 *     weight += s * d      (d: the loss's own "mean" weight, w[target] for cross-entropy, else 1)
 *     count, nan_count, min, max, and the histogram counters,
 * with s the sample weight (1 without one). The per-position losses are never stored.
 *
 * The histogram has n_bins bins between n_bins + 1 increasing edges; bin i counts the losses l
 * with edges[i] <= l < edges[i + 1], the last bin also l == edges[n_bins] (NumPy's
 * np.histogram). Counter slot 0 counts the losses below edges[0] (underflow), slot i + 1 bin i,
 * slot n_bins + 1 those above the last edge (overflow); nan losses are in nan_count only. Two
 * more slots are scratch: FL_SLOT_SKIP (nan, ignored positions) and FL_SLOT_NEAR (losses whose
 * slot is being searched). Each slot has 2^copy_shift adjacent counters, used in turn, so that
 * runs of equal slots do not wait on each other's increments (8 copies are worth it while the
 * counters stay in L1: the caller chooses).
 */
#ifndef FL_STATS_H
#define FL_STATS_H

#include "fl_block.h"

#define FL_HIST_SLOTS(n_bins) ((n_bins) + 4) /* counter slots, scratch included */
#define FL_SLOT_SKIP(n_bins) ((n_bins) + 2)
#define FL_SLOT_NEAR(n_bins) ((n_bins) + 3)

/* How a loss's slot is guessed, in float32, before (near a boundary) the edges decide. */
enum { FL_BINS_UNIFORM, /* g = (l - origin) * scale,       origin = edges[0] */
       FL_BINS_LOG,     /* g = (log2(l) - origin) * scale, origin = log2(edges[0]) */
       FL_BINS_EDGES }; /* no guess: every loss is placed by binary search */

typedef struct {
    const double *edges; /* n_bins + 1 increasing edges; NULL: no histogram */
    ptrdiff_t n_bins;
    int spacing;         /* FL_BINS_* */
    /* The guess g, in units of bins from edges[0], is trusted when its distance to the nearest
     * bin boundary exceeds tol_abs + tol_rel*|g|, a bound on its error (float32 rounding,
     * fl_log2_coarse_f32's error, the edges' deviation from even spacing) that the caller
     * computes; losses closer to a boundary are placed by binary search. */
    double origin, scale, tol_abs, tol_rel;
    int copy_shift;      /* 2^copy_shift counters per slot: 3 or 0 */
    fl_operand sample_weight;  /* of the input's type; data NULL: all 1 */
} fl_stats;

/* The counter slot of a loss v that is not nan, by binary search of the edges: branch-free,
 * so that its cost does not depend on the data (conditional moves, no mispredictions). */
static inline ptrdiff_t fl_hist_slot(const fl_stats *st, double v) {
    const double *e = st->edges, *base = e;
    for (ptrdiff_t len = st->n_bins + 1; len > 1; len -= len / 2)
        base = base[len / 2] <= v ? base + len / 2 : base; /* e[0..base] <= v, if any is */
    ptrdiff_t below = (base - e) + (*base <= v);              /* the number of edges <= v */
    return below == st->n_bins + 1 && v == e[st->n_bins] ? st->n_bins : below;
}

#endif /* FL_STATS_H */
