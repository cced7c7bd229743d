# The C side of the kernels (src_c/), declared once for every Cython module that drives them.
from libc.stddef cimport ptrdiff_t


cdef extern from "fl_binary.h" nogil:
    enum: FL_BLOCK
    ctypedef struct fl_operand:
        const void *data
        ptrdiff_t period, repeat
    ctypedef struct fl_binary_args:
        const void *input
        ptrdiff_t input_stride
        const void *target
        ptrdiff_t target_stride
        int target_type
        fl_operand weight, pos_weight
        void *out
    ctypedef double (*fl_binary_fn)(const fl_binary_args *args, ptrdiff_t start, ptrdiff_t len,
                                    unsigned char *flags)


cdef extern from "fl_dispatch.h" nogil:
    ctypedef struct fl_kernel_table:
        const char *name
        fl_binary_fn bce[2]
        fl_binary_fn bce_logits[2]
    const fl_kernel_table *fl_kernels_for(const char *name)
    int fl_openmp_enabled()
    int fl_max_threads()
