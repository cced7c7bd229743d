/* fl_grad.h: the block kernels of the gradients (and Hessian diagonals) of the losses, fused
 * with the losses themselves (fl_grad_tmpl.h).
 *
 * A gradient kernel reads the operands of its loss kernel (the same argument struct, embedded)
 * and, for every input element, writes d loss / d input to grad and d2 loss / d input2 to hess
 * (when not NULL), both multiplied by scale (1, or 1/n for a "mean" whose denominator is known
 * before the pass). The per-position losses go to loss.out when it is not NULL, and their sum,
 * the "mean" denominator and the FL_BAD_* flags are reported as the loss kernels do.
 */
#ifndef FL_GRAD_H
#define FL_GRAD_H

#include "fl_binary.h"
#include "fl_softmax.h"

/* Rows per step of the softmax gradient for few classes: the logits, probability targets,
 * gradients and Hessians of FL_GRAD_TILE_LANES rows sit transposed in four tiles. */
#define FL_GRAD_TILE_LANES 64

typedef struct {
    fl_binary_args loss; /* operands and parameters; loss.stats must be NULL */
    void *grad, *hess;   /* C-contiguous, of the input's type and size; hess may be NULL */
    double scale;
} fl_binary_grad_args;

typedef struct {
    fl_softmax_args loss; /* operands and parameters; loss.stats must be NULL */
    void *grad, *hess;    /* C-contiguous (N, C, S), of the input's type; hess may be NULL */
    double scale;
} fl_softmax_grad_args;

#endif /* FL_GRAD_H */
