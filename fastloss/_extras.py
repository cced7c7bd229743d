"""What StreamingLoss accumulates besides the loss's own statistics: calibration bins and the
Brier score, per-class and per-group breakdowns, bootstrap replicates (src_c/fl_stats.h).

Each accumulator holds its own state and knows how to add a kernel pass's folded extras
(``_kernels.Statistics.extras_layout``), merge, serialize and check itself; StreamingLoss
creates them from its parameters and calls them. Every state is O(bins + classes + groups + B).
"""
import math
import numbers
from numbers import Integral

import numpy as np

from . import _validate

# Most calibration bins, classes or groups (the kernel indexes its slots with ints).
MAX_SLOTS = 2**24
# Most bootstrap replicates.
MAX_BOOTSTRAP = 2**20


def _invalid(why):
    return ValueError(f"not a StreamingLoss state: {why}")


def _int(value, name, lo, hi):
    if not (isinstance(value, Integral) and not isinstance(value, (bool, np.bool_))
            and lo <= value <= hi):
        raise ValueError(f"{name} must be an int from {lo} to {hi}; got {value!r}")
    return int(value)


def _counts(value, n, key):
    """A list of n JSON counts as int64 (added as Python ints first: no wrap-around)."""
    if not (isinstance(value, list) and len(value) == n and all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 2**63 for c in value)):
        raise _invalid(f"{key} must be a list of {n} ints from 0 to 2**63 - 1")
    return np.array(value, np.int64)


def _floats(value, n, key):
    from .streaming import _from_json_float
    if not (isinstance(value, list) and len(value) == n):
        raise _invalid(f"{key} must be a list of {n} numbers")
    return np.array([_from_json_float(v, key) for v in value], np.float64)


def _json_floats(a):
    from .streaming import _json_float
    return [_json_float(v) for v in a]


