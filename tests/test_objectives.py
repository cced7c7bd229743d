"""fastloss.objectives: XGBoost and LightGBM objectives and metrics, in real training runs.

References: the libraries' built-in objectives (binary:logistic, multi:softprob, binary,
multiclass), torch autograd in float64, sklearn.metrics.log_loss and float64 formulas.
"""
import re
import sys

import lightgbm as lgb
import numpy as np
import pytest
import sklearn.metrics as sklearn_metrics
import torch
import torch.nn.functional as F
import xgboost as xgb

import fastloss.objectives as objectives

N_ROWS, N_CLASSES, ROUNDS = 1000, 4, 5
XGB_PARAMS = {"max_depth": 3, "eta": 0.3, "tree_method": "hist", "nthread": 1}
LGB_PARAMS = {"num_leaves": 7, "learning_rate": 0.3, "verbose": -1, "num_threads": 1}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(N_ROWS, 5))
    binary = (X[:, 0] + 0.5 * rng.normal(size=N_ROWS) > 0).astype(np.float64)
    classes = np.digitize(X[:, 0] + X[:, 1] + 0.3 * rng.normal(size=N_ROWS),
                          [-1, 0, 1]).astype(np.float64)
    weights = rng.uniform(0.2, 3.0, N_ROWS)
    return X, binary, classes, weights


def _structure(booster):
    """The trees' splits (features and thresholds), leaf values left out."""
    return [re.sub(r"leaf=[-+.\deE]+", "leaf", tree) for tree in booster.get_dump()]


# ---- XGBoost against its built-in objectives ----

@pytest.mark.parametrize("weighted", [False, True])
def test_xgboost_binary_equals_binary_logistic(data, weighted):
    X, y, _, w = data
    dtrain = xgb.DMatrix(X, y, weight=w if weighted else None)
    # base_score is a probability for binary:logistic (0.5: margin 0) and a margin for a
    # custom objective
    builtin = xgb.train({**XGB_PARAMS, "objective": "binary:logistic", "base_score": 0.5},
                        dtrain, ROUNDS)
    ours = xgb.train({**XGB_PARAMS, "base_score": 0.0}, dtrain, ROUNDS,
                     obj=objectives.xgboost("binary_cross_entropy_with_logits"))
    assert _structure(ours) == _structure(builtin)
    np.testing.assert_allclose(ours.predict(dtrain, output_margin=True),
                               builtin.predict(dtrain, output_margin=True), atol=1e-5)


def _hessian_times(obj, factor):
    def scaled(*args):
        g, h = obj(*args)
        return g, factor * h
    return scaled


def test_xgboost_multiclass_equals_multi_softprob(data):
    X, _, classes, w = data
    dtrain = xgb.DMatrix(X, classes, weight=w, base_margin=np.zeros((N_ROWS, N_CLASSES)))
    params = {**XGB_PARAMS, "num_class": N_CLASSES}
    builtin = xgb.train({**params, "objective": "multi:softprob"}, dtrain, ROUNDS)
    # multi:softprob uses 2 p (1 - p), twice the Hessian's diagonal that fastloss returns
    ours = xgb.train(params, dtrain, ROUNDS,
                     obj=_hessian_times(objectives.xgboost("cross_entropy"), 2.0))
    assert _structure(ours) == _structure(builtin)
    margins = ours.predict(dtrain, output_margin=True)
    assert margins.shape == (N_ROWS, N_CLASSES)
    np.testing.assert_allclose(margins, builtin.predict(dtrain, output_margin=True), atol=1e-5)


