/* fl_dispatch.c: CPU detection and the choice of kernel table. */
#include <string.h>

#include "fl_dispatch.h"

#ifdef _OPENMP
#include <omp.h>
#endif

extern const fl_kernel_table fl_table_scalar;
#if FL_X86_DISPATCH
extern const fl_kernel_table fl_table_avx2, fl_table_avx512;
#endif

const fl_kernel_table *fl_kernels_for(const char *name) {
#if FL_X86_DISPATCH
    /* The arch levels, not single features: the avx2 kernels are built for x86-64-v3 and use
     * FMA, BMI2 and friends too. */
    __builtin_cpu_init();
    int v4 = __builtin_cpu_supports("x86-64-v4"), v3 = __builtin_cpu_supports("x86-64-v3");
    if (strcmp(name, "auto") == 0) return v4 ? &fl_table_avx512 : v3 ? &fl_table_avx2 : &fl_table_scalar;
    if (strcmp(name, "avx512") == 0) return v4 ? &fl_table_avx512 : NULL;
    if (strcmp(name, "avx2") == 0) return v3 ? &fl_table_avx2 : NULL;
#else
    if (strcmp(name, "auto") == 0) return &fl_table_scalar;
#endif
    if (strcmp(name, "scalar") == 0) return &fl_table_scalar;
    return NULL;
}

int fl_openmp_enabled(void) {
#ifdef _OPENMP
    return _OPENMP;
#else
    return 0;
#endif
}

int fl_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

const char *fl_compiler(void) {
#if defined(__clang__)
    return "clang " __clang_version__;
#elif defined(__GNUC__)
    return "gcc " __VERSION__;
#else
    return "unknown";
#endif
}

const char *fl_compile_flags(void) {
#ifdef FL_COMPILE_FLAGS
    return FL_COMPILE_FLAGS;
#else
    return "unknown";
#endif
}
