import numpy as np
import pytest

import fastloss
from fastloss import _kernels


@pytest.fixture(params=_kernels.supported_simd_paths())
def simd_path(request):
    """Run the test once per instruction-set path this CPU supports, then restore the default."""
    before = fastloss.simd_path()
    _kernels.set_simd_path(request.param)
    yield request.param
    _kernels.set_simd_path(before)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
