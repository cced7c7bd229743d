"""plot_reliability: the points it draws are the meters' reliability bins, the file it writes,
and its errors."""
import matplotlib.axes
import numpy as np
import pytest

import fastloss
from fastloss import StreamingLoss, plot_reliability


@pytest.fixture
def meters():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(50_000).astype(np.float32)
    y = (rng.random(50_000) < 1 / (1 + np.exp(-x))).astype(np.float32)
    calibrated = StreamingLoss("binary_cross_entropy_with_logits", calibration_bins=10)
    confident = StreamingLoss("binary_cross_entropy_with_logits", calibration_bins=10)
    return {"calibrated": calibrated.update(x, y), "over-confident": confident.update(3 * x, y)}


def test_points_are_the_bins_mean_confidence_and_accuracy(meters, tmp_path):
    path = tmp_path / "r.png"
    ax = plot_reliability(meters, path=path)
    assert isinstance(ax, matplotlib.axes.Axes)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    diagonal, *lines = ax.lines
    np.testing.assert_array_equal(diagonal.get_xydata(), [[0, 0], [1, 1]])
    assert len(lines) == 2 and len(ax.collections) == 2
    rng = np.random.default_rng(0)  # the fixture's data, binned independently in float64
    x = rng.standard_normal(50_000).astype(np.float32)
    y = (rng.random(50_000) < 1 / (1 + np.exp(-x))).astype(np.float32)
    for line, markers, scale in zip(lines, ax.collections, (1, 3)):
        p = 1 / (1 + np.exp(-scale * x.astype(np.float64)))
        b = np.minimum((p * 10).astype(int), 9)
        filled = np.flatnonzero(np.bincount(b, minlength=10))
        conf = [p[b == i].mean() for i in filled]
        acc = [y[b == i].mean(dtype=np.float64) for i in filled]
        np.testing.assert_allclose(line.get_xdata(), conf, rtol=1e-6)
        np.testing.assert_allclose(line.get_ydata(), acc, rtol=1e-12)
        np.testing.assert_allclose(markers.get_offsets(), np.column_stack([conf, acc]),
                                   rtol=1e-6)
        share = np.bincount(b, minlength=10)[filled] / x.size
        np.testing.assert_allclose(markers.get_sizes() / markers.get_sizes().sum(), share,
                                   rtol=1e-12)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "perfectly calibrated"
    assert labels[1].startswith("calibrated: ECE ") and labels[2].startswith("over-confident")
    assert ax.get_xlim() == (0, 1) and ax.get_ylim() == (0, 1)


def test_draws_into_a_given_axes_and_an_empty_meter(meters):
    from matplotlib.figure import Figure
    ax = Figure().subplots()
    empty = StreamingLoss("cross_entropy", calibration_bins=5)
    assert plot_reliability({"empty": empty, **meters}, ax=ax) is ax
    assert ax.lines[1].get_xdata().size == 0


def test_errors(meters):
    plain = StreamingLoss("binary_cross_entropy_with_logits", bins="log")
    with pytest.raises(ValueError, match=r"meters\['plain'\] has no calibration bins"):
        plot_reliability({"plain": plain})
    with pytest.raises(TypeError, match="non-empty dict"):
        plot_reliability({})
    with pytest.raises(TypeError, match="non-empty dict"):
        plot_reliability(list(meters.values()))
    with pytest.raises(TypeError, match=r"meters\['m'\] is a int, not a StreamingLoss"):
        plot_reliability({"m": 3})
    assert "plot_reliability" in fastloss.__all__
