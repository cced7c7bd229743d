from typing import Any

import numpy as np

BLOCK: int
BINS_UNIFORM: int
BINS_LOG: int
BINS_EDGES: int
SIMD_PATHS: tuple[str, ...]
MIN_ELEMENTS_PER_THREAD: int

def set_simd_path(name: str) -> None: ...
def simd_path() -> str: ...
def supported_simd_paths() -> tuple[str, ...]: ...
def build_info() -> dict[str, str | int]: ...
def max_threads() -> int: ...

class Statistics:
    def __init__(
        self,
        edges: np.ndarray | None,
        spacing: int,
        origin: float,
        scale: float,
        tol_abs: float,
        tol_rel: float,
        copy_shift: int,
        sample_weight: np.ndarray | None,
        period: int,
        repeat: int,
    ) -> None: ...

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
    alpha: float = ...,
    gamma: float = ...,
    stats: Statistics | None = ...,
) -> tuple[Any, ...]: ...
def binary_small(
    loss: str,
    input: object,
    target: object,
    reduction: object,
    n_threads: object,
    alpha: float = ...,
    gamma: float = ...,
) -> tuple[float, int, np.ndarray | None] | None: ...
def softmax_block_positions(n_classes: int) -> int: ...
def cross_entropy_loss(
    input: np.ndarray,
    target: np.ndarray,
    target_type: int,
    weight: np.ndarray | None,
    ignore_index: int,
    label_smoothing: float,
    out: np.ndarray | None,
    n_threads: int,
    focal: bool = ...,
    gamma: float = ...,
    stats: Statistics | None = ...,
) -> tuple[Any, ...]: ...
def softmax_small(
    input: object,
    target: object,
    ignore_index: object,
    label_smoothing: object,
    reduction: object,
    n_threads: object,
    focal: bool = ...,
    gamma: float = ...,
) -> tuple[float, float, int, np.ndarray | None] | None: ...
def binary_grad(
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
    grad: np.ndarray,
    hess: np.ndarray | None,
    scale: float,
    n_threads: int,
    alpha: float = ...,
    gamma: float = ...,
) -> tuple[float, int]: ...
def cross_entropy_grad(
    input: np.ndarray,
    target: np.ndarray,
    target_type: int,
    weight: np.ndarray | None,
    ignore_index: int,
    label_smoothing: float,
    out: np.ndarray | None,
    grad: np.ndarray,
    hess: np.ndarray | None,
    scale: float,
    n_threads: int,
    focal: bool = ...,
    gamma: float = ...,
) -> tuple[float, float, int]: ...
def read_words(data: np.ndarray, n_threads: int) -> float: ...
