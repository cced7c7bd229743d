"""One XGBoost boosting round with fastloss's focal objective against the same round with the
hand-written NumPy focal objective a user would write, side by side in one process:

    python benchmarks/bench_objectives.py --rows 1e6 --features 4

Prints the CPU model, the median time of a round with each objective and their ratio, and the
median and best time of the objective call alone for each (on a shared machine the best shows
the uncontended speed: a multi-threaded call suffers most when another process takes a core). The two objectives' gradients and Hessians are
checked against each other first.
"""
import argparse
import time

import numpy as np
import xgboost

import fastloss.objectives

from machine import cpu_model  # benchmarks/machine.py

ALPHA, GAMMA = 0.25, 2.0


def numpy_focal(predt, dtrain):
    """Sigmoid focal loss's gradient and Hessian in x, derived by hand as users do: with
    s = 2y - 1, p_t = sigmoid(s x) and alpha_t, loss = -alpha_t (1 - p_t)^g log p_t and

        grad = s alpha_t (1 - p_t)^g (g p_t log p_t - (1 - p_t))
        hess = alpha_t (1 - p_t)^g p_t (-g (g p_t log p_t - (1 - p_t))
                                        + (1 - p_t) (g (log p_t + 1) + 1))
    """
    y = dtrain.get_label()
    s = 2 * y - 1
    p_t = 1 / (1 + np.exp(-s * predt))
    alpha_t = ALPHA * y + (1 - ALPHA) * (1 - y)
    focus = alpha_t * (1 - p_t) ** GAMMA
    log_p = np.log(p_t)
    inner = GAMMA * p_t * log_p - (1 - p_t)
    grad = s * focus * inner
    hess = focus * p_t * (-GAMMA * inner + (1 - p_t) * (GAMMA * (log_p + 1) + 1))
    return grad, hess


def call_seconds(call, repeat):
    """(median, best) time of call, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=float, default=1e6)
    parser.add_argument("--features", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per objective")
    args = parser.parse_args(argv)
    n = int(args.rows)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, args.features), np.float32)
    y = (X[:, 0] + rng.standard_normal(n, np.float32) > 1).astype(np.float32)
    dtrain = xgboost.DMatrix(X, y)
    ours = fastloss.objectives.xgboost("sigmoid_focal_loss", alpha=ALPHA, gamma=GAMMA)

    predt = rng.standard_normal(n, np.float32) * 3
    for a, b in zip(ours(predt, dtrain), numpy_focal(predt, dtrain)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)

    print(f"CPU: {cpu_model()}")
    print(f"XGBoost {xgboost.__version__}, {n} rows x {args.features} features, hist, "
          f"max_depth 6; sigmoid focal loss alpha={ALPHA} gamma={GAMMA}")
    params = {"tree_method": "hist", "max_depth": 6, "base_score": 0.0}
    boosters = {}
    for name, obj in (("fastloss", ours), ("numpy", numpy_focal)):
        boosters[name] = xgboost.Booster(params, [dtrain])
        boosters[name].update(dtrain, 0, fobj=obj)  # first round: builds the histogram index
    rounds = {"fastloss": [], "numpy": []}
    for i in range(1, args.rounds + 1):  # alternate, so that noise hits both alike
        for name, obj in (("fastloss", ours), ("numpy", numpy_focal)):
            start = time.perf_counter()
            boosters[name].update(dtrain, i, fobj=obj)
            rounds[name].append(time.perf_counter() - start)
    round_time = {name: float(np.median(t)) for name, t in rounds.items()}
    call_time = {"fastloss": call_seconds(lambda: ours(predt, dtrain), 4 * args.rounds + 1),
                 "numpy": call_seconds(lambda: numpy_focal(predt, dtrain), 4 * args.rounds + 1)}
    for name in ("fastloss", "numpy"):
        median, best = call_time[name]
        print(f"{name:>9}: round {round_time[name] * 1e3:8.1f} ms, objective call "
              f"{median * 1e3:7.1f} ms (best {best * 1e3:.1f} ms)")
    ratios = [call_time["numpy"][i] / call_time["fastloss"][i] for i in (0, 1)]
    print(f"round time numpy / fastloss: {round_time['numpy'] / round_time['fastloss']:.2f}x; "
          f"objective call: {ratios[0]:.1f}x (best: {ratios[1]:.1f}x)")


if __name__ == "__main__":
    main()
