"""The shared policy-gradient pieces: returns, baselines, clipped surrogate, GAE."""

from __future__ import annotations

import pytest
import torch

from agents.common.losses import (
    advantages,
    clipped_surrogate_loss,
    generalized_advantages,
    group_baseline,
    group_relative_advantages,
    reinforce_loss,
    slot_returns,
)
from agents.common.telemetry import TrainingLogger, grad_norm


def test_sparse_and_dense_returns_and_group_baselines() -> None:
    prefix = torch.tensor([[1.0, 1.5, 2.0], [0.0, 1.0, 1.0]])
    assert slot_returns(prefix, "sparse").tolist() == [[2.0] * 3, [1.0] * 3]
    assert slot_returns(prefix, "dense").tolist() == [[2.0, 1.0, 0.5], [1.0, 1.0, 0.0]]
    mean = group_baseline(slot_returns(prefix, "sparse"), samples=2)
    assert mean[:, 0].tolist() == [0.5, -0.5]
    loo = group_baseline(slot_returns(prefix, "sparse"), samples=2, baseline="leave-one-out")
    assert loo[:, 0].tolist() == [1.0, -1.0]  # each minus the other sample's reward
    assert torch.equal(
        advantages(prefix, 2, "dense"), group_baseline(slot_returns(prefix, "dense"), 2)
    )
    with pytest.raises(ValueError, match="credit must be 'sparse' or 'dense'"):
        slot_returns(prefix, "both")
    with pytest.raises(ValueError, match="not whole groups of 2"):
        group_baseline(torch.zeros(3, 1), samples=2)
    relative = group_relative_advantages(torch.tensor([[1.0, 2.0, 3.0]]))
    assert relative.mean().abs() < 1e-6 and relative[0, 2] > 1.2


def test_reinforce_gradient_raises_the_better_sample() -> None:
    logits = torch.zeros(2, requires_grad=True)
    log_probs = torch.log_softmax(logits, 0)[:, None]  # two one-step "lists"
    reinforce_loss(log_probs, torch.tensor([[1.0], [-1.0]])).backward()
    assert logits.grad[0] < 0 < logits.grad[1]  # descent raises sample 0


def test_clipped_surrogate_clips_outside_the_trust_region_only() -> None:
    old = torch.log(torch.tensor([[0.5, 0.5]]))
    new = torch.log(torch.tensor([[0.9, 0.5]])).requires_grad_()  # ratio 1.8 and 1.0
    advantage = torch.tensor([1.0])
    loss, stats = clipped_surrogate_loss(new, old, advantage)
    assert loss.item() == pytest.approx(-(1.2 + 1.0) / 2)  # PPO: ratio clipped at 1 + 0.2
    assert stats.clip_fraction == pytest.approx(0.5) and stats.approx_kl > 0
    loss.backward()
    assert new.grad[0, 0] == 0 and new.grad[0, 1] != 0  # no gradient through the clipped step
    dapo, _ = clipped_surrogate_loss(new.detach(), old, advantage, clip_high=0.28, token_level=True)
    assert dapo.item() == pytest.approx(-(1.28 + 1.0) / 2)
    unchanged, same = clipped_surrogate_loss(old, old, torch.tensor([2.0]))
    assert (
        unchanged.item() == pytest.approx(-2.0) and same.clip_fraction == 0 and same.approx_kl == 0
    )
    masked, _ = clipped_surrogate_loss(
        new.detach(), old, advantage, mask=torch.tensor([[False, True]])
    )
    assert masked.item() == pytest.approx(-1.0)


def test_gae_spans_td_and_monte_carlo() -> None:
    rewards = torch.tensor([[1.0, 0.0, 2.0]])
    values = torch.tensor([[0.5, 1.0, 1.5]])
    monte_carlo, returns = generalized_advantages(rewards, values, gamma=1.0, lam=1.0)
    assert monte_carlo.tolist() == [[2.5, 1.0, 0.5]]  # reward-to-go minus the value
    assert returns.tolist() == [[3.0, 2.0, 2.0]]
    td, _ = generalized_advantages(rewards, values, gamma=1.0, lam=0.0)
    assert td.tolist() == [[1.5, 0.5, 0.5]]  # r_t + V_{t+1} - V_t
    with pytest.raises(ValueError, match="differ"):
        generalized_advantages(rewards, values[:, :2])


def test_training_logger_keeps_rows_and_writes_csv(tmp_path) -> None:
    history: list = []
    logger = TrainingLogger(history, tmp_path / "log", flush_every=2)
    logger.log("policy", loss=torch.tensor(1.5), grad_norm=0.1)
    logger.log("policy", loss=1.0)
    logger.log("curve", step=0, valid_reward=2.0)
    logger.close()
    assert history[1] == {"stage": "policy", "step": 2, "loss": 1.0}
    text = (tmp_path / "log" / "curves.csv").read_text().splitlines()
    assert text[0] == "stage,step,loss,grad_norm,valid_reward" and len(text) == 4
    layer = torch.nn.Linear(2, 1)
    layer(torch.ones(1, 2)).sum().backward()
    expected = torch.cat([layer.weight.grad.flatten(), layer.bias.grad]).norm().item()
    assert grad_norm(layer.parameters()) == pytest.approx(expected)


def test_training_log_csv_appends_and_widens(tmp_path) -> None:
    history: list = []
    logger = TrainingLogger(history, tmp_path, flush_every=2)
    for step in range(4):  # two flushes with the same columns: the second appends
        logger.log("policy", loss=float(step))
    logger.log("curve", valid_reward=1.5)  # a new column: the file is rewritten wider
    logger.close()
    lines = (tmp_path / "curves.csv").read_text().splitlines()
    assert lines[0] == "stage,step,loss,valid_reward" and len(lines) == 6
    assert lines[4] == "policy,4,3.0," and lines[5] == "curve,1,,1.5"


def test_a_second_logger_on_the_same_history_continues_the_steps(tmp_path) -> None:
    """A later training stage's logger neither repeats step numbers nor loses rows."""
    history: list = []
    first = TrainingLogger(history, tmp_path)
    first.log("curve", valid_reward=1.0)
    first.log("mid", loss=2.0)
    first.close()
    second = TrainingLogger(history, tmp_path)
    second.log("curve", valid_reward=1.5)
    second.log("dapo", loss=0.5)
    second.close()
    assert [(row["stage"], row["step"]) for row in history] == [
        ("curve", 1),
        ("mid", 1),
        ("curve", 2),
        ("dapo", 1),
    ]
    lines = (tmp_path / "curves.csv").read_text().splitlines()
    assert len(lines) == 5 and lines[3].startswith("curve,2,")
