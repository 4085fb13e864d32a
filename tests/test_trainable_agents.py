"""Neural building blocks and the trainable rerankers: validity, training, checkpoints."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import rerank_env  # noqa: F401  (registers the environments)
from agents.base import ScoringAgent, TrainableAgent, checked_rank, empty_prefixes
from agents.baselines import InitialOrder, PointwiseGreedy
from agents.common.losses import advantages
from agents.common.nn import input_dims, request_inputs
from agents.common.pointer import PointerPolicy
from agents.common.sampling import torch_generator
from agents.common.specs import agent_from_spec, agent_spec
from agents.degre import DeGRe
from agents.generator_evaluator import GeneratorEvaluator
from agents.glorank import GloRank, GloRankConfig
from agents.goalrank import GoalRank
from agents.metrics import log_metrics
from agents.policy_gradient import PolicyGradient, PolicyGradientConfig
from agents.prm import PRM, PRMConfig
from agents.registry import make_agent
from agents.sb3 import SB3Agent, remap_actions
from agents.seq2slate import Seq2Slate
from simulators.checkpoint import CheckpointError
from simulators.data.errors import ConfigError

SMALL = {"num_candidates": 10, "slate_length": 4}
TINY_DEGRE = {
    "evaluator_lists": 1,
    "evaluator_epochs": 1,
    "evaluator_dim": 16,
    "evaluator_layers": 1,
    "dim": 16,
    "mining_requests": 16,
    "rounds": 1,
    "epochs": 1,
    "beam_width": 2,
    "keep_lists": 2,
    "eval_requests": 16,
    "train_requests": 500,
}


def _tiny_agents() -> list[TrainableAgent]:
    return [
        PRM(dim=16, layers=1, epochs=1, seed=0),
        Seq2Slate(dim=16, iterations=5, batch_size=16, group_size=4, eval_every=5, seed=0),
        GeneratorEvaluator([PointwiseGreedy(epochs=1)], lists_per_generator=4),
        GeneratorEvaluator(
            [InitialOrder(), Seq2Slate(dim=16, iterations=3, batch_size=8, group_size=2)],
            lists_per_generator=3,
            evaluator="learned",
            evaluator_epochs=1,
        ),
        SB3Agent(
            "MaskablePPO",
            total_timesteps=128,
            n_envs=2,
            algorithm_kwargs={"n_steps": 64, "batch_size": 64, "n_epochs": 1},
        ),
        SB3Agent(
            "MaskablePPO",
            policy="SlatePolicy",
            total_timesteps=128,
            n_envs=2,
            algorithm_kwargs={
                "n_steps": 64,
                "batch_size": 64,
                "n_epochs": 1,
                "policy_kwargs": {"features_extractor_kwargs": {"dim": 16}},
            },
        ),
        SB3Agent(
            "PPO",
            total_timesteps=128,
            n_envs=2,
            invalid_actions="remap",
            algorithm_kwargs={"n_steps": 64, "batch_size": 64, "n_epochs": 1},
        ),
        DeGRe(**TINY_DEGRE),
        GoalRank(
            reward_model_epochs=1,
            train_requests=500,
            iterations=3,
            batch_size=8,
            group_size=4,
            eval_every=3,
            eval_requests=16,
        ),
        DeGRe(**{**TINY_DEGRE, "beam_width": 3, "keep_lists": 1}, decode="evaluator-beam"),
        GloRank(GloRankConfig.tiny(sft_source="logged", sft_epochs=1, ppo_iterations=2)),
        GloRank(
            GloRankConfig.tiny(
                head="local", sft_epochs=1, ppo_iterations=2, decode="beam", beam_width=2
            )
        ),
        PolicyGradient(
            PolicyGradientConfig.tiny(
                simulator_calls=256, batch_size=16, group_size=4, baseline="leave-one-out"
            )
        ),
        PolicyGradient(
            PolicyGradientConfig.tiny(
                estimator="ppo",
                credit="dense",
                simulator_calls=256,
                batch_size=16,
                group_size=4,
                ppo_epochs=1,
                minibatch_size=32,
            )
        ),
    ]


@pytest.fixture(scope="module")
def quick_prm(task):
    """PRM at the budget of ``compare --quick`` (shared: it is the slowest fit here)."""
    agent = make_agent("prm", seed=0, budget="quick")
    assert agent.settings == PRMConfig.quick(seed=0) and agent.settings.epochs == 2
    return agent.fit(task)


@pytest.fixture(scope="module")
def fitted(small_task):
    return [agent.fit(small_task) for agent in _tiny_agents()]


def test_pointer_decoder_log_probs_match_teacher_forcing(small_task) -> None:
    user_dim, item_dim = input_dims(small_task)
    policy = PointerPolicy(user_dim, item_dim, dim=16, max_length=4).eval()
    requests = small_task.requests("test")[:32]
    inputs = request_inputs(small_task, requests)
    with torch.no_grad():
        slots, decoded = policy.generate(inputs, 4, greedy=False, generator=torch_generator(0))
        forced = policy.step_log_probs(inputs, slots)
    torch.testing.assert_close(decoded, forced, atol=1e-5, rtol=1e-5)
    for row in slots.numpy():
        assert len(set(row.tolist())) == 4  # sampled without replacement


def test_pointer_decoder_keeps_prefixes_and_masks_them(small_task) -> None:
    user_dim, item_dim = input_dims(small_task)
    policy = PointerPolicy(user_dim, item_dim, dim=16, max_length=4).eval()
    requests = small_task.requests("test")[:16]
    prefix = torch.full((16, 4), -1)
    prefix[:, 0], prefix[:8, 1] = 7, 3
    with torch.no_grad():
        slots, log_probs = policy.generate(
            request_inputs(small_task, requests), 4, prefix=prefix, greedy=True
        )
    assert (slots[:, 0] == 7).all() and (slots[:8, 1] == 3).all()
    assert (log_probs[:, 0] == 0).all()  # kept slots were not the policy's choice
    assert all(len(set(row.tolist())) == 4 for row in slots)


class _FixedScores(ScoringAgent):
    name = "fixed"

    def __init__(self, scores):
        self.fixed = np.asarray(scores, dtype=float)

    def scores(self, task, requests):
        return np.broadcast_to(self.fixed, (len(requests), len(self.fixed)))


def test_plackett_luce_sampling_follows_the_scores(small_task) -> None:
    scores = np.array([3.0, 0.0, -1.0, -2.0, 1.0, 0.5, -0.5, 2.0, -1.5, 0.2])
    request = small_task.requests("test")[:1]
    lists = _FixedScores(scores).sample(small_task, request, 4000, seed=0)[0]
    assert all(len(set(row.tolist())) == 4 for row in lists)  # without replacement
    first = np.bincount(lists[:, 0], minlength=10) / 4000
    standardised = (scores - scores.mean()) / scores.std()
    expected = np.exp(standardised) / np.exp(standardised).sum()  # P(first) = softmax
    np.testing.assert_allclose(first, expected, atol=0.03)


def test_advantages_sparse_and_dense() -> None:
    values = torch.tensor([[1.0, 1.5, 2.0], [0.5, 0.5, 1.0]])  # two lists of one request
    sparse = advantages(values, 2, "sparse")
    torch.testing.assert_close(sparse, torch.tensor([[0.5] * 3, [-0.5] * 3]))
    dense = advantages(values, 2, "dense")
    # Reward-to-go: [2, 1, .5] and [1, .5, .5]; minus their per-slot mean.
    torch.testing.assert_close(dense, torch.tensor([[0.5, 0.25, 0.0], [-0.5, -0.25, 0.0]]))
    with pytest.raises(ValueError, match="credit must be"):
        advantages(values, 2, "shaped")


def test_remap_actions_picks_the_kth_available_candidate() -> None:
    masks = np.array([[1, 0, 1, 1], [0, 0, 1, 0]], dtype=bool)
    np.testing.assert_array_equal(remap_actions(np.array([1, 5]), masks), [2, 2])
    np.testing.assert_array_equal(remap_actions(np.array([3, 0]), masks), [0, 2])


def test_every_trainable_agent_gives_valid_lists_in_batch_and_step_wise(small_task, fitted) -> None:
    requests = small_task.requests("test")[:24]
    prefixes = empty_prefixes(24, 4)
    prefixes[:, 0] = 5
    for agent in fitted:
        lists = checked_rank(agent, small_task, requests)
        checked_rank(agent, small_task, requests, prefixes)  # prefixes kept
        env = gym.make("SlateRerank-v0", split="test", **SMALL)
        policy = agent.policy(env)
        for request, expected in zip(requests[:6], lists[:6], strict=True):
            obs, _ = env.reset(options={"request": int(request)})
            placed = []
            for _ in range(4):
                action, _ = policy.predict(obs, action_masks=env.unwrapped.action_masks())
                placed.append(int(action))
                obs, *_ = env.step(action)
            assert placed == expected.tolist(), agent.name


def test_step_wise_policy_replans_when_another_policy_chose_a_slot(small_task, fitted) -> None:
    env = gym.make("SlateRerank-v0", split="test", **SMALL)
    for agent in fitted:
        policy = agent.policy(env)
        obs, info = env.reset(seed=3)
        forced = int(checked_rank(agent, small_task, [info["request"]])[0, 0] + 1) % 10
        obs, *_ = env.step(forced)  # not the agent's first choice
        placed = [forced]
        for _ in range(3):
            action, _ = policy.predict(obs, action_masks=env.unwrapped.action_masks())
            placed.append(int(action))
            obs, *_ = env.step(action)
        prefix = np.array([[forced, -1, -1, -1]])
        expected = checked_rank(agent, small_task, [info["request"]], prefix)[0]
        assert placed == expected.tolist(), agent.name


def test_step_wise_policy_runs_the_vector_env_across_resets(small_task, fitted) -> None:
    envs = gym.make_vec("SlateRerank-v0", num_envs=5, split="test", **SMALL)
    policy = fitted[1].policy(envs)
    obs, _ = envs.reset(seed=0)
    finished = 0
    for _ in range(3 * (4 + 1)):  # three episodes, each followed by its reset step
        actions, _ = policy.predict(obs, action_masks=envs.unwrapped.action_masks())
        obs, _, terminated, _, info = envs.step(actions)
        finished += int(terminated.sum())
    assert finished == 15


def test_sb3_training_leaves_global_random_state_alone(small_task) -> None:
    import random

    random.seed(7), np.random.seed(7), torch.manual_seed(7)  # noqa: NPY002
    expected = (random.random(), np.random.random(), torch.rand(1).item())  # noqa: NPY002
    random.seed(7), np.random.seed(7), torch.manual_seed(7)  # noqa: NPY002
    options = {"n_steps": 32, "batch_size": 32, "n_epochs": 1}
    SB3Agent("MaskablePPO", total_timesteps=64, n_envs=1, algorithm_kwargs=options, seed=3).fit(
        small_task
    )
    assert (random.random(), np.random.random(), torch.rand(1).item()) == expected  # noqa: NPY002


def test_sb3_without_masking_needs_remap() -> None:
    with pytest.raises(ValueError, match="invalid_actions='remap'"):
        SB3Agent("PPO")
    with pytest.raises(ValueError, match="masks invalid actions itself"):
        SB3Agent("MaskablePPO", invalid_actions="remap")
    with pytest.raises(ValueError, match="unknown SB3 algorithm 'PPO2'.*MaskablePPO"):
        SB3Agent("PPO2")


def test_checkpoints_round_trip_and_refuse_other_versions(small_task, fitted, tmp_path) -> None:
    requests = small_task.requests("test")[:20]
    for index, agent in enumerate(fitted):
        path = agent.save(tmp_path / f"agent{index}.pt")
        loaded = type(agent).load(path)
        np.testing.assert_array_equal(
            checked_rank(loaded, small_task, requests), checked_rank(agent, small_task, requests)
        )
    payload = torch.load(tmp_path / "agent0.pt", weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match=r"format version 99.*reads version 2"):
        PRM.load(tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="holds a PRM agent, not a Seq2Slate"):
        Seq2Slate.load(tmp_path / "agent0.pt")
    with pytest.raises(CheckpointError, match="no agent checkpoint"):
        PRM.load(tmp_path / "missing.pt")
    del payload["state_dicts"]
    payload["format_version"] = 2
    torch.save(payload, tmp_path / "damaged.pt")
    with pytest.raises(CheckpointError, match=r"damaged: it lacks \['state_dicts'\]"):
        PRM.load(tmp_path / "damaged.pt")
    with pytest.raises(ValueError, match="metadata must be JSON-like"):
        fitted[0].save(tmp_path / "bad.pt", metadata={"path": tmp_path})
    # A loaded generator-evaluator's generators count as trained: fitting again keeps them.
    loaded = GeneratorEvaluator.load(tmp_path / "agent2.pt")
    assert loaded.fitted and all(g.fitted for g in loaded.generators)


def test_untrained_agents_refuse_to_rank(small_task) -> None:
    with pytest.raises(RuntimeError, match="not trained: call fit"):
        PRM().rank(small_task, small_task.requests("test")[:2])


def test_agent_specs_round_trip() -> None:
    agent = GeneratorEvaluator([InitialOrder(), PRM(epochs=3)], lists_per_generator=5)
    rebuilt = agent_from_spec(agent_spec(agent))
    assert rebuilt.config() == agent.config()
    assert rebuilt.name == "multi-gen-eval(initial-order+prm)"
    # The evaluator kind is in the name, so both G-E kinds can share one comparison.
    assert make_agent("gen-eval-learned").name == "gen-eval-learned(pointwise-greedy)"
    assert make_agent("gen-eval").name == "gen-eval(pointwise-greedy)"
    with pytest.raises(ValueError, match="unknown agent 'prn'; valid: .*'prm'"):
        make_agent("prn")


def test_seq2slate_training_improves_over_its_untrained_self(task) -> None:
    requests = task.requests("test")[:200]
    kwargs = {"iterations": 40, "batch_size": 32, "group_size": 8, "eval_every": 20}
    untrained = Seq2Slate(**kwargs, seed=1).setup(task)
    trained = Seq2Slate(**kwargs, seed=1).fit(task)
    before = task.expected_reward(requests, checked_rank(untrained, task, requests)).mean()
    after = task.expected_reward(requests, checked_rank(trained, task, requests)).mean()
    assert after > before + 0.2, (float(before), float(after))


def test_seq2slate_training_is_seeded(task) -> None:
    requests = task.requests("test")[:200]
    kwargs = {
        "iterations": 2,
        "batch_size": 16,
        "group_size": 4,
        "eval_every": 1,
        "eval_requests": 32,
    }
    first, second, other = (Seq2Slate(**kwargs, seed=seed).fit(task) for seed in (1, 1, 2))
    lists = checked_rank(first, task, requests)
    np.testing.assert_array_equal(lists, checked_rank(second, task, requests))
    assert first.history == second.history
    assert first.history != other.history  # the seed matters


@pytest.mark.slow
@pytest.mark.xdist_group("quick_prm")  # one worker fits the shared PRM
def test_prm_improves_over_its_untrained_self_on_logged_positives(task, quick_prm) -> None:
    requests = task.requests("test")
    positives = task.logged_positives(requests)
    untrained = PRM(epochs=2, seed=0).setup(task)
    trained = quick_prm
    ndcg = [
        np.nanmean(log_metrics(checked_rank(agent, task, requests), positives)["ndcg"])
        for agent in (untrained, trained)
    ]
    assert ndcg[1] > ndcg[0] + 0.02, ndcg


@pytest.mark.slow
@pytest.mark.xdist_group("quick_prm")  # one worker fits the shared PRM
def test_seq2slate_and_prm_sim_beat_the_initial_order_on_the_held_out_simulator(
    task, quick_prm
) -> None:
    """At the quick budget of ``rerank-env compare --quick``.

    PRM trained on the logged positives is not asked to: it learns what users chose
    to watch, which the simulated judge does not reward (docs/benchmarks.md); its
    own objective is checked above. ``prm-sim``, the same model trained on the
    training simulator's clicks, is.
    """
    requests = task.requests("test")[:300]
    rewards = {}
    for name in ("initial-order", "prm", "prm-sim", "seq2slate"):
        agent = quick_prm if name == "prm" else make_agent(name, seed=0, budget="quick")
        if isinstance(agent, TrainableAgent) and not agent.fitted:
            agent.fit(task)
        lists = checked_rank(agent, task, requests)
        rewards[name] = float(task.expected_reward(requests, lists, "eval").mean())
    assert rewards["prm-sim"] > rewards["initial-order"] + 0.3, rewards
    assert rewards["prm-sim"] > rewards["prm"], rewards
    assert rewards["seq2slate"] > rewards["initial-order"] + 0.3, rewards


def test_generator_evaluator_never_does_worse_than_its_generator_under_its_evaluator(
    small_task,
) -> None:
    requests = small_task.requests("test")[:100]
    pointwise = PointwiseGreedy(epochs=2).fit(small_task)
    agent = GeneratorEvaluator([pointwise], lists_per_generator=8).fit(small_task)
    greedy = small_task.expected_reward(requests, checked_rank(pointwise, small_task, requests))
    chosen = small_task.expected_reward(requests, checked_rank(agent, small_task, requests))
    assert (chosen >= greedy - 1e-6).all()  # the greedy list is always a proposal
    assert chosen.mean() > greedy.mean()


def test_every_trainer_logs_its_updates(fitted) -> None:
    """The training log: one row per update with the diagnostics that apply to it."""
    for agent in fitted:
        updates = [row for row in agent.history if row.get("stage") in ("policy", "generator")]
        if isinstance(agent, SB3Agent):  # PPO's own diagnostics, read from SB3's logger
            assert updates and {"approx_kl", "clip_fraction", "entropy", "loss"} <= set(updates[0])
            assert [row["gradient_steps"] for row in updates] == [1]  # 1 rollout of 2 x 64, 1 epoch
        elif isinstance(agent, (Seq2Slate, GoalRank)) or (
            isinstance(agent, DeGRe) and agent.settings.decode == "generator"
        ):
            assert updates, agent.name
            for row in updates:
                assert {"loss", "entropy", "grad_norm", "reward"} <= set(row), agent.name
                assert np.isfinite(row["loss"]) and row["grad_norm"] > 0, agent.name


def test_prm_sim_learns_the_simulators_clicks_and_beats_the_initial_order(small_task) -> None:
    agent = make_agent("prm-sim", seed=0, budget="tiny").fit(small_task)
    assert agent.name == "prm-sim" and agent.settings.labels == "simulator"
    assert [row["epoch"] for row in agent.history if "valid_reward" in row] == [1, 2]
    requests = small_task.requests("test")[:300]
    rewards = {
        name: float(
            small_task.expected_reward(
                requests, checked_rank(a, small_task, requests), "eval"
            ).mean()
        )
        for name, a in (("prm-sim", agent), ("initial-order", make_agent("initial-order")))
    }
    # Measured 1.72 against 1.47 at this budget.
    assert rewards["prm-sim"] > rewards["initial-order"] + 0.15, rewards
    with pytest.raises(ConfigError, match="PRMConfig.labels must be one of"):
        PRM(labels="clicks")
