/* fl_kernels.h: every kernel, compiled once per instruction set. Each fl_isa_*.c translation unit
 * sets its target and includes this file, which instantiates the templates for float and double
 * and exports one symbol: the table FL_TABLE of the kernels compiled for that target.
 */
#include "fl_dispatch.h"
#include "fl_math.h"

#define FL_T float
#define FL_S(name) name##_f32
#include "fl_binary_tmpl.h"
#include "fl_softmax_tmpl.h"
#undef FL_T
#undef FL_S

#define FL_T double
#define FL_S(name) name##_f64
#include "fl_binary_tmpl.h"
#include "fl_softmax_tmpl.h"
#undef FL_T
#undef FL_S

const fl_kernel_table FL_TABLE = {
    FL_TABLE_NAME,
    {fl_bce_block_f32, fl_bce_block_f64},
    {fl_bce_logits_block_f32, fl_bce_logits_block_f64},
    {fl_sigmoid_focal_block_f32, fl_sigmoid_focal_block_f64},
    {fl_ce_block_f32, fl_ce_block_f64},
};
