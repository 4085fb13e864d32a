"""GoalRank: reference policy, loss, groups, training, presets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.baselines import InitialOrder, PointwiseGreedy, RandomAgent
from agents.common.losses import group_loss, reference_policy
from agents.common.nn import input_dims, request_inputs
from agents.common.pointer import PointerPolicy
from agents.goalrank import SIZE_PRESETS, GoalRank, group_agreement

TINY = {
    "reward_model": "simulator",
    "iterations": 40,
    "batch_size": 32,
    "eval_every": 20,
    "eval_requests": 128,
}


def test_reference_policy_is_a_distribution_ordered_by_reward() -> None:
    rewards = torch.tensor([[1.0, 3.0, 2.0, 0.5], [2.0, 2.0, 2.0, 2.0]])
    reference = reference_policy(rewards)
    assert torch.allclose(reference.sum(dim=1), torch.ones(2))
    assert reference[0].argsort().tolist() == rewards[0].argsort().tolist()
    assert torch.allclose(reference[1], torch.full((4,), 0.25))  # equal rewards: uniform
    sharp = reference_policy(rewards, temperature=0.1)
    assert sharp[0, 1] > reference[0, 1] > 0.25
    # Standardised: a shifted and scaled group has the same reference policy.
    assert torch.allclose(reference_policy(rewards * 7 + 3), reference, atol=1e-6)


def test_group_agreement_measures_within_group_ordering() -> None:
    reference = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 0.0, 2.0]])
    same = group_agreement(reference * 10 + 1, reference)  # any increasing map agrees
    assert same["spearman"] == pytest.approx(1.0)
    assert same["pick_gain"] == pytest.approx(same["best_gain"])
    assert same["best_gain"] == pytest.approx(((4 - 2.5) + (2 - 0.75)) / 2)
    reversed_ = group_agreement(-reference[:1], reference[:1])
    assert reversed_["spearman"] == pytest.approx(-1.0)
    assert reversed_["pick_gain"] == pytest.approx(1.0 - 2.5)
    flat = group_agreement(torch.ones(2, 4), reference)  # constant groups are left out
    assert np.isnan(flat["spearman"]) and flat["model_spread"] == 0
    with pytest.raises(ValueError, match=r"\[B, G\]"):
        group_agreement(torch.ones(2, 4), torch.ones(2, 3))


def test_loss_gradient_raises_the_best_lists_log_probability(small_task) -> None:
    torch.manual_seed(0)
    policy = PointerPolicy(*input_dims(small_task), dim=16, encoder_layers=1, decoder_layers=1)
    requests = small_task.requests("train")[:1]
    inputs = request_inputs(small_task, requests)
    group = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0], [5, 6, 7, 8], [9, 0, 4, 2]])
    rewards = torch.tensor([[1.0, 0.2, 2.5, 0.1]])  # list 2 is the best
    reference = reference_policy(rewards)
    optimiser = torch.optim.SGD(policy.parameters(), lr=0.05)
    before = policy.step_log_probs(inputs, group, repeats=4).sum(dim=1).detach()
    loss = group_loss(policy.step_log_probs(inputs, group, repeats=4).sum(dim=1)[None], reference)
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    after = policy.step_log_probs(inputs, group, repeats=4).sum(dim=1).detach()
    change = after - before
    assert change[2] > 0  # the best list became more likely
    # Within the group, the policy's distribution moved toward the reference: the best
    # list's share rose and the cross-entropy to the reference fell. (How the other
    # lists' absolute log-probabilities move depends on the items they share.)
    share_before, share_after = before.softmax(dim=0), after.softmax(dim=0)
    assert share_after[2] > share_before[2]
    cross_entropy = [-(reference[0] * share.log()).sum() for share in (share_before, share_after)]
    assert cross_entropy[1] < cross_entropy[0]


def test_groups_mix_the_policy_and_auxiliary_policies(small_task) -> None:
    agent = GoalRank(**TINY, group_size=8, policy_share=0.5, auxiliary=[InitialOrder()])
    agent.setup(small_task)
    requests = small_task.requests("train")[:5]
    group = agent.group(small_task, requests, torch.Generator().manual_seed(0), iteration=1)
    assert group.shape == (5, 8, 4)
    for row in group.reshape(-1, 4):
        assert len(set(row.tolist())) == 4 and row.min() >= 0 and row.max() < 10
    assert (group[:, 4] == np.arange(4)).all()  # the initial order's greedy list
    rewards = agent.rewards(small_task, requests, group)
    exact = small_task.expected_reward(np.repeat(requests, 8), group.reshape(-1, 4), "train")
    assert torch.allclose(rewards.reshape(-1), exact)
    assert agent.reward_calls == 40
    # Different iterations perturb the auxiliary lists differently.
    other = agent.group(small_task, requests, torch.Generator().manual_seed(0), iteration=2)
    assert not np.array_equal(group[:, 5:], other[:, 5:])


def test_training_improves(small_task) -> None:
    requests = small_task.requests("test")[:300]
    untrained = GoalRank(**TINY, seed=4).setup(small_task)
    first = GoalRank(**TINY, seed=4).fit(small_task)
    before = small_task.expected_reward(requests, untrained.rank(small_task, requests), "eval")
    after = small_task.expected_reward(requests, first.rank(small_task, requests), "eval")
    assert after.mean() > before.mean() + 0.05
    curve = [row for row in first.history if "valid_reward" in row]
    assert curve[-1]["valid_reward"] > curve[0]["valid_reward"]
    assert curve[-1]["reward_calls"] == 40 * 32 * 16


def test_training_is_seeded(small_task) -> None:
    requests = small_task.requests("test")[:300]
    short = {**TINY, "iterations": 2, "eval_every": 1}
    auxiliary = [InitialOrder(), PointwiseGreedy(epochs=3, seed=4).fit(small_task)]  # shared
    first, second, other = (
        GoalRank(**short, auxiliary=auxiliary, seed=seed).fit(small_task) for seed in (4, 4, 5)
    )
    assert np.array_equal(first.rank(small_task, requests), second.rank(small_task, requests))
    assert first.history == second.history
    assert first.history != other.history  # the seed matters


def test_size_presets_grow_and_match_their_names(small_task) -> None:
    counts = []
    for size in SIZE_PRESETS:
        agent = GoalRank(size=size).setup(small_task)
        counts.append(agent.parameter_count())
        nominal = float(size.rstrip("M")) * 1e6
        assert 0.5 * nominal < counts[-1] < 2 * nominal, (size, counts[-1])
    assert counts == sorted(counts)
    assert GoalRank(size="2M").name == "goalrank-2M"


def test_invalid_options_are_refused() -> None:
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        GoalRank(group_size=1)
    with pytest.raises(ValueError, match="unknown size"):
        GoalRank(size="1B")
    with pytest.raises(ValueError, match="reward_model must be"):
        GoalRank(reward_model="oracle")
    with pytest.raises(ValueError, match="policy_share"):
        GoalRank(policy_share=0)
    with pytest.raises(TypeError, match="cannot sample"):
        GoalRank(auxiliary=[RandomAgent()])
    assert GoalRank(auxiliary=[PointwiseGreedy()]).policy_lists == 8


def test_a_composed_reward_model_is_learned_and_survives_a_checkpoint(small_task, tmp_path) -> None:
    # The learned reward model fitted inside a composition: its effects move off
    # their start (strength 0, DCG examination), and a saved agent scores lists
    # exactly as the fitted one does.
    agent = GoalRank(
        reward_model="learned",
        reward_model_composition=True,
        reward_model_epochs=2,
        train_requests=2000,
        iterations=2,
        batch_size=16,
        eval_every=1,
        eval_requests=32,
    ).fit(small_task)
    model = agent.modules["reward_model"]
    composition = model.composition()
    assert composition.redundancy == "sum" and composition.diversity_strength != 0.0
    assert composition.examination[1] != pytest.approx(1 / np.log2(3))
    loaded = GoalRank.load(agent.save(tmp_path / "goalrank.pt"))
    rows = small_task.requests("test")[:8]
    assert np.array_equal(loaded.rank(small_task, rows), agent.rank(small_task, rows))
    torch.testing.assert_close(
        loaded.modules["reward_model"].examination, model.examination.detach()
    )
    with pytest.raises(ValueError, match="reward_model_composition=True composes"):
        GoalRank(reward_model="simulator", reward_model_composition=True)
