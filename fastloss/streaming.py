"""StreamingLoss: the statistics of a loss over data seen in batches, mergeable across workers.

Each update is one fused kernel pass (src_c/fl_stats.h): the weighted sum, the sum of weights,
count, min, max and the histogram of the per-position losses are accumulated (sums in float64)
without the losses ever being stored, and, when asked for, calibration bins, per-class and
per-group sums and bootstrap replicates (their state lives in fastloss/_extras.py).
"""
import contextlib
import copy
import inspect
import math
import sys
import threading
from numbers import Integral

import numpy as np

from . import _extras, _kernels, _validate, losses

def _parameters(kind, function):
    """A loss function's own parameters and their defaults: what StreamingLoss takes. The
    weight of an update is a sample weight, so the binary losses' elementwise `weight` is not
    one of them; cross-entropy's `weight` is its class weight."""
    fixed = {"input", "target", "reduction", "n_threads", "out"} | (
        {"weight"} if kind == "binary" else set())
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if name not in fixed}


# Every loss of the package: its kind and its parameters, with their defaults.
LOSSES = {name: (kind, _parameters(kind, getattr(losses, name))) for name, kind in (
    ("binary_cross_entropy", "binary"), ("binary_cross_entropy_with_logits", "binary"),
    ("sigmoid_focal_loss", "binary"), ("cross_entropy", "softmax"),
    ("softmax_focal_loss", "softmax"))}

_ARRAY_PARAMS = ("pos_weight", "weight")

# bins="log": 10 bins per decade over the losses that matter, from 1e-8 to 1e3.
LOG_BINS_RANGE = (-8, 3)
LOG_BINS_PER_DECADE = 10

# How the kernel guesses a loss's bin (see _Bins).
_SPACINGS = {"uniform": _kernels.BINS_UNIFORM, "log": _kernels.BINS_LOG,
             "edges": _kernels.BINS_EDGES}

# A bound on the error of the log2 the kernel guesses log-spaced bins with (fl_log2_coarse_f32
# in src_c/fl_math.h): 8.3e-6 over every normal float.
_LOG2_ERROR = 2e-5


# Most bins a histogram may have (the kernel indexes its counters with ints).
MAX_BINS = 2**24
# Most a count may reach: the histogram counters and to_dict's counts are int64.
MAX_COUNT = 2**63 - 1
# Histograms up to this many bins keep 8 copies of each counter (see fl_stats.h): they stay in
# L1, and runs of losses in one bin do not wait on each other's increments.
_COPIED_BINS = 512


def _float32_normal(*values):
    f32 = np.finfo(np.float32)
    return all(v == 0 or float(f32.tiny) <= abs(v) <= float(f32.max) for v in values)


class _Bins:
    """Histogram edges, and how the kernel guesses a loss's bin before the edges decide
    (fl_stats.h): from a linear or logarithmic scale, whichever the edges are evenly spaced in
    (as from np.linspace or np.logspace), else by binary search."""

    def __init__(self, edges):
        self.edges = edges
        n = edges.size - 1
        self.copy_shift = 3 if n <= _COPIED_BINS else 0
        self.spacing, self.origin, self.scale, self.tol_abs, self.tol_rel = \
            "edges", 0.0, 0.0, 1.0, 0.0  # every loss is searched
        worst = 0.25  # a guess this uncertain sends too many losses to the search anyway
        for spacing in ("uniform", "log"):
            if spacing == "log" and not (1e-30 <= edges[0] and edges[-1] <= 1e30):
                continue  # the kernel's log guess holds for normal floats in between
            x = np.log2(edges) if spacing == "log" else edges
            origin, scale = float(x[0]), n / float(x[-1] - x[0])
            if not (scale > 0 and _float32_normal(origin, scale, x[-1])):
                continue  # the guess runs in float32
            # A bound on the error of the kernel's float32 guess g = (x - origin)*scale, in
            # bins: absolute, from the rounding of origin and the error of the float32 log2 (or
            # the flushing of subnormal losses to 0); relative to g, from the rounding of each
            # operation and the edges' own deviation from even spacing (0 at the first edge,
            # which is origin). Twice that.
            eps, tiny = float(np.finfo(np.float32).eps), float(np.finfo(np.float32).tiny)
            i = np.arange(1, n + 1)
            deviation = float(np.max(np.abs((x[1:] - origin) * scale - i) / i))
            tol_abs = 2 * scale * (eps * abs(origin) + (_LOG2_ERROR if spacing == "log"
                                                         else tiny))
            tol_rel = 2 * (2 * eps + deviation)
            if tol_abs + tol_rel * (n + 1) < worst:
                worst = tol_abs + tol_rel * (n + 1)
                self.spacing, self.origin, self.scale, self.tol_abs, self.tol_rel = \
                    spacing, origin, scale, tol_abs, tol_rel

    @classmethod
    def parse(cls, bins, range):
        if bins is None:
            if range is not None:
                raise ValueError("range is given without bins")
            return None
        if isinstance(bins, str):
            if bins != "log":
                raise ValueError(f"bins must be an int, an array of edges or 'log'; got {bins!r}")
            if range is not None:
                raise ValueError("range is only for an int number of bins; bins='log' spans "
                                 f"1e{LOG_BINS_RANGE[0]} to 1e{LOG_BINS_RANGE[1]}")
            lo, hi = LOG_BINS_RANGE
            return cls(np.logspace(lo, hi, (hi - lo) * LOG_BINS_PER_DECADE + 1))
        if isinstance(bins, Integral) and not isinstance(bins, (bool, np.bool_)):
            if not 1 <= bins <= MAX_BINS:
                raise ValueError(f"bins must be between 1 and {MAX_BINS}; got {bins}")
            if range is None:
                raise ValueError("an int number of bins needs range=(lo, hi)")
            try:
                lo, hi = (float(v) for v in range)
            except (TypeError, ValueError):
                raise TypeError(f"range must be a pair of numbers (lo, hi); got {range!r}") \
                    from None
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"range must be finite with lo < hi; got {range!r}")
            return cls(np.linspace(lo, hi, int(bins) + 1))
        if range is not None:
            raise ValueError("range is only for an int number of bins, not with explicit edges")
        return cls.from_edges(bins)

    @classmethod
    def from_edges(cls, edges):
        e = _validate.as_array(edges, "bins")
        if e.dtype.kind not in "iuf" or e.ndim != 1 or not 2 <= e.size <= MAX_BINS + 1:
            raise ValueError(f"bin edges must be a 1-D array of 2 to {MAX_BINS + 1} numbers; "
                             f"got shape {e.shape} and dtype {e.dtype}")
        e = e.astype(np.float64)
        if not (np.all(np.isfinite(e)) and np.all(np.diff(e) > 0)):
            raise ValueError("bin edges must be finite and strictly increasing")
        return cls(e)

    def __eq__(self, other):
        return isinstance(other, _Bins) and np.array_equal(self.edges, other.edges)


