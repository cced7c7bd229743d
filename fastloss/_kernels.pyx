# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Drivers of the C kernels: split the work into fixed blocks, run them with the GIL released
(in parallel under OpenMP), and add the block results in a fixed order.

The arrays arrive validated and flattened by fastloss._validate; this module trusts them. The
kernels read them through data pointers and element strides (one driver serves every input and
target dtype; the C side converts a block at a time), so nothing here copies data.
"""
cimport numpy as cnp
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.math cimport INFINITY
from cython.parallel cimport prange, threadid

import numpy as np

cnp.import_array()

BLOCK = FL_BLOCK
SCRATCH_BYTES = FL_SCRATCH_BYTES  # per thread, for the kernels' staging buffers
BINS_UNIFORM, BINS_LOG, BINS_EDGES = FL_BINS_UNIFORM, FL_BINS_LOG, FL_BINS_EDGES
SIMD_PATHS = ("scalar", "avx2", "avx512")

cdef const fl_kernel_table *_table = fl_kernels_for(b"auto")
cdef bint _used_threads = False      # this process has run an OpenMP parallel region
cdef bint _in_forked_child = False   # ... and then forked: this is the child


def set_simd_path(str name):
    """Select the kernels of one instruction set ("auto" for the best this CPU supports).

    Raises ValueError for an unknown path or one this CPU (or this build) does not support.
    """
    global _table
    cdef const fl_kernel_table *table = fl_kernels_for(name.encode())
    if table == NULL:
        raise ValueError(f"SIMD path {name!r} is not available here; choose 'auto' or one of "
                         f"{list(supported_simd_paths())}")
    _table = table


def simd_path():
    return _table.name.decode()


def supported_simd_paths():
    return tuple(p for p in SIMD_PATHS if fl_kernels_for(p.encode()) != NULL)


def build_info():
    """How the kernels were built: compiler, flags and OpenMP version (yyyymm, 0 if none)."""
    return {"compiler": fl_compiler().decode(), "flags": fl_compile_flags().decode(),
            "openmp": fl_openmp_enabled()}


def max_threads():
    """omp_get_max_threads(): OMP_NUM_THREADS and threadpoolctl limits; 1 in a forked child."""
    return 1 if _in_forked_child else fl_max_threads()


def _after_fork_in_child():
    # libgomp's thread pool does not survive fork: once the parent has used it, a parallel
    # region in the child would hang.
    global _in_forked_child
    _in_forked_child = _used_threads


cdef inline const void *_data(object a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline ptrdiff_t _stride(cnp.ndarray a):
    return cnp.PyArray_STRIDES(a)[0] // cnp.PyArray_ITEMSIZE(a)


cdef class Statistics:
    """What a kernel accumulates besides the sum of the losses (fl_stats.h): a histogram, when
    edges is given, and a sample weight, when sample_weight is (an operand like binary_loss's
    weight). Keeps the arrays it points into alive."""
    cdef fl_stats spec
    cdef object _arrays

    def __cinit__(self, edges, int spacing, double origin, double scale, double tol_abs,
                  double tol_rel, int copy_shift, sample_weight, Py_ssize_t period,
                  Py_ssize_t repeat):
        self._arrays = (edges, sample_weight)
        self.spec.edges = <const double *>_data(edges)
        self.spec.n_bins = 0 if edges is None else edges.shape[0] - 1
        self.spec.spacing = spacing
        self.spec.origin = origin
        self.spec.scale = scale
        self.spec.tol_abs = tol_abs
        self.spec.tol_rel = tol_rel
        self.spec.copy_shift = copy_shift
        self.spec.sample_weight.data = _data(sample_weight)
        self.spec.sample_weight.period = period
        self.spec.sample_weight.repeat = repeat


cdef const fl_stats *_spec(Statistics stats):
    return NULL if stats is None else &stats.spec


cdef tuple _run_blocks(fl_block_fn fn, const void *args, Py_ssize_t n, Py_ssize_t block,
                       int n_threads, Statistics stats=None):
    """Run fn over the blocks [0, block), [block, 2*block), ... of n positions; return the sums
    of loss and weight in block order, the OR of the flags, the first bad position and, with
    stats, (count, nan count, min, max, histogram counter slots) (see fl_stats.h)."""
    cdef Py_ssize_t nblocks = (n + block - 1) // block
    cdef Py_ssize_t b
    cdef double loss = 0.0, weight = 0.0, lo = np.inf, hi = -np.inf
    cdef Py_ssize_t count = 0, nan_count = 0
    cdef int flags = 0
    cdef ptrdiff_t bad = -1
    global _used_threads
    n_threads = min(n_threads, nblocks)  # a thread without a block would only cost memory
    if _in_forked_child or nblocks == 1:
        n_threads = 1
    elif n_threads > 1:
        _used_threads = True
    # Each thread adds its histogram counts into its own copies of the slots; integer counts
    # add up the same in any order.
    cdef Py_ssize_t n_slots = 0
    if stats is not None and stats.spec.edges != NULL:
        n_slots = FL_HIST_SLOTS(stats.spec.n_bins)
    cdef Py_ssize_t copies = 1 if stats is None else 1 << stats.spec.copy_shift
    cdef Py_ssize_t hist_stride = n_slots * copies
    cdef cnp.ndarray hist = None
    cdef long long *hist_data = NULL
    if n_slots:
        # A copy per thread that gets blocks, and more than one copy only while they all fit
        # in 64 MiB and each has as many positions to count as it has counters (zeroing and
        # adding a copy costs about as much as counting that many losses): a big histogram is
        # counted by fewer threads, not in copies out of proportion to the data.
        n_threads = max(1, min(n_threads, nblocks, (64 << 20) // (8 * hist_stride),
                               n // hist_stride))
        hist = np.zeros(n_threads * hist_stride, np.int64)
        hist_data = <long long *>cnp.PyArray_DATA(hist)
    # Each thread's staging buffers live in its own slice of scratch (not on its stack, which
    # may be small), 64-byte aligned.
    cdef Py_ssize_t scratch_stride = (FL_SCRATCH_BYTES + 63) // 64 * 64
    cdef char *scratch_block = <char *>PyMem_Malloc(n_threads * scratch_stride + 64)
    cdef char *scratch = <char *>((<size_t>scratch_block + 63) // 64 * 64)
    cdef fl_block_result *results = <fl_block_result *>PyMem_Malloc(
        max(nblocks, 1) * sizeof(fl_block_result))
    if results == NULL or scratch_block == NULL:
        PyMem_Free(results)
        PyMem_Free(scratch_block)
        raise MemoryError()
    try:
        with nogil:
            if n_threads == 1:
                for b in range(nblocks):
                    _run_block(fn, args, n, block, b, results, hist_data, scratch)
            else:
                for b in prange(nblocks, num_threads=n_threads, schedule="static"):
                    _run_block(fn, args, n, block, b, results,
                               hist_data + threadid() * hist_stride,
                               scratch + threadid() * scratch_stride)
            # In block order, whatever thread computed each block: bitwise reproducible.
            for b in range(nblocks):
                loss += results[b].loss
                weight += results[b].weight
                flags |= results[b].flags
                if bad < 0:
                    bad = results[b].bad
                count += results[b].count
                nan_count += results[b].nan_count
                lo = min(lo, results[b].min)
                hi = max(hi, results[b].max)
    finally:
        PyMem_Free(results)
        PyMem_Free(scratch_block)
    if stats is None:
        return loss, weight, flags, bad, None
    slots = None
    if n_slots:  # without the scratch slots
        slots = hist.reshape(n_threads, n_slots, copies).sum(axis=(0, 2))[:-2]
    return loss, weight, flags, bad, (count, nan_count, lo, hi, slots)


cdef inline void _run_block(fl_block_fn fn, const void *args, Py_ssize_t n, Py_ssize_t block,
                            Py_ssize_t b, fl_block_result *results,
                            long long *hist, char *scratch) noexcept nogil:
    cdef fl_block_result *r = &results[b]
    r.loss = 0
    r.weight = 0
    r.bad = -1
    r.flags = 0
    r.count = 0
    r.nan_count = 0
    r.min = INFINITY
    r.max = -INFINITY
    r.hist = hist
    r.scratch = scratch
    fn(args, b * block, min(block, n - b * block), r)


def binary_loss(str loss, cnp.ndarray input, cnp.ndarray target, int target_type,
                object weight, Py_ssize_t weight_period, Py_ssize_t weight_repeat,
                object pos_weight, Py_ssize_t pos_weight_period, Py_ssize_t pos_weight_repeat,
                object out, int n_threads, double alpha=-1.0, double gamma=0.0,
                Statistics stats=None):
    """Run an elementwise loss over 1-D operands; return (sum in float64, OR of the FL_BAD_*
    flags), and with stats (weight given as its sample weight, not here) also the sum of the
    sample weights and the statistics of _run_blocks.

    input: 1-D float32/float64 (any element stride); target: 1-D of input's dtype, uint8 or int64
    (target_type says which); weight, pos_weight: None or prepared operands (fl_operand in
    fl_binary.h); out: None or a C-contiguous array of input's size and dtype; alpha, gamma: the
    sigmoid focal loss's.
    """
    cdef int is_double = input.dtype == np.float64
    cdef fl_block_fn fn
    if loss == "binary_cross_entropy":
        fn = _table.bce[is_double]
    elif loss == "binary_cross_entropy_with_logits":
        fn = _table.bce_logits[is_double]
    elif loss == "sigmoid_focal_loss":
        fn = _table.sigmoid_focal[is_double]
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
    args.alpha = alpha
    args.gamma = gamma
    args.stats = _spec(stats)
    total, weight_sum, flags, _, extra = _run_blocks(fn, &args, input.shape[0], FL_BLOCK,
                                                     n_threads, stats)
    return (total, flags) if stats is None else (total, flags, weight_sum, extra)


def softmax_block_positions(Py_ssize_t n_classes):
    """Positions per block of the softmax kernels: about FL_BLOCK logits, whole lanes."""
    return max(FL_CE_LANES, (FL_BLOCK // max(n_classes, 1)) // FL_CE_LANES * FL_CE_LANES)


def cross_entropy_loss(cnp.ndarray input, cnp.ndarray target, int target_type,
                       cnp.ndarray weight, long long ignore_index, double label_smoothing,
                       object out, int n_threads, bint focal=False, double gamma=0.0,
                       Statistics stats=None):
    """Softmax cross-entropy (or, with focal, the softmax focal loss with exponent gamma) over a
    C-contiguous (N, C, S) input; return (sum of the losses, sum of the weights that divide
    "mean", first position with an out-of-range index or -1).

    target: contiguous (N, S) class indices of the FL_INDEX_* type target_type, or (N, C, S)
    probabilities of input's dtype (FL_TARGET_PROBABILITIES); weight: (C,) of input's dtype;
    out: None or a contiguous (N, S) array of input's dtype; with stats, the statistics of
    _run_blocks follow (the weights then include the sample weights).
    """
    cdef fl_softmax_args args
    args.input = cnp.PyArray_DATA(input)
    args.n_classes = input.shape[1]
    args.n_spatial = input.shape[2]
    args.target = cnp.PyArray_DATA(target)
    args.target_type = target_type
    args.weight = _data(weight)
    args.ignore_index = ignore_index
    args.label_smoothing = label_smoothing
    args.out = <void *>_data(out)
    args.focal = focal
    args.gamma = gamma
    args.stats = _spec(stats)
    cdef fl_block_fn fn = _table.cross_entropy[input.dtype == np.float64]
    loss, weight_sum, flags, bad, extra = _run_blocks(
        fn, &args, input.shape[0] * input.shape[2], softmax_block_positions(args.n_classes),
        n_threads, stats)
    return (loss, weight_sum, bad) if stats is None else (loss, weight_sum, bad, flags, extra)


def read_words(cnp.ndarray data, int n_threads):
    """Read every 8-byte word of a C-contiguous array, in blocks like the loss kernels: the
    memory-bandwidth floor of any loss over the same bytes. Returns a checksum."""
    cdef const void *words = cnp.PyArray_DATA(data)
    loss, _, _, _, _ = _run_blocks(_table.read, &words, data.nbytes // 8, FL_BLOCK, n_threads)
    return loss
