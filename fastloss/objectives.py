"""Custom objectives and evaluation metrics for XGBoost and LightGBM, computed by fastloss.

Gradient-boosted trees take a custom loss as a function returning, for every row (and class),
the gradient and the Hessian diagonal of the loss with respect to the model's raw margin. This
module builds those functions from fastloss's fused gradient kernels (:func:`fastloss.grad`),
so a focal or weighted objective is one line instead of a hand-derived NumPy formula::

    import fastloss.objectives
    booster = xgboost.train(params, dtrain, obj=fastloss.objectives.xgboost(
        "sigmoid_focal_loss", alpha=0.25, gamma=2.0))

Each callable is an adapter only (it converts, calls fastloss, reshapes): the formulas, their
derivatives and their numerics are those of the loss functions. xgboost and lightgbm are
optional dependencies (the ``xgboost`` and ``lightgbm`` extras), imported when an objective or
metric for them is built.
"""
import importlib

import numpy as np

from . import losses

# The losses a boosting model's margins can be scored with, and the parameters each takes here.
# The binary losses' elementwise `weight` is the Dataset's / DMatrix's sample weight, and
# ignore_index has no use when every row has a label.
_BINARY = {"binary_cross_entropy_with_logits": ("pos_weight",),
           "sigmoid_focal_loss": ("alpha", "gamma")}
_SOFTMAX = {"cross_entropy": ("weight", "label_smoothing"),
            "softmax_focal_loss": ("gamma", "weight")}

HESSIAN_FLOOR = 1e-6
"""What ``hessian="clip"`` raises smaller Hessians to, per row (and class) and before the
sample weight: small enough to leave a convex loss's Newton steps unchanged wherever the
float32 Hessian is not already negligible, and positive, so that a leaf's Hessian sum is never
zero or negative (XGBoost's ``min_child_weight`` and ``reg_lambda``, LightGBM's
``min_sum_hessian_in_leaf`` and ``lambda_l2`` then bound the step as usual)."""


class _Loss:
    """A loss named by the user and its parameters, validated once, applied to margins."""

    def __init__(self, loss, params, hessian="exact"):
        if loss == "binary_cross_entropy":
            raise ValueError("binary_cross_entropy takes probabilities, and a boosting model "
                             "outputs margins (logits): use binary_cross_entropy_with_logits")
        allowed = {**_BINARY, **_SOFTMAX}
        if not isinstance(loss, str) or loss not in allowed:
            raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(allowed)}")
        unknown = sorted(set(params) - set(allowed[loss]))
        if unknown:
            raise TypeError(f"{loss} takes the parameters {', '.join(allowed[loss])} here; got "
                            f"{', '.join(unknown)}" + (
                                " (sample weights come from the DMatrix / Dataset)"
                                if "weight" in unknown else ""))
        if hessian not in ("exact", "clip"):
            raise ValueError(f"hessian must be 'exact' or 'clip'; got {hessian!r}")
        self.name, self.params, self.clip = loss, params, hessian == "clip"
        self.softmax = loss in _SOFTMAX
        self._probe()

    def _probe(self):
        """Check the parameters now, by the loss function itself on a one-row input, rather
        than at the first boosting round."""
        if self.softmax:
            weight = self.params.get("weight")
            n_classes = 2 if weight is None else np.size(weight)
            if weight is not None and np.ndim(weight) != 1:
                raise ValueError(f"weight must be a 1-D array of class weights; got shape "
                                 f"{np.shape(weight)}")
            getattr(losses, self.name)(np.zeros((1, n_classes)), np.zeros(1, np.int64),
                                       **self.params)
        else:
            shape = np.shape(self.params.get("pos_weight", 0.0))
            getattr(losses, self.name)(np.zeros(shape), np.zeros(shape), **self.params)

    def operands(self, margins, labels, weights):
        """(margins, target, sample weights shaped to multiply a gradient) as the loss takes
        them."""
        x = np.asarray(margins)
        y = np.asarray(labels)
        if self.softmax:
            if x.ndim != 2:
                raise ValueError(f"{self.name} needs margins of shape (n_rows, n_classes); got "
                                 f"shape {x.shape}: set num_class (XGBoost, LightGBM)")
            if y.shape != (x.shape[0],):
                raise ValueError(f"{x.shape[0]} rows of margins but labels of shape {y.shape}")
            target = y.astype(np.int64)
            # A negative label is refused here: the loss would read -100 as its ignore_index
            # and silently give that row no gradient.
            if (y.dtype.kind == "f" and not np.array_equal(target, y)) or (
                    target.size and target.min() < 0):
                raise ValueError(f"{self.name} needs class indices 0 to {x.shape[1] - 1} as "
                                 "labels; got a negative or non-integer label")
        else:
            if y.size != x.size:
                raise ValueError(f"{self.name} takes one margin per label; got margins of shape "
                                 f"{x.shape} for {y.size} labels (for multi-class, use "
                                 "cross_entropy or softmax_focal_loss)")
            target = y.reshape(x.shape)
        if weights is not None:
            weights = np.asarray(weights)
            if weights.size == 0:  # XGBoost's DMatrix.get_weight() when there are none
                weights = None
            elif weights.shape != (x.shape[0],):
                raise ValueError(f"sample weights of shape {weights.shape} for {x.shape[0]} "
                                 "rows")
            else:  # one per row, over every class / target of the row
                weights = weights.reshape(weights.shape + (1,) * (x.ndim - 1))
        return x, target, weights

    def gradient(self, margins, labels, weights):
        """(grad, hess) of each row's loss ("none") times its sample weight."""
        from . import grad  # built with the extension: looked up when first used
        x, target, w = self.operands(margins, labels, weights)
        g, h = grad(self.name, x, target, hessian=True, **self.params)
        if self.clip:
            np.maximum(h, HESSIAN_FLOOR, out=h)
        if w is not None:
            g *= w
            h *= w
        return g, h

    def mean(self, margins, labels, weights):
        """The sample-weighted mean loss: torch's "mean" without sample weights, and with them
        sum(s * loss) / sum(s * d), d each row's share of torch's denominator (1, or the
        target's class weight for the softmax losses)."""
        x, target, w = self.operands(margins, labels, weights)
        loss = getattr(losses, self.name)
        if w is None:
            return float(loss(x, target, reduction="mean", **self.params))
        w = w.reshape(-1).astype(np.float64)
        values = loss(x, target, reduction="none", **self.params).astype(np.float64)
        share = 1 if self.softmax else x.size // len(w)  # binary: each element counts 1
        if self.softmax and self.params.get("weight") is not None:
            share = np.asarray(self.params["weight"], np.float64)[target]
        return float(np.sum(w * values.reshape(len(w), -1).sum(axis=1)) / np.sum(w * share))