def test_xgboost_sklearn_estimator(data):
    X, y, classes, w = data
    kwargs = {"n_estimators": ROUNDS, "max_depth": 3, "learning_rate": 0.3,
              "tree_method": "hist", "n_jobs": 1}
    builtin = xgb.XGBClassifier(objective="binary:logistic", base_score=0.5, **kwargs)
    builtin.fit(X, y, sample_weight=w)
    metric = objectives.xgboost_metric("binary_cross_entropy_with_logits")
    ours = xgb.XGBClassifier(objective=objectives.xgboost("binary_cross_entropy_with_logits"),
                             eval_metric=metric, **kwargs)
    ours.fit(X, y, sample_weight=w, eval_set=[(X, y)], sample_weight_eval_set=[w],
             verbose=False)
    proba = ours.predict_proba(X)
    np.testing.assert_allclose(proba, builtin.predict_proba(X), atol=1e-5)
    history = ours.evals_result()["validation_0"]["binary_cross_entropy_with_logits"]
    assert history[-1] == pytest.approx(
        sklearn_metrics.log_loss(y, proba[:, 1], sample_weight=w), rel=1e-5)

    # multi-class: the estimator's objective= and xgboost.train(obj=) give the same model
    obj = objectives.xgboost("softmax_focal_loss", gamma=1.0)
    estimator = xgb.XGBClassifier(objective=obj, **kwargs).fit(X, classes)
    native = xgb.train({**XGB_PARAMS, "num_class": N_CLASSES, "base_score": 0.5},
                       xgb.DMatrix(X, classes), ROUNDS, obj=obj)
    np.testing.assert_allclose(estimator.predict(X, output_margin=True),
                               native.predict(xgb.DMatrix(X), output_margin=True), atol=1e-5)
    assert (estimator.predict(X) == classes).mean() > 0.5


# ---- LightGBM against its built-in objectives ----

@pytest.mark.parametrize("weighted", [False, True])
def test_lightgbm_binary_equals_binary(data, weighted):
    X, y, _, w = data
    weight = w if weighted else None
    # the built-in objective starts from the mean's log-odds unless told not to; a custom
    # objective starts from 0
    builtin = lgb.train({**LGB_PARAMS, "objective": "binary", "boost_from_average": False},
                        lgb.Dataset(X, y, weight=weight), ROUNDS)
    ours = lgb.train({**LGB_PARAMS,
                      "objective": objectives.lightgbm("binary_cross_entropy_with_logits")},
                     lgb.Dataset(X, y, weight=weight), ROUNDS)
    np.testing.assert_allclose(ours.predict(X, raw_score=True),
                               builtin.predict(X, raw_score=True), atol=1e-5)
    assert ours.dump_model()["tree_info"][-1]["tree_structure"].keys() == \
        builtin.dump_model()["tree_info"][-1]["tree_structure"].keys()


def test_lightgbm_multiclass_equals_multiclass(data):
    X, _, classes, w = data
    params = {**LGB_PARAMS, "num_class": N_CLASSES}
    builtin = lgb.train({**params, "objective": "multiclass", "boost_from_average": False},
                        lgb.Dataset(X, classes, weight=w), ROUNDS)
    # LightGBM's multiclass scales the Hessian's diagonal by K / (K - 1)
    obj = _hessian_times(objectives.lightgbm("cross_entropy"), N_CLASSES / (N_CLASSES - 1))
    ours = lgb.train({**params, "objective": obj}, lgb.Dataset(X, classes, weight=w), ROUNDS)
    raw = ours.predict(X, raw_score=True)
    assert raw.shape == (N_ROWS, N_CLASSES)
    np.testing.assert_allclose(raw, builtin.predict(X, raw_score=True), atol=1e-5)


def test_lightgbm_sklearn_estimator(data):
    X, y, classes, w = data
    kwargs = {"n_estimators": ROUNDS, "num_leaves": 7, "learning_rate": 0.3, "verbose": -1,
              "n_jobs": 1}
    obj = objectives.lightgbm("sigmoid_focal_loss", alpha=0.3, gamma=2.0)
    metric = objectives.lightgbm_metric("sigmoid_focal_loss", alpha=0.3, gamma=2.0)
    estimator = lgb.LGBMClassifier(objective=obj, **kwargs)
    estimator.fit(X, y, sample_weight=w, eval_X=(X,), eval_y=(y,), eval_sample_weight=[w],
                  eval_metric=metric)
    native = lgb.train({**LGB_PARAMS, "objective": obj}, lgb.Dataset(X, y, weight=w), ROUNDS)
    raw = estimator.predict(X, raw_score=True)
    np.testing.assert_allclose(raw, native.predict(X, raw_score=True), atol=1e-6)
    history = estimator.evals_result_["valid_0"]["sigmoid_focal_loss"]
    assert history[-1] == pytest.approx(_focal_mean(raw, y, 0.3, 2.0, w), rel=1e-5)
    assert history[-1] < history[0]

    multi = lgb.LGBMClassifier(objective=objectives.lightgbm("cross_entropy"), **kwargs)
    raw = multi.fit(X, classes.astype(int)).predict(X, raw_score=True)
    native = lgb.train({**LGB_PARAMS, "num_class": N_CLASSES,
                        "objective": objectives.lightgbm("cross_entropy")},
                       lgb.Dataset(X, classes), ROUNDS)
    np.testing.assert_allclose(raw, native.predict(X, raw_score=True), atol=1e-6)


