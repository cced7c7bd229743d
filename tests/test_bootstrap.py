"""StreamingLoss(bootstrap=B, seed=s).mean_ci(): determinism, Poisson(1) replicate weights,
batching and threads, merge (same seed only), JSON, pickling, from_dict's checks."""
import json
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastloss import StreamingLoss, _kernels

UNIT = _kernels.BOOT_UNIT


def _data(n=200_000, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=n) * 2).astype(np.float32)
    y = (rng.random(n) < 0.5).astype(np.float32)
    return x, y


def _meter(B=200, seed=7):
    return StreamingLoss("binary_cross_entropy_with_logits", bootstrap=B, seed=seed)


def test_same_seed_and_updates_give_the_same_interval_for_any_threads():
    x, y = _data()
    runs = [_meter().update(x[:150_000], y[:150_000], n_threads=k).update(
        x[150_000:], y[150_000:], n_threads=k) for k in (1, 2, 3)]
    assert runs[0].to_dict() == runs[1].to_dict() == runs[2].to_dict()
    assert runs[0].mean_ci() == runs[1].mean_ci()
    other = _meter(seed=8).update(x, y).mean_ci()
    assert other != runs[0].mean_ci()


def test_replicates_are_poisson_weighted_units_of_the_stream():
    x, y = _data()
    m = _meter(B=400).update(x, y)
    state = m.to_dict()["bootstrap"]
    w = np.array(state["weights"])  # sum of Poisson(1) counts times the units' sizes
    units = x.size / UNIT
    # each replicate's weight / UNIT is a sum of `units` Poisson(1) counts: mean and variance
    # `units`; over 400 replicates the sample mean is within 4 standard errors
    counts = w / UNIT
    assert abs(counts.mean() - units) < 4 * np.sqrt(units / 400)
    assert 0.75 < counts.var(ddof=1) / units < 1.3
    assert np.all(counts == np.round(counts))  # whole units, whole counts
    assert state["position"] == x.size


def test_interval_covers_the_mean_with_the_normal_width():
    x, y = _data()
    m = _meter(B=500).update(x, y)
    lo, hi = m.mean_ci(0.95)
    ref = F.binary_cross_entropy_with_logits(torch.from_numpy(x).double(),
                                             torch.from_numpy(y).double(), reduction="none")
    se = ref.std().item() / np.sqrt(x.size)
    assert lo < m.mean < hi
    assert 0.7 < (hi - lo) / (2 * 1.96 * se) < 1.4
    lo90, hi90 = m.mean_ci(0.9)
    assert lo < lo90 < hi90 < hi
    assert m.mean_ci(np.float32(0.9)) == m.mean_ci(float(np.float32(0.9)))  # any real level


def test_any_batching_gives_the_same_replicates_up_to_rounding():
    """Units are aligned to stream positions, so a batch boundary inside a unit splits its sums,
    not its weight."""
    x, y = _data(50_000)
    whole = _meter().update(x, y)
    batched = _meter()
    for part in np.array_split(np.arange(x.size), 13):  # boundaries off the units
        batched.update(x[part], y[part])
    a, b = whole.to_dict()["bootstrap"], batched.to_dict()["bootstrap"]
    assert a["weights"] == b["weights"]  # whole counts times sizes: exact
    np.testing.assert_allclose(b["sums"], a["sums"], rtol=1e-12)


def test_merge_adds_replicates_and_positions_and_refuses_other_seeds():
    x, y = _data(20_000)
    a, b = _meter().update(x[:5000], y[:5000]), _meter().update(x[5000:], y[5000:])
    sa, sb = a.to_dict()["bootstrap"], b.to_dict()["bootstrap"]
    merged = _meter().merge(a).merge(b)
    sm = merged.to_dict()["bootstrap"]
    np.testing.assert_allclose(sm["sums"], np.add(sa["sums"], sb["sums"]), rtol=1e-15)
    assert sm["position"] == 20_000
    with pytest.raises(ValueError, match="different seeds"):
        a.merge(_meter(seed=1))
    with pytest.raises(ValueError, match="different bootstrap replicates"):
        a.merge(_meter(B=10))
    with pytest.raises(ValueError, match="different bootstrap"):
        a.merge(StreamingLoss("binary_cross_entropy_with_logits"))


def test_softmax_ignored_rows_and_sample_weights():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(30_000, 4))
    t = rng.integers(0, 4, 30_000)
    t[::5] = -100
    s = rng.random(30_000)
    m = StreamingLoss("cross_entropy", bootstrap=300, seed=3).update(z, t, s)
    lo, hi = m.mean_ci()
    assert lo < m.mean < hi and hi - lo < 0.1 * m.mean
    assert m.to_dict()["bootstrap"]["position"] == 30_000  # ignored rows hold positions too


def test_json_pickle_and_errors():
    x, y = _data(5000)
    m = _meter().update(x, y)
    for other in (StreamingLoss.from_dict(json.loads(json.dumps(m.to_dict()))),
                  pickle.loads(pickle.dumps(m))):
        assert other.to_dict() == m.to_dict() and other.mean_ci() == m.mean_ci()
        # a restored meter continues the stream where the original stood
        assert other.update(x, y).to_dict() == _meter().update(x, y).update(x, y).to_dict()
    assert np.isnan(_meter().mean_ci()[0])
    with pytest.raises(ValueError, match="level must be"):
        m.mean_ci(1.0)
    with pytest.raises(ValueError, match="bootstrap=B"):
        StreamingLoss("binary_cross_entropy").mean_ci()
    for kwargs, match in (({"bootstrap": 0}, "bootstrap must be an int from 1"),
                          ({"bootstrap": 10, "seed": -1}, "seed must be an int from 0"),
                          ({"bootstrap": 10, "seed": 1.5}, "seed must be an int")):
        with pytest.raises(ValueError, match=match):
            StreamingLoss("binary_cross_entropy", **kwargs)


@pytest.mark.parametrize("change,match", [
    (lambda b: b.update(position=10), "position 10 must be >= count"),
    (lambda b: b.update(position=-1), "position must be an int"),
    (lambda b: b["weights"].__setitem__(0, -1.0), "weights must be numbers >= 0"),
    (lambda b: b["weights"].__setitem__(0, "nan"), "weights must be numbers"),
    (lambda b: b["sums"].pop(), "list of 20 numbers"),
    (lambda b: b.update(n=0), "bootstrap must be an int"),
    (lambda b: b.pop("seed"), "keys"),
])
def test_from_dict_rejects_lying_bootstrap(change, match):
    x, y = _data(3000)
    state = _meter(B=20).update(x, y).to_dict()
    change(state["bootstrap"])
    with pytest.raises(ValueError, match=match):
        StreamingLoss.from_dict(state)
