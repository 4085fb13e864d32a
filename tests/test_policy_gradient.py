"""The credit-assignment study's estimators (agents.policy_gradient)."""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.common.sampling import torch_generator
from agents.evaluation import improvement_probability, iqm_intervals
from agents.policy_gradient import PolicyGradient, PolicyGradientConfig
from agents.registry import make_agent
from simulators.data.errors import ConfigError

TINY = {"simulator_calls": 1024, "batch_size": 16, "group_size": 4, "curve_points": 1}


def _held_out(agent, task, requests) -> float:
    return task.expected_reward(requests, agent.rank(task, requests), "eval").mean().item()


def _rollout(agent, task, seed=0, batch=8):
    return agent.rollout(
        task, batch, np.random.default_rng(seed), torch_generator(seed), torch_generator(seed + 1)
    )


def test_config_refuses_what_does_not_apply() -> None:
    with pytest.raises(ConfigError, match="PPO's baseline is its critic"):
        PolicyGradientConfig(estimator="ppo", baseline="leave-one-out")
    with pytest.raises(ConfigError, match="needs group_size >= 2"):
        PolicyGradientConfig(group_size=1)
    PolicyGradientConfig(group_size=1, baseline="none")  # the plain estimator needs no group
    with pytest.raises(ConfigError, match="credit must be one of"):
        PolicyGradientConfig(credit="per-slot")
    with pytest.raises(ConfigError, match="minibatch_size=12 is not a multiple of group_size=8"):
        PolicyGradientConfig(estimator="ppo", minibatch_size=12)
    with pytest.raises(ConfigError, match="clip_high must be > 0"):
        PolicyGradientConfig(estimator="ppo", clip_high=0.0)
    assert PolicyGradientConfig(baseline="leave-one-out", credit="dense").label == "rloo-dense"
    assert PolicyGradientConfig(estimator="ppo", clicks="sampled").label == "ppo-gae-sparse-sampled"


def test_rollout_rewards_are_the_simulators_per_slot_probabilities_or_clicks(task) -> None:
    agent = PolicyGradient(PolicyGradientConfig.tiny(**TINY)).setup(task)
    rollout = _rollout(agent, task)
    assert rollout.slots.shape == (8 * 4, task.slate_length)
    assert agent.simulator_calls == 8 * 4  # one call per list
    expected = task.click_probs(rollout.requests, rollout.slots, "train")
    torch.testing.assert_close(rollout.rewards, expected)
    sampled = PolicyGradient(PolicyGradientConfig.tiny(**TINY, clicks="sampled")).setup(task)
    clicks = _rollout(sampled, task).rewards  # same seeds: the same lists
    assert set(clicks.unique().tolist()) <= {0.0, 1.0} and clicks.shape == expected.shape


def test_sampled_clicks_are_unbiased(small_task) -> None:
    """The same lists (same request and list seeds) with fresh clicks: rates match p_t."""
    agent = PolicyGradient(PolicyGradientConfig.tiny(**TINY, clicks="sampled")).setup(small_task)
    click_rng = torch_generator(5)
    draws = [
        agent.rollout(small_task, 8, np.random.default_rng(0), torch_generator(0), click_rng)
        for _ in range(200)
    ]
    probs = small_task.click_probs(draws[0].requests, draws[0].slots, "train")
    rate = torch.stack([rollout.rewards for rollout in draws]).mean(dim=0)
    assert (rate - probs).abs().max() < 0.15  # 200 draws: 4.2 standard errors at p = 0.5
    assert abs((rate - probs).mean().item()) < 0.01


def test_advantages_of_each_credit_and_baseline() -> None:
    rewards = torch.tensor([[1.0, 0.0, 0.5], [0.0, 0.0, 0.5], [0.2, 0.2, 0.2], [0.0, 1.0, 0.0]])
    plain = PolicyGradient(group_size=2, baseline="none", credit="sparse")
    assert torch.equal(
        plain.reinforce_advantages(rewards), rewards.sum(1, keepdim=True).expand(-1, 3)
    )
    dense = PolicyGradient(group_size=2, baseline="none", credit="dense")
    torch.testing.assert_close(dense.reinforce_advantages(rewards)[:, 0], rewards.sum(1))
    torch.testing.assert_close(dense.reinforce_advantages(rewards)[:, 2], rewards[:, 2])
    mean = PolicyGradient(group_size=2, credit="sparse").reinforce_advantages(rewards)
    loo = PolicyGradient(group_size=2, credit="sparse", baseline="leave-one-out")
    # RLOO is the group-mean advantage scaled by S / (S - 1): an Adam run is the same run.
    torch.testing.assert_close(loo.reinforce_advantages(rewards), 2 * mean)
    torch.testing.assert_close(mean[0], torch.full((3,), 0.5))
    ppo_sparse = PolicyGradient(estimator="ppo", group_size=2)
    paid = ppo_sparse.step_rewards(rewards)
    assert torch.equal(paid[:, :2], torch.zeros(4, 2)) and torch.equal(paid[:, 2], rewards.sum(1))
    assert torch.equal(
        PolicyGradient(estimator="ppo", credit="dense").step_rewards(rewards), rewards
    )


