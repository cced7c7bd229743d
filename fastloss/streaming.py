"""StreamingLoss: the statistics of a loss over data seen in batches, mergeable across workers.

Each update is one fused kernel pass (src_c/fl_stats.h): the weighted sum, the sum of weights,
count, min, max and the histogram of the per-position losses are accumulated (sums in float64)
without the losses ever being stored.
"""
import math
from numbers import Integral

import numpy as np

from . import _kernels, _validate, losses

# Every loss of the package: its kind and the parameters StreamingLoss takes, with defaults.
# The weight of an update is a sample weight; cross-entropy's `weight` parameter is the class
# weight of torch.
LOSSES = {
    "binary_cross_entropy": ("binary", {}),
    "binary_cross_entropy_with_logits": ("binary", {"pos_weight": None}),
    "sigmoid_focal_loss": ("binary", {"alpha": 0.25, "gamma": 2.0}),
    "cross_entropy": ("softmax", {"weight": None, "ignore_index": -100,
                                  "label_smoothing": 0.0}),
    "softmax_focal_loss": ("softmax", {"gamma": 2.0, "weight": None, "ignore_index": -100}),
}

_ARRAY_PARAMS = ("pos_weight", "weight")

# bins="log": 10 bins per decade over the losses that matter, from 1e-8 to 1e3.
LOG_BINS_RANGE = (-8, 3)
LOG_BINS_PER_DECADE = 10

_SPACINGS = {"uniform": _kernels.BINS_UNIFORM, "log": _kernels.BINS_LOG,
             "edges": _kernels.BINS_EDGES}

# A bound on the error of the log2 the kernel guesses log-spaced bins with (fl_log2_coarse_f32
# in src_c/fl_math.h): 8.3e-6 over every normal float.
_LOG2_ERROR = 2e-5


class _Bins:
    """Histogram edges and how the kernel guesses a loss's bin before checking the edges."""

    def __init__(self, edges, spacing):
        self.edges = edges
        self.edges.flags.writeable = False
        self.spacing = spacing
        n = edges.size - 1
        if spacing == "edges":  # every loss is searched
            self.origin, self.scale, self.tol_abs, self.tol_rel = 0.0, 0.0, 1.0, 0.0
            return
        x = np.log2(edges) if spacing == "log" else edges
        self.origin = float(x[0])
        self.scale = n / float(x[-1] - x[0])
        # A bound on the error of the kernel's float32 guess g = (x - origin)*scale
        # (fl_stats.h), in bins: absolute, from the rounding of origin and the error of the
        # float32 log2 (or the flushing of subnormal losses to 0); relative to g, from the
        # rounding of each operation and the edges' own deviation from even spacing (0 at the
        # first edge, which is origin). Twice that.
        eps, tiny = float(np.finfo(np.float32).eps), float(np.finfo(np.float32).tiny)
        i = np.arange(1, n + 1)
        deviation = float(np.max(np.abs((x[1:] - self.origin) * self.scale - i) / i))
        guess_error = _LOG2_ERROR if spacing == "log" else tiny
        self.tol_abs = 2 * self.scale * (eps * abs(self.origin) + guess_error)
        self.tol_rel = 2 * (2 * eps + deviation)

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
            return cls(np.logspace(lo, hi, (hi - lo) * LOG_BINS_PER_DECADE + 1), "log")
        if isinstance(bins, Integral) and not isinstance(bins, (bool, np.bool_)):
            if bins < 1:
                raise ValueError(f"bins must be at least 1; got {bins}")
            if range is None:
                raise ValueError("an int number of bins needs range=(lo, hi)")
            try:
                lo, hi = (float(v) for v in range)
            except (TypeError, ValueError):
                raise TypeError(f"range must be a pair of numbers (lo, hi); got {range!r}") \
                    from None
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"range must be finite with lo < hi; got {range!r}")
            return cls(np.linspace(lo, hi, int(bins) + 1), "uniform")
        if range is not None:
            raise ValueError("range is only for an int number of bins, not with explicit edges")
        return cls.from_edges(bins, "edges")

    @classmethod
    def from_edges(cls, edges, spacing):
        e = _validate.as_array(edges, "bins")
        if e.dtype.kind not in "iuf" or e.ndim != 1 or e.size < 2:
            raise ValueError("bin edges must be a 1-D array of at least 2 numbers; got "
                             f"shape {e.shape} and dtype {e.dtype}")
        e = e.astype(np.float64)
        if not (np.all(np.isfinite(e)) and np.all(np.diff(e) > 0)):
            raise ValueError("bin edges must be finite and strictly increasing")
        if spacing == "log" and e[0] <= 0:
            raise ValueError("log-spaced bin edges must be positive")
        return cls(e, spacing)

    def __eq__(self, other):
        return (isinstance(other, _Bins) and self.spacing == other.spacing
                and np.array_equal(self.edges, other.edges))

    def kernel_statistics(self, sample_weight):
        return _kernels.Statistics(self.edges, _SPACINGS[self.spacing], self.origin,
                                   self.scale, self.tol_abs, self.tol_rel, *sample_weight)


