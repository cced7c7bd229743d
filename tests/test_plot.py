"""plot_loss_histograms: what it draws, the file it writes, and its errors."""
import sys

import matplotlib.axes
import matplotlib.patches
import numpy as np
import pytest

import fastloss
from fastloss import StreamingLoss, plot_loss_histograms


@pytest.fixture
def meters():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(50_000).astype(np.float32)
    y = (rng.random(50_000) < 0.5).astype(np.float32)
    train = StreamingLoss("binary_cross_entropy_with_logits", bins="log").update(2 * x, x > 0)
    test = StreamingLoss("binary_cross_entropy_with_logits", bins="log").update(x, y)
    return {"train": train, "test": test}


def test_overlaid_fractions_log_axis_and_means(meters, tmp_path):
    path = tmp_path / "h.png"
    ax = plot_loss_histograms(meters, path=path)
    assert isinstance(ax, matplotlib.axes.Axes)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert ax.get_xscale() == "log" and ax.get_ylabel() == "fraction of examples"
    steps = [p for p in ax.patches if isinstance(p, matplotlib.patches.StepPatch)]
    assert len(steps) == 2
    for step, m in zip(steps, meters.values()):
        values = step.get_data().values
        np.testing.assert_allclose(values, m.histogram[0] / m.count)
    means = sorted(line.get_xdata()[0] for line in ax.lines)
    assert means == pytest.approx(sorted(m.mean for m in meters.values()))
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].startswith("train: mean ") and labels[1].startswith("test: mean ")


def test_draws_into_a_given_axes_with_zero_edge(meters):
    from matplotlib.figure import Figure
    ax = Figure().subplots()
    m = StreamingLoss("binary_cross_entropy", bins=10, range=(0, 5))
    m.update(np.array([0.5, 0.9, 0.001]), np.array([1.0, 1.0, 1.0]))  # the last: 6.9
    assert plot_loss_histograms({"p": m}, ax=ax) is ax
    assert ax.get_xscale() == "symlog"
    assert "1 above" in ax.get_legend().get_texts()[0].get_text()


def test_errors(meters, monkeypatch):
    with pytest.raises(TypeError, match="non-empty dict"):
        plot_loss_histograms([meters["train"]])
    with pytest.raises(TypeError, match="is a int, not a StreamingLoss"):
        plot_loss_histograms({"a": 1})
    with pytest.raises(ValueError, match="has no histogram: create it with bins="):
        plot_loss_histograms({"a": StreamingLoss("cross_entropy")})
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'fastloss\[plot\]'"):
        fastloss.plot_loss_histograms(meters)


@pytest.mark.parametrize("n_bins", [5000, 2**24])
def test_many_bins_are_drawn_merged_exactly_and_in_proportion(n_bins, tmp_path):
    """A 2**24-bin meter took 6 minutes and 9.4 GB to plot: now runs of adjacent bins are
    merged into at most MAX_STEPS steps, each the fraction of the losses in its merged bin."""
    import tracemalloc
    from fastloss.plot import MAX_STEPS
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(60_000) * 3).astype(np.float32)
    y = np.ones_like(x)
    m = StreamingLoss("binary_cross_entropy_with_logits", bins=n_bins, range=(0.0, 6.0))
    m.update(x, y)
    edges = np.linspace(0.0, 6.0, n_bins + 1)
    tracemalloc.start()
    try:
        ax = plot_loss_histograms({"m": m}, path=tmp_path / "h.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * 8 * n_bins + 2**26  # about one copy of the counts, and matplotlib's
    (step,) = [p for p in ax.patches if isinstance(p, matplotlib.patches.StepPatch)]
    drawn = step.get_data()
    k = -(-n_bins // MAX_STEPS)  # the fewest bins per step that leaves at most MAX_STEPS
    np.testing.assert_array_equal(drawn.edges, edges[np.append(np.arange(0, n_bins, k), n_bins)])
    assert len(drawn.values) <= MAX_STEPS
    v = fastloss.binary_cross_entropy_with_logits(x, y, reduction="none").astype(np.float64)
    np.testing.assert_allclose(drawn.values, np.histogram(v, drawn.edges)[0] / x.size,
                               rtol=1e-15)
