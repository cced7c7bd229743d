import numpy as np

BLOCK: int
SIMD_PATHS: tuple[str, ...]

def set_simd_path(name: str) -> None: ...
def simd_path() -> str: ...
def supported_simd_paths() -> tuple[str, ...]: ...
def openmp_enabled() -> bool: ...
def max_threads() -> int: ...
def binary_loss(
    loss: str,
    input: np.ndarray,
    target: np.ndarray,
    target_type: int,
    weight: np.ndarray | None,
    weight_period: int,
    weight_repeat: int,
    pos_weight: np.ndarray | None,
    pos_weight_period: int,
    pos_weight_repeat: int,
    out: np.ndarray | None,
    n_threads: int,
) -> tuple[float, int]: ...
