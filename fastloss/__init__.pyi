import os
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt

_Reduction = Literal["none", "mean", "sum"]
_Out = TypeVar("_Out")

__version__: str
__all__ = [
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "cross_entropy",
    "sigmoid_focal_loss", "softmax_focal_loss", "grad", "StreamingLoss", "plot_loss_histograms",
    "plot_reliability", "simd_path", "show_config",
]

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

def grad(
    loss: Literal[
        "binary_cross_entropy", "binary_cross_entropy_with_logits", "sigmoid_focal_loss",
        "cross_entropy", "softmax_focal_loss",
    ],
    input: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    hessian: bool = ...,
    return_loss: bool = ...,
    reduction: _Reduction = ...,
    n_threads: int | None = ...,
    out: Any = ...,
    **params: Any,
) -> Any: ...

class StreamingLoss:
    def __init__(
        self,
        loss: str,
        *,
        bins: int | str | npt.ArrayLike | None = ...,
        range: tuple[float, float] | None = ...,
        calibration_bins: int | npt.ArrayLike | None = ...,
        by_class: bool = ...,
        n_groups: int | None = ...,
        bootstrap: int | None = ...,
        seed: int = ...,
        **params: Any,
    ) -> None: ...
    def update(
        self,
        input: npt.ArrayLike,
        target: npt.ArrayLike,
        weight: npt.ArrayLike | None = ...,
        *,
        groups: npt.ArrayLike | None = ...,
        n_threads: int | None = ...,
    ) -> StreamingLoss: ...
    def merge(self, other: StreamingLoss) -> StreamingLoss: ...
    def reset(self) -> StreamingLoss: ...
    def to_dict(self) -> dict[str, Any]: ...
    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> StreamingLoss: ...
    @property
    def loss(self) -> str: ...
    @property
    def params(self) -> dict[str, Any]: ...
    @property
    def mean(self) -> float: ...
    @property
    def sum(self) -> float: ...
    @property
    def weight_sum(self) -> float: ...
    @property
    def count(self) -> int: ...
    @property
    def nan_count(self) -> int: ...
    @property
    def min(self) -> float: ...
    @property
    def max(self) -> float: ...
    @property
    def histogram(self) -> tuple[np.ndarray, np.ndarray] | None: ...
    @property
    def underflow(self) -> int: ...
    @property
    def overflow(self) -> int: ...
    @property
    def ece(self) -> float | None: ...
    @property
    def mce(self) -> float | None: ...
    @property
    def rms_ce(self) -> float | None: ...
    @property
    def brier(self) -> float | None: ...
    def reliability(self) -> dict[str, np.ndarray] | None: ...
    @property
    def class_sum(self) -> np.ndarray | None: ...
    @property
    def class_weight_sum(self) -> np.ndarray | None: ...
    @property
    def class_count(self) -> np.ndarray | None: ...
    @property
    def class_mean(self) -> np.ndarray | None: ...
    @property
    def group_sum(self) -> np.ndarray | None: ...
    @property
    def group_weight_sum(self) -> np.ndarray | None: ...
    @property
    def group_count(self) -> np.ndarray | None: ...
    @property
    def group_mean(self) -> np.ndarray | None: ...
    def mean_ci(self, level: float = ...) -> tuple[float, float]: ...

def plot_loss_histograms(
    meters: dict[str, StreamingLoss],
    path: str | os.PathLike[str] | None = ...,
    ax: Any = ...,
) -> Any: ...
def plot_reliability(
    meters: dict[str, StreamingLoss],
    path: str | os.PathLike[str] | None = ...,
    ax: Any = ...,
) -> Any: ...