# ---- focal objectives ----

def _focal_mean(x, y, alpha, gamma, w):
    """torchvision's sigmoid focal loss in float64, sample-weighted mean."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    p = 1 / (1 + np.exp(-x))
    ce = np.logaddexp(0, x) - x * y
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * (1 - p_t) ** gamma * (alpha * y + (1 - alpha) * (1 - y))
    return np.sum(w * loss) / np.sum(w)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("hessian", ["exact", "clip"])
def test_focal_objectives_train_without_nan(data, gamma, hessian):
    X, y, classes, w = data
    ones = np.ones(N_ROWS)
    obj = objectives.xgboost("sigmoid_focal_loss", hessian=hessian, gamma=gamma)
    booster = xgb.train({**XGB_PARAMS, "base_score": 0.0}, xgb.DMatrix(X, y), ROUNDS, obj=obj)
    margins = booster.predict(xgb.DMatrix(X), output_margin=True)
    assert np.isfinite(margins).all()
    assert _focal_mean(margins, y, 0.25, gamma, ones) < _focal_mean(0 * margins, y, 0.25,
                                                                     gamma, ones)

    obj = objectives.lightgbm("sigmoid_focal_loss", hessian=hessian, gamma=gamma)
    booster = lgb.train({**LGB_PARAMS, "objective": obj}, lgb.Dataset(X, y), ROUNDS)
    raw = booster.predict(X, raw_score=True)
    assert np.isfinite(raw).all()
    assert _focal_mean(raw, y, 0.25, gamma, ones) < _focal_mean(0 * raw, y, 0.25, gamma, ones)

    obj = objectives.lightgbm("softmax_focal_loss", hessian=hessian, gamma=gamma)
    booster = lgb.train({**LGB_PARAMS, "num_class": N_CLASSES, "objective": obj},
                        lgb.Dataset(X, classes), ROUNDS)
    raw = booster.predict(X, raw_score=True)
    assert np.isfinite(raw).all()
    p_t = torch.softmax(torch.from_numpy(raw), 1)[np.arange(N_ROWS), classes.astype(int)]
    assert p_t.mean() > 1 / N_CLASSES


def test_focal_with_gamma_0_and_no_alpha_is_bce(data):
    X, y, _, w = data
    dtrain = xgb.DMatrix(X, y, weight=w)
    margins = np.random.default_rng(1).normal(scale=3, size=N_ROWS).astype(np.float32)
    focal = objectives.xgboost("sigmoid_focal_loss", alpha=-1.0, gamma=0.0)
    bce = objectives.xgboost("binary_cross_entropy_with_logits")
    for a, b in zip(focal(margins, dtrain), bce(margins, dtrain)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    models = [xgb.train({**XGB_PARAMS, "base_score": 0.0}, dtrain, ROUNDS, obj=obj)
              for obj in (focal, bce)]
    assert _structure(models[0]) == _structure(models[1])


def test_hessian_clip_is_the_exact_hessian_floored(data):
    X, y, _, w = data
    dtrain = xgb.DMatrix(X, y, weight=w)
    margins = np.linspace(-12, 12, N_ROWS).astype(np.float32)
    _, exact = objectives.xgboost("sigmoid_focal_loss", gamma=2.0)(margins, dtrain)
    _, clipped = objectives.xgboost("sigmoid_focal_loss", gamma=2.0, hessian="clip")(margins,
                                                                                  dtrain)
    assert (exact < 0).any()  # the focal loss is not convex: the case "clip" is for
    np.testing.assert_allclose(clipped, w * np.maximum(exact / w, objectives.HESSIAN_FLOOR),
                               rtol=1e-6)
    assert (clipped > 0).all()


# ---- each objective against torch autograd, parameters and sample weights included ----

def _torch_loss(name, x, t, params):
    p = {k: torch.as_tensor(np.asarray(v, np.float64)) if k in ("weight", "pos_weight")
         else v for k, v in params.items()}
    if name == "binary_cross_entropy_with_logits":
        return F.binary_cross_entropy_with_logits(x, t, reduction="none", **p)
    if name == "sigmoid_focal_loss":
        prob = torch.sigmoid(x)
        p_t = prob * t + (1 - prob) * (1 - t)
        loss = F.binary_cross_entropy_with_logits(x, t, reduction="none") * \
            (1 - p_t) ** p["gamma"]
        return loss * (p["alpha"] * t + (1 - p["alpha"]) * (1 - t))
    if name == "cross_entropy":
        return F.cross_entropy(x, t, reduction="none", **p)
    log_p = torch.log_softmax(x, 1).gather(1, t[:, None])[:, 0]
    loss = -(1 - log_p.exp()) ** p["gamma"] * log_p
    return loss if p.get("weight") is None else loss * p["weight"][t]


CASES = [("binary_cross_entropy_with_logits", {"pos_weight": 3.0}),
         ("sigmoid_focal_loss", {"alpha": 0.3, "gamma": 1.5}),
         ("cross_entropy", {"weight": [1.0, 2.0, 0.5, 1.5], "label_smoothing": 0.1}),
         ("softmax_focal_loss", {"gamma": 2.0, "weight": [1.0, 2.0, 0.5, 1.5]})]


@pytest.mark.parametrize("name, params", CASES)
def test_gradients_and_metrics_against_torch(data, name, params):
    _, y, classes, w = data
    softmax = name in ("cross_entropy", "softmax_focal_loss")
    labels = classes if softmax else y
    rng = np.random.default_rng(3)
    margins = rng.normal(scale=2, size=(N_ROWS, N_CLASSES) if softmax else N_ROWS)
    x = torch.tensor(margins, requires_grad=True)
    t = torch.tensor(labels.astype(np.int64) if softmax else labels)
    loss = _torch_loss(name, x, t, params)
    want_grad, = torch.autograd.grad(loss.sum(), x, create_graph=True)
    # the Hessian's diagonal: rows are independent, so d(sum_i g_ic)/dx_ic = d g_ic / dx_ic
    if softmax:
        want_hess = torch.stack([torch.autograd.grad(want_grad[:, c].sum(), x,
                                                     retain_graph=True)[0][:, c]
                                 for c in range(N_CLASSES)], 1)
    else:
        want_hess, = torch.autograd.grad(want_grad.sum(), x)
    s = w[:, None] if softmax else w

    native_obj = objectives.xgboost(name, **params)
    dtrain = xgb.DMatrix(np.zeros((N_ROWS, 1)), labels, weight=w)
    for g, h in [native_obj(margins.astype(np.float32), dtrain),
                 native_obj(labels, margins.astype(np.float32), sample_weight=w),
                 objectives.lightgbm(name, **params)(margins, lgb.Dataset(
                     np.zeros((N_ROWS, 1)), labels, weight=w).construct()),
                 objectives.lightgbm(name, **params)(labels, margins, w)]:
        assert g.shape == h.shape == margins.shape
        np.testing.assert_allclose(g, s * want_grad.detach().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(h, s * want_hess.numpy(), rtol=1e-5, atol=1e-6)

    # metrics: sum(s * loss) / sum(s * d), d the row's share of torch's "mean" denominator
    share = np.asarray(params["weight"])[labels.astype(int)] if "weight" in params else 1.0
    want = np.sum(w * loss.detach().numpy()) / np.sum(w * share)
    unweighted = loss.detach().numpy().sum() / np.sum(share * np.ones(N_ROWS))
    xgb_metric = objectives.xgboost_metric(name, **params)
    lgb_metric = objectives.lightgbm_metric(name, **params)
    assert xgb_metric.__name__ == name
    assert xgb_metric(margins, dtrain) == (name, pytest.approx(want, rel=1e-6))
    assert xgb_metric(labels, margins, sample_weight=w) == pytest.approx(want, rel=1e-6)
    assert xgb_metric(labels, margins) == pytest.approx(unweighted, rel=1e-6)
    assert lgb_metric(labels, margins, w) == (name, pytest.approx(want, rel=1e-6), False)
    assert lgb_metric(labels, margins) == (name, pytest.approx(unweighted, rel=1e-6), False)


def test_metric_is_log_loss(data):
    _, y, classes, w = data
    margins = np.random.default_rng(4).normal(size=(N_ROWS, N_CLASSES))
    proba = torch.softmax(torch.from_numpy(margins), 1).numpy()
    metric = objectives.lightgbm_metric("cross_entropy")
    assert metric(classes, margins, w)[1] == pytest.approx(
        sklearn_metrics.log_loss(classes, proba, sample_weight=w), rel=1e-6)
    metric = objectives.xgboost_metric("binary_cross_entropy_with_logits")
    assert metric(y, margins[:, 0]) == pytest.approx(
        sklearn_metrics.log_loss(y, 1 / (1 + np.exp(-margins[:, 0]))), rel=1e-6)


# ---- errors ----

@pytest.mark.parametrize("build", [objectives.xgboost, objectives.lightgbm,
                                   objectives.xgboost_metric, objectives.lightgbm_metric])
def test_bad_construction_is_refused_at_once(build):
    with pytest.raises(ValueError, match="takes probabilities.*binary_cross_entropy_with_logits"):
        build("binary_cross_entropy")
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        build("hinge")
    with pytest.raises(TypeError, match="sample weights come from"):
        build("sigmoid_focal_loss", weight=[1.0])
    with pytest.raises(TypeError, match="got ignore_index"):
        build("cross_entropy", ignore_index=3)
    with pytest.raises(ValueError, match="gamma must be"):
        build("softmax_focal_loss", gamma=-1.0)
    with pytest.raises(ValueError, match="alpha must be"):
        build("sigmoid_focal_loss", alpha=2.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        build("cross_entropy", label_smoothing=1.5)
    with pytest.raises(TypeError, match="weight must be a real numeric array"):
        build("cross_entropy", weight=["a", "b"])
    with pytest.raises(ValueError, match="1-D array of class weights"):
        build("cross_entropy", weight=[[1.0, 1.0]])


def test_bad_hessian_option():
    with pytest.raises(ValueError, match="hessian must be 'exact' or 'clip'"):
        objectives.xgboost("sigmoid_focal_loss", hessian="fisher")


def test_bad_margins_and_labels():
    binary = objectives.lightgbm("binary_cross_entropy_with_logits")
    softmax = objectives.lightgbm("cross_entropy")
    with pytest.raises(ValueError, match=r"needs margins of shape \(n_rows, n_classes\).*"
                                         "num_class"):
        softmax(np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match="one margin per label.*cross_entropy"):
        binary(np.zeros(4), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="negative or non-integer label"):
        softmax(np.array([0.0, 1.5]), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="negative or non-integer label"):  # not ignore_index
        softmax(np.array([0.0, -100.0]), np.zeros((2, 3)))
    with pytest.raises(IndexError, match="Target 3 is out of bounds"):
        softmax(np.array([0.0, 3.0]), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="between 0 and 1"):
        binary(np.array([0.0, 2.0]), np.zeros(2))
    with pytest.raises(ValueError, match="sample weights of shape"):
        binary(np.zeros(4), np.zeros(4), np.ones(3))


def test_missing_library_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "xgboost", None)  # import xgboost now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'fastloss\[xgboost\]'"):
        objectives.xgboost("cross_entropy")
