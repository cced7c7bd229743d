"""Independent float64 references: torch's formulas written with NumPy, not fastloss's."""
import numpy as np


def bce(p, y, weight=None):
    p = np.asarray(p, np.float64)
    y = np.asarray(y, np.float64)
    with np.errstate(divide="ignore"):
        loss = -(y * np.maximum(np.log(p), -100) + (1 - y) * np.maximum(np.log1p(-p), -100))
    return loss if weight is None else loss * np.asarray(weight, np.float64)


def bce_with_logits(x, y, weight=None, pos_weight=None):
    """pw*y*softplus(-x) + (1-y)*softplus(x), with NumPy's logaddexp(0, +-x) as softplus.

    Equal to torch's (1-y)*x - (1+(pw-1)*y)*logsigmoid(x), without its cancellation (x - x*y,
    and x + softplus(-x) for x << 0, lose every digit in float64 too)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    pw = 1.0 if pos_weight is None else np.asarray(pos_weight, np.float64)
    loss = pw * y * np.logaddexp(0, -x) + (1 - y) * np.logaddexp(0, x)
    return loss if weight is None else loss * np.asarray(weight, np.float64)


def reduce(loss, reduction):
    if reduction == "none":
        return loss
    total = np.sum(loss, dtype=np.float64)
    return total if reduction == "sum" else total / loss.size if loss.size else np.nan