def _import(package):
    try:
        return importlib.import_module(package)
    except ImportError as e:
        raise ImportError(f"fastloss.objectives.{package} needs {package}: pip install "
                          f"'fastloss[{package}]'") from e


def xgboost(loss, *, hessian="exact", **params):
    r"""A custom XGBoost objective: the gradient and Hessian of a fastloss loss of the margins.

    The returned ``obj`` works both as ``xgboost.train(params, dtrain, obj=obj)`` (called as
    ``obj(predt, dtrain)``) and as the scikit-learn estimator's ``objective=obj`` (called as
    ``obj(y_true, y_pred, sample_weight=...)``). It returns, for every row i (and class c), the
    derivatives of that row's loss with respect to its margins, times the row's sample weight
    s_i (1 when the DMatrix has none)::

        grad[i, c] = s_i * d loss_i / d x_ic,   hess[i, c] = s_i * d^2 loss_i / d x_ic^2

    computed by :func:`fastloss.grad` (reduction "none", one fused pass). For the softmax
    losses the Hessian is the diagonal of each row's Hessian, as XGBoost's own multi:softprob
    uses.

    Margins: binary losses take one margin per label, shape (n_rows,) (or (n_rows, n_targets)
    with as many labels); the softmax losses take XGBoost's multi-class layout (n_rows,
    n_classes), which needs ``num_class`` in the parameters, and labels 0 to n_classes - 1.
    XGBoost applies no link function to a custom objective's output: predict with
    ``output_margin=True`` and apply sigmoid / softmax (the scikit-learn classifiers'
    ``predict_proba`` does this itself). In ``xgboost.train`` a custom objective's
    ``base_score`` is the starting margin (0.5 by default): pass ``base_score=0`` to start
    where ``binary:logistic`` with ``base_score=0.5`` starts. XGBoost's ``multi:softprob`` uses
    twice the Hessian's diagonal, LightGBM's ``multiclass`` K/(K-1) times it: the exact one
    returned here takes larger steps for the same learning rate.

    torch counterpart: the backward pass of the loss in ``torch.nn.functional`` with
    reduction "none" (see :mod:`fastloss.torch`).

    Parameters
    ----------
    loss : str
        "binary_cross_entropy_with_logits" (parameter ``pos_weight``), "sigmoid_focal_loss"
        (``alpha``, ``gamma``), "cross_entropy" (class ``weight``, ``label_smoothing``) or
        "softmax_focal_loss" (``gamma``, class ``weight``).
    hessian : {"exact", "clip"}
        "exact": the true second derivative, negative in places for focal losses (rows
        confidently wrong by a margin beyond about 3, for any gamma > 0); XGBoost and
        LightGBM only sum Hessians per leaf and refuse a split whose child's sum is below
        ``min_child_weight`` / ``min_sum_hessian_in_leaf``. "clip": ``max(hess,
        HESSIAN_FLOOR)`` (1e-6) before the sample weight, so every leaf's Hessian sum is
        positive and every Newton step goes downhill.
    **params
        The loss's parameters, with the defaults of the loss function.

    Raises
    ------
    ImportError
        xgboost is not installed (``pip install 'fastloss[xgboost]'``).
    ValueError, TypeError
        At construction: an unknown loss, "binary_cross_entropy" (it takes probabilities, not
        margins), a parameter the loss does not take here, a bad parameter value. At a call:
        margins of the wrong layout for the loss, labels that are not class indices, or the
        loss function's own errors (e.g. labels outside [0, 1]).
    """
    xgb = _import("xgboost")
    spec = _Loss(loss, params, hessian)

    def objective(predt_or_labels, dtrain_or_predt, *, sample_weight=None):
        if isinstance(dtrain_or_predt, xgb.DMatrix):
            dtrain = dtrain_or_predt
            return spec.gradient(predt_or_labels, dtrain.get_label(), dtrain.get_weight())
        return spec.gradient(dtrain_or_predt, predt_or_labels, sample_weight)

    objective.__name__ = objective.__qualname__ = loss
    return objective


