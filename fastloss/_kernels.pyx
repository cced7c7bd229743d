# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Drivers of the C kernels: split the work into fixed blocks, run them with the GIL released
(in parallel under OpenMP), and add the block results in a fixed order.

The operands are taken as typed memoryviews (const, so read-only arrays and memmaps work), and
the kernels read them through the views' data pointers and element strides (one driver serves
every input and target dtype; the C side converts a block at a time), so nothing here copies
data. The typed boundary checks dtype, byte order, dimensions and layout; fastloss._validate
brings everything else (torch tensors, float16, byte-swapped, broadcast weights) to these types
first. binary_small and softmax_small take the common small call straight from the user: they
accept it only when the typed boundary does, and otherwise hand it back to the general path.
"""
cimport numpy as cnp
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cython cimport floating
from libc.math cimport INFINITY
from libc.string cimport memset
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from cython.parallel cimport prange, threadid

import numpy as np

cnp.import_array()

BLOCK = FL_BLOCK
SCRATCH_BYTES = FL_SCRATCH_BYTES  # per thread, for the kernels' staging buffers
BINS_UNIFORM, BINS_LOG, BINS_EDGES = FL_BINS_UNIFORM, FL_BINS_LOG, FL_BINS_EDGES
BAD_GROUP = FL_BAD_GROUP
BOOT_UNIT = FL_BOOT_UNIT  # positions per bootstrap unit
SIMD_PATHS = ("scalar", "avx2", "avx512")

# Two threads only pay from about this many elements each (measured: 2 threads are 0.43x as
# fast at 1k elements, 1.1x at 16k, 1.7x at 64k); a call below twice this runs on one thread.
MIN_ELEMENTS_PER_THREAD = 32768
cdef Py_ssize_t SMALL = 2 * MIN_ELEMENTS_PER_THREAD - 1  # most elements of a *_small call

cdef const fl_kernel_table *_table = fl_kernels_for(b"auto")
cdef bint _in_forked_child = False   # this process is a forked child: run serially


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
    # libgomp's thread pool does not survive fork: once any library in the parent has used it
    # (torch shares the same libgomp.so.1), a parallel region in the child hangs. We cannot see
    # the other libraries' regions, so every forked child runs serially.
    global _in_forked_child
    _in_forked_child = True


cdef inline const void *_data(object a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


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
        self.spec.cal_edges = NULL
        self.spec.cal_bins = self.spec.n_classes = self.spec.n_groups = self.spec.n_boot = 0
        self.spec.class_repeat = 1
        self.spec.groups = NULL
        self.spec.n_extra = 0

    def extras(self, cal_edges, bint cal_uniform, Py_ssize_t n_classes, Py_ssize_t class_repeat,
               groups, Py_ssize_t n_groups, Py_ssize_t n_boot, unsigned long long seed,
               long long position):
        """Also accumulate the extras (fl_stats.h): calibration over cal_edges (None: none),
        n_classes per-class sums (0: none; binary losses: class of position i is
        (i // class_repeat) % n_classes), per-group sums over groups (a contiguous int32/int64
        array of one id per position, or None) with ids in [0, n_groups), n_boot bootstrap
        replicates keyed by seed, this update starting at stream position `position`."""
        self._arrays = self._arrays + (cal_edges, groups)
        cdef fl_stats *st = &self.spec
        st.cal_edges = <const double *>_data(cal_edges)
        st.cal_bins = 0 if cal_edges is None else cal_edges.shape[0] - 1
        st.cal_uniform = cal_uniform
        st.n_classes = n_classes
        st.class_repeat = class_repeat
        st.groups = _data(groups)
        st.n_groups = 0 if groups is None else n_groups
        st.groups_i64 = groups is not None and groups.dtype.itemsize == 8
        st.n_boot = n_boot
        st.seed = seed
        st.position = position
        # 8 copies of each slot while they all stay small, as the histogram's (fl_stats.h)
        st.x_shift = 3 if st.cal_bins + st.n_classes + st.n_groups <= _COPIED_SLOTS else 0
        cdef Py_ssize_t copies = 1 << st.x_shift
        st.off_brier = 0
        st.off_cal = 4
        st.off_class = st.off_cal + (4 * (st.cal_bins + 1) * copies if st.cal_bins else 0)
        st.off_group = st.off_class + (4 * (st.n_classes + 1) * copies if st.n_classes else 0)
        st.off_boot = st.off_group + (4 * (st.n_groups + 1) * copies if st.n_groups else 0)
        st.n_extra = st.off_boot + 2 * n_boot
        if not (st.cal_bins or st.n_classes or st.n_groups or st.n_boot):
            st.n_extra = 0
        return self

    def extras_layout(self):
        """Where each extra sits in _run_blocks' folded extras (one double each): brier at 0,
        then (calibration, class, group) slots of 4 (count and three sums; None when absent),
        then the bootstrap's n_boot sums of s*l and n_boot of s*d."""
        cdef fl_stats *st = &self.spec
        at, parts = 1, []
        for n in (st.cal_bins, st.n_classes, st.n_groups):
            parts.append(slice(at, at + 4 * n) if n else None)
            at += 4 * n
        return (*parts, slice(at, at + 2 * st.n_boot) if st.n_boot else None, at + 2 * st.n_boot)


cdef const fl_stats *_spec(Statistics stats):
    return NULL if stats is None else &stats.spec


# Extras slots (calibration bins, classes, groups) up to this many keep 8 copies each.
cdef Py_ssize_t _COPIED_SLOTS = 512


cdef void _fold_extras(const fl_stats *st, const double *x, double *total) noexcept nogil:
    """Add one superblock's extras x to the folded totals (extras_layout), copies in order."""
    cdef Py_ssize_t copies = 1 << st.x_shift, at = 1, i, j, c, q
    cdef Py_ssize_t offsets[3]
    cdef Py_ssize_t sizes[3]
    cdef double part
    total[0] += x[st.off_brier]
    offsets[0], offsets[1], offsets[2] = st.off_cal, st.off_class, st.off_group
    sizes[0], sizes[1], sizes[2] = st.cal_bins, st.n_classes, st.n_groups
    for i in range(3):
        for j in range(sizes[i]):
            for q in range(4):
                part = 0
                for c in range(copies):
                    part += x[offsets[i] + ((j * copies + c) * 4) + q]
                total[at + 4 * j + q] += part
        at += 4 * sizes[i]
    for j in range(2 * st.n_boot):
        total[at + j] += x[st.off_boot + j]


cdef inline void _run_superblock(fl_block_fn fn, const void *args, Py_ssize_t n,
                                 Py_ssize_t block, Py_ssize_t first, Py_ssize_t last,
                                 fl_block_result *results, long long *hist, double *extra,
                                 Py_ssize_t n_extra, char *scratch) noexcept nogil:
    """Blocks [first, last) into one zeroed set of extras."""
    cdef Py_ssize_t b
    memset(extra, 0, n_extra * sizeof(double))
    for b in range(first, last):
        results[b].extra = extra
        _run_block(fn, args, n, block, b, results, hist, scratch)


cdef tuple _run_blocks(fl_block_fn fn, const void *args, Py_ssize_t n, Py_ssize_t block,
                       int n_threads, Statistics stats=None):
    """Run fn over the blocks [0, block), [block, 2*block), ... of n positions; return the sums
    of loss and weight in block order, the OR of the flags, the first bad position and, with
    stats, (count, nan count, min, max, histogram counter slots) (see fl_stats.h)."""
    cdef Py_ssize_t nblocks = (n + block - 1) // block
    cdef Py_ssize_t b
    cdef double loss = 0.0, weight = 0.0, lo = INFINITY, hi = -INFINITY
    cdef Py_ssize_t count = 0, nan_count = 0
    cdef int flags = 0
    cdef ptrdiff_t bad = -1
    # Never more threads than blocks; the block partition, not the thread count, fixes the sums.
    n_threads = 1 if _in_forked_child else max(1, min(n_threads, nblocks))
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
        # A copy per thread (each already has blocks), and more than one copy only while they
        # all fit in 64 MiB and each has as many positions to count as it has counters (zeroing
        # and adding a copy costs about as much as counting that many losses): a big histogram
        # is counted by fewer threads, not in copies out of proportion to the data.
        n_threads = max(1, min(n_threads, (64 << 20) // (8 * hist_stride), n // hist_stride))
        hist = np.zeros(n_threads * hist_stride, np.int64)
        hist_data = <long long *>cnp.PyArray_DATA(hist)
    # Each thread's staging buffers live in its own slice of scratch (not on its stack, which
    # may be small), 64-byte aligned.
    # Extras: blocks are grouped into superblocks of a fixed number of blocks (a function of
    # the extras' size, never of the thread count), each run by one thread into its own zeroed
    # extras, which are then folded into the totals in superblock order: bitwise reproducible.
    # Superblocks run in waves of a few per thread, so their extras take O(threads) memory.
    cdef Py_ssize_t n_extra = 0 if stats is None else stats.spec.n_extra
    cdef Py_ssize_t per_super = 1, n_super = 0, wave = 0, w0, w1, sb
    cdef cnp.ndarray wave_extra = None, total_extra = None
    cdef double *wave_data = NULL
    cdef double *total_data = NULL
    if n_extra:
        # zeroing and folding a superblock's extras costs at most ~4 bytes per position
        per_super = max(1, (n_extra * 2 + block - 1) // block)
        n_super = (nblocks + per_super - 1) // per_super
        n_threads = max(1, min(n_threads, n_super))
        # As many superblocks per wave as 4 MiB of extras hold (at least 4 per thread): each
        # wave is one parallel region, whose threads all have to be scheduled before it ends;
        # on a loaded machine that took ~1 ms, and waves of 8 blocks (32k positions) made two
        # threads 6x slower than one. The wave's size changes no sum: the fold is in
        # superblock order whatever the waves.
        wave = max(4 * n_threads, min(n_super, (4 << 20) // (8 * ((n_extra + 7) // 8 * 8))))
        # each superblock's extras 64-byte aligned: a slot (32 bytes) never straddles two cache
        # lines, which would stall every increment that reads the previous one's store
        n_extra = (n_extra + 7) // 8 * 8
        wave_extra = np.empty(wave * n_extra + 8, np.float64)
        wave_data = <double *>cnp.PyArray_DATA(wave_extra)
        wave_data += (64 - <size_t>wave_data % 64) % 64 // sizeof(double)
        total_extra = np.zeros(stats.extras_layout()[4], np.float64)
        total_data = <double *>cnp.PyArray_DATA(total_extra)
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
            if n_extra:
                w0 = 0
                while w0 < n_super:
                    w1 = min(w0 + wave, n_super)
                    if n_threads == 1:
                        for sb in range(w0, w1):
                            _run_superblock(fn, args, n, block, sb * per_super,
                                            min((sb + 1) * per_super, nblocks), results,
                                            hist_data, wave_data + (sb - w0) * n_extra, n_extra,
                                            scratch)
                    else:
                        for sb in prange(w0, w1, num_threads=n_threads, schedule="static"):
                            _run_superblock(fn, args, n, block, sb * per_super,
                                            min((sb + 1) * per_super, nblocks), results,
                                            hist_data + threadid() * hist_stride,
                                            wave_data + (sb - w0) * n_extra, n_extra,
                                            scratch + threadid() * scratch_stride)
                    for sb in range(w0, w1):
                        _fold_extras(&stats.spec, wave_data + (sb - w0) * n_extra, total_data)
                    w0 = w1
            elif n_threads == 1:
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
        slots = hist.reshape(n_threads, n_slots, copies).sum(axis=(0, 2))[:n_slots - 2]
    return loss, weight, flags, bad, (count, nan_count, lo, hi, slots, total_extra)


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


# ---- the typed boundary: operands as typed memoryviews, handed to C as pointer and stride ----

ctypedef fused element_t:
    float
    double
    int8_t
    int16_t
    int32_t
    int64_t
    uint8_t
    uint16_t
    uint32_t
    uint64_t


cdef inline const void *_view_data(const element_t[:] view, ptrdiff_t *stride) noexcept:
    stride[0] = view.strides[0] // <ptrdiff_t>sizeof(element_t)
    return &view[0]


cdef const void *_operand(cnp.ndarray a, ptrdiff_t *stride) except? NULL:
    """The data pointer and element stride of a 1-D array, taken through a typed memoryview of
    its dtype: raises ValueError for a byte-swapped or N-d array, TypeError for another dtype."""
    cdef char kind = a.descr.kind
    cdef Py_ssize_t size = cnp.PyArray_ITEMSIZE(a)
    if kind == b"b":  # bool is read as uint8
        return _view_data[uint8_t](a.view(np.uint8), stride)
    if kind == b"f":
        if size == 4: return _view_data[float](a, stride)
        if size == 8: return _view_data[double](a, stride)
    elif kind == b"i":
        if size == 1: return _view_data[int8_t](a, stride)
        if size == 2: return _view_data[int16_t](a, stride)
        if size == 4: return _view_data[int32_t](a, stride)
        if size == 8: return _view_data[int64_t](a, stride)
    elif kind == b"u":
        if size == 1: return _view_data[uint8_t](a, stride)
        if size == 2: return _view_data[uint16_t](a, stride)
        if size == 4: return _view_data[uint32_t](a, stride)
        if size == 8: return _view_data[uint64_t](a, stride)
    raise TypeError(f"the kernels do not read dtype {a.dtype}")


cdef inline const void *_rows_data(const floating[:, :, ::1] rows) noexcept:
    return &rows[0, 0, 0]


cdef const void *_rows(cnp.ndarray a) except? NULL:
    """The data pointer of a C-contiguous (N, C, S) float32/float64 array, through a typed
    memoryview (ValueError for another layout or byte order)."""
    if cnp.PyArray_ITEMSIZE(a) == 4:
        return _rows_data[float](a)
    return _rows_data[double](a)


cdef inline bint _thread_count_ok(object n_threads):
    return n_threads is None or type(n_threads) is int and 1 <= n_threads <= 1024


cdef inline bint _reduction_ok(object reduction):
    return type(reduction) is str and (reduction == "mean" or reduction == "sum"
                                       or reduction == "none")


cdef inline cnp.ndarray _base(object a):
    """A NumPy array as a base-class ndarray (np.matrix would stay 2-D when flattened), as the
    general path's np.asarray does."""
    return a if cnp.PyArray_CheckExact(a) else np.asarray(a)


cdef inline bint _plain(cnp.ndarray a):
    """C-contiguous (or 1-D with any stride), aligned, native byte order: readable in place."""
    return (cnp.PyArray_ISALIGNED(a) and cnp.PyArray_ISNOTSWAPPED(a)
            and (cnp.PyArray_NDIM(a) == 1 or cnp.PyArray_IS_C_CONTIGUOUS(a)))


# ---- elementwise losses ----

cdef fl_block_fn _binary_kernel(str loss, bint is_double) except NULL:
    if loss == "binary_cross_entropy":
        return _table.bce[is_double]
    if loss == "binary_cross_entropy_with_logits":
        return _table.bce_logits[is_double]
    if loss == "sigmoid_focal_loss":
        return _table.sigmoid_focal[is_double]
    raise ValueError(f"unknown binary loss {loss!r}")


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
    cdef fl_binary_args args
    args.input = _operand(input, &args.input_stride)
    args.target = _operand(target, &args.target_stride)
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
    fn = _binary_kernel(loss, cnp.PyArray_ITEMSIZE(input) == 8)
    total, weight_sum, flags, _, extra = _run_blocks(fn, &args, input.shape[0], FL_BLOCK,
                                                     n_threads, stats)
    return (total, flags) if stats is None else (total, flags, weight_sum, extra)


def binary_small(str loss, object input, object target, object reduction, object n_threads,
                 double alpha=-1.0, double gamma=0.0):
    """The common small call of an elementwise loss without weights, straight from the user's
    arguments; (sum, FL_BAD_* flags, the per-element losses for reduction "none" else None).

    Taken when input and target are NumPy arrays of one shape with 1 to SMALL elements (one
    thread: n_threads only caps it), 1-D or C-contiguous, aligned, native byte order, input
    float32/float64 and target of its dtype, bool, uint8 or int64, reduction a known name and
    n_threads None or in [1, 1024]. Returns None for any other call, which the general path then
    validates (and rejects with a clear error, or converts).
    """
    if not (cnp.PyArray_Check(input) and cnp.PyArray_Check(target)
            and _reduction_ok(reduction) and _thread_count_ok(n_threads)):
        return None
    cdef cnp.ndarray x = _base(input), y = _base(target)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    if not (0 < n <= SMALL and cnp.PyArray_SAMESHAPE(x, y) and _plain(x) and _plain(y)):
        return None
    cdef int xt = cnp.PyArray_TYPE(x), yt = cnp.PyArray_TYPE(y)
    cdef int target_type
    if xt != cnp.NPY_FLOAT32 and xt != cnp.NPY_FLOAT64:
        return None
    if yt == xt:
        target_type = FL_TARGET_FLOAT
    elif yt == cnp.NPY_BOOL or yt == cnp.NPY_UINT8:
        target_type = FL_TARGET_U8
    elif y.descr.kind == b"i" and cnp.PyArray_ITEMSIZE(y) == 8:
        target_type = FL_TARGET_I64
    else:
        return None
    if cnp.PyArray_NDIM(x) != 1:
        x = x.reshape(-1)
        y = y.reshape(-1)
    cdef cnp.ndarray values = None
    if reduction == "none":
        values = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(input), cnp.PyArray_DIMS(input), xt, 0)
    cdef fl_binary_args args
    args.input = _operand(x, &args.input_stride)
    args.target = _operand(y, &args.target_stride)
    args.target_type = target_type
    args.weight.data = args.pos_weight.data = NULL
    args.weight.period = args.weight.repeat = args.pos_weight.period = 1
    args.pos_weight.repeat = 1
    args.out = <void *>_data(values)
    args.alpha = alpha
    args.gamma = gamma
    args.stats = NULL
    fn = _binary_kernel(loss, xt == cnp.NPY_FLOAT64)
    total, _, flags, _, _ = _run_blocks(fn, &args, n, FL_BLOCK, 1)
    return total, flags, values


# ---- softmax losses ----

# Class weights default to 1: read from these (read-only) for up to _N_ONES classes, so a small
# call allocates nothing and an empty one nothing of the class count's size.
cdef Py_ssize_t _N_ONES = 4096
_ONES = {4: np.ones(_N_ONES, np.float32), 8: np.ones(_N_ONES, np.float64)}
for _ones in _ONES.values():
    _ones.flags.writeable = False


cpdef Py_ssize_t softmax_block_positions(Py_ssize_t n_classes):
    """Positions per block of the softmax kernels: about FL_BLOCK logits, whole lanes."""
    return max(FL_CE_LANES, (FL_BLOCK // max(n_classes, 1)) // FL_CE_LANES * FL_CE_LANES)


cdef tuple _softmax_run(cnp.ndarray input, cnp.ndarray target, int target_type, object weight,
                        long long ignore_index, double label_smoothing, object out,
                        int n_threads, bint focal, double gamma, Statistics stats):
    cdef Py_ssize_t n_classes = input.shape[1]
    if weight is None:
        weight = (_ONES[cnp.PyArray_ITEMSIZE(input)] if n_classes <= _N_ONES
                  else np.ones(n_classes, input.dtype))
    cdef ptrdiff_t unit_stride
    cdef fl_softmax_args args
    args.input = _rows(input)
    args.n_classes = n_classes
    args.n_spatial = input.shape[2]
    args.target = _operand(target, &unit_stride)
    args.target_type = target_type
    args.weight = _data(weight)
    args.ignore_index = ignore_index
    args.label_smoothing = label_smoothing
    args.out = <void *>_data(out)
    args.focal = focal
    args.gamma = gamma
    args.stats = _spec(stats)
    cdef fl_block_fn fn = _table.cross_entropy[cnp.PyArray_ITEMSIZE(input) == 8]
    return _run_blocks(fn, &args, input.shape[0] * input.shape[2],
                       softmax_block_positions(n_classes), n_threads, stats)


def cross_entropy_loss(cnp.ndarray input, cnp.ndarray target, int target_type,
                       object weight, long long ignore_index, double label_smoothing,
                       object out, int n_threads, bint focal=False, double gamma=0.0,
                       Statistics stats=None):
    """Softmax cross-entropy (or, with focal, the softmax focal loss with exponent gamma) over a
    C-contiguous (N, C, S) input; return (sum of the losses, sum of the weights that divide
    "mean", first position with an out-of-range index or -1).

    target: contiguous (N, S) class indices of the FL_INDEX_* type target_type, or (N, C, S)
    probabilities of input's dtype (FL_TARGET_PROBABILITIES); weight: None (all 1) or (C,) of
    input's dtype; out: None or a contiguous (N, S) array of input's dtype; with stats, the
    statistics of _run_blocks follow (the weights then include the sample weights).
    """
    loss, weight_sum, flags, bad, extra = _softmax_run(
        input, target, target_type, weight, ignore_index, label_smoothing, out, n_threads, focal,
        gamma, stats)
    return (loss, weight_sum, bad) if stats is None else (loss, weight_sum, bad, flags, extra)


# FL_INDEX_* of the class-index dtypes, by kind and size
_INDEX_CODES = {(b"i"[0], 1): FL_INDEX_I8, (b"i"[0], 2): FL_INDEX_I16, (b"i"[0], 4): FL_INDEX_I32,
                (b"i"[0], 8): FL_INDEX_I64, (b"u"[0], 1): FL_INDEX_U8, (b"u"[0], 2): FL_INDEX_U16,
                (b"u"[0], 4): FL_INDEX_U32, (b"u"[0], 8): FL_INDEX_U64}


def softmax_small(object input, object target, object ignore_index, object label_smoothing,
                  object reduction, object n_threads, bint focal=False, double gamma=0.0):
    """The common small call of a softmax loss without class weights, straight from the user's
    arguments: (sum, "mean"'s denominator, first bad index position or -1, the per-row losses
    for reduction "none" else None).

    Taken when input is a C-contiguous, aligned, native float32/float64 NumPy array of shape
    (N, C) with 1 to SMALL elements and C >= 1, target a contiguous native (N,) array of class
    indices (any integer dtype), ignore_index an int, label_smoothing a float in [0, 1],
    reduction a known name and n_threads None or in [1, 1024]. Returns None for any other call,
    which the general path then validates.
    """
    if not (cnp.PyArray_Check(input) and cnp.PyArray_Check(target)
            and _reduction_ok(reduction) and _thread_count_ok(n_threads)
            and type(ignore_index) is int and -2**63 <= ignore_index < 2**63
            and type(label_smoothing) is float and 0.0 <= label_smoothing <= 1.0):
        return None
    cdef cnp.ndarray x = _base(input), t = _base(target)
    if not (cnp.PyArray_NDIM(x) == 2 and cnp.PyArray_NDIM(t) == 1 and _plain(x) and _plain(t)
            and cnp.PyArray_IS_C_CONTIGUOUS(t)):
        return None
    cdef Py_ssize_t n = x.shape[0], n_classes = x.shape[1]
    cdef int xt = cnp.PyArray_TYPE(x)
    if not (n >= 1 and n_classes >= 1 and n * n_classes <= SMALL and t.shape[0] == n
            and (xt == cnp.NPY_FLOAT32 or xt == cnp.NPY_FLOAT64)):
        return None
    target_type = _INDEX_CODES.get((t.descr.kind, cnp.PyArray_ITEMSIZE(t)))
    if target_type is None:
        return None
    cdef cnp.ndarray values = None
    if reduction == "none":
        values = cnp.PyArray_EMPTY(1, cnp.PyArray_DIMS(x), xt, 0)
    cdef cnp.npy_intp dims[3]
    dims[0], dims[1], dims[2] = n, n_classes, 1
    cdef cnp.PyArray_Dims shape
    shape.ptr = dims
    shape.len = 3
    x = cnp.PyArray_Newshape(x, &shape, cnp.NPY_CORDER)
    loss, weight_sum, _, bad, _ = _softmax_run(x, t, target_type, None, ignore_index,
                                               label_smoothing, values, 1, focal, gamma, None)
    return loss, weight_sum, bad, values


def read_words(cnp.ndarray data, int n_threads):
    """Read every 8-byte word of a C-contiguous array, in blocks like the loss kernels: the
    memory-bandwidth floor of any loss over the same bytes. Returns a checksum."""
    cdef const void *words = cnp.PyArray_DATA(data)
    loss, _, _, _, _ = _run_blocks(_table.read, &words, data.nbytes // 8, FL_BLOCK, n_threads)
    return loss


# ---- gradients and Hessian diagonals (fl_grad.h) ----

cdef fl_block_fn _binary_grad_kernel(str loss, bint is_double) except NULL:
    if loss == "binary_cross_entropy":
        return _table.bce_grad[is_double]
    if loss == "binary_cross_entropy_with_logits":
        return _table.bce_logits_grad[is_double]
    if loss == "sigmoid_focal_loss":
        return _table.sigmoid_focal_grad[is_double]
    raise ValueError(f"unknown binary loss {loss!r}")


def binary_grad(str loss, cnp.ndarray input, cnp.ndarray target, int target_type,
                object weight, Py_ssize_t weight_period, Py_ssize_t weight_repeat,
                object pos_weight, Py_ssize_t pos_weight_period, Py_ssize_t pos_weight_repeat,
                object out, cnp.ndarray grad, object hess, double scale, int n_threads,
                double alpha=-1.0, double gamma=0.0):
    """The gradient (and, when hess is not None, the Hessian diagonal) of an elementwise loss
    over 1-D operands, fused with the loss: return (sum of the losses in float64, OR of the
    FL_BAD_* flags).

    Operands as binary_loss's; grad and hess: C-contiguous arrays of input's size and dtype that
    receive d loss/d input and its second derivative, times scale; out: None or the per-element
    losses.
    """
    cdef fl_binary_grad_args args
    args.loss.input = _operand(input, &args.loss.input_stride)
    args.loss.target = _operand(target, &args.loss.target_stride)
    args.loss.target_type = target_type
    args.loss.weight.data = _data(weight)
    args.loss.weight.period = weight_period
    args.loss.weight.repeat = weight_repeat
    args.loss.pos_weight.data = _data(pos_weight)
    args.loss.pos_weight.period = pos_weight_period
    args.loss.pos_weight.repeat = pos_weight_repeat
    args.loss.out = <void *>_data(out)
    args.loss.alpha = alpha
    args.loss.gamma = gamma
    args.loss.stats = NULL
    args.grad = <void *>_data(grad)
    args.hess = <void *>_data(hess)
    args.scale = scale
    fn = _binary_grad_kernel(loss, cnp.PyArray_ITEMSIZE(input) == 8)
    total, _, flags, _, _ = _run_blocks(fn, &args, input.shape[0], FL_BLOCK, n_threads)
    return total, flags


def cross_entropy_grad(cnp.ndarray input, cnp.ndarray target, int target_type, object weight,
                       long long ignore_index, double label_smoothing, object out,
                       cnp.ndarray grad, object hess, double scale, int n_threads,
                       bint focal=False, double gamma=0.0):
    """The gradient (and, when hess is not None, the Hessian diagonal) of a softmax loss over a
    C-contiguous (N, C, S) input, fused with the loss: return (sum of the losses, sum of the
    weights that divide "mean", first position with an out-of-range index or -1).

    Operands as cross_entropy_loss's; grad and hess: C-contiguous (N, C, S) arrays of input's
    dtype receiving d loss/d z_c and d2 loss/d z_c^2, times scale.
    """
    cdef Py_ssize_t n_classes = input.shape[1]
    if weight is None:
        weight = (_ONES[cnp.PyArray_ITEMSIZE(input)] if n_classes <= _N_ONES
                  else np.ones(n_classes, input.dtype))
    cdef ptrdiff_t unit_stride
    cdef fl_softmax_grad_args args
    args.loss.input = _rows(input)
    args.loss.n_classes = n_classes
    args.loss.n_spatial = input.shape[2]
    args.loss.target = _operand(target, &unit_stride)
    args.loss.target_type = target_type
    args.loss.weight = _data(weight)
    args.loss.ignore_index = ignore_index
    args.loss.label_smoothing = label_smoothing
    args.loss.out = <void *>_data(out)
    args.loss.focal = focal
    args.loss.gamma = gamma
    args.loss.stats = NULL
    args.grad = <void *>_rows(grad)
    args.hess = NULL if hess is None else <void *>_rows(hess)
    args.scale = scale
    cdef fl_block_fn fn = _table.cross_entropy_grad[cnp.PyArray_ITEMSIZE(input) == 8]
    loss, weight_sum, _, bad, _ = _run_blocks(fn, &args, input.shape[0] * input.shape[2],
                                              softmax_block_positions(n_classes), n_threads)
    return loss, weight_sum, bad