class Calibration:
    """Calibration bins of the confidence c of each position (binary losses: the predicted
    probability, the input or the sigmoid of the logit; softmax losses: the top-1 probability)
    with, per bin, the count and the sums of s, s*c and s*outcome (outcome: the target, or
    whether the top-1 class is the target), and the sum of s * brier term."""

    def __init__(self, edges):
        self.edges = edges
        n = edges.size - 1
        self.uniform = bool(np.array_equal(edges, np.linspace(0, 1, n + 1)))
        self.reset()

    def reset(self):
        n = self.edges.size - 1
        self.count = np.zeros(n, np.int64)
        self.weight, self.confidence, self.outcome = (np.zeros(n) for _ in range(3))
        self.brier_sum = 0.0

    @classmethod
    def parse(cls, bins):
        if bins is None:
            return None
        if isinstance(bins, Integral) and not isinstance(bins, (bool, np.bool_)):
            return cls(np.linspace(0, 1, _int(bins, "calibration_bins", 1, MAX_SLOTS) + 1))
        e = _validate.as_array(bins, "calibration_bins")
        if e.dtype.kind not in "iuf" or e.ndim != 1 or not 2 <= e.size <= MAX_SLOTS + 1:
            raise ValueError(f"calibration_bins must be an int or a 1-D array of 2 to "
                             f"{MAX_SLOTS + 1} edges; got shape {e.shape} and dtype {e.dtype}")
        e = e.astype(np.float64)
        if not (e[0] == 0 and e[-1] == 1 and np.all(np.diff(e) > 0)):
            raise ValueError("calibration bin edges must increase strictly from 0 to 1")
        return cls(e)

    def __eq__(self, other):
        return isinstance(other, Calibration) and np.array_equal(self.edges, other.edges)

    def add(self, folded, part, brier_sum):
        q = folded[part].reshape(-1, 4)
        self.count += q[:, 0].astype(np.int64)  # exact: integers below 2**53
        self.weight += q[:, 1]
        self.confidence += q[:, 2]
        self.outcome += q[:, 3]
        self.brier_sum += brier_sum

    def merge(self, other):
        self.count += other.count
        self.weight += other.weight
        self.confidence += other.confidence
        self.outcome += other.outcome
        self.brier_sum += other.brier_sum

    # ---- results ----

    def _gaps(self):
        """Per non-empty bin: its share of the weight and |mean outcome - mean confidence|."""
        filled = self.weight > 0
        w = self.weight[filled]
        gap = np.abs(self.outcome[filled] / w - self.confidence[filled] / w)
        return w / w.sum(), gap

    @property
    def ece(self):
        share, gap = self._gaps()
        return float(np.sum(share * gap)) if gap.size else math.nan

    @property
    def mce(self):
        _, gap = self._gaps()
        return float(np.max(gap)) if gap.size else math.nan

    @property
    def rms_ce(self):
        share, gap = self._gaps()
        return float(np.sqrt(np.sum(share * gap**2))) if gap.size else math.nan

    @property
    def brier(self):
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(np.float64(self.brier_sum) / np.sum(self.weight))

    def reliability(self):
        with np.errstate(divide="ignore", invalid="ignore"):
            return {"edges": self.edges.copy(), "count": self.count.copy(),
                    "weight": self.weight.copy(), "confidence": self.confidence / self.weight,
                    "accuracy": self.outcome / self.weight}

    # ---- serialization ----

    def to_dict(self):
        return {"edges": self.edges.tolist(), "count": self.count.tolist(),
                "weight": _json_floats(self.weight), "confidence": _json_floats(self.confidence),
                "outcome": _json_floats(self.outcome),
                "brier_sum": _json_floats([self.brier_sum])[0]}

    @classmethod
    def from_dict(cls, d):
        from .streaming import _from_json_float
        keys = {"edges", "count", "weight", "confidence", "outcome", "brier_sum"}
        if not (isinstance(d, dict) and set(d) == keys):
            raise _invalid(f"calibration must be a dict with the keys {sorted(keys)}")
        try:
            c = cls.parse(d["edges"])
        except (TypeError, ValueError) as e:
            raise _invalid(f"calibration edges: {e}") from None
        n = c.edges.size - 1
        c.count = _counts(d["count"], n, "calibration count")
        for key in ("weight", "confidence", "outcome"):
            setattr(c, key, _floats(d[key], n, "calibration " + key))
        c.brier_sum = _from_json_float(d["brier_sum"], "calibration brier_sum")
        return c

    def check(self, count):
        """What is wrong with this state for a meter of `count` losses, or None."""
        if int(self.count.sum(dtype=object)) > count:
            return "the calibration counts add up to more than count"
        sums = (self.weight, self.confidence, self.outcome)
        if not all(np.all(a >= 0) for a in sums) or not self.brier_sum >= 0:
            return "the calibration sums must be non-negative numbers (not nan)"
        if np.any((self.count == 0) & ((self.weight != 0) | (self.confidence != 0)
                                       | (self.outcome != 0))):
            return "an empty calibration bin must have sums of 0"
        # confidences and outcomes are in [0, 1]: their weighted sums are at most the weight's
        # (up to float64 rounding); the confidences of a bin lie between its edges
        slack = 1e-9 * self.weight
        if np.any(self.confidence > self.weight + slack) or np.any(
                self.outcome > self.weight + slack):
            return "a calibration bin's confidence or outcome sum exceeds its weight"
        if np.any(self.confidence < self.edges[:-1] * self.weight - slack) or np.any(
                self.confidence > self.edges[1:] * self.weight + slack):
            return "a calibration bin's mean confidence lies outside the bin"
        if self.brier_sum > 2 * float(np.sum(self.weight)) * (1 + 1e-9):
            return "brier_sum exceeds 2 times the calibration weight"
        return None


