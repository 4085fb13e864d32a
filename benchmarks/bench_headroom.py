"""Headroom of the composed simulator: beam search (width 16) vs pointwise sort.

Usage::

    python benchmarks/bench_headroom.py [--requests 300] [--data-dir PATH]

Fits the context-aware simulator on ML-100K training slates, composes it with the
examination prior and diminishing returns at several strengths, and prints, over
test requests: the expected clicks of the top 6 candidates sorted by the learned
attractiveness (pointwise sort), of beam search (width 16) over the simulator, of a
random list, and the headroom (beam / sort - 1). Also the beam-search throughput.
Issue 3 asks for a default simulator with headroom >= 5%.
"""

from __future__ import annotations

import argparse
import time

import torch

from simulators.base import SlateBatch
from simulators.click_models import Attractiveness
from simulators.composed import ComposedSimulator
from simulators.context_model import ContextAwareSimulator
from simulators.data import load_rerank_data
from simulators.search import beam_search
from simulators.training import evaluate_simulator, fit_simulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    data = load_rerank_data("ml-100k", args.data_dir, progress=False)
    users_f, items_f = torch.as_tensor(data.user_features), torch.as_tensor(data.item_features)
    start = time.perf_counter()
    context = ContextAwareSimulator(Attractiveness(users_f, items_f, dim=32))
    fit_simulator(context, data, progress=False)
    fit_seconds = time.perf_counter() - start
    metrics = evaluate_simulator(context, data, "test")
    print(
        f"context-aware simulator: fitted in {fit_seconds:.1f} s; test AUC {metrics['auc']:.4f}, "
        f"logloss {metrics['logloss']:.4f}\n"
    )

    test = data.split_indices("test")[: args.requests]
    users = torch.as_tensor(data.request_user[test])
    histories = torch.as_tensor(data.history(test, 50)[0])
    candidates = torch.as_tensor(data.candidates[test])
    genres = items_f[:, :-1]  # genre flags (the last column is the release year)
    generator = torch.Generator().manual_seed(0)
    random_slots = torch.stack(
        [torch.randperm(candidates.shape[1], generator=generator)[:6] for _ in test]
    )

    columns = ["position_bias", "diversity_strength", "pointwise sort", "beam-16", "random"]
    print("| " + " | ".join([*columns, "headroom", "beam lists/s"]) + " |")
    print("|---|---|---|---|---|---|---|")
    for bias, strength in [(0.0, 0.0), (1.0, 0.0), (0.0, 2.0), (1.0, 1.0), (1.0, 2.0), (1.0, 4.0)]:
        sim = ComposedSimulator(
            context, genres, position_bias=bias, diversity_strength=strength
        ).eval()
        with torch.no_grad():
            attract = context.attractiveness(users, candidates)
            by_score = torch.gather(candidates, 1, attract.argsort(dim=1, descending=True)[:, :6])
            sort_value = sim.expected_reward(SlateBatch(users, by_score, histories)).mean()
            random_value = sim.expected_reward(
                SlateBatch(users, torch.gather(candidates, 1, random_slots), histories)
            ).mean()
            start = time.perf_counter()
            _, beam_values = beam_search(sim, users, histories, candidates, 6, width=16)
            seconds = time.perf_counter() - start
        # Lists scored by beam search: step 1 scores N, later steps 16 * N each.
        scored = len(test) * candidates.shape[1] * (1 + 16 * 5)
        beam_value = float(beam_values.mean())
        headroom = 100 * (beam_value / float(sort_value) - 1)
        print(
            f"| {bias:g} | {strength:g} | {float(sort_value):.3f} | {beam_value:.3f} "
            f"| {float(random_value):.3f} | {headroom:.2f}% | {scored / seconds:,.0f} |"
        )


if __name__ == "__main__":
    main()
