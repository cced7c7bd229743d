"""StreamingLoss(by_class=True) and (n_groups=G).update(..., groups=ids): per-class and per-group
sums, counts and means against the masked one-shot losses (torch, float64); threads, batching,
merge, JSON, pickling, errors."""
import json
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastloss import StreamingLoss


def _bce_logits(x, y, pos_weight=None):
    pw = None if pos_weight is None else torch.tensor(pos_weight)
    return F.binary_cross_entropy_with_logits(torch.from_numpy(x), torch.from_numpy(y),
                                              pos_weight=pw, reduction="none").numpy()


def test_binary_by_class_is_per_column_and_per_channel():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3001, 4)) * 3
    y = (rng.random(x.shape) < 0.3).astype(np.float64)
    s = rng.random(x.shape)
    m = StreamingLoss("binary_cross_entropy_with_logits", by_class=True,
                      pos_weight=[1.0, 2.0, 0.5, 3.0]).update(x, y, s)
    ref = _bce_logits(x, y, [1.0, 2.0, 0.5, 3.0])
    np.testing.assert_allclose(m.class_sum, (s * ref).sum(0), rtol=1e-12)
    np.testing.assert_allclose(m.class_weight_sum, s.sum(0), rtol=1e-12)
    np.testing.assert_array_equal(m.class_count, [3001] * 4)
    np.testing.assert_allclose(m.class_mean, (s * ref).sum(0) / s.sum(0), rtol=1e-12)
    # (N, C, H, W): the class axis is 1
    x4 = rng.normal(size=(5, 3, 7, 11))
    y4 = (rng.random(x4.shape) < 0.5).astype(np.float64)
    m4 = StreamingLoss("binary_cross_entropy_with_logits", by_class=True).update(x4, y4)
    ref4 = _bce_logits(x4, y4)
    np.testing.assert_allclose(m4.class_mean, ref4.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_array_equal(m4.class_count, [5 * 7 * 11] * 3)
    with pytest.raises(ValueError, match="class axis"):
        StreamingLoss("binary_cross_entropy", by_class=True).update(np.full(3, 0.5), np.ones(3))


@pytest.mark.parametrize("classes", [5, 30])
def test_softmax_by_target_class_with_class_weights_and_ignored_rows(classes):
    rng = np.random.default_rng(1)
    z = rng.normal(size=(4000, classes)) * 2
    t = rng.integers(0, classes, 4000)
    t[::7] = -1
    w = rng.random(classes) + 0.5
    m = StreamingLoss("cross_entropy", by_class=True, weight=w, ignore_index=-1,
                      label_smoothing=0.1).update(z, t)
    ref = F.cross_entropy(torch.from_numpy(z), torch.from_numpy(t), weight=torch.from_numpy(w),
                          ignore_index=-1, label_smoothing=0.1, reduction="none").numpy()
    for c in range(classes):
        rows = t == c
        assert m.class_count[c] == rows.sum()
        assert m.class_sum[c] == pytest.approx(ref[rows].sum(), rel=1e-12)
        assert m.class_weight_sum[c] == pytest.approx(w[c] * rows.sum(), rel=1e-12)
        # the masked one-shot "mean": sum of w[t]*l over sum of w[t]
        one_shot = F.cross_entropy(torch.from_numpy(z[rows]), torch.from_numpy(t[rows]),
                                   weight=torch.from_numpy(w), label_smoothing=0.1).item()
        assert m.class_mean[c] == pytest.approx(one_shot, rel=1e-12)
    assert m.class_count.sum() == m.count


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8])
def test_groups_give_the_masked_means(dtype):
    rng = np.random.default_rng(2)
    x = rng.normal(size=10_007) * 3
    y = (rng.random(x.size) < 0.4).astype(np.float64)
    g = rng.integers(0, 20, x.size).astype(dtype)
    g[:3000] = 4  # a long run of one group
    m = StreamingLoss("binary_cross_entropy_with_logits", n_groups=20).update(x, y, groups=g)
    ref = _bce_logits(x, y)
    for k in range(20):
        rows = g == k
        assert m.group_count[k] == rows.sum()
        assert m.group_mean[k] == pytest.approx(ref[rows].mean(), rel=1e-12)
    assert m.group_count.sum() == m.count and m.group_sum.sum() == pytest.approx(m.sum)


def test_groups_broadcast_per_row_and_softmax_positions():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 3))
    y = (rng.random(x.shape) < 0.5).astype(np.float64)
    rows = rng.integers(0, 4, (600, 1))
    m = StreamingLoss("binary_cross_entropy_with_logits", n_groups=4).update(x, y, groups=rows)
    ref = _bce_logits(x, y)
    for k in range(4):
        assert m.group_mean[k] == pytest.approx(ref[rows[:, 0] == k].mean(), rel=1e-12)
    # (N, C, H): one group per position (n, h)
    z = rng.normal(size=(8, 5, 33))
    t = rng.integers(0, 5, (8, 33))
    g = rng.integers(0, 3, (8, 33))
    s = StreamingLoss("cross_entropy", n_groups=3).update(z, t, groups=g)
    ref = F.cross_entropy(torch.from_numpy(z), torch.from_numpy(t), reduction="none").numpy()
    for k in range(3):
        assert s.group_mean[k] == pytest.approx(ref[g == k].mean(), rel=1e-12)