class Breakdown:
    """Per-id sums of the loss (ids: classes or groups): count, sum of s*d and of s*l."""

    def __init__(self, size=None):
        self.size = size
        self.reset()

    def reset(self):
        n = self.size or 0
        self.count = np.zeros(n, np.int64)
        self.weight_sum, self.sum = np.zeros(n), np.zeros(n)

    def add(self, folded, part):
        q = folded[part].reshape(-1, 4)
        self.count += q[:, 0].astype(np.int64)
        self.weight_sum += q[:, 1]
        self.sum += q[:, 2]

    def merge(self, other):
        self.count += other.count
        self.weight_sum += other.weight_sum
        self.sum += other.sum

    @property
    def mean(self):
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.sum / self.weight_sum

    def to_dict(self):
        return {"count": self.count.tolist(), "weight_sum": _json_floats(self.weight_sum),
                "sum": _json_floats(self.sum)}

    @classmethod
    def from_dict(cls, d, size, name):
        if not (isinstance(d, dict) and set(d) == {"count", "weight_sum", "sum"}):
            raise _invalid(f"{name} must be a dict with the keys ['count', 'sum', "
                           "'weight_sum']")
        b = cls(size)
        b.count = _counts(d["count"], size, name + " count")
        b.weight_sum = _floats(d["weight_sum"], size, name + " weight_sum")
        b.sum = _floats(d["sum"], size, name + " sum")
        return b

    def check(self, count, name, weights_non_negative):
        if int(self.count.sum(dtype=object)) != count:
            return f"the {name} counts must add up to count"
        if np.any(np.isnan(self.weight_sum)) or (
                weights_non_negative and np.any(self.weight_sum < 0)):
            return f"the {name} weight sums must be numbers" + (
                " >= 0" if weights_non_negative else "")
        if np.any((self.count == 0) & ((self.weight_sum != 0) | (self.sum != 0))):
            return f"a {name} without losses must have sums of 0"
        return None


class Bootstrap:
    """B Poisson(1)-weighted replicates of sum and weight_sum: the stream's positions are cut
    into units of BOOT_UNIT positions, unit u weighted in replicate r by a Poisson(1) count
    drawn from a hash of (seed, u, r) (fl_stats.h). position: the positions seen."""

    def __init__(self, n, seed):
        self.n, self.seed = n, seed
        self.reset()

    def reset(self):
        self.sums, self.weights = np.zeros(self.n), np.zeros(self.n)
        self.position = 0

    @classmethod
    def parse(cls, bootstrap, seed):
        if bootstrap is None:
            return None
        return cls(_int(bootstrap, "bootstrap", 1, MAX_BOOTSTRAP),
                   _int(seed, "seed", 0, 2**64 - 1))

    def add(self, folded, part, positions):
        self.sums += folded[part][:self.n]
        self.weights += folded[part][self.n:]
        self.position += positions

    def merge(self, other):
        self.sums += other.sums
        self.weights += other.weights
        self.position += other.position

    def mean_ci(self, level):
        if not (isinstance(level, numbers.Real) and not isinstance(level, bool)
                and 0 < level < 1):
            raise ValueError(f"level must be a number between 0 and 1; got {level!r}")
        level = float(level)  # the quantiles in float64 whatever real number type level has
        with np.errstate(divide="ignore", invalid="ignore"):
            means = self.sums / self.weights
        if np.any(np.isnan(means)):
            return math.nan, math.nan
        lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
        return float(lo), float(hi)

    def to_dict(self):
        return {"n": self.n, "seed": self.seed, "position": self.position,
                "sums": _json_floats(self.sums), "weights": _json_floats(self.weights)}

    @classmethod
    def from_dict(cls, d):
        keys = {"n", "seed", "position", "sums", "weights"}
        if not (isinstance(d, dict) and set(d) == keys):
            raise _invalid(f"bootstrap must be a dict with the keys {sorted(keys)}")
        try:
            b = cls.parse(d["n"], d["seed"])
            b.position = _int(d["position"], "position", 0, 2**63 - 1)
        except ValueError as e:
            raise _invalid(f"bootstrap: {e}") from None
        b.sums = _floats(d["sums"], b.n, "bootstrap sums")
        b.weights = _floats(d["weights"], b.n, "bootstrap weights")
        return b

    def check(self, count, weights_non_negative):
        if self.position < count:
            return f"bootstrap position {self.position} must be >= count {count}"
        if np.any(np.isnan(self.weights)) or (
                weights_non_negative and np.any(self.weights < 0)):
            return "the bootstrap weights must be numbers" + (
                " >= 0" if weights_non_negative else "")
        if count == 0 and (np.any(self.sums != 0) or np.any(self.weights != 0)):
            return "the bootstrap sums must be 0 without losses"
        return None
