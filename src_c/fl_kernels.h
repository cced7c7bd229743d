/* fl_kernels.h: every kernel, compiled once per instruction set. Each fl_isa_*.c translation unit
 * sets its target and includes this file, which instantiates the templates for float and double
 * and exports one symbol: the table FL_TABLE of the kernels compiled for that target.
 */
#include <float.h>
#include <limits.h>

#include "fl_dispatch.h"
#include "fl_math.h"

#define FL_T float
#define FL_S(name) name##_f32
#define FL_MAX FLT_MAX
#include "fl_stats_tmpl.h"
#include "fl_binary_tmpl.h"
#include "fl_softmax_tmpl.h"
#include "fl_grad_tmpl.h"
#undef FL_T
#undef FL_S
#undef FL_MAX

#define FL_T double
#define FL_S(name) name##_f64
#define FL_MAX DBL_MAX
#include "fl_stats_tmpl.h"
#include "fl_binary_tmpl.h"
#include "fl_softmax_tmpl.h"
#include "fl_grad_tmpl.h"
#undef FL_T
#undef FL_S
#undef FL_MAX

/* The roofline: read every 8-byte word of a buffer (args points to its address), the least any
 * loss must do with its inputs. The XOR of the words keeps the loads from being optimized away. */
static void fl_read_block(const void *args, ptrdiff_t start, ptrdiff_t len,
                          fl_block_result *result) {
    const uint64_t *words = *(const uint64_t *const *)args + start;
    uint64_t acc = 0;
#pragma omp simd reduction(^ : acc)
    for (ptrdiff_t k = 0; k < len; k++) acc ^= words[k];
    result->loss = (double)(acc & 0xffff);
}

const fl_kernel_table FL_TABLE = {
    FL_TABLE_NAME,
    {fl_bce_block_f32, fl_bce_block_f64},
    {fl_bce_logits_block_f32, fl_bce_logits_block_f64},
    {fl_sigmoid_focal_block_f32, fl_sigmoid_focal_block_f64},
    {fl_ce_block_f32, fl_ce_block_f64},
    {fl_bce_grad_block_f32, fl_bce_grad_block_f64},
    {fl_bce_logits_grad_block_f32, fl_bce_logits_grad_block_f64},
    {fl_sigmoid_focal_grad_block_f32, fl_sigmoid_focal_grad_block_f64},
    {fl_ce_grad_block_f32, fl_ce_grad_block_f64},
    fl_read_block,
};
