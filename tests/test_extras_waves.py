"""The extras' superblocks run in waves (fastloss/_kernels.pyx): however many waves an update
takes and however many threads run them, the state is bitwise the same, and the per-group
counts and means are those of the masked float64 formula."""
import numpy as np
import pytest

from fastloss import StreamingLoss


# 4e6 positions: 2 waves of small extras (851 superblocks of one block each), 8 of large
# ones (20_000 groups: superblocks of 40 blocks, 8 per wave)
@pytest.mark.parametrize("n_groups", [3, 20_000])
def test_waves_and_threads_give_bitwise_the_same_state(n_groups):
    rng = np.random.default_rng(0)
    n = 4_000_000
    x = (2 * rng.standard_normal(n)).astype(np.float32)
    y = (rng.random(n) < 0.5).astype(np.float32)
    g = rng.integers(0, n_groups, n)
    states = []
    for threads in (1, 2):
        m = StreamingLoss("binary_cross_entropy_with_logits", calibration_bins=15,
                          n_groups=n_groups, bootstrap=20, seed=1)
        states.append(m.update(x, y, groups=g, n_threads=threads).to_dict())
    assert states[0] == states[1]
    loss = np.logaddexp(0, -x.astype(np.float64)) * y + np.logaddexp(0, x) * (1 - y)
    count = np.bincount(g, minlength=n_groups)
    assert states[0]["groups"]["count"] == count.tolist()
    with np.errstate(invalid="ignore"):
        mean = np.bincount(g, loss, minlength=n_groups) / count
    np.testing.assert_allclose(np.array(states[0]["groups"]["sum"]) / count, mean, rtol=1e-6)
