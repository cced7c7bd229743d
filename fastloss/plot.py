"""Plots of loss distributions (matplotlib, the optional extra fastloss[plot])."""
import numpy as np

# Most steps drawn per histogram: more than a figure has pixels across, so merging finer bins
# changes nothing visible, while drawing 2**24 of them took minutes and gigabytes.
MAX_STEPS = 2048


def require_matplotlib(feature):
    """Import matplotlib, or raise an ImportError that says how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError(f"{feature} needs matplotlib: pip install 'fastloss[plot]'") from None
    return matplotlib


def _merged_bins(counts, edges):
    """counts and edges with runs of k adjacent bins merged into one (their counts added
    exactly), k the smallest that leaves at most MAX_STEPS bins."""
    k = -(-counts.size // MAX_STEPS)
    if k == 1:
        return counts, edges
    starts = np.arange(0, counts.size, k)
    return np.add.reduceat(counts, starts), np.append(edges[starts], edges[-1])


def plot_loss_histograms(meters, path=None, ax=None):
    """Overlaid histograms of per-example losses, such as train against test.

    Parameters
    ----------
    meters : dict of str to StreamingLoss
        Label to meter; every meter needs bins. Each is drawn as a step histogram of the
        fraction of its examples (``count``, nan losses and losses outside the edges included)
        per bin, with its mean as a dashed vertical line; losses outside the edges are noted in
        the legend. A histogram of more than ``MAX_STEPS`` (2048) bins is drawn with runs of
        k adjacent bins merged (counts added exactly; k the smallest that leaves at most 2048
        steps), so that time and memory follow what is drawn: one copy of the counts at a
        time and 2048 steps per meter, whatever the number of bins.
    path : str or path-like, optional
        Also write the figure there (PNG for a .png name).
    ax : matplotlib Axes, optional
        Draw into it; by default a new figure (not registered with pyplot).

    Returns the Axes. The loss axis is logarithmic when every edge is positive (symmetric
    logarithmic otherwise).

    Raises
    ------
    ImportError
        matplotlib is not installed (``pip install 'fastloss[plot]'``).
    TypeError, ValueError
        meters is not a non-empty dict of StreamingLoss, or one has no bins.
    """
    from .streaming import StreamingLoss

    require_matplotlib("plot_loss_histograms")
    if not isinstance(meters, dict) or not meters:
        raise TypeError("meters must be a non-empty dict of label to StreamingLoss")
    for label, m in meters.items():
        if not isinstance(m, StreamingLoss):
            raise TypeError(f"meters[{label!r}] is a {type(m).__name__}, not a StreamingLoss")
        if m.histogram is None:
            raise ValueError(f"meters[{label!r}] has no histogram: create it with bins=...")
    if ax is None:
        from matplotlib.figure import Figure
        ax = Figure(figsize=(7, 4.2)).subplots()
    all_edges = [m.histogram[1] for m in meters.values()]  # read-only views, no copies
    for label, m in meters.items():
        counts, edges = _merged_bins(*m.histogram)
        fractions = counts / max(m.count, 1)
        text = f"{label}: mean {m.mean:.4g}, n = {m.count:,}"
        outside = [f"{k:,} {side}" for k, side in ((m.underflow, "below"),
                                                     (m.overflow, "above"),
                                                     (m.nan_count, "nan")) if k]
        if outside:
            text += f" ({', '.join(outside)})"
        line = ax.stairs(fractions, edges, label=text, linewidth=1.6)
        ax.axvline(m.mean, color=line.get_edgecolor(), linestyle="--", linewidth=1)
    if min(edges[0] for edges in all_edges) > 0:
        ax.set_xscale("log")
    else:
        positive = [edges[i] for edges in all_edges
                    for i in [np.searchsorted(edges, 0.0, side="right")] if i < edges.size]
        ax.set_xscale("symlog", linthresh=float(min(positive)) if positive else 1.0)
    loss = next(iter(meters.values())).loss
    ax.set(xlabel=f"{loss} per example", ylabel="fraction of examples")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    if path is not None:
        ax.figure.savefig(path, dpi=100, bbox_inches="tight")
    return ax


# Area (points^2) of the marker of a bin holding all of a meter's weight.
_FULL_BIN_AREA = 600.0


def plot_reliability(meters, path=None, ax=None):
    """Overlaid reliability diagrams: accuracy against confidence per calibration bin.

    Parameters
    ----------
    meters : dict of str to StreamingLoss
        Label to meter; every meter needs ``calibration_bins``. Each is drawn as a line through
        its non-empty bins at (mean confidence, accuracy) (``reliability()``, s-weighted), with
        each bin's marker area proportional to its share of the meter's weight, and its ECE,
        Brier score and count in the legend. The diagonal (dashed) is perfect calibration:
        below it the model is over-confident, above it under-confident.
    path : str or path-like, optional
        Also write the figure there (PNG for a .png name).
    ax : matplotlib Axes, optional
        Draw into it; by default a new figure (not registered with pyplot).

    Returns the Axes. torchmetrics and scikit-learn have no counterpart that draws several
    models at once; ``sklearn.calibration.CalibrationDisplay`` draws one from its predictions.

    Raises
    ------
    ImportError
        matplotlib is not installed (``pip install 'fastloss[plot]'``).
    TypeError, ValueError
        meters is not a non-empty dict of StreamingLoss, or one has no calibration bins.
    """
    from .streaming import StreamingLoss

    require_matplotlib("plot_reliability")
    if not isinstance(meters, dict) or not meters:
        raise TypeError("meters must be a non-empty dict of label to StreamingLoss")
    for label, m in meters.items():
        if not isinstance(m, StreamingLoss):
            raise TypeError(f"meters[{label!r}] is a {type(m).__name__}, not a StreamingLoss")
        if m.reliability() is None:
            raise ValueError(f"meters[{label!r}] has no calibration bins: create it with "
                             "calibration_bins=...")
    if ax is None:
        from matplotlib.figure import Figure
        ax = Figure(figsize=(5.2, 5)).subplots()
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1,
            label="perfectly calibrated")
    for label, m in meters.items():
        r = m.reliability()
        filled = r["weight"] > 0
        share = r["weight"][filled] / r["weight"][filled].sum() if filled.any() else []
        line, = ax.plot(r["confidence"][filled], r["accuracy"][filled], linewidth=1.4,
                        label=f"{label}: ECE {m.ece:.3g}, Brier {m.brier:.3g}, "
                              f"n = {m.count:,}")
        ax.scatter(r["confidence"][filled], r["accuracy"][filled], clip_on=False,
                   s=_FULL_BIN_AREA * np.asarray(share), color=line.get_color(), alpha=0.45,
                   edgecolors="none")
    ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", xlabel="confidence (mean per bin)",
           ylabel="accuracy (fraction of positives or correct)")
    ax.grid(True, alpha=0.3)
    # below the axes: inside, the legend would hide the points of some model
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    if path is not None:
        ax.figure.savefig(path, dpi=100, bbox_inches="tight")
    return ax
