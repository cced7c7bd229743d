/* The kernels compiled for x86-64-v4: AVX-512 (F, BW, DQ, VL). Only called when the CPU has them (fl_dispatch.c).
 * GCC on x86-64 only: elsewhere this unit is empty and the scalar kernels are the only path. */
#include "fl_dispatch.h"
#if FL_X86_DISPATCH
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#pragma GCC target("arch=x86-64-v4")
#define FL_TABLE fl_table_avx512
#define FL_TABLE_NAME "avx512"
#include "fl_kernels.h"
#endif
