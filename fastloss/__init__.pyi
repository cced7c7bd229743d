from typing import Literal, TypeVar

import numpy as np
import numpy.typing as npt

_Reduction = Literal["none", "mean", "sum"]
_Out = TypeVar("_Out")

__version__: str

def simd_path() -> Literal["scalar", "avx2", "avx512"]: ...
def show_config(file: object | None = ...) -> None: ...
def binary_cross_entropy(
    input: npt.ArrayLike,
    target: npt.ArrayLike,
    weight: npt.ArrayLike | None = ...,
    reduction: _Reduction = ...,
    *,
    n_threads: int | None = ...,
    out: _Out | None = ...,
) -> np.ndarray | np.floating | _Out: ...
def binary_cross_entropy_with_logits(
    input: npt.ArrayLike,
    target: npt.ArrayLike,
    weight: npt.ArrayLike | None = ...,
    reduction: _Reduction = ...,
    pos_weight: npt.ArrayLike | None = ...,
    *,
    n_threads: int | None = ...,
    out: _Out | None = ...,
) -> np.ndarray | np.floating | _Out: ...
def sigmoid_focal_loss(
    input: npt.ArrayLike,
    target: npt.ArrayLike,
    alpha: float = ...,
    gamma: float = ...,
    reduction: _Reduction = ...,
    *,
    weight: npt.ArrayLike | None = ...,
    n_threads: int | None = ...,
    out: _Out | None = ...,
) -> np.ndarray | np.floating | _Out: ...
def cross_entropy(
    input: npt.ArrayLike,
    target: npt.ArrayLike,
    weight: npt.ArrayLike | None = ...,
    ignore_index: int = ...,
    reduction: _Reduction = ...,
    label_smoothing: float = ...,
    *,
    n_threads: int | None = ...,
    out: _Out | None = ...,
) -> np.ndarray | np.floating | _Out: ...
def softmax_focal_loss(
    input: npt.ArrayLike,
    target: npt.ArrayLike,
    gamma: float = ...,
    weight: npt.ArrayLike | None = ...,
    ignore_index: int = ...,
    reduction: _Reduction = ...,
    *,
    n_threads: int | None = ...,
    out: _Out | None = ...,
) -> np.ndarray | np.floating | _Out: ...
