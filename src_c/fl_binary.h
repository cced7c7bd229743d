/* fl_binary.h: the block kernels of the elementwise (binary) losses.
 *
 * The Python layer flattens input and target to 1-D, so element i of every operand is the i-th
 * element of the input in C order. A kernel call computes the elements [start, start + len) of
 * one block (len <= FL_BLOCK), writes them to out when out is not NULL, and reports their sum
 * (float lanes inside chunks of FL_CHUNK elements, chunks added in double) and FL_BAD_* flags.
 */
#ifndef FL_BINARY_H
#define FL_BINARY_H

#include "fl_block.h"
#include "fl_stats.h"

/* The elementwise losses; a constant in each instantiated loop. */
enum { FL_LOSS_BCE, FL_LOSS_BCE_LOGITS, FL_LOSS_SIGMOID_FOCAL };

/* Element types a target is read as, in place. */
enum { FL_TARGET_FLOAT = 0, /* the input's float type */
       FL_TARGET_U8 = 1,    /* uint8 and bool */
       FL_TARGET_I64 = 2 };

typedef struct {
    const void *input;  /* float or double */
    ptrdiff_t input_stride; /* in elements */
    const void *target;
    ptrdiff_t target_stride;
    int target_type;    /* FL_TARGET_* */
    fl_operand weight, pos_weight;
    void *out;          /* NULL, or C-contiguous, of the input's type */
    double alpha, gamma; /* sigmoid focal loss only; alpha < 0: no alpha term */
    const fl_stats *stats; /* NULL: plain sums */
} fl_binary_args;

#endif /* FL_BINARY_H */
