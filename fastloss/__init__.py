"""fastloss: fast, numerically stable classification losses over large CPU arrays.

The loss functions mirror torch.nn.functional (names, argument order, defaults, semantics) and
take NumPy arrays, memmaps or torch CPU tensors; fastloss.grad gives their gradients and
Hessian diagonals.

The kernels for the best instruction set of this CPU are chosen at import; the environment
variable FASTLOSS_SIMD=scalar|avx2|avx512|auto forces a path (an unavailable one falls back to
"auto" with a warning).
"""
import os as _os
import warnings as _warnings


def _import_kernels():
    """Import the extension, its OpenMP runtime told to spin briefly when idle.

    libgomp reads its settings when it loads. By default an idle worker spins for about 300000
    iterations (milliseconds) before sleeping; with a second OpenMP runtime in the process (torch
    bundles its own), the spinning threads of each take the cores the other needs: measured on 2
    cores, torch's own 1e5-element loss went from 0.13 ms to 48 ms after a fastloss call. A
    short spin keeps back-to-back calls fast and hands the cores back. The environment is
    restored at once, and a user's own GOMP_SPINCOUNT or OMP_WAIT_POLICY wins.
    """
    ours = "GOMP_SPINCOUNT" not in _os.environ and "OMP_WAIT_POLICY" not in _os.environ
    if ours:
        _os.environ["GOMP_SPINCOUNT"] = "10000"
    try:
        from . import _kernels
    except ImportError:
        _explain_source_tree()
        raise
    finally:
        if ours:
            del _os.environ["GOMP_SPINCOUNT"]
    return _kernels


def _explain_source_tree():
    """Say so when this is an unbuilt checkout shadowing the installed package.

    `python -m fastloss` (and a bare `import fastloss`) in the checkout's root imports the
    source directory's fastloss/ rather than the installed one, and the extension is built only
    in the installed copy: Python's own message is about a circular import.
    """
    here = _os.path.dirname(_os.path.abspath(__file__))
    built = any(name.startswith("_kernels.") and name.endswith((".so", ".pyd"))
                for name in _os.listdir(here))
    if not built and _os.path.exists(_os.path.join(here, _os.pardir, "setup.py")):
        raise ImportError(
            f"fastloss is being imported from its source directory {here}, where the extension "
            "is not built. Run Python from another directory (e.g. `cd tests` or `cd /tmp`) to "
            "use the installed fastloss, or build in place with "
            "`python setup.py build_ext --inplace`.") from None


_kernels = _import_kernels()

from .losses import (binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy,
                     sigmoid_focal_loss, softmax_focal_loss)
from .gradients import grad

from .streaming import StreamingLoss
from .plot import plot_loss_histograms, plot_reliability

from ._version import __version__
from .info import show_config
__all__ = [
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "cross_entropy",
    "sigmoid_focal_loss", "softmax_focal_loss", "grad", "StreamingLoss", "plot_loss_histograms",
    "plot_reliability", "simd_path", "show_config",
]


def simd_path():
    """The instruction set of the kernels in use: "scalar", "avx2" or "avx512"."""
    return _kernels.simd_path()


def _select_simd_from_env():
    requested = _os.environ.get("FASTLOSS_SIMD", "auto").strip().lower() or "auto"
    try:
        _kernels.set_simd_path(requested)
    except ValueError as e:
        _warnings.warn(f"FASTLOSS_SIMD: {e}; using 'auto'", RuntimeWarning, stacklevel=3)
        _kernels.set_simd_path("auto")


_select_simd_from_env()
if hasattr(_os, "register_at_fork"):  # a forked child runs serially: see _kernels
    _os.register_at_fork(after_in_child=_kernels._after_fork_in_child)
