/* The portable kernels: the compiler's baseline for the target (SSE2 on x86-64), and the only
 * path on other architectures and compilers. Always built, always correct. */
#define FL_TABLE fl_table_scalar
#define FL_TABLE_NAME "scalar"
#include "fl_kernels.h"
