# The C side of the kernels (src_c/), declared once for every Cython module that drives them.
from libc.stddef cimport ptrdiff_t


cdef extern from "fl_block.h" nogil:
    enum: FL_BLOCK
    ctypedef struct fl_block_result:
        double loss
        double weight
        ptrdiff_t bad
        int flags
        ptrdiff_t count, nan_count
        double min, max
        long long *hist
        void *scratch
    enum: FL_SCRATCH_BYTES
    ctypedef void (*fl_block_fn)(const void *args, ptrdiff_t start, ptrdiff_t len,
                                 fl_block_result *result)
    ctypedef struct fl_operand:
        const void *data
        ptrdiff_t period, repeat


cdef extern from "fl_stats.h" nogil:
    Py_ssize_t FL_HIST_SLOTS(Py_ssize_t n_bins)
    enum: FL_BINS_UNIFORM, FL_BINS_LOG, FL_BINS_EDGES
    ctypedef struct fl_stats:
        const double *edges
        ptrdiff_t n_bins
        int spacing
        double origin, scale, tol_abs, tol_rel
        int copy_shift
        fl_operand sample_weight


cdef extern from "fl_binary.h" nogil:
    enum: FL_TARGET_FLOAT, FL_TARGET_U8, FL_TARGET_I64
    ctypedef struct fl_binary_args:
        const void *input
        ptrdiff_t input_stride
        const void *target
        ptrdiff_t target_stride
        int target_type
        fl_operand weight, pos_weight
        void *out
        double alpha, gamma
        const fl_stats *stats


cdef extern from "fl_softmax.h" nogil:
    enum: FL_CE_LANES
    enum: FL_INDEX_I8, FL_INDEX_I16, FL_INDEX_I32, FL_INDEX_I64, FL_INDEX_U8, FL_INDEX_U16, \
        FL_INDEX_U32, FL_INDEX_U64, FL_TARGET_PROBABILITIES
    ctypedef struct fl_softmax_args:
        const void *input
        ptrdiff_t n_classes, n_spatial
        const void *target
        int target_type
        const void *weight
        long long ignore_index
        double label_smoothing
        void *out
        int focal
        double gamma
        const fl_stats *stats


cdef extern from "fl_grad.h" nogil:
    ctypedef struct fl_binary_grad_args:
        fl_binary_args loss
        void *grad
        void *hess
        double scale
    ctypedef struct fl_softmax_grad_args:
        fl_softmax_args loss
        void *grad
        void *hess
        double scale


cdef extern from "fl_dispatch.h" nogil:
    ctypedef struct fl_kernel_table:
        const char *name
        fl_block_fn bce[2]
        fl_block_fn bce_logits[2]
        fl_block_fn sigmoid_focal[2]
        fl_block_fn cross_entropy[2]
        fl_block_fn bce_grad[2]
        fl_block_fn bce_logits_grad[2]
        fl_block_fn sigmoid_focal_grad[2]
        fl_block_fn cross_entropy_grad[2]
        fl_block_fn read
    const fl_kernel_table *fl_kernels_for(const char *name)
    int fl_openmp_enabled()
    int fl_max_threads()
    const char *fl_compiler()
    const char *fl_compile_flags()