@pytest.mark.slow
def test_every_estimator_spends_the_budget_and_beats_the_initial_order(task) -> None:
    requests = task.requests("test")[:300]
    initial = (
        task.expected_reward(
            requests, np.tile(np.arange(task.slate_length), (len(requests), 1)), "eval"
        )
        .mean()
        .item()
    )
    budget = {"simulator_calls": 8192, "batch_size": 32, "group_size": 4, "curve_points": 2}
    for fields in (
        {},
        {"credit": "dense", "clicks": "sampled"},
        {"estimator": "ppo", "credit": "dense", "ppo_epochs": 2, "minibatch_size": 64},
    ):
        agent = PolicyGradient(PolicyGradientConfig.tiny(**budget, **fields)).fit(task)
        assert agent.simulator_calls == 8192, agent.name
        curve = [row for row in agent.history if row["stage"] == "curve"]
        assert [row["simulator_calls"] for row in curve] == [0, 4096, 8192]
        assert _held_out(agent, task, requests) > initial + 0.2, (agent.name, initial)
    assert {"value_loss", "clip_fraction", "approx_kl"} <= set(agent.history[-2])


def test_rloo_and_the_mean_baseline_train_identically_under_adam(small_task) -> None:
    requests = small_task.requests("test")[:50]
    runs = [
        PolicyGradient(PolicyGradientConfig.tiny(**TINY, baseline=b)).fit(small_task)
        for b in ("mean", "leave-one-out")
    ]
    np.testing.assert_array_equal(
        runs[0].rank(small_task, requests), runs[1].rank(small_task, requests)
    )


def test_training_is_seeded(small_task) -> None:
    requests = small_task.requests("test")[:50]
    config = PolicyGradientConfig.tiny(
        **{**TINY, "simulator_calls": 512}, estimator="ppo", ppo_epochs=1, minibatch_size=32
    )
    a, b = (PolicyGradient(config).fit(small_task) for _ in range(2))
    np.testing.assert_array_equal(a.rank(small_task, requests), b.rank(small_task, requests))
    assert [r["loss"] for r in a.history if "loss" in r] == [
        r["loss"] for r in b.history if "loss" in r
    ]


def test_slot_gradients_are_seeded_consistent_and_leave_the_agent_alone(task) -> None:
    agent = PolicyGradient(PolicyGradientConfig.tiny(**TINY, credit="dense")).setup(task)
    before = {k: v.clone() for k, v in agent.modules["policy"].state_dict().items()}
    stats = agent.slot_gradients(task, resamples=3, batch_size=8, seed=1)
    again = agent.slot_gradients(task, resamples=3, batch_size=8, seed=1)
    for key in ("variance", "signal", "snr", "mean_norm", "whole"):
        np.testing.assert_allclose(stats[key], again[key], rtol=1e-5)
        assert stats[key].shape == ((3,) if key == "whole" else (task.slate_length,))
    # The whole gradient is the sum of the slots' terms: its spread is at most the
    # sum of theirs (triangle inequality for standard deviations).
    assert stats["whole"][0] <= np.sqrt(stats["variance"]).sum() ** 2 * (1 + 1e-6)
    assert (stats["variance"] > 0).all() and (stats["signal"] > 0).all()
    assert agent.simulator_calls == 0  # a measurement is not training
    for key, value in agent.modules["policy"].state_dict().items():
        assert torch.equal(value, before[key])
    # Dense credit: the last slot's advantage is its own reward, less noisy than the
    # list reward the sparse estimator puts there.
    sparse = PolicyGradient(PolicyGradientConfig.tiny(**TINY)).setup(task)
    sparse_stats = sparse.slot_gradients(task, resamples=3, batch_size=8, seed=1)
    assert stats["variance"][-1] < sparse_stats["variance"][-1]
    with pytest.raises(ValueError, match="resamples must be >= 2"):
        agent.slot_gradients(task, resamples=1)