def _statistics(bins, sample_weight):
    """The kernel's statistics arguments for these bins (None: no histogram)."""
    if bins is None:
        return _kernels.Statistics(None, 0, 0.0, 0.0, 0.0, 0.0, 0, *sample_weight)
    return _kernels.Statistics(bins.edges, _SPACINGS[bins.spacing], bins.origin, bins.scale,
                               bins.tol_abs, bins.tol_rel, bins.copy_shift, *sample_weight)


def _group_ids(groups, shape, n_groups):
    """groups as one contiguous int32 or int64 id per position of a loss of this shape: the
    caller's array itself when it is one already, else an int32 copy (4 bytes per position, for
    the update's duration), after its ids are checked against [0, n_groups) on the array as
    given (the kernel checks them again)."""
    g = _validate.as_array(groups, "groups")
    if g.dtype.kind not in "iu":
        raise TypeError(f"groups must be an integer array; got dtype {g.dtype}")
    try:
        full = np.broadcast_to(g, shape)
    except ValueError:
        raise ValueError(f"groups of shape {g.shape} cannot be broadcast to the loss's shape "
                         f"{shape} (one group per position)") from None
    if full.dtype in (np.dtype(np.int32), np.dtype(np.int64)) and full.flags.c_contiguous:
        return full.reshape(-1)
    if g.size and not (0 <= g.min() and g.max() < n_groups):
        bad = g.min() if g.min() < 0 else g.max()
        raise ValueError(f"groups must be integers in [0, {n_groups}) (n_groups); got {bad}")
    return np.ascontiguousarray(full, np.int32).reshape(-1)


def _read_only(a):
    """A read-only view of a: what a meter shows of its own arrays (a pickled copy's arrays
    come back writable)."""
    view = a.view()
    view.flags.writeable = False
    return view


def _json_float(x):
    """A float for strict JSON: non-finite values as the strings "nan", "inf", "-inf"."""
    x = float(x)
    return x if math.isfinite(x) else str(x)


def _from_json_float(x, key):
    if isinstance(x, str) and x in ("nan", "inf", "-inf"):
        return float(x)
    if isinstance(x, (int, float)) and not isinstance(x, bool) and abs(x) <= sys.float_info.max:
        return float(x)
    raise ValueError(f"not a StreamingLoss state: {key} must be a number; got {x!r}")


