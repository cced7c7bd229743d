from typing import Literal, TypeVar

import numpy as np
import numpy.typing as npt

_Reduction = Literal["none", "mean", "sum"]
_Out = TypeVar("_Out")

__version__: str

def simd_path() -> Literal["scalar", "avx2", "avx512"]: ...
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