def test_groups_are_not_copied_as_int64_per_position():
    """Full-shape int32/int64 ids are read in place; a broadcast column or another dtype is
    copied once as int32 (4 bytes per position), after its ids are checked as given."""
    from memory import peak_allocation
    n = 200_000
    x = y = np.zeros((n, 8), np.float32)
    m = StreamingLoss("binary_cross_entropy_with_logits", n_groups=4)
    for groups, most in ((np.zeros((n, 8), np.int32), 1e6), (np.zeros((n, 1), np.uint8), 4.5 * 8 * n)):
        peak = peak_allocation(lambda: m.update(x, y, groups=groups))
        assert peak < most, (groups.dtype, peak)
    for bad in (np.array([[5]], np.uint8), np.array([[-2]], np.int16)):
        with pytest.raises(ValueError, match=rf"in \[0, 4\) \(n_groups\); got {bad[0, 0]}"):
            m.update(x, y, groups=bad)
    assert m.group_count.tolist() == [2 * 8 * n, 0, 0, 0]


def test_group_errors_leave_the_state_unchanged():
    x, y = np.zeros(100), np.ones(100)
    m = StreamingLoss("binary_cross_entropy_with_logits", n_groups=3)
    before = m.to_dict()
    for groups, error, match in ((np.full(100, 3), ValueError, r"in \[0, 3\)"),
                                 (np.full(100, -1), ValueError, r"in \[0, 3\)"),
                                 (np.full(100, 2**40), ValueError, r"in \[0, 3\)"),
                                 (np.zeros(7, int), ValueError, "cannot be broadcast"),
                                 (np.zeros(100), TypeError, "integer array"),
                                 (None, ValueError, "groups are required")):
        with pytest.raises(error, match=match):
            m.update(x, y, groups=groups)
    assert m.to_dict() == before
    with pytest.raises(ValueError, match="groups are required"):
        StreamingLoss("binary_cross_entropy_with_logits").update(x, y, groups=np.zeros(100, int))
    with pytest.raises(ValueError, match="n_groups must be an int from 1"):
        StreamingLoss("binary_cross_entropy_with_logits", n_groups=0)
    with pytest.raises(TypeError, match="by_class must be True or False"):
        StreamingLoss("binary_cross_entropy_with_logits", by_class=1)


def test_threads_batches_merge_json_and_pickle():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(100_000, 3)).astype(np.float32)
    y = (rng.random(x.shape) < 0.5).astype(np.float32)
    g = rng.integers(0, 50, x.shape).astype(np.int32)
    make = lambda: StreamingLoss("binary_cross_entropy_with_logits", by_class=True,  # noqa
                                 n_groups=50)
    states = [make().update(x, y, groups=g, n_threads=k).to_dict() for k in (1, 2, 3)]
    assert states[0] == states[1] == states[2]
    whole = make().update(x, y, groups=g)
    batched, merged = make(), make()
    for part in np.array_split(np.arange(x.shape[0]), 5):
        batched.update(x[part], y[part], groups=g[part])
        merged.merge(make().update(x[part], y[part], groups=g[part]))
    for other in (batched, merged):
        for name in ("class_count", "group_count"):  # counts exactly
            np.testing.assert_array_equal(getattr(other, name), getattr(whole, name))
        for name in ("class_sum", "group_sum", "group_weight_sum"):  # sums to float64 rounding
            np.testing.assert_allclose(getattr(other, name), getattr(whole, name), rtol=1e-13)
    for other in (StreamingLoss.from_dict(json.loads(json.dumps(whole.to_dict()))),
                  pickle.loads(pickle.dumps(whole))):
        assert other.to_dict() == whole.to_dict()
    with pytest.raises(ValueError, match="different n_groups"):
        whole.merge(StreamingLoss("binary_cross_entropy_with_logits", by_class=True, n_groups=5))
    with pytest.raises(ValueError, match="classes"):
        whole.update(x[:, :2], y[:, :2], groups=g[:, :2])


def _state():
    m = StreamingLoss("cross_entropy", by_class=True, n_groups=2)
    return m.update(np.eye(3) * 4, np.array([0, 1, 2]), groups=np.array([0, 1, 1])).to_dict()


@pytest.mark.parametrize("change,match", [
    (lambda s: s["groups"]["count"].__setitem__(0, 5), "group counts must add up"),
    (lambda s: s["groups"]["count"].__setitem__(0, -1), "ints from 0"),
    (lambda s: s["groups"]["sum"].pop(), "list of 2 numbers"),
    (lambda s: s["groups"]["weight_sum"].__setitem__(1, "nan"), "weight sums"),
    (lambda s: s["by_class"]["count"].__setitem__(1, 0), "class counts must add up"),
    (lambda s: [s["by_class"][k].append(0) for k in ("count", "sum", "weight_sum")],
     "one entry per class"),
    (lambda s: s.update(by_class=None), "per-class sums once"),
    (lambda s: s.update(groups=[]), "groups must be"),
])
def test_from_dict_rejects_lying_breakdowns(change, match):
    state = _state()
    change(state)
    with pytest.raises(ValueError, match=match):
        StreamingLoss.from_dict(state)
