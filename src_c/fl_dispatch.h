/* fl_dispatch.h: the per-instruction-set kernel tables and the choice between them. */
#ifndef FL_DISPATCH_H
#define FL_DISPATCH_H

#include "fl_binary.h"
#include "fl_softmax.h"
#include "fl_grad.h"

/* Runtime dispatch needs GCC's target pragmas and __builtin_cpu_supports on x86-64 (clang and
 * other architectures get the portable kernels only). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FL_X86_DISPATCH 1
#else
#define FL_X86_DISPATCH 0
#endif

/* Kernels of one instruction set; index [0] is float, [1] is double. */
typedef struct {
    const char *name;
    fl_block_fn bce[2];            /* args: fl_binary_args */
    fl_block_fn bce_logits[2];     /* args: fl_binary_args */
    fl_block_fn sigmoid_focal[2];  /* args: fl_binary_args */
    fl_block_fn cross_entropy[2];  /* args: fl_softmax_args (softmax focal loss too) */
    fl_block_fn bce_grad[2];            /* args: fl_binary_grad_args */
    fl_block_fn bce_logits_grad[2];     /* args: fl_binary_grad_args */
    fl_block_fn sigmoid_focal_grad[2];  /* args: fl_binary_grad_args */
    fl_block_fn cross_entropy_grad[2];  /* args: fl_softmax_grad_args */
    fl_block_fn read;              /* args: the address of a buffer of 8-byte words */
} fl_kernel_table;

/* The table for a path name ("scalar", "avx2", "avx512"), or NULL when the name is unknown, not
 * compiled in, or not supported by this CPU. "auto" gives the best supported path. */
const fl_kernel_table *fl_kernels_for(const char *name);

/* OpenMP: its version (the _OPENMP date, yyyymm) or 0 when built without it, and
 * omp_get_max_threads() (1 without it). */
int fl_openmp_enabled(void);
int fl_max_threads(void);

/* The compiler that built the kernels and the flags the build passed (FL_COMPILE_FLAGS). */
const char *fl_compiler(void);
const char *fl_compile_flags(void);

#endif /* FL_DISPATCH_H */
