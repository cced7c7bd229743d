/* fl_block.h: what every block kernel has in common.
 *
 * A loss is computed over a fixed partition of its positions (elements, or rows of classes) into
 * blocks. Each kernel call computes one block and reports into its own fl_block_result; the
 * driver adds the results in block order. The partition depends only on the shapes, never on
 * the thread count, which makes every reduction bitwise reproducible.
 */
#ifndef FL_BLOCK_H
#define FL_BLOCK_H

#include <stddef.h>

/* Elements per block of the elementwise losses: float lanes sum inside a block, blocks add up
 * in double. */
#define FL_BLOCK 4096

/* Elements per inner step of a block: the size of the staging buffers. */
#define FL_CHUNK 512

/* The elementwise loops run over a multiple of FL_LANES elements: a shorter tail (only at the
 * end of the data: blocks and chunks are multiples of it) is padded with neutral values.
 * Otherwise its elements would go through the compiler's scalar epilogue, which may round
 * differently (other FMA contractions) than the vector body: an element's loss would depend on
 * where the data starts, and the statistics of a batch on how the data is split. (The softmax
 * losses' tails are not padded: their formulas leave no choice of contraction, see fl_coef in
 * fl_math.h; tests/test_threads.py checks both.) 16 is the longest vector (16 floats). */
#define FL_LANES 16
#define FL_PADDED(n) (((n) + FL_LANES - 1) / FL_LANES * FL_LANES)

/* Bits of fl_block_result.flags; the Python layer turns them into exceptions. */
enum { FL_BAD_INPUT = 1,    /* a probability outside [0, 1] or nan */
       FL_BAD_TARGET = 2,   /* a target outside [0, 1] or nan */
       FL_BAD_WEIGHT = 4,   /* a sample weight that is negative, infinite or nan */
       FL_BAD_GROUP = 8 };  /* a group id outside [0, n_groups) */

typedef struct {
    double loss;    /* sum of the block's losses */
    double weight;  /* sum of the weights that divide "mean" (softmax losses and statistics) */
    ptrdiff_t bad;  /* first position with an out-of-range class index, or -1 */
    int flags;      /* FL_BAD_* */
    /* Filled only when the arguments ask for statistics (fl_stats.h): */
    ptrdiff_t count, nan_count; /* positions that have a loss; those whose loss is nan */
    double min, max;            /* over the losses that are not nan */
    long long *hist;            /* the calling thread's histogram counters (added to) */
    double *extra;              /* the superblock's extras (fl_stats.h), added to */
    /* The calling thread's scratch memory, FL_SCRATCH_BYTES, aligned to 64 bytes: the staging
     * buffers live there, not on the stack, so that the kernels run in threads with small stacks
     * (Python allows 32 KiB, OMP_STACKSIZE less). */
    void *scratch;
} fl_block_result;

/* Scratch memory per thread: the kernel's staging buffers (at most FL_KERNEL_SCRATCH bytes), then
 * the statistics' counter indices and the extras' slot indices (FL_CHUNK ints each). */
#define FL_KERNEL_SCRATCH (48 * 1024)
#define FL_SCRATCH_BYTES (FL_KERNEL_SCRATCH + 4 * FL_CHUNK * sizeof(int))

/* A weight broadcast to the input without being expanded: element i reads
 * data[(i / repeat) % period]. Callers pass data tiled to period + FL_BLOCK - 1 elements when
 * repeat == 1 and period is smaller than the input, so a block reads it contiguously. */
typedef struct {
    const void *data; /* NULL: no such operand */
    ptrdiff_t period, repeat;
} fl_operand;

/* args points to the loss's argument struct (fl_binary_args, fl_softmax_args). */
typedef void (*fl_block_fn)(const void *args, ptrdiff_t start, ptrdiff_t len,
                            fl_block_result *result);

#endif /* FL_BLOCK_H */
