"""Make docs/reliability.png: the reliability diagrams of three models on generated data.

    python tools/plot_reliability_example.py [PATH]

The outcomes are drawn with probability sigmoid(x) for a logit x ~ N(0, 2^2): a model that
outputs x is calibrated, one that outputs 2x over-confident, one that outputs x/2
under-confident. 10^6 examples each, 15 bins, one StreamingLoss per model.
"""
import sys

import numpy as np

import fastloss


def main(path="docs/reliability.png"):
    rng = np.random.default_rng(0)
    x = (2 * rng.standard_normal(10**6)).astype(np.float32)
    y = rng.random(x.size) < 1 / (1 + np.exp(-x.astype(np.float64)))
    meters = {}
    for label, scale in (("calibrated (x)", 1.0), ("over-confident (2x)", 2.0),
                         ("under-confident (x/2)", 0.5)):
        m = fastloss.StreamingLoss("binary_cross_entropy_with_logits", calibration_bins=15)
        meters[label] = m.update(scale * x, y)
    ax = fastloss.plot_reliability(meters)
    ax.set_title("Reliability of three models (a million generated examples, 15 bins)", fontsize=9)
    ax.figure.savefig(path, dpi=100, bbox_inches="tight")
    print(f"wrote {path}")


if __name__ == "__main__":
    main(*sys.argv[1:])
