/* fl_softmax.h: the block kernels of the softmax losses (cross-entropy over a class axis).
 *
 * The input is read as a C-contiguous (N, C, S) array: N rows, C classes, S spatial positions
 * (S = 1 for (N, C) input). A position is one (n, s) pair; positions are numbered p = n*S + s,
 * and each has one loss. A kernel call handles the positions [start, start + len): it writes
 * their losses to out (when not NULL) and reports their sum, the sum of their weights (the
 * denominator of "mean": weight[target], 0 for ignored positions) and the first position whose
 * class index is out of range.
 */
#ifndef FL_SOFTMAX_H
#define FL_SOFTMAX_H

#include "fl_block.h"
#include "fl_stats.h"

/* What the target holds: class indices of one of these integer types, or class probabilities
 * of the input's float type with the input's shape. */
enum { FL_INDEX_I8, FL_INDEX_I16, FL_INDEX_I32, FL_INDEX_I64,
       FL_INDEX_U8, FL_INDEX_U16, FL_INDEX_U32, FL_INDEX_U64,
       FL_TARGET_PROBABILITIES };

typedef struct {
    const void *input;          /* (N, C, S), C-contiguous, float or double */
    ptrdiff_t n_classes, n_spatial;
    const void *target;         /* (N, S) indices, or (N, C, S) probabilities; contiguous */
    int target_type;            /* FL_INDEX_* or FL_TARGET_PROBABILITIES */
    const void *weight;         /* (C,) of the input's type (ones when the user gives none) */
    long long ignore_index;
    double label_smoothing;
    void *out;                  /* (N, S) of the input's type, or NULL */
    int focal;                  /* softmax focal loss (index targets, no smoothing) */
    double gamma;               /* its exponent */
    const fl_stats *stats;      /* NULL: plain sums */
} fl_softmax_args;

/* Positions handled per inner step: the lanes of the vectorized loops, at most FL_CE_LANES, and
 * at most FL_CE_TILE_LANES when rows are transposed into (C, lanes) tiles. The tiles (for logits
 * and probabilities, FL_CE_ROW_MIN_CLASSES x FL_CE_TILE_LANES) and the per-lane values take
 * about 43 KiB in double, in the thread's scratch memory (FL_KERNEL_SCRATCH). */
#define FL_CE_LANES 128
#define FL_CE_TILE_LANES 128
/* From this many classes on, a row is processed as one vector (vectorized across classes);
 * below it, rows are transposed into a (C, lanes) tile and vectorized across rows. */
#define FL_CE_ROW_MIN_CLASSES 16
/* A long row's sums are accumulated in FL_T over this many classes at a time (at most 256 per
 * float32 lane, so nothing saturates), and those partial sums in double. */
#define FL_CE_CLASS_CHUNK 4096

/* What the statistics include, by target kind: a constant in each instantiated loop. */
enum { FL_CE_PLAIN,           /* index targets, no smoothing: m, se and rest */
       FL_CE_SMOOTHED,        /* index targets with label smoothing: also half_dist */
       FL_CE_PROBABILITIES,   /* probability targets: also half_dist and a_sum */
       FL_CE_FOCAL };         /* focal loss: as plain */

#endif /* FL_SOFTMAX_H */
