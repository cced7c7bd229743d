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

    /* ---- Extras: accumulated per superblock into fl_block_result.extra (layout below) ---- */
    /* Calibration: the confidence c of each position (binary: the probability, the input or the
     * sigmoid of the logit; softmax: the top-1 probability 1/se) in cal_bins bins between
     * cal_bins + 1 increasing edges from 0 to 1 (edges[i] <= c < edges[i + 1], the last bin
     * closed, as np.histogram); cal_uniform: the edges are np.linspace(0, 1, cal_bins + 1), so
     * floor(c * cal_bins) is the bin away from the boundaries (near one, the edges decide).
     * 0 bins: none. */
    const double *cal_edges;
    ptrdiff_t cal_bins;
    int cal_uniform;
    /* Breakdowns: the class of position i is (i / class_repeat) % n_classes for the binary
     * losses (the class axis of their input), the target index for the softmax ones; the group
     * is groups[i] (int32 or int64, groups_i64), which must be in [0, n_groups) (FL_BAD_GROUP
     * otherwise). 0 classes / groups: none. */
    ptrdiff_t n_classes, class_repeat;
    ptrdiff_t n_groups;
    const void *groups;
    int groups_i64;
    /* Bootstrap: n_boot replicates; the positions of the stream are cut into units of
     * FL_BOOT_UNIT, unit u of them weighted in replicate r by fl_poisson1(seed, u, r), a
     * Poisson(1) count. position: the stream position of this update's first position. */
    ptrdiff_t n_boot;
    unsigned long long seed;
    long long position;
    /* Layout of the extras, in doubles: one slot is 4 doubles (fl_quad), each section has its
     * slots in 2^x_shift copies (used in turn, like the histogram's) plus one scratch slot for
     * positions left out. brier: off_brier (one slot: the sum of s * brier term);
     * calibration slots {count, s, s*c, s*outcome}; class and group slots {count, s*d, s*l, 0};
     * the bootstrap n_boot sums of s*l then n_boot of s*d. n_extra: the total. */
    int x_shift;
    ptrdiff_t off_brier, off_cal, off_class, off_group, off_boot, n_extra;
} fl_stats;

#define FL_BOOT_UNIT 64 /* positions per bootstrap unit */

/* Poisson(1) counts from 31-bit uniforms u: the count is the number of thresholds u reaches,
 * thresholds round(2^31 * P(X <= j)) for j = 0..11 (P(X >= 13) = 2e-11 is left out). */
#define FL_POISSON_THRESHOLDS                                                             \
    {790015084, 1580030169, 1975037711, 2106706892, 2139624187, 2146207646, 2147304889,  \
     2147461638, 2147481232, 2147483409, 2147483626, 2147483646}

/* A unit's 64-bit key: splitmix64 of the seed and the unit index (a bijection of its input, so
 * different units of one seed never share a key). */
static inline unsigned long long fl_boot_key(unsigned long long seed, unsigned long long unit) {
    unsigned long long z = seed + (unit + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Replicate r's uniform for a key: murmur3's 32-bit finalizer of (low word + r*golden) ^ high
 * word, vectorizable across r with 32-bit multiplies; its top 31 bits. */
static inline int fl_boot_uniform(unsigned long long key, unsigned r) {
    unsigned h = ((unsigned)key + r * 0x9E3779B9u) ^ (unsigned)(key >> 32);
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return (int)(h >> 1);
}

/* The calibration bin of a confidence c in [0, 1] (cal_edges span it): from floor(c * bins)
 * corrected by one either way for uniform edges, else by a branch-free binary search. */
static inline ptrdiff_t fl_cal_bin(const fl_stats *st, double c) {
    const double *e = st->cal_edges;
    const ptrdiff_t nb = st->cal_bins;
    ptrdiff_t i;
    if (st->cal_uniform) {
        i = (ptrdiff_t)(c * (double)nb);
        i = i < 0 ? 0 : i > nb - 1 ? nb - 1 : i;
        i -= c < e[i] && i > 0;
        i += c >= e[i + 1] && i < nb - 1;
        return i;
    }
    const double *base = e;
    for (ptrdiff_t len = nb + 1; len > 1; len -= len / 2)
        base = base[len / 2] <= c ? base + len / 2 : base;
    i = base - e;
    return i > nb - 1 ? nb - 1 : i; /* c == 1: the last bin */
}

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
