"""Sim-to-real error in the synthetic world: learned simulators vs the true model.

Usage::

    python benchmarks/bench_sim_to_real.py [--requests 500] [--weight-decay 1e-3] \
        [--world sessions_per_user=75,n_users=2000]

Fits every learned simulator on the synthetic world's logs (the same pipeline as
real data) and prints, for random 6-item lists of test requests' candidates, the
Spearman correlation between each simulator's expected clicks and the true model's,
plus test AUC on logged slates (the true model's own AUC is the ceiling).
Issue 3's target: Spearman rho >= 0.9.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from scipy.stats import spearmanr

from simulators.base import SlateBatch
from simulators.data import load_rerank_data
from simulators.data.synthetic_config import SyntheticConfig
from simulators.factory import MODEL_KINDS, SimulatorSpec, build_simulator
from simulators.synthetic import SyntheticWorld, TrueClickModel, true_simulator_for
from simulators.training import evaluate_simulator, fit_simulator, logged_slates, roc_auc


def _world(overrides: str) -> SyntheticConfig:
    """``SyntheticConfig`` with ``key=value,...`` overrides (values parsed as numbers)."""
    fields = {field.name: field.type for field in dataclasses.fields(SyntheticConfig)}
    changes = {}
    for item in filter(None, overrides.split(",")):
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"--world: unknown field {key!r}; fields: {', '.join(fields)}")
        changes[key] = float(value) if "." in value or "e" in value else int(value)
    return dataclasses.replace(SyntheticConfig(), **changes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--weight-decay", type=float, default=1e-3)
    parser.add_argument(
        "--world", default="", help="SyntheticConfig overrides, e.g. sessions_per_user=75"
    )
    args = parser.parse_args()
    world = _world(args.world)
    print(f"world: {world}")
    data = load_rerank_data("synthetic", synthetic=world, progress=False)
    truth = true_simulator_for(data, world).eval()
    test = data.split_indices("test")[: args.requests]
    generator = torch.Generator().manual_seed(0)
    candidates = torch.as_tensor(data.candidates[test])
    slots = torch.stack(
        [torch.randperm(candidates.shape[1], generator=generator)[:6] for _ in test]
    )
    batch = SlateBatch(
        torch.as_tensor(data.request_user[test]),
        torch.gather(candidates, 1, slots),
        torch.as_tensor(data.history(test, 50)[0]),
    )
    blind = TrueClickModel(
        SyntheticWorld(dataclasses.replace(world, satiation=0.0, complementarity=0.0)),
        user_index=data.user_ids - 1,
        item_index=data.item_ids - 1,
    )
    with torch.no_grad():
        true_reward = truth.expected_reward(batch).numpy()
        blind_rho = spearmanr(blind.expected_reward(batch).numpy(), true_reward).statistic
        logged, clicks = logged_slates(data, "test")
        ceiling = roc_auc(clicks.numpy().ravel(), truth.click_probs(logged).numpy().ravel())
    users, items = torch.as_tensor(data.user_features), torch.as_tensor(data.item_features)
    print(f"true model: test AUC {ceiling:.4f} (the ceiling)")
    print(
        f"true model without satiation and complementarity: rho {blind_rho:.3f} (the "
        "ceiling of a composition-blind model)\n"
    )
    print("| simulator | Spearman rho vs true list reward | test AUC | fit (s) |")
    print("|---|---|---|---|")
    for kind in MODEL_KINDS:
        spec = SimulatorSpec.for_data(data, kind, dim=args.dim)
        model = build_simulator(spec, users, items)
        start = time.perf_counter()
        fit_simulator(
            model, data, weight_decay=args.weight_decay, epochs=40, patience=4, progress=False
        )
        seconds = time.perf_counter() - start
        with torch.no_grad():
            reward = model.expected_reward(batch).numpy()
        rho = spearmanr(reward, true_reward).statistic
        auc = evaluate_simulator(model, data, "test")["auc"]
        print(f"| {kind} | {rho:.3f} | {auc:.4f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
