"""SlateRerankGlobal-v0: semantic-ID token steps, trie masks, rewards, vector env, options."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils import env_checker
from hypothesis import given, settings
from hypothesis import strategies as st

import rerank_env  # noqa: F401  (registers the environments)
from rerank_env import InvalidActionError
from rerank_env.core import EpisodeBatch
from rerank_env.semantic_env import TokenEpisodes

SMALL = {"num_candidates": 10, "slate_length": 4}


def _valid_continuations(tokens: np.ndarray, unplaced: np.ndarray, prefix: list[int]) -> set:
    """Tokens that extend ``prefix`` towards an unplaced candidate (the trie, by brute force)."""
    depth = len(prefix)
    return {
        int(code[depth])
        for code, free in zip(tokens, unplaced, strict=True)
        if free and list(code[:depth]) == prefix
    }


def _roll(env, rng: np.random.Generator, seed: int | None = None, **reset_kwargs):
    """One episode with random valid tokens, checking the mask against the trie at each step."""
    obs, info = env.reset(seed=seed, **reset_kwargs)
    levels = obs["candidate_tokens"].shape[1]
    steps, terminated, prefix = [(obs, None, info)], False, []
    while not terminated:
        unplaced = np.ones(len(obs["candidate_tokens"]), bool)
        unplaced[obs["slate"][obs["slate"] >= 0]] = False
        expected = _valid_continuations(obs["candidate_tokens"], unplaced, prefix)
        assert set(np.flatnonzero(obs["action_mask"]).tolist()) == expected
        assert (
            obs["prefix"][: len(prefix)].tolist() == prefix
            and (obs["prefix"][len(prefix) :] == -1).all()
        )
        token = int(rng.choice(sorted(expected)))
        obs, reward, terminated, truncated, info = env.step(token)
        assert not truncated
        prefix.append(token)
        if len(prefix) == levels:  # the code is complete: exactly that candidate is placed
            placed = info["placed_candidate"]
            assert obs["candidate_tokens"][placed].tolist() == prefix and unplaced[placed]
            prefix = []
        else:
            assert info["placed_candidate"] == -1
        steps.append((obs, reward, info))
    return steps


def test_gymnasium_checks_pass_with_warnings_as_errors() -> None:
    """Every ``check_env`` check, and step determinism with an action drawn after the reset.

    Gymnasium's own ``check_step_determinism`` draws its action *before* the reset
    it steps from, which assumes every action is valid after any reset; here the
    valid tokens depend on the request, so that one check is made with the action
    drawn after the seeded reset instead.
    """
    env = gym.make("SlateRerankGlobal-v0", **SMALL).unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env_checker.check_action_space(env.action_space)
        env_checker.check_observation_space(env.observation_space)
        env_checker.check_reset_return_type(env)
        env_checker.check_reset_seed_determinism(env)
        env_checker.check_reset_options(env)
        env_checker.env_reset_passive_checker(env)
        env_checker.env_step_passive_checker(env, env.action_space.sample())
        # Gymnasium >= 1.3 only (ray[rllib] pins 1.2.2, where it does not exist).
        not_reused = getattr(env_checker, "check_returned_data_not_reused", None)
        if not_reused is not None:
            not_reused(env)
    outcomes = []
    for _ in range(2):
        env.reset(seed=123)
        env.action_space.seed(123)
        outcomes.append(env.step(env.action_space.sample()))
    for a, b in zip(*outcomes, strict=True):
        if isinstance(a, dict):
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])
        else:
            assert a == b


@pytest.mark.parametrize("reward_mode", ["sparse", "dense"])
def test_episodes_place_valid_lists_and_pay_the_item_level_rewards(reward_mode) -> None:
    env = gym.make("SlateRerankGlobal-v0", reward_mode=reward_mode, **SMALL)
    task = env.unwrapped.task
    levels = task.tokenizer.n_levels
    for seed in range(3):
        steps = _roll(env, np.random.default_rng(seed), seed=seed)
        obs, _, info = steps[-1]
        assert len(steps) - 1 == task.slate_length * levels
        slate = obs["slate"]
        assert len(set(slate.tolist())) == task.slate_length and (slate >= 0).all()
        request = info["request"]
        np.testing.assert_array_equal(info["slate_items"], task.candidates_np[request, slate])
        rewards = [reward for _, reward, _ in steps[1:]]
        expected = float(task.expected_reward([request], [slate])[0])
        assert sum(rewards) == pytest.approx(expected, rel=1e-6)
        assert info["list_reward"] == pytest.approx(expected, rel=1e-6)
        assert info["eval_reward"] == pytest.approx(
            float(task.expected_reward([request], [slate], "eval")[0]), rel=1e-6
        )
        paid = [k for k, reward in enumerate(rewards) if reward != 0]
        if reward_mode == "dense":  # paid only when a code completes
            assert all((k + 1) % levels == 0 for k in paid)
        else:
            assert paid == [len(rewards) - 1]


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    codebook=st.integers(2, 4),
    levels=st.integers(1, 3),
    duplicates=st.booleans(),
)
def test_random_code_tables_with_collisions_always_decode_to_valid_lists(
    small_task, seed, codebook, levels, duplicates
) -> None:
    """Tiny codebooks force shared prefixes (and, with ``duplicates``, identical codes)."""
    rng = np.random.default_rng(seed)
    n_items = small_task.pool.n_items
    tokens = rng.integers(0, codebook, (n_items, levels)) + codebook * np.arange(levels)
    if duplicates:  # some items share a whole code
        tokens[rng.integers(0, n_items, 200)] = tokens[0]
    episodes = TokenEpisodes(
        EpisodeBatch(small_task, 3, split="train", reward_mode="dense", click_mode="expected"),
        tokens,
        codebook * levels,
    )
    episodes.start([np.random.default_rng(seed + k) for k in range(3)])
    placed_items = [[] for _ in range(3)]
    terminated = False
    while not terminated:
        assert episodes.mask.any(axis=1).all()  # never a dead end
        choice = np.array([rng.choice(np.flatnonzero(row)) for row in episodes.mask])
        prefix_before = episodes.prefix.copy()
        _, terminated, placed = episodes.emit(choice)
        if (placed >= 0).any():
            for env in range(3):
                code = [*prefix_before[env, : levels - 1], choice[env]]
                item = episodes.episodes.candidate_items[env, placed[env]]
                assert tokens[item].tolist() == code  # the code maps back to its item
                placed_items[env].append(placed[env])
    for env in range(3):
        assert sorted(set(placed_items[env])) == sorted(placed_items[env])  # never twice
        assert len(placed_items[env]) == small_task.slate_length


def test_vector_env_matches_single_envs_step_for_step() -> None:
    num_envs, seed = 3, 5
    vector = gym.make_vec("SlateRerankGlobal-v0", num_envs=num_envs, reward_mode="dense", **SMALL)
    singles = [
        gym.make("SlateRerankGlobal-v0", reward_mode="dense", **SMALL) for _ in range(num_envs)
    ]
    episode = SMALL["slate_length"] * vector.unwrapped.task.tokenizer.n_levels
    rng = np.random.default_rng(0)
    v_obs, _ = vector.reset(seed=seed)
    s_obs = [env.reset(seed=seed + k)[0] for k, env in enumerate(singles)]
    for step in range(2 * (episode + 1)):
        for k in range(num_envs):
            for key in s_obs[k]:
                np.testing.assert_array_equal(v_obs[key][k], s_obs[k][key], err_msg=key)
        if step % (episode + 1) == episode:  # after the last token no token is valid
            assert not v_obs["action_mask"].any()
            actions = np.zeros(num_envs, dtype=np.int64)  # ignored by the autoreset step
        else:
            actions = np.array([rng.choice(np.flatnonzero(m)) for m in v_obs["action_mask"]])
        v_obs, v_rewards, v_term, _, v_info = vector.step(actions)
        if step % (episode + 1) == episode:  # NEXT_STEP autoreset
            s_obs = [env.reset()[0] for env in singles]
            continue
        for k, env in enumerate(singles):
            s_obs[k], reward, terminated, _, info = env.step(actions[k])
            assert v_rewards[k] == pytest.approx(reward, rel=1e-6, abs=1e-9)
            assert v_term[k] == terminated
            assert v_info["placed_candidate"][k] == info["placed_candidate"]
            if terminated:
                assert v_info["eval_reward"][k] == pytest.approx(info["eval_reward"], rel=1e-6)


def test_invalid_tokens_are_refused_with_the_valid_ones() -> None:
    env = gym.make("SlateRerankGlobal-v0", **SMALL).unwrapped
    obs, _ = env.reset(seed=0)
    vocab = env.task.tokenizer.vocab_size
    invalid = int(np.flatnonzero(obs["action_mask"] == 0)[0])
    with pytest.raises(InvalidActionError, match=rf"token {invalid} continues no unplaced"):
        env.step(invalid)
    with pytest.raises(InvalidActionError, match=rf"outside the vocabulary Discrete\({vocab}\)"):
        env.step(vocab)
    with pytest.raises(InvalidActionError, match="must be an integer token"):
        env.step(1.5)
    with pytest.raises(InvalidActionError, match="one integer token"):
        env.step(np.array([1, 2]))
    _roll(env, np.random.default_rng(0), seed=1)
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step(0)


def test_candidates_may_come_in_any_order_in_both_action_spaces() -> None:
    """A permuted candidate list: observations follow the new order, items keep their scores."""
    for env_id in ("SlateRerank-v0", "SlateRerankGlobal-v0"):
        env = gym.make(env_id, **SMALL).unwrapped
        task = env.task
        request = int(task.requests("train")[7])
        own = task.candidates_np[request]
        order = np.random.default_rng(0).permutation(len(own))
        options = {"request": request, "candidates": own[order]}
        if env_id == "SlateRerankGlobal-v0":
            steps = _roll(env, np.random.default_rng(1), options=options)
            obs, info = steps[0][0], steps[-1][2]
        else:
            obs, _ = env.reset(options=options)
        np.testing.assert_array_equal(obs["candidates"], task.item_table[own[order]])
        np.testing.assert_array_equal(obs["initial_scores"], task.scores_np[request][order])
        if env_id == "SlateRerankGlobal-v0":
            np.testing.assert_array_equal(
                obs["candidate_tokens"], task.tokenizer.tokens[own[order]]
            )
        else:  # item-level: place the permuted list's first L positions
            for position in range(task.slate_length):
                _, _, _, _, info = env.step(position)
            np.testing.assert_array_equal(info["slate_items"], own[order][: task.slate_length])
        # The reward is the reward of the items shown, whatever the input order.
        slate_items = info["slate_items"]
        positions = [int(np.flatnonzero(own == item)[0]) for item in slate_items]
        assert info["list_reward"] == pytest.approx(
            float(task.expected_reward([request], [positions])[0]), rel=1e-6
        )


def test_bad_candidate_options_are_refused() -> None:
    env = gym.make("SlateRerank-v0", **SMALL).unwrapped
    task = env.task
    request = int(task.requests("train")[0])
    own = task.candidates_np[request]
    other = int(np.setdiff1d(np.arange(task.pool.n_items), own)[0])
    cases = [
        ({"candidates": own}, "needs the request they belong to"),
        ({"request": request, "candidates": own[:5]}, r"N = 10 item indices per episode"),
        ({"request": request, "candidates": np.r_[own[:9], own[0]]}, "more than once"),
        ({"request": request, "candidates": np.r_[own[:9], 10**6]}, "not an item index"),
        ({"request": request, "candidates": np.r_[own[:9], other]}, "pass 'initial_scores'"),
        (
            {"request": request, "candidates": own, "initial_scores": np.full(10, 1e9)},
            "score range",
        ),
        ({"request": request, "initial_scores": np.zeros(10)}, "applies to 'candidates'"),
        ({"requests": [request]}, r"unknown reset option\(s\) \['requests'\]"),
    ]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            env.reset(options=options)
    # The user's own list: an item outside the request's candidates, scores given.
    mine = np.r_[own[:9], other]
    scores = np.linspace(task.scores_np.min(), task.scores_np.max(), 10)
    obs, _ = env.reset(options={"request": request, "candidates": mine, "initial_scores": scores})
    np.testing.assert_allclose(obs["initial_scores"], scores.astype(np.float32))
    _, _, _, _, info = env.step(9)
    assert info["slate_items"].tolist() == [other]


@pytest.mark.slow
def test_synthetic_world_reports_true_reward_in_the_token_space() -> None:
    from simulators.data.synthetic_config import SyntheticConfig

    small = SyntheticConfig(n_users=120, n_items=200, sessions_per_user=20, seed=3)
    env = gym.make(
        "SlateRerankGlobal-v0",
        dataset="synthetic",
        simulator="pbm",
        synthetic=small,
        progress=False,
        num_candidates=10,
    )
    info = _roll(env, np.random.default_rng(0), seed=0)[-1][2]
    assert {"true_reward", "eval_reward", "list_reward"} <= set(info)
    assert 0 <= info["true_reward"] <= 6
