"""fastloss.dask.evaluate with StreamingLoss's extras (calibration, by_class, groups,
bootstrap): Dask arrays in uneven and misaligned chunks give the state of one StreamingLoss
updated with the whole arrays in memory (counts exactly, float64 sums within 1e-12 relative),
bootstrap replicates included: each block is weighted at its stream position."""
import dask
import dask.array as da
import numpy as np
import pytest

import fastloss.dask as fd
from fastloss import StreamingLoss

RTOL = 1e-12


def assert_same_state(got, expected):
    """Two to_dict states: equal, floats within RTOL (nan as nan)."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and set(got) == set(expected)
        for key in expected:
            assert_same_state(got[key], expected[key])
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected)
        for g, e in zip(got, expected):
            assert_same_state(g, e)
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, rel=RTOL, abs=1e-300, nan_ok=True)
    else:
        assert got == expected


def compute(delayed):
    with dask.config.set(scheduler="threads"):
        return delayed.compute()


@pytest.mark.parametrize("x_chunks", [((700, 1300, 1, 999), (2, 3)), ((3000,), (5,)),
                                      ((1, 2998, 1), (1, 1, 3))])
def test_binary_extras_equal_one_meter_over_the_whole_array(x_chunks):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3000, 5)) * 2).astype(np.float32)
    y = (rng.random(x.shape) < 1 / (1 + np.exp(-x))).astype(np.float32)
    s = rng.random((3000, 1))
    g = rng.integers(0, 4, x.shape)
    kw = dict(calibration_bins=12, by_class=True, n_groups=5, bootstrap=64, seed=11,
              pos_weight=np.array([1.0, 2, 3, 1, 1]))
    expected = StreamingLoss("binary_cross_entropy_with_logits", bins="log", **kw)
    expected.update(x, y, s, groups=g)
    got = compute(fd.evaluate("binary_cross_entropy_with_logits", da.from_array(x, x_chunks),
                              da.from_array(y, ((1000,) * 3, (4, 1))),
                              da.from_array(s, 777), groups=da.from_array(g, 1100),
                              bins="log", split_every=3, **kw))
    assert_same_state(got.to_dict(), expected.to_dict())
    assert got.mean_ci(0.9) == pytest.approx(expected.mean_ci(0.9), rel=RTOL)
    assert got.ece == pytest.approx(expected.ece, rel=RTOL)


def test_softmax_extras_with_spatial_positions_and_ignored_targets():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 4, 7)).astype(np.float32)
    t = rng.integers(0, 4, (400, 7))
    t[rng.random(t.shape) < 0.1] = -100
    g = rng.integers(0, 3, 7)  # one group per spatial position, broadcast over rows
    kw = dict(calibration_bins=10, by_class=True, n_groups=3, bootstrap=50, seed=3,
              label_smoothing=0.05)
    expected = StreamingLoss("cross_entropy", **kw).update(x, t, groups=g)
    got = compute(fd.evaluate("cross_entropy", da.from_array(x, (97, 2, 3)),
                              da.from_array(t, (150, 4)), groups=g, **kw))
    assert_same_state(got.to_dict(), expected.to_dict())


def test_one_dimensional_stream_in_uneven_chunks_bootstrap_only():
    rng = np.random.default_rng(2)
    x = rng.standard_normal(10_001).astype(np.float32)
    y = (rng.random(x.size) < 0.5).astype(np.float32)
    expected = StreamingLoss("sigmoid_focal_loss", bootstrap=200, seed=5).update(x, y)
    got = compute(fd.evaluate("sigmoid_focal_loss", da.from_array(x, (63, 4000, 5938)),
                              da.from_array(y, 3333), bootstrap=200, seed=5))
    assert_same_state(got.to_dict(), expected.to_dict())
    # the replicates are those of the stream: another seed gives other ones
    other = compute(fd.evaluate("sigmoid_focal_loss", da.from_array(x, 3000),
                                da.from_array(y, 3000), bootstrap=200, seed=6))
    assert not np.allclose(other.to_dict()["bootstrap"]["sums"],
                           expected.to_dict()["bootstrap"]["sums"])


def test_errors():
    x = da.zeros((10, 2), chunks=5)
    y = da.zeros((10, 2), chunks=5)
    loss = "binary_cross_entropy_with_logits"
    with pytest.raises(ValueError, match="groups are required by, and only by, n_groups"):
        fd.evaluate(loss, x, y, groups=da.zeros((10, 2), int, chunks=5))
    with pytest.raises(ValueError, match="groups are required by, and only by, n_groups"):
        fd.evaluate(loss, x, y, n_groups=3)
    with pytest.raises(TypeError, match="groups must be an integer array; got dtype float64"):
        fd.evaluate(loss, x, y, groups=da.zeros((10, 2), chunks=5), n_groups=3)
    with pytest.raises(ValueError, match=r"groups of shape \(3,\) cannot be broadcast"):
        fd.evaluate(loss, x, y, groups=np.zeros(3, int), n_groups=3)
    with pytest.raises(ValueError, match="bootstrap must be an int"):
        fd.evaluate(loss, x, y, bootstrap=0)
    bad = fd.evaluate(loss, x, y, groups=da.full((10, 2), 3, chunks=5), n_groups=3)
    with pytest.raises(ValueError, match=r"groups must be integers in \[0, 3\)"):
        compute(bad)