class StreamingLoss:
    """The statistics of one loss over every batch given to :meth:`update`.

    ``StreamingLoss(loss, *, bins=None, range=None, **params)`` accumulates, for the loss named
    ``loss`` (one of ``fastloss.streaming.LOSSES``) with its parameters (``pos_weight``,
    ``alpha``, ``gamma``, class ``weight``, ``ignore_index``, ``label_smoothing``, as the
    function of that name takes them), over every loss value l with sample weight s
    (per element for the binary losses, per position (row) for the softmax ones)::

        sum        = sum(s * l)
        weight_sum = sum(s * d)   (d = weight[target] for class-index cross-entropy and
                                   softmax focal loss, else 1)
        mean       = sum / weight_sum

    so ``mean`` is the sample-weighted mean (scikit-learn's ``log_loss`` convention) and equals
    the function's ``reduction="mean"`` when no sample weight is given. Sums are accumulated
    in float64: any split of the data into batches and merged meters gives the same mean within
    about 1e-15 relative. Positions whose target is ``ignore_index`` are left out entirely.

    ``count`` is the number of loss values, ``nan_count`` those that are nan (they make sum and
    mean nan and are left out of min, max and the histogram); ``min`` and ``max`` are nan while
    there are none. count, min, max and the histogram include every loss value, whatever its
    sample weight (0 too).

    Histogram (``bins``): counts of loss values, unweighted, in bins [e_i, e_i+1) (the last one
    closed, as ``np.histogram``), with values below the first edge counted in ``underflow`` and
    above the last in ``overflow``. ``bins`` is an int with ``range=(lo, hi)`` (evenly spaced),
    an increasing array of at most 2**24 + 1 edges, or ``"log"``: 10 bins per decade from 1e-8
    to 1e3. Edges evenly spaced in linear or log scale (int and "log" bins, np.linspace,
    np.logspace) place losses arithmetically (the edges decide near a boundary); other edges by
    binary search, which is several times slower.

    Memory: a meter with B bins holds 16*B bytes (int64 counts, float64 edges). An update
    allocates, for its duration, counters of 8*(B + 4) bytes per copy (8 copies up to 512 bins,
    1 above) and their sum: one copy per thread that counts, and more than one only while they
    fit in 64 MiB and each has at least as many positions to count as it has counters. A very
    fine histogram is therefore counted by fewer threads, and each update costs O(B) besides the
    pass over the data: give it large batches.

    Threads: a meter may be shared between threads. The pass over the data runs unlocked, in
    parallel; adding its result to the state, merge, reset, to_dict and the properties that read
    several fields take the meter's lock. Concurrent updates leave the state of the same updates
    made one after another: count, nan_count, min, max and the histogram exactly, sum and
    weight_sum up to the order of float64 additions.

    Counts stop at MAX_COUNT (2**63 - 1): an update or merge that would pass it raises
    OverflowError and leaves the state unchanged.

    Extras, accumulated in the same kernel pass (src_c/fl_stats.h), None when not asked for:

    - ``calibration_bins`` (an int: np.linspace(0, 1, n + 1) edges, or edges from 0 to 1):
      the confidence of each position (binary losses: the predicted probability, the input or
      sigmoid of the logit; softmax losses, class-index targets only: the top-1 probability,
      "top-label" calibration, a row being right when its target's logit is the maximum, ties
      included, where torchmetrics takes the first maximum: they differ only on tied logits) is
      binned as ``np.histogram`` does (p == 1 in the last bin, where torchmetrics gives it a bin
      of its own). Per bin: count, sum of s, of s*confidence and of s*outcome. ``ece``, ``mce``,
      ``rms_ce`` (torchmetrics' CalibrationError with norm "l1", "max", "l2", s-weighted),
      ``brier`` (binary: mean s*(p - y)^2 as sklearn's brier_score_loss; softmax: mean over
      rows of sum_c (p_c - y_c)^2) and ``reliability()``.
    - ``by_class=True``: ``class_sum``, ``class_weight_sum``, ``class_count``, ``class_mean``
      per class (binary losses on (N, C, ...) input: per index of axis 1, the multi-label
      case; softmax losses: per target class). ``n_groups=G`` with ``update(..., groups=ids)``:
      ``group_sum``, ``group_weight_sum``, ``group_count``, ``group_mean`` per id in [0, G).
      Their counts add up to ``count``.
    - ``bootstrap=B, seed=s``: B replicates of sum and weight_sum, in which the stream's
      positions, cut into units of 64 consecutive positions (fastloss._kernels.BOOT_UNIT,
      counted from the first update), are weighted by Poisson(1) counts drawn from a hash of
      (seed, unit, replicate): ``mean_ci(level)`` is their percentile interval. The same seed
      and updates always give the same interval, any batching the same counts. Resampling units
      rather than positions keeps the cost at B/64 draws per position; it assumes the units are
      independent (shuffled data) and wants many of them (N >> 64*100). Merging adds the
      replicates and the positions seen (the merged meter continues after both); meters of
      different seeds refuse to merge, as their replicates weight the same positions
      differently. Meters that each start at position 0 (workers) share their units' weights,
      position by position: still a valid unit bootstrap, of pairs of units.

    Extras' sums are combined in a fixed order (bitwise identical for any n_threads); across
    batchings and merges their float64 sums agree to about 1e-15 like ``sum``, their counts
    exactly. Memory O(bins + classes + groups + B), never O(N); only an update whose groups are
    not already one int32 or int64 id per position (a broadcast column, another dtype) holds an
    int32 copy of them, 4 bytes per position, while it runs. Cost per position (1e7 float32 BCE
    with logits, one thread of a shared 2-core AMD EPYC, plain mean 0.7-0.9 ns): 15 calibration
    bins +2.7 ns, 20 groups +2.3 ns, both +5 ns, 200 bootstrap replicates +5 ns.

    Raises
    ------
    ValueError
        An unknown loss (the message lists the valid ones), invalid parameters, bins,
        calibration_bins, n_groups, bootstrap or seed.
    TypeError
        A parameter the loss does not take; by_class not a bool.
    """

    def __init__(self, loss, *, bins=None, range=None, calibration_bins=None, by_class=False,
                 n_groups=None, bootstrap=None, seed=0, **params):
        if not isinstance(loss, str) or loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
        self._loss = loss
        kind, defaults = LOSSES[loss]
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            valid = ", ".join(defaults) or "none"
            raise TypeError(f"{loss} takes no parameter {', '.join(unknown)} (its parameters: "
                            f"{valid}; the sample weight goes to update())")
        self._params = {**defaults, **params}
        for name in _ARRAY_PARAMS:
            value = self._params.get(name)
            if value is not None:
                a = _validate.as_array(value, name)
                if a.dtype.kind not in "biuf":
                    raise TypeError(f"{name} must be a real numeric array; got dtype {a.dtype}")
                a = a.astype(np.float64)  # a private copy: later changes to theirs do not leak
                if not np.all(np.isfinite(a)):
                    raise ValueError(f"{name} must be finite")
                if kind == "softmax" and a.ndim != 1:
                    raise ValueError(f"{name} must be 1-D, one value per class; got shape "
                                     f"{a.shape}")
                self._params[name] = a
        if "gamma" in self._params:
            self._params["gamma"] = _validate.focal_gamma(self._params["gamma"])
        if "alpha" in self._params:
            self._params["alpha"] = _validate.focal_alpha(self._params["alpha"])
        if "ignore_index" in self._params:
            self._params["ignore_index"] = _validate.ignore_index(self._params["ignore_index"])
        if "label_smoothing" in self._params:
            self._params["label_smoothing"] = _validate.label_smoothing(
                self._params["label_smoothing"])
        self._kind = kind
        self._bins = _Bins.parse(bins, range)
        self._calibration = _extras.Calibration.parse(calibration_bins)
        if not isinstance(by_class, (bool, np.bool_)):
            raise TypeError(f"by_class must be True or False; got {by_class!r}")
        self._classes = _extras.Breakdown() if by_class else None
        self._groups = None if n_groups is None else _extras.Breakdown(
            _extras._int(n_groups, "n_groups", 1, _extras.MAX_SLOTS))
        self._bootstrap = _extras.Bootstrap.parse(bootstrap, seed)
        # Guards the state (not the loss, parameters and bins, which never change).
        self._lock = threading.RLock()
        self.reset()

    def reset(self):
        """Forget every batch (the loss, its parameters and bins stay)."""
        with self._lock:
            self._sum = 0.0
            self._weight_sum = 0.0
            self._count = 0
            self._nan_count = 0
            self._min = math.inf
            self._max = -math.inf
            self._slots = None if self._bins is None else np.zeros(self._bins.edges.size + 1,
                                                                   np.int64)
            self._n_classes = None
            for extra in self._extras():
                extra.reset()
            if self._classes is not None:
                self._classes = _extras.Breakdown()  # its size comes with the first update
        return self

    def _extras(self):
        return [e for e in (self._calibration, self._classes, self._groups, self._bootstrap)
                if e is not None]

    def __getstate__(self):
        with self._lock:  # a consistent copy, whatever other threads do meanwhile
            state = {**self.__dict__, "_slots": None if self._slots is None
                     else self._slots.copy()}
            for key in ("_calibration", "_classes", "_groups", "_bootstrap"):
                state[key] = copy.deepcopy(state[key])
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.RLock()

    # ---- accumulating ----

    def update(self, input, target, weight=None, *, groups=None, n_threads=None):
        """Add one batch: input and target as the loss function takes them, and weight, an
        optional sample weight (non-negative, finite) that broadcasts to the input's shape
        (binary losses) or to the per-position loss's shape (N, d1, ..., dk) (softmax losses).
        groups: with n_groups, each position's group, integers in [0, n_groups) broadcasting to
        the same shape as weight (required then, refused otherwise).

        Returns self. Raises what the loss function raises for these arguments, ValueError for a
        bad weight or groups and, for softmax losses, for a number of classes that differs from
        earlier batches, OverflowError when count would pass MAX_COUNT (2**63 - 1). On any
        error the state is unchanged.

        The pass over the data runs without the lock, in parallel with other threads' updates of
        the same meter; only adding its result to the state is serialized. With bootstrap, the
        whole update holds the lock: the stream positions decide the replicates' weights.
        """
        if (groups is None) != (self._groups is None):
            raise ValueError("groups are required by, and only by, a meter with n_groups; this "
                             f"one has n_groups={None if self._groups is None else self._groups.size}")
        serial = self._lock if self._bootstrap is not None else contextlib.nullcontext()
        with serial:
            if self._kind == "binary":
                batch = self._binary_batch(input, target, weight, groups, n_threads)
            else:
                batch = self._softmax_batch(input, target, weight, groups, n_threads)
            self._add_batch(*batch)
        return self

    def _add_batch(self, total, weight_sum, stats, n_classes, classes, positions, layout):
        count, nan_count, lo, hi, slots, folded = stats
        with self._lock:
            self._check_classes(n_classes, "input has {1} classes; earlier batches had {0}")
            if None not in (self._classes and self._classes.size, classes) \
                    and classes != self._classes.size:
                raise ValueError(f"by_class: input has {classes} classes; earlier batches had "
                                 f"{self._classes.size}")
            self._check_count(count, "this batch's")
            # Only now, after every check has passed, does the state change.
            if self._n_classes is None:
                self._n_classes = n_classes
            if self._classes is not None and self._classes.size is None and classes:
                self._classes = _extras.Breakdown(classes)
            self._sum += total
            self._weight_sum += weight_sum
            self._count += count
            self._nan_count += nan_count
            self._min = min(self._min, lo)
            self._max = max(self._max, hi)
            if slots is not None:
                self._slots += slots
            if folded is not None:
                cal, by_class, by_group, boot, _ = layout
                if self._calibration is not None:
                    self._calibration.add(folded, cal, folded[0])
                if by_class is not None:
                    self._classes.add(folded, by_class)
                if self._groups is not None:
                    self._groups.add(folded, by_group)
            if self._bootstrap is not None:
                if folded is not None:
                    self._bootstrap.add(folded, boot, positions)
                else:  # an empty batch
                    self._bootstrap.position += positions

    def _check_classes(self, n_classes, message):
        if None not in (self._n_classes, n_classes) and n_classes != self._n_classes:
            raise ValueError(message.format(self._n_classes, n_classes))

    def _check_count(self, count, whose):
        # Every histogram counter and nan_count is at most count: bounding count bounds them.
        if self._count + count > MAX_COUNT:
            raise OverflowError(f"count would pass 2**63 - 1: {self._count} losses and "
                                f"{whose} {count}; the state is unchanged")

    def _spec(self, sample_weight, groups, n_classes, class_repeat):
        """The kernel's statistics arguments: histogram, sample weight and extras."""
        stats = _statistics(self._bins, sample_weight)
        if self._extras():
            cal, boot = self._calibration, self._bootstrap
            stats.extras(None if cal is None else cal.edges, bool(cal and cal.uniform),
                         n_classes if self._classes is not None else 0, class_repeat, groups,
                         0 if self._groups is None else self._groups.size,
                         0 if boot is None else boot.n, 0 if boot is None else boot.seed,
                         0 if boot is None else boot.position)
        return stats

    _EMPTY = (0, 0, math.inf, -math.inf, None, None)

    def _binary_batch(self, input, target, weight, groups, n_threads):
        x, _, y, target_type, w, pw = losses._binary_operands(
            input, target, weight, self._params.get("pos_weight"))
        threads = _validate.thread_count(n_threads, x.size)
        classes = class_repeat = None
        if self._classes is not None:
            if x.ndim < 2:
                raise ValueError(f"by_class needs input with a class axis (N, C, ...); got shape "
                                 f"{x.shape}")
            classes, class_repeat = x.shape[1], math.prod(x.shape[2:])
        ids = None if groups is None else _group_ids(groups, x.shape, self._groups.size)
        if not x.size:
            return 0.0, 0.0, self._EMPTY, None, classes, 0, None
        focal = {k: self._params[k] for k in ("alpha", "gamma") if k in self._params}
        spec = self._spec(w, ids, classes or 0, class_repeat or 1)
        total, flags, weight_sum, stats = _kernels.binary_loss(
            self._loss, _validate.flat(x), _validate.flat(y), target_type, None, 1, 1, *pw,
            None, threads, stats=spec, **focal)
        losses._check_flags(flags)
        self._check_groups(flags)
        return total, weight_sum, stats, None, classes, x.size, spec.extras_layout()

    def _check_groups(self, flags):
        if flags & _kernels.BAD_GROUP:
            raise ValueError(f"groups must be integers in [0, {self._groups.size}) (n_groups)")

    def _softmax_batch(self, input, target, weight, groups, n_threads):
        gamma = self._params.get("gamma", 0.0)
        x, _, _, loss_shape, t, target_type, w, ignore, eps = losses._softmax_operands(
            input, target, self._params["weight"], self._params["ignore_index"],
            self._params.get("label_smoothing", 0.0), "gamma" in self._params)
        n, n_classes, n_spatial = x.shape
        # checked again as the state changes, for an update in another thread meanwhile
        self._check_classes(n_classes, "input has {1} classes; earlier batches had {0}")
        probabilities = target_type == _validate.TARGET_PROBABILITIES
        for name, extra in (("calibration_bins", self._calibration), ("by_class", self._classes)):
            if extra is not None and probabilities:
                raise ValueError(f"{name} needs class-index targets; got class probabilities")
        sample_weight = (None, 1, 1)
        if weight is not None:
            s = _validate.as_array(weight, "weight")
            if s.dtype.kind not in "biuf":
                raise TypeError(f"weight must be a real numeric array; got dtype {s.dtype}")
            try:
                s = np.broadcast_to(s, loss_shape)
            except ValueError:
                raise ValueError(f"weight of shape {s.shape} cannot be broadcast to the loss's "
                                 f"shape {loss_shape} (one weight per position)") from None
            s = np.ascontiguousarray(s, x.dtype).reshape(-1)
            sample_weight = (s, max(s.size, 1), 1)
        ids = None if groups is None else _group_ids(groups, loss_shape, self._groups.size)
        threads = _validate.thread_count(n_threads, x.size)
        classes = n_classes if self._classes is not None else None
        if not n * n_spatial:
            return 0.0, 0.0, self._EMPTY, n_classes, classes, 0, None
        spec = self._spec(sample_weight, ids, n_classes, 1)
        total, weight_sum, bad, flags, stats = _kernels.cross_entropy_loss(
            x, t, target_type, w, ignore, eps, None, threads, gamma != 0, gamma, stats=spec)
        losses._check_indices(bad, t)
        losses._check_flags(flags)
        self._check_groups(flags)
        return total, weight_sum, stats, n_classes, classes, n * n_spatial, spec.extras_layout()

    def merge(self, other):
        """Fold the state of other (a StreamingLoss of the same loss, parameters and bins) into
        this one, in place; returns self. Counts add exactly, sums in float64.

        Raises TypeError if other is not a StreamingLoss, ValueError if its loss, parameters,
        bins or number of classes differ, OverflowError if count would pass MAX_COUNT
        (2**63 - 1); the state is then unchanged."""
        if not isinstance(other, StreamingLoss):
            raise TypeError(f"can only merge a StreamingLoss; got {type(other).__name__}")
        if other._loss != self._loss:
            raise ValueError(f"cannot merge a {other._loss} meter into a {self._loss} meter")
        if self._json_params() != other._json_params():
            raise ValueError(f"cannot merge meters with different parameters: "
                             f"{self._json_params()} and {other._json_params()}")
        if self._bins != other._bins:
            raise ValueError("cannot merge meters with different bins")
        self._check_same_extras(other)
        with contextlib.ExitStack() as locked:
            # both states, locked in one global order: a.merge(b) and b.merge(a) at once
            # cannot deadlock
            for meter in sorted({id(self): self, id(other): other}.values(), key=id):
                locked.enter_context(meter._lock)
            self._check_classes(other._n_classes, "cannot merge meters of {0} and {1} classes")
            self._check_count(other._count, "the other meter's")
            classes = self._classes and other._classes
            if classes and None not in (self._classes.size, other._classes.size) \
                    and self._classes.size != other._classes.size:
                raise ValueError(f"cannot merge meters of {self._classes.size} and "
                                 f"{other._classes.size} classes (by_class)")
            if self._calibration is not None:
                self._calibration.merge(other._calibration)
            if classes and other._classes.size is not None:
                if self._classes.size is None:
                    self._classes = _extras.Breakdown(other._classes.size)
                self._classes.merge(other._classes)
            if self._groups is not None:
                self._groups.merge(other._groups)
            if self._bootstrap is not None:
                self._bootstrap.merge(other._bootstrap)
            if self._slots is not None:
                self._slots += other._slots
            self._sum += other._sum
            self._weight_sum += other._weight_sum
            self._count += other._count
            self._nan_count += other._nan_count
            self._min = min(self._min, other._min)
            self._max = max(self._max, other._max)
            if self._n_classes is None:
                self._n_classes = other._n_classes
        return self

    def _check_same_extras(self, other):
        for name, mine, theirs in (
                ("calibration bins", self._calibration, other._calibration),
                ("by_class", self._classes is not None, other._classes is not None),
                ("n_groups", self._groups and self._groups.size,
                 other._groups and other._groups.size),
                ("bootstrap replicates", self._bootstrap and self._bootstrap.n,
                 other._bootstrap and other._bootstrap.n)):
            if mine != theirs:
                raise ValueError(f"cannot merge meters with different {name}")
        if self._bootstrap is not None and self._bootstrap.seed != other._bootstrap.seed:
            # replicates of different seeds weight the same positions differently: their sums
            # would be no replicate of either
            raise ValueError(f"cannot merge bootstrap meters of different seeds "
                             f"({self._bootstrap.seed} and {other._bootstrap.seed})")

    # ---- results ----

    @property
    def loss(self):
        """The loss's name."""
        return self._loss

    @property
    def params(self):
        """The loss's parameters (arrays as read-only float64 arrays)."""
        return {k: _read_only(v) if isinstance(v, np.ndarray) else v
                for k, v in self._params.items()}

    @property
    def sum(self):
        return self._sum

    @property
    def weight_sum(self):
        return self._weight_sum

    @property
    def count(self):
        return self._count

    @property
    def nan_count(self):
        return self._nan_count

    @property
    def mean(self):
        """sum / weight_sum: nan before any loss value (IEEE division, like torch)."""
        with self._lock, np.errstate(divide="ignore", invalid="ignore"):
            return float(np.float64(self._sum) / self._weight_sum)

    @property
    def min(self):
        with self._lock:
            return self._min if self._min <= self._max else math.nan

    @property
    def max(self):
        with self._lock:
            return self._max if self._min <= self._max else math.nan

    @property
    def histogram(self):
        """(counts, edges) as NumPy arrays (int64, float64), or None without bins."""
        if self._bins is None:
            return None
        with self._lock:
            return self._slots[1:-1].copy(), _read_only(self._bins.edges)

    @property
    def underflow(self):
        """Loss values below the first edge (0 without bins)."""
        return 0 if self._slots is None else int(self._slots[0])

    @property
    def overflow(self):
        """Loss values above the last edge (0 without bins)."""
        return 0 if self._slots is None else int(self._slots[-1])

    # Calibration (calibration_bins): None without it. With sample weights s, each bin's
    # share, mean confidence and accuracy are s-weighted (without, the plain counts).

    def _calibrated(self, result):
        if self._calibration is None:
            return None
        with self._lock:
            return getattr(self._calibration, result)

    @property
    def ece(self):
        """Expected calibration error: sum over bins of share * |accuracy - confidence|
        (torchmetrics' calibration error with norm="l1"); nan before any position."""
        return self._calibrated("ece")

    @property
    def mce(self):
        """Maximum calibration error: max over non-empty bins of |accuracy - confidence|
        (norm="max")."""
        return self._calibrated("mce")

    @property
    def rms_ce(self):
        """Root-mean-square calibration error: sqrt(sum of share * (accuracy - confidence)^2)
        (norm="l2")."""
        return self._calibrated("rms_ce")

    @property
    def brier(self):
        """Brier score: the s-weighted mean of (p - y)^2 (binary losses, scikit-learn's
        brier_score_loss) or of sum_c (p_c - y_c)^2 over rows (softmax losses, y one-hot)."""
        return self._calibrated("brier")

    def reliability(self):
        """The reliability diagram's data, a dict of NumPy arrays: "edges" (bins + 1),
        per bin "count", "weight" (sum of s), "confidence" and "accuracy" (s-weighted means;
        nan for empty bins). None without calibration bins."""
        if self._calibration is None:
            return None
        with self._lock:
            return self._calibration.reliability()

    # Breakdowns (by_class, n_groups): NumPy arrays with one entry per class or group, None
    # without them (by_class: also before the first batch, which fixes the number of classes).

    def _breakdown(self, which, result):
        b = self._classes if which == "class" else self._groups
        if b is None or b.size is None:
            return None
        with self._lock:
            return getattr(b, result).copy()

    class_sum = property(lambda self: self._breakdown("class", "sum"),
                         doc="Per class (binary: column of axis 1; softmax: target class): sum.")
    class_weight_sum = property(lambda self: self._breakdown("class", "weight_sum"),
                                doc="Per class: weight_sum.")
    class_count = property(lambda self: self._breakdown("class", "count"),
                           doc="Per class: count.")
    class_mean = property(lambda self: self._breakdown("class", "mean"),
                          doc="Per class: sum / weight_sum (nan for a class without weight).")
    group_sum = property(lambda self: self._breakdown("group", "sum"),
                         doc="Per group (update's groups): sum.")
    group_weight_sum = property(lambda self: self._breakdown("group", "weight_sum"),
                                doc="Per group: weight_sum.")
    group_count = property(lambda self: self._breakdown("group", "count"),
                           doc="Per group: count.")
    group_mean = property(lambda self: self._breakdown("group", "mean"),
                          doc="Per group: sum / weight_sum (nan for a group without weight).")

    def mean_ci(self, level=0.95):
        """The bootstrap percentile interval (lo, hi) of mean at this level: the quantiles
        (1 - level)/2 and (1 + level)/2 of the B replicates' sum / weight_sum. (nan, nan) when a
        replicate's mean is nan (a nan loss, or no weight in it). Raises ValueError without
        bootstrap or for a level outside (0, 1)."""
        if self._bootstrap is None:
            raise ValueError("mean_ci needs a meter made with bootstrap=B")
        with self._lock:
            return self._bootstrap.mean_ci(level)

    def __repr__(self):
        extra = "" if self._calibration is None else f", ece={self.ece!r}"
        return (f"StreamingLoss({self._loss!r}, count={self._count}, mean={self.mean!r}, "
                f"min={self.min!r}, max={self.max!r}{extra})")

    # ---- serialization ----

    def _json_params(self):
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                for k, v in self._params.items()}

    def to_dict(self):
        """The state as a dict of JSON types (strict JSON: non-finite floats are the strings
        "nan", "inf", "-inf"), for :meth:`from_dict` in another process."""
        bins = hist = None
        with self._lock:
            if self._bins is not None:
                bins = {"edges": self._bins.edges.tolist()}
                hist = {"counts": self._slots[1:-1].tolist(), "underflow": self.underflow,
                        "overflow": self.overflow}
            state = {"loss": self._loss, "params": self._json_params(), "bins": bins,
                     "n_classes": self._n_classes, "count": self._count,
                     "nan_count": self._nan_count, "sum": _json_float(self._sum),
                     "weight_sum": _json_float(self._weight_sum), "min": _json_float(self._min),
                     "max": _json_float(self._max), "histogram": hist}
            # the extras, only when asked for (a state without them reads as before)
            if self._calibration is not None:
                state["calibration"] = self._calibration.to_dict()
            if self._classes is not None:
                state["by_class"] = None if self._classes.size is None \
                    else self._classes.to_dict()
            if self._groups is not None:
                state["groups"] = self._groups.to_dict()
            if self._bootstrap is not None:
                state["bootstrap"] = self._bootstrap.to_dict()
            return state

    @classmethod
    def from_dict(cls, state):
        """A StreamingLoss from :meth:`to_dict`'s output. Raises ValueError (or what the
        constructor raises for the loss and its parameters) for anything else: wrong keys or
        types, and a state no sequence of updates and merges produces (see _check_state).
        """
        def invalid(why):
            return ValueError(f"not a StreamingLoss state: {why}")

        def count(value, key):
            if not (isinstance(value, int) and not isinstance(value, bool)
                    and 0 <= value <= MAX_COUNT):
                raise invalid(f"{key} must be an int from 0 to 2**63 - 1; got {value!r}")
            return value

        keys = {"loss", "params", "bins", "n_classes", "count", "nan_count", "sum",
                "weight_sum", "min", "max", "histogram"}
        optional = {"calibration", "by_class", "groups", "bootstrap"}
        if not isinstance(state, dict) or not keys <= set(state) <= keys | optional:
            got = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
            raise invalid(f"expected the keys {sorted(keys)} and any of {sorted(optional)}; "
                          f"got {got}")
        loss, params = state["loss"], state["params"]
        if not isinstance(loss, str) or loss not in LOSSES:
            raise invalid(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
        if not isinstance(params, dict) or set(params) != set(LOSSES[loss][1]):
            raise invalid(f"params of {loss} must have the keys {list(LOSSES[loss][1])}; "
                          f"got {params!r}")
        m = cls(loss, **params)
        bins, hist = state["bins"], state["histogram"]
        if (bins is None) != (hist is None):
            raise invalid("bins and histogram go together")
        m._count = count(state["count"], "count")
        m._nan_count = count(state["nan_count"], "nan_count")
        if bins is not None:
            if not (isinstance(bins, dict) and set(bins) == {"edges"} and isinstance(hist, dict)
                    and set(hist) == {"counts", "underflow", "overflow"}
                    and isinstance(hist["counts"], list)):
                raise invalid("bins must be {'edges': [...]} and histogram {'counts': [...], "
                              "'underflow': int, 'overflow': int}")
            m._bins = _Bins.from_edges(bins["edges"])
            slots = [hist["underflow"], *hist["counts"], hist["overflow"]]
            if len(slots) != m._bins.edges.size + 1:
                raise invalid("the histogram needs one count per bin")
            # added as Python ints: a total past 2**63 must not wrap around
            if sum(count(c, "a histogram count") for c in slots) + m._nan_count != m._count:
                raise invalid("the histogram's counts, with nan_count, must add up to count")
            m._slots = np.array(slots, np.int64)
        n_classes = state["n_classes"]
        if n_classes is not None and (LOSSES[loss][0] == "binary" or count(
                n_classes, "n_classes") < 1):
            raise invalid("n_classes must be None (binary losses) or an int >= 1")
        m._n_classes = n_classes
        for key in ("sum", "weight_sum", "min", "max"):
            setattr(m, "_" + key, _from_json_float(state[key], key))
        m._extras_from_dict(state)
        why = m._check_state()
        if why:
            raise invalid(why)
        return m

    def _extras_from_dict(self, state):
        if "calibration" in state:
            self._calibration = _extras.Calibration.from_dict(state["calibration"])
        if "by_class" in state:
            d = state["by_class"]
            size = len(d["count"]) if isinstance(d, dict) and isinstance(
                d.get("count"), list) else None
            if d is not None and not size:
                raise ValueError("not a StreamingLoss state: by_class must be None or a dict of "
                                 "per-class lists")
            self._classes = _extras.Breakdown() if d is None \
                else _extras.Breakdown.from_dict(d, size, "by_class")
        if "groups" in state:
            d = state["groups"]
            size = len(d["count"]) if isinstance(d, dict) and isinstance(
                d.get("count"), list) else 0
            if not 1 <= size <= _extras.MAX_SLOTS:
                raise ValueError("not a StreamingLoss state: groups must be a dict of per-group "
                                 "lists")
            self._groups = _extras.Breakdown.from_dict(d, size, "groups")
        if "bootstrap" in state:
            self._bootstrap = _extras.Bootstrap.from_dict(state["bootstrap"])

    def _check_extras(self, weights_non_negative):
        """What is wrong with the extras' state, or None (see _check_state)."""
        count = self._count
        if self._calibration is not None:
            why = self._calibration.check(count)
            if why:
                return why
        if self._classes is not None:
            if self._classes.size is None:
                if count:
                    return "by_class must hold the per-class sums once there are losses"
            else:
                if self._kind == "softmax" and self._n_classes not in (None,
                                                                       self._classes.size):
                    return "by_class must have one entry per class"
                why = self._classes.check(count, "class", weights_non_negative)
                if why:
                    return why
        if self._groups is not None:
            why = self._groups.check(count, "group", weights_non_negative)
            if why:
                return why
        if self._bootstrap is not None:
            return self._bootstrap.check(count, weights_non_negative)
        return None

    def _check_state(self):
        """What is wrong with the state, or None: the relations every sequence of updates and
        merges keeps (derived from fl_stats_chunk and update/merge), for from_dict."""
        count, nans, total, weights = self._count, self._nan_count, self._sum, self._weight_sum
        lo, hi = self._min, self._max
        class_weight = self._params.get("weight") if self._kind == "softmax" else None
        if nans > count:
            return f"nan_count {nans} exceeds count {count}"
        if self._kind == "softmax":
            if count and self._n_classes is None:
                return "n_classes must be an int once there are losses"
            if class_weight is not None and self._n_classes not in (None, class_weight.size):
                return (f"the class weight has {class_weight.size} values for "
                        f"{self._n_classes} classes")
        if count == nans:  # no loss value that is not nan: min and max keep their start
            if (lo, hi) != (math.inf, -math.inf):
                return "min and max must be 'inf' and '-inf' while every loss is nan"
        elif not lo <= hi:
            return f"min {lo} must be <= max {hi}"
        elif self._slots is not None:  # min and max are in the first and last filled slots
            filled = np.flatnonzero(self._slots)
            if filled[0] != self._slot(lo) or filled[-1] != self._slot(hi):
                return f"min {lo} and max {hi} must lie in the first and last filled slots"
        if count == 0 and (total, weights) != (0.0, 0.0):
            return "sum and weight_sum must be 0 without losses"
        # sum adds s*l with s >= 0 (fl_coef: a nan loss gives nan, also with s == 0), so it
        # is nan exactly when a loss is, or when terms of +inf and -inf met; and it has the
        # sign of some loss
        if nans and not math.isnan(total):
            return f"sum must be nan when nan_count > 0; got {total}"
        if math.isnan(total) and not nans and not lo < 0 < hi:
            return "sum is nan without a nan loss or losses of both signs"
        if total > 0 and not hi > 0 or total < 0 and not lo < 0:
            return f"sum {total} must have the sign of a loss between min {lo} and max {hi}"
        # weight_sum adds s*d with s >= 0 and d a class weight (index targets) or 1
        weights_non_negative = class_weight is None or bool(np.all(class_weight >= 0))
        if weights_non_negative and not weights >= 0:
            return f"weight_sum must be >= 0; got {weights}"
        return self._check_extras(weights_non_negative)

    def _slot(self, v):
        """The histogram slot of a loss v that is not nan, as fl_hist_slot places it."""
        edges = self._bins.edges
        slot = int(np.searchsorted(edges, v, side="right"))
        return edges.size - 1 if slot == edges.size and v == edges[-1] else slot
