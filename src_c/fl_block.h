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

/* Bits of fl_block_result.flags; the Python layer turns them into exceptions. */
enum { FL_BAD_INPUT = 1,    /* a probability outside [0, 1] or nan */
       FL_BAD_TARGET = 2 }; /* a target outside [0, 1] or nan */

typedef struct {
    double loss;    /* sum of the block's losses */
    double weight;  /* sum of the weights that divide "mean" (softmax losses; else 0) */
    ptrdiff_t bad;  /* first position with an out-of-range class index, or -1 */
    int flags;      /* FL_BAD_* */
} fl_block_result;

/* args points to the loss's argument struct (fl_binary_args, fl_softmax_args). */
typedef void (*fl_block_fn)(const void *args, ptrdiff_t start, ptrdiff_t len,
                            fl_block_result *result);

#endif /* FL_BLOCK_H */
