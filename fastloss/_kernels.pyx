# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Drivers of the C kernels: split the work into fixed blocks, run them with the GIL released
(in parallel under OpenMP), and add the block sums in a fixed order.

The arrays arrive validated and flattened by fastloss._validate; this module trusts them. The
kernels read them through data pointers and element strides (one driver serves every input and
target dtype; the C side converts a block at a time), so nothing here copies data.
"""
cimport numpy as cnp
from cython.parallel cimport prange

import numpy as np

cnp.import_array()

BLOCK = FL_BLOCK
SIMD_PATHS = ("scalar", "avx2", "avx512")

cdef const fl_kernel_table *_table = fl_kernels_for(b"auto")
cdef bint _in_forked_child = False


def set_simd_path(str name):
    """Select the kernels of one instruction set ("auto" for the best this CPU supports).

    Raises ValueError for an unknown path or one this CPU (or this build) does not support.
    """
    global _table
    cdef const fl_kernel_table *table = fl_kernels_for(name.encode())
    if table == NULL:
        supported = [p for p in SIMD_PATHS if fl_kernels_for(p.encode()) != NULL]
        raise ValueError(f"SIMD path {name!r} is not available here; choose 'auto' or one of "
                         f"{supported}")
    _table = table


def simd_path():
    return _table.name.decode()


def supported_simd_paths():
    return tuple(p for p in SIMD_PATHS if fl_kernels_for(p.encode()) != NULL)


def openmp_enabled():
    return bool(fl_openmp_enabled())


def max_threads():
    """omp_get_max_threads(): OMP_NUM_THREADS and threadpoolctl limits; 1 in a forked child."""
    return 1 if _in_forked_child else fl_max_threads()


def _after_fork_in_child():
    # libgomp's thread pool does not survive fork: a parallel region in the child would hang.
    global _in_forked_child
    _in_forked_child = True


cdef inline const void *_data(object a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline ptrdiff_t _stride(cnp.ndarray a):
    return cnp.PyArray_STRIDES(a)[0] // cnp.PyArray_ITEMSIZE(a)


def binary_loss(str loss, cnp.ndarray input, cnp.ndarray target, int target_type,
                object weight, Py_ssize_t weight_period, Py_ssize_t weight_repeat,
                object pos_weight, Py_ssize_t pos_weight_period, Py_ssize_t pos_weight_repeat,
                object out, int n_threads):
    """Run an elementwise loss over 1-D operands; return (sum in float64, OR of the flags).

    input: 1-D float32/float64 (any element stride); target: 1-D of input's dtype, uint8 or int64
    (target_type says which); weight, pos_weight: None or prepared operands (fl_operand in
    fl_binary.h); out: None or a C-contiguous array of input's size and dtype.
    """
    cdef Py_ssize_t n = input.shape[0]
    cdef Py_ssize_t nblocks = (n + FL_BLOCK - 1) // FL_BLOCK
    cdef int is_double = input.dtype == np.float64
    cdef fl_binary_fn fn
    if loss == "binary_cross_entropy":
        fn = _table.bce[is_double]
    elif loss == "binary_cross_entropy_with_logits":
        fn = _table.bce_logits[is_double]
    else:
        raise ValueError(f"unknown binary loss {loss!r}")

    cdef fl_binary_args args
    args.input = cnp.PyArray_DATA(input)
    args.input_stride = _stride(input)
    args.target = cnp.PyArray_DATA(target)
    args.target_stride = _stride(target)
    args.target_type = target_type
    args.weight.data = _data(weight)
    args.weight.period = weight_period
    args.weight.repeat = weight_repeat
    args.pos_weight.data = _data(pos_weight)
    args.pos_weight.period = pos_weight_period
    args.pos_weight.repeat = pos_weight_repeat
    args.out = <void *>_data(out)

    block_sums = np.empty(nblocks, dtype=np.float64)
    block_flags = np.empty(nblocks, dtype=np.uint8)
    cdef double[::1] sums = block_sums
    cdef unsigned char[::1] flags = block_flags
    cdef Py_ssize_t b
    cdef double total = 0.0
    cdef unsigned char any_flags = 0
    if _in_forked_child:
        n_threads = 1
    with nogil:
        if n_threads == 1 or nblocks == 1:
            for b in range(nblocks):
                sums[b] = fn(&args, b * FL_BLOCK, min(<Py_ssize_t>FL_BLOCK, n - b * FL_BLOCK),
                             &flags[b])
        else:
            for b in prange(nblocks, num_threads=n_threads, schedule="static"):
                sums[b] = fn(&args, b * FL_BLOCK, min(<Py_ssize_t>FL_BLOCK, n - b * FL_BLOCK),
                             &flags[b])
        # In block order, whatever thread computed each block: bitwise reproducible.
        for b in range(nblocks):
            total += sums[b]
            any_flags |= flags[b]
    return total, any_flags
