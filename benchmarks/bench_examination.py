"""Can position bias be estimated from the randomised logs at hand?

Usage::

    python benchmarks/bench_examination.py [--data-dir PATH] [--policy random]

Prints, per position of the Open Bandit sample's uniformly random policy, the
clicks, impressions, click rate with a 95% Wilson interval, and the relative
examination ``ctr_k / ctr_0`` next to the DCG prior the composed simulator uses
otherwise; then whether ``examination_from_randomised_logs`` accepts the counts.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import norm

from simulators.composed import dcg_examination, examination_from_randomised_logs
from simulators.data import load_open_bandit


def wilson(clicks: np.ndarray, shown: np.ndarray, level: float = 0.95) -> np.ndarray:
    """Wilson score interval of a binomial rate, ``[K, 2]``."""
    z = norm.ppf(0.5 + level / 2)
    rate = clicks / shown
    centre = (rate + z**2 / (2 * shown)) / (1 + z**2 / shown)
    half = z * np.sqrt(rate * (1 - rate) / shown + z**2 / (4 * shown**2)) / (1 + z**2 / shown)
    return np.stack([centre - half, centre + half], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--policy", default="random")
    args = parser.parse_args()
    data = load_open_bandit(args.data_dir, policy=args.policy)
    clicks, shown = data.position_ctr()
    interval = wilson(clicks, shown)
    prior = dcg_examination(len(clicks)).numpy()
    print(f"Open Bandit, policy {args.policy!r}: {data.n_rows} impressions, {clicks.sum()} clicks")
    print(
        "\n| position | clicks | impressions | CTR (%) | 95% interval (%) | ctr_k / ctr_0 "
        "| DCG prior |"
    )
    print("|---|---|---|---|---|---|---|")
    for k in range(len(clicks)):
        print(
            f"| {k + 1} | {clicks[k]} | {shown[k]} | {100 * clicks[k] / shown[k]:.2f} | "
            f"{100 * interval[k, 0]:.2f}-{100 * interval[k, 1]:.2f} | "
            f"{(clicks[k] / shown[k]) / (clicks[0] / shown[0]):.2f} | {prior[k]:.2f} |"
        )
    try:
        exam = examination_from_randomised_logs(clicks, shown)
        print(f"\nestimated examination: {np.round(exam.numpy(), 3).tolist()}")
    except ValueError as err:
        print(f"\nnot identified: {err}")


if __name__ == "__main__":
    main()
