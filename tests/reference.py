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


def cross_entropy(z, target, weight=None, ignore_index=-100, label_smoothing=0.0):
    """torch's cross_entropy in float64: (per-position losses, the "mean" denominator)."""
    z = np.asarray(z, np.float64)
    target = np.asarray(target)
    one_row = z.ndim == 1
    if one_row:
        z, target = z[None], target[None]
    n_classes = z.shape[1]
    w = np.ones(n_classes) if weight is None else np.asarray(weight, np.float64)
    w_b = w.reshape((1, n_classes) + (1,) * (z.ndim - 2))
    m = z.max(axis=1, keepdims=True)
    log_p = z - (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))
    eps = label_smoothing
    if target.dtype.kind in "iu":
        ignored = target == ignore_index
        t = np.where(ignored, 0, target)
        w_t = w[t]
        nll = -w_t * np.take_along_axis(log_p, t[:, None], axis=1)[:, 0]
        smooth = -(log_p * w_b).sum(axis=1)
        loss = np.where(ignored, 0.0, (1 - eps) * nll + eps / n_classes * smooth)
        denominator = w_t[~ignored].sum()
    else:
        q = np.asarray(target, np.float64) * (1 - eps) + eps / n_classes
        loss = -(log_p * q * w_b).sum(axis=1)
        denominator = loss.size
    return (loss[0] if one_row else loss), denominator


def torchvision_sigmoid_focal_loss(x, y, alpha=0.25, gamma=2.0):
    """torchvision.ops.sigmoid_focal_loss's formula, written with torch ops (float64 in tests).

    Its binary cross-entropy is written y*softplus(-x) + (1-y)*softplus(x): torch's own
    (1-y)*x - logsigmoid(x) form cancels to ~1e-12 relative in float64 already at |x| = 8."""
    import torch
    import torch.nn.functional as F
    p = torch.sigmoid(x)
    ce = y * F.softplus(-x) + (1 - y) * F.softplus(x)
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return loss


def torch_softmax_focal_loss(z, t, gamma, weight=None, ignore_index=-100):
    """-w_t * (1 - p_t)^gamma * log p_t with torch ops: (per-position losses, "mean" divisor)."""
    import torch
    z = torch.as_tensor(z)
    t = torch.as_tensor(t)
    one_row = z.dim() == 1
    if one_row:
        z, t = z[None], t[None]
    n_classes = z.shape[1]
    w = torch.ones(n_classes, dtype=z.dtype) if weight is None else torch.as_tensor(weight)
    ignored = t == ignore_index
    t_safe = torch.where(ignored, torch.zeros_like(t), t)
    log_p = torch.log_softmax(z, 1).gather(1, t_safe.unsqueeze(1)).squeeze(1)
    w_t = torch.where(ignored, torch.zeros((), dtype=z.dtype), w[t_safe])
    loss = -w_t * (1 - log_p.exp()) ** gamma * log_p
    loss = torch.where(ignored, torch.zeros((), dtype=z.dtype), loss)
    return (loss[0] if one_row else loss).numpy(), float(w_t.sum())