def xgboost_metric(loss, **params):
    r"""An XGBoost evaluation metric: the sample-weighted mean of a fastloss loss of the margins.

    ``metric(predt, dmatrix) -> (loss, value)`` for ``xgboost.train(custom_metric=metric)``;
    as the scikit-learn estimator's ``eval_metric=metric`` it is called ``metric(y_true,
    y_score, sample_weight=...) -> value`` and named ``loss`` (its ``__name__``). Lower is
    better (the default of ``maximize``). The value is::

        sum_i s_i * loss_i / sum_i s_i * d_i

    with s_i the sample weights (1 without) and d_i = 1, or the target's class weight for the
    softmax losses, so that without sample weights it is the loss function's reduction
    "mean".

    It reads margins, which is what XGBoost passes a metric when the objective is a custom
    one (such as :func:`xgboost`); with a built-in objective XGBoost passes transformed
    predictions (probabilities) instead, which this metric would misread.

    torch counterpart: the loss in ``torch.nn.functional`` with reduction "mean".

    Parameters and errors as in :func:`xgboost` (no ``hessian``).
    """
    xgb = _import("xgboost")
    spec = _Loss(loss, params)

    def metric(predt_or_labels, dmatrix_or_predt, *, sample_weight=None):
        if isinstance(dmatrix_or_predt, xgb.DMatrix):
            dmatrix = dmatrix_or_predt
            return loss, spec.mean(predt_or_labels, dmatrix.get_label(), dmatrix.get_weight())
        return spec.mean(dmatrix_or_predt, predt_or_labels, sample_weight)

    metric.__name__ = metric.__qualname__ = loss
    return metric


def lightgbm(loss, *, hessian="exact", **params):
    r"""A custom LightGBM objective: the gradient and Hessian of a fastloss loss of the scores.

    The returned ``obj`` works both as the native ``params["objective"] = obj`` for
    ``lightgbm.train`` (called as ``obj(preds, train_data)``) and as the scikit-learn
    estimator's ``objective=obj`` (called as ``obj(y_true, y_pred, weight)``). It returns for
    every row i (and class c) the derivatives of that row's loss with respect to its raw
    scores times the row's sample weight, as :func:`xgboost` does; the softmax losses take
    LightGBM's multi-class layout, raw scores of shape (n_rows, n_classes) (``num_class`` in
    the parameters), and return grad and hess in it.

    A custom objective starts from a raw score of 0 (LightGBM's ``boost_from_average`` applies
    to its built-in objectives only; pass ``init_score`` to start elsewhere) and predicts raw
    scores: apply sigmoid / softmax to ``predict``'s output.

    torch counterpart, parameters, ``hessian`` and errors: as in :func:`xgboost` (ImportError
    naming the ``lightgbm`` extra).
    """
    lgb = _import("lightgbm")
    spec = _Loss(loss, params, hessian)

    def objective(preds_or_labels, dataset_or_preds, weight=None):
        if isinstance(dataset_or_preds, lgb.Dataset):
            dataset = dataset_or_preds
            return spec.gradient(preds_or_labels, dataset.get_label(), dataset.get_weight())
        return spec.gradient(dataset_or_preds, preds_or_labels, weight)

    objective.__name__ = objective.__qualname__ = loss
    return objective


def lightgbm_metric(loss, **params):
    r"""A LightGBM evaluation metric: the sample-weighted mean of a fastloss loss of the scores.

    ``metric(preds, eval_data) -> (loss, value, False)`` for ``lightgbm.train(feval=metric)``,
    and ``metric(y_true, y_pred, weight)`` with the same result for the scikit-learn
    estimator's ``eval_metric=metric``. False: lower is better. The value is as in
    :func:`xgboost_metric`, and so is the caveat: it reads raw scores, which LightGBM passes a
    metric when the objective is a custom one (such as :func:`lightgbm`); with a built-in
    objective it passes probabilities.

    torch counterpart, parameters and errors: as in :func:`xgboost_metric`.
    """
    lgb = _import("lightgbm")
    spec = _Loss(loss, params)

    def metric(preds_or_labels, dataset_or_preds, weight=None):
        if isinstance(dataset_or_preds, lgb.Dataset):
            dataset = dataset_or_preds
            value = spec.mean(preds_or_labels, dataset.get_label(), dataset.get_weight())
        else:
            value = spec.mean(dataset_or_preds, preds_or_labels, weight)
        return loss, value, False

    metric.__name__ = metric.__qualname__ = loss
    return metric