def test_ppo_slot_gradients_fit_the_critic_first(small_task) -> None:
    agent = PolicyGradient(PolicyGradientConfig.tiny(**TINY, estimator="ppo")).setup(small_task)
    critic = {k: v.clone() for k, v in agent.modules["critic"].state_dict().items()}
    stats = agent.slot_gradients(small_task, resamples=2, batch_size=8, critic_warmup=3)
    assert np.isfinite(stats["snr"]).all()
    changed = any(
        not torch.equal(v, critic[k]) for k, v in agent.modules["critic"].state_dict().items()
    )
    assert changed


def test_registered_names(small_task) -> None:
    assert make_agent("rloo", budget="tiny").settings.baseline == "leave-one-out"
    ppo = make_agent("ppo-gae", budget="tiny", seed=3)
    assert ppo.settings.estimator == "ppo" and ppo.settings.seed == 3


def _bench_credit():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_credit.py"
    spec = importlib.util.spec_from_file_location("bench_credit", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_credit_study_runs_spend_equal_calls_and_report(small_task, tmp_path) -> None:
    bench = _bench_credit()
    budget = bench.BUDGETS["tiny"]
    folder = tmp_path / "credit"
    for seed in (0, 1):
        for arm in ("reinforce-sparse", "reinforce-dense", "degre-greedy"):
            record = bench.run_one(small_task, arm, seed, budget)
            if arm.startswith("reinforce"):
                assert record["simulator_calls"] == budget.simulator_calls
                assert len(record["gradient"]["variance"]) == small_task.slate_length
            else:  # mining spends whole requests (and, rarely, an initial order's extensions)
                assert abs(record["simulator_calls"] - budget.simulator_calls) < 0.05 * 2048
            values = record["per_request"].values["reward_eval"]
            assert values.shape == (budget.test_requests,)
            assert record["reward_eval"] == pytest.approx(values.mean())
            bench.RunStore(bench._cell_dir(folder, (10, 4))).write(f"{arm}/seed{seed}", record)
            assert bench._record_path(folder, (10, 4), arm, seed).with_suffix(".npz").exists()
    bench.report(argparse.Namespace(out=str(folder), metric="reward_eval"))
    text = (folder / "report_reward_eval.md").read_text()
    assert "| 10 | 4 |" in text and "P(reinforce-dense > reinforce-sparse)" in text
    # Two-way intervals: each arm's mean and each paired difference carry one, with an MDE.
    assert "mean [95% CI, seeds x requests]" in text
    assert re.search(r"- reinforce-dense - reinforce-sparse: [+-]\d\.\d{4} \[[+-]\d", text)
    assert re.search(r"\(MDE 0\.\d{4}\)", text)
    for figure in (
        "credit_curves.png",
        "credit_gradients.png",
        "credit_gap_vs_snr_reward_eval.png",
    ):
        assert (folder / figure).stat().st_size > 10_000
    # A run stored without its per-request rewards (an older record) is refused by name.
    bench._record_path(folder, (10, 4), "degre-greedy", 1).with_suffix(".npz").unlink()
    with pytest.raises(SystemExit, match=r"degre-greedy/seed1.json has no per-request values"):
        bench.report(argparse.Namespace(out=str(folder), metric="reward_eval"))


def test_rliable_aggregates_are_seeded_and_leave_global_state_alone() -> None:
    scores = {"a": np.arange(15.0).reshape(5, 3), "b": np.arange(15.0).reshape(5, 3)[::-1] * 0.9}
    np.random.seed(123)  # noqa: NPY002
    state = np.random.get_state()  # noqa: NPY002
    first = iqm_intervals(scores, reps=200, seed=4)
    assert first == iqm_intervals(scores, reps=200, seed=4)
    pair = improvement_probability(scores["a"], scores["b"], reps=200, seed=4)
    assert pair == improvement_probability(scores["a"], scores["b"], reps=200, seed=4)
    assert first["a"][1] <= first["a"][0] <= first["a"][2] and pair[1] <= pair[0] <= pair[2]
    after = np.random.get_state()  # noqa: NPY002
    assert after[0] == state[0] and np.array_equal(after[1], state[1])
    with pytest.raises(ValueError, match="runs >= 2"):
        iqm_intervals({"a": np.ones((1, 3))})
