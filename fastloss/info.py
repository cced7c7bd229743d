"""What a bug report needs: how this fastloss was built and what it runs on.

    fastloss info        # or: python -m fastloss info, or fastloss.show_config()
"""
import os
import platform
import sys

import numpy as np

from . import _kernels, _validate
from ._version import __version__


def config():
    """The configuration as a dict (see show_config)."""
    build = _kernels.build_info()
    info = {
        "fastloss": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "numpy": np.__version__,
        "simd path": _kernels.simd_path(),
        "simd paths supported": ", ".join(_kernels.supported_simd_paths()),
        "FASTLOSS_SIMD": os.environ.get("FASTLOSS_SIMD", "(not set)"),
        "compiler": build["compiler"],
        "compile flags": build["flags"],
        "openmp": f"yes (OpenMP {build['openmp']})" if build["openmp"] else "no (serial build)",
        "default threads": _validate.thread_count(None, 2**62),
        "openmp runtimes": _openmp_runtimes(),
    }
    return info


def _openmp_runtimes():
    """The OpenMP libraries loaded in this process, as threadpoolctl sees them."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "(install threadpoolctl to list them)"
    found = [f"{i.get('internal_api')} {i.get('version') or ''} at {i.get('filepath')}, "
             f"{i.get('num_threads')} threads"
             for i in threadpool_info() if i.get("user_api") == "openmp"]
    return "; ".join(found) or "none"


def show_config(file=None):
    """Print the version, the SIMD path in use and those the CPU supports, the OpenMP runtime
    and the default thread count, the compiler and flags of the extension, and NumPy's
    version."""
    for key, value in config().items():
        print(f"{key + ':':22}{value}", file=file or sys.stdout)