def _statistics(bins, sample_weight):
    if bins is None:
        return _kernels.Statistics(None, 0, 0.0, 0.0, 0.0, 0.0, *sample_weight)
    return bins.kernel_statistics(sample_weight)


def _json_float(x):
    """A float for strict JSON: non-finite values as the strings "nan", "inf", "-inf"."""
    x = float(x)
    return x if math.isfinite(x) else str(x)


def _from_json_float(x, key):
    if isinstance(x, str) and x in ("nan", "inf", "-inf"):
        return float(x)
    if isinstance(x, (int, float)) and not isinstance(x, bool):
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
    there are none.

    Histogram (``bins``): counts of loss values, unweighted, in bins [e_i, e_i+1) (the last one
    closed, as ``np.histogram``), with values below the first edge counted in ``underflow`` and
    above the last in ``overflow``. ``bins`` is an int with ``range=(lo, hi)`` (evenly spaced),
    an increasing array of edges, or ``"log"``: 10 bins per decade from 1e-8 to 1e3. Int and
    "log" bins are computed arithmetically (the edges decide near a boundary); explicit edges
    by binary search, which is slower.

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
                a.flags.writeable = False
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
        if batch is None:
            return self
        total, weight_sum, (count, nan_count, lo, hi, slots) = batch
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
            return None
        focal = {k: self._params[k] for k in ("alpha", "gamma") if k in self._params}
        total, flags, weight_sum, stats = _kernels.binary_loss(
            self._loss, _validate.flat(x), _validate.flat(y), target_type, None, 1, 1, *pw,
            None, threads, stats=_statistics(self._bins, w), **focal)
        losses._check_flags(flags)
        return total, weight_sum, stats

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
        self._n_classes = n_classes
        if not n * n_spatial:
            return None
        total, weight_sum, bad, flags, stats = _kernels.cross_entropy_loss(
            x, t, target_type, w, ignore, eps, None, threads, gamma != 0, gamma,
            stats=_statistics(self._bins, sample_weight))
        losses._check_indices(bad, t)
        losses._check_flags(flags)
        return total, weight_sum, stats

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
        """The loss's parameters (arrays as read-only float64 copies)."""
        return dict(self._params)

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
        return self._slots[1:-1].copy(), self._bins.edges

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
            bins = {"spacing": self._bins.spacing, "edges": self._bins.edges.tolist()}
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
        constructor raises) for anything else."""
        keys = {"loss", "params", "bins", "n_classes", "count", "nan_count", "sum",
                "weight_sum", "min", "max", "histogram"}
        if not isinstance(state, dict) or set(state) != keys:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"not a StreamingLoss state: expected the keys {sorted(keys)}; "
                             f"got {got}")
        if not isinstance(state["params"], dict):
            raise ValueError("not a StreamingLoss state: params must be a dict")
        m = cls(state["loss"], **state["params"])
        bins, hist = state["bins"], state["histogram"]
        if (bins is None) != (hist is None):
            raise ValueError("not a StreamingLoss state: bins and histogram go together")
        if bins is not None:
            if not isinstance(bins, dict) or bins.get("spacing") not in _SPACINGS:
                raise ValueError(f"not a StreamingLoss state: bins must have a spacing of "
                                 f"{list(_SPACINGS)} and edges")
            m._bins = _Bins.from_edges(bins.get("edges"), bins["spacing"])
            counts = [hist.get("underflow"), *hist.get("counts", ()), hist.get("overflow")]
            if len(counts) != m._bins.edges.size + 1 or not all(
                    isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
                raise ValueError("not a StreamingLoss state: the histogram needs one "
                                 "non-negative int count per bin, underflow and overflow")
            m._slots = np.array(counts, np.int64)
        for key in ("count", "nan_count"):
            if not isinstance(state[key], int) or isinstance(state[key], bool) or state[key] < 0:
                raise ValueError(f"not a StreamingLoss state: {key} must be an int >= 0")
        n_classes = state["n_classes"]
        if n_classes is not None and (not isinstance(n_classes, int) or n_classes < 1):
            raise ValueError("not a StreamingLoss state: n_classes must be None or an int >= 1")
        m._count, m._nan_count, m._n_classes = state["count"], state["nan_count"], n_classes
        for key in ("sum", "weight_sum", "min", "max"):
            setattr(m, "_" + key, _from_json_float(state[key], key))
        return m
