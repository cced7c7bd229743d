"""fastloss: fast, numerically stable classification losses over large CPU arrays.

The loss functions mirror torch.nn.functional (names, argument order, defaults, semantics) and
take NumPy arrays, memmaps or torch CPU tensors.

The kernels for the best instruction set of this CPU are chosen at import; the environment
variable FASTLOSS_SIMD=scalar|avx2|avx512|auto forces a path (an unavailable one falls back to
"auto" with a warning).
"""
import os
import warnings

from . import _kernels
from .losses import binary_cross_entropy, binary_cross_entropy_with_logits

__version__ = "0.1.0"
__all__ = ["binary_cross_entropy", "binary_cross_entropy_with_logits", "simd_path"]


def simd_path():
    """The instruction set of the kernels in use: "scalar", "avx2" or "avx512"."""
    return _kernels.simd_path()


def _select_simd_from_env():
    requested = os.environ.get("FASTLOSS_SIMD", "auto").strip().lower() or "auto"
    try:
        _kernels.set_simd_path(requested)
    except ValueError as e:
        warnings.warn(f"FASTLOSS_SIMD: {e}; using 'auto'", RuntimeWarning, stacklevel=3)
        _kernels.set_simd_path("auto")


_select_simd_from_env()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_kernels._after_fork_in_child)
