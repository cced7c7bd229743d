"""StreamingLoss: the statistics of a loss over data seen in batches, mergeable across workers.

Each update is one fused kernel pass (src_c/fl_stats.h): the weighted sum, the sum of weights,
count, min, max and the histogram of the per-position losses are accumulated (sums in float64)
without the losses ever being stored.
"""
import inspect
import math
import sys
from numbers import Integral

import numpy as np

from . import _kernels, _validate, losses

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

    Raises
    ------
    ValueError
        An unknown loss (the message lists the valid ones), invalid parameters or bins.
    TypeError
        A parameter the loss does not take.
    """

    def __init__(self, loss, *, bins=None, range=None, **params):
        if loss not in LOSSES:
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
        self.reset()

    def reset(self):
        """Forget every batch (the loss, its parameters and bins stay)."""
        self._sum = 0.0
        self._weight_sum = 0.0
        self._count = 0
        self._nan_count = 0
        self._min = math.inf
        self._max = -math.inf
        self._slots = None if self._bins is None else np.zeros(self._bins.edges.size + 1,
                                                               np.int64)
        self._n_classes = None
        return self

    # ---- accumulating ----

    def update(self, input, target, weight=None, *, n_threads=None):
        """Add one batch: input and target as the loss function takes them, and weight, an
        optional sample weight (non-negative, finite) that broadcasts to the input's shape
        (binary losses) or to the per-position loss's shape (N, d1, ..., dk) (softmax losses).

        Returns self. Raises what the loss function raises for these arguments, ValueError for a
        bad weight and, for softmax losses, for a number of classes that differs from earlier
        batches. On any error the state is unchanged.
        """
        if self._kind == "binary":
            batch = self._binary_batch(input, target, weight, n_threads)
        else:
            batch = self._softmax_batch(input, target, weight, n_threads)
        # Only now, after every check has passed, does the state change.
        total, weight_sum, (count, nan_count, lo, hi, slots), n_classes = batch
        self._n_classes = n_classes
        self._sum += total
        self._weight_sum += weight_sum
        self._count += count
        self._nan_count += nan_count
        self._min = min(self._min, lo)
        self._max = max(self._max, hi)
        if slots is not None:
            self._slots += slots
        return self

    def _binary_batch(self, input, target, weight, n_threads):
        x, _, y, target_type, w, pw = losses._binary_operands(
            input, target, weight, self._params.get("pos_weight"))
        threads = _validate.thread_count(n_threads, x.size)
        if not x.size:
            return 0.0, 0.0, (0, 0, math.inf, -math.inf, None), None
        focal = {k: self._params[k] for k in ("alpha", "gamma") if k in self._params}
        total, flags, weight_sum, stats = _kernels.binary_loss(
            self._loss, _validate.flat(x), _validate.flat(y), target_type, None, 1, 1, *pw,
            None, threads, stats=_statistics(self._bins, w), **focal)
        losses._check_flags(flags)
        return total, weight_sum, stats, None

    def _softmax_batch(self, input, target, weight, n_threads):
        gamma = self._params.get("gamma", 0.0)
        x, _, _, loss_shape, t, target_type, w, ignore, eps = losses._softmax_operands(
            input, target, self._params["weight"], self._params["ignore_index"],
            self._params.get("label_smoothing", 0.0), "gamma" in self._params)
        n, n_classes, n_spatial = x.shape
        if self._n_classes is not None and n_classes != self._n_classes:
            raise ValueError(f"input has {n_classes} classes; earlier batches had "
                             f"{self._n_classes}")
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
        threads = _validate.thread_count(n_threads, x.size)
        if not n * n_spatial:
            return 0.0, 0.0, (0, 0, math.inf, -math.inf, None), n_classes
        total, weight_sum, bad, flags, stats = _kernels.cross_entropy_loss(
            x, t, target_type, w, ignore, eps, None, threads, gamma != 0, gamma,
            stats=_statistics(self._bins, sample_weight))
        losses._check_indices(bad, t)
        losses._check_flags(flags)
        return total, weight_sum, stats, n_classes

    def merge(self, other):
        """Fold the state of other (a StreamingLoss of the same loss, parameters and bins) into
        this one, in place; returns self. Counts add exactly, sums in float64.

        Raises TypeError if other is not a StreamingLoss, ValueError if its loss, parameters,
        bins or number of classes differ."""
        if not isinstance(other, StreamingLoss):
            raise TypeError(f"can only merge a StreamingLoss; got {type(other).__name__}")
        if other._loss != self._loss:
            raise ValueError(f"cannot merge a {other._loss} meter into a {self._loss} meter")
        if self._json_params() != other._json_params():
            raise ValueError(f"cannot merge meters with different parameters: "
                             f"{self._json_params()} and {other._json_params()}")
        if self._bins != other._bins:
            raise ValueError("cannot merge meters with different bins")
        if None not in (self._n_classes, other._n_classes) and \
                self._n_classes != other._n_classes:
            raise ValueError(f"cannot merge meters of {self._n_classes} and "
                             f"{other._n_classes} classes")
        slots = None if self._slots is None else self._slots + other._slots
        self._sum += other._sum
        self._weight_sum += other._weight_sum
        self._count += other._count
        self._nan_count += other._nan_count
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)
        self._slots = slots
        if self._n_classes is None:
            self._n_classes = other._n_classes
        return self

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
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(np.float64(self._sum) / self._weight_sum)

    @property
    def min(self):
        return self._min if self._min <= self._max else math.nan

    @property
    def max(self):
        return self._max if self._min <= self._max else math.nan

    @property
    def histogram(self):
        """(counts, edges) as NumPy arrays (int64, float64), or None without bins."""
        if self._bins is None:
            return None
        return self._slots[1:-1].copy(), _read_only(self._bins.edges)

    @property
    def underflow(self):
        """Loss values below the first edge (0 without bins)."""
        return 0 if self._slots is None else int(self._slots[0])

    @property
    def overflow(self):
        """Loss values above the last edge (0 without bins)."""
        return 0 if self._slots is None else int(self._slots[-1])

    def __repr__(self):
        return (f"StreamingLoss({self._loss!r}, count={self._count}, mean={self.mean!r}, "
                f"min={self.min!r}, max={self.max!r})")

    # ---- serialization ----

    def _json_params(self):
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                for k, v in self._params.items()}

    def to_dict(self):
        """The state as a dict of JSON types (strict JSON: non-finite floats are the strings
        "nan", "inf", "-inf"), for :meth:`from_dict` in another process."""
        bins = hist = None
        if self._bins is not None:
            bins = {"edges": self._bins.edges.tolist()}
            hist = {"counts": self._slots[1:-1].tolist(), "underflow": self.underflow,
                    "overflow": self.overflow}
        return {"loss": self._loss, "params": self._json_params(), "bins": bins,
                "n_classes": self._n_classes, "count": self._count,
                "nan_count": self._nan_count, "sum": _json_float(self._sum),
                "weight_sum": _json_float(self._weight_sum), "min": _json_float(self._min),
                "max": _json_float(self._max), "histogram": hist}

    @classmethod
    def from_dict(cls, state):
        """A StreamingLoss from :meth:`to_dict`'s output. Raises ValueError (or what the
        constructor raises for the loss and its parameters) for anything else."""
        def invalid(why):
            return ValueError(f"not a StreamingLoss state: {why}")

        def count(value, key):
            if not (isinstance(value, int) and not isinstance(value, bool)
                    and 0 <= value < 2**63):
                raise invalid(f"{key} must be an int >= 0; got {value!r}")
            return value

        keys = {"loss", "params", "bins", "n_classes", "count", "nan_count", "sum",
                "weight_sum", "min", "max", "histogram"}
        if not isinstance(state, dict) or set(state) != keys:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise invalid(f"expected the keys {sorted(keys)}; got {got}")
        loss, params = state["loss"], state["params"]
        if loss not in LOSSES:
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
            m._slots = np.array([count(c, "a histogram count") for c in slots], np.int64)
            if m._slots.sum() + m._nan_count != m._count:
                raise invalid("the histogram's counts, with nan_count, must add up to count")
        n_classes = state["n_classes"]
        if n_classes is not None and (LOSSES[loss][0] == "binary" or count(
                n_classes, "n_classes") < 1):
            raise invalid("n_classes must be None (binary losses) or an int >= 1")
        m._n_classes = n_classes
        for key in ("sum", "weight_sum", "min", "max"):
            setattr(m, "_" + key, _from_json_float(state[key], key))
        if not m._weight_sum >= 0:
            raise invalid(f"weight_sum must be >= 0; got {m._weight_sum}")
        return m
