"""SlateRerank environments: Gymnasium API, determinism, rewards, vector env, errors."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import rerank_env
from rerank_env import InvalidActionError, make_task
from simulators.data.errors import ConfigError
from simulators.data.synthetic_config import SyntheticConfig

# SlateRerankGlobal-v0 has its own checks (tests/test_semantic_env.py).
FAST_IDS = [
    env_id for env_id in rerank_env.VARIANTS if "Synthetic" not in env_id and "Global" not in env_id
]


def _random_episode(env, rng: np.random.Generator, seed: int | None = None, **reset_kwargs):
    """Roll one episode with uniformly random valid actions; returns the transitions."""
    obs, info = env.reset(seed=seed, **reset_kwargs)
    steps = [(obs, None, info)]
    terminated = False
    while not terminated:
        action = rng.choice(np.flatnonzero(obs["action_mask"]))
        obs, reward, terminated, truncated, info = env.step(action)
        assert not truncated
        steps.append((obs, reward, info))
    return steps


def _assert_same(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("env_id", FAST_IDS)
def test_check_env_passes_with_warnings_as_errors(env_id) -> None:
    env = gym.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    env.close()


@pytest.mark.parametrize("env_id", ["SlateRerank-v0", "SlateRerankList-v0"])
@pytest.mark.parametrize("render_mode", ["ansi", "rgb_array"])
def test_check_env_is_clean_with_every_render_mode(env_id, render_mode) -> None:
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(env_id, render_mode=render_mode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    # SB3's checker passes; it only advises a custom policy for the [N, D] candidate
    # features, which is what agents.sb3_policy.SlatePolicy is.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb3_check_env(env.unwrapped, warn=True)
    assert [str(w.message) for w in caught if "unconventional shape" not in str(w.message)] == []
    assert any("candidates has an unconventional shape" in str(w.message) for w in caught)
    env.close()


def test_rgb_array_frames_have_one_size_and_show_the_slate() -> None:
    env = gym.make("SlateRerank-v0", render_mode="rgb_array", num_candidates=10, slate_length=4)
    obs, _ = env.reset(seed=0)
    frames = [env.render()]
    for action in (3, 0, 7, 1):
        env.step(action)
        frames.append(env.render())
    for frame in frames:
        assert frame.dtype == np.uint8 and frame.shape == frames[0].shape
        assert frame.shape[2] == 3
    # Each placement draws a coloured bar: every frame differs from the one before.
    for before, after in zip(frames, frames[1:], strict=False):
        assert np.abs(before.astype(int) - after.astype(int)).sum() > 0
    list_env = gym.make("SlateRerankList-v0", render_mode="rgb_array")
    list_env.reset(seed=0)
    empty = list_env.render()
    list_env.step(np.arange(6))
    assert list_env.render().shape == empty.shape
    assert not np.array_equal(list_env.render(), empty)
    with pytest.raises(ValueError, match="render_mode must be None or one of"):
        gym.make("SlateRerank-v0", render_mode="pixels")
    # "human" is Gymnasium's: gym.make wraps an rgb_array env in HumanRendering.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        human = gym.make("SlateRerank-v0", render_mode="human")
    assert isinstance(human, gym.wrappers.HumanRendering)


def test_sb3_make_vec_env_works_unchanged() -> None:
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.env_util import make_vec_env

    envs = make_vec_env("SlateRerank-v0", n_envs=4, seed=0)  # asks for rgb_array
    assert envs.render_mode == "rgb_array"
    envs.reset()
    frames = envs.get_images()
    assert len(frames) == 4 and frames[0].dtype == np.uint8
    model = MaskablePPO("MultiInputPolicy", envs, n_steps=16, batch_size=32, seed=0)
    model.learn(64)
    assert model.num_timesteps == 64


@pytest.mark.slow
def test_synthetic_variant_reports_true_reward() -> None:
    # The small world test_clients' check_env runs on (the default one costs about a
    # minute to generate and fit): fitted once per run in the shared cache.
    small = SyntheticConfig(n_users=120, n_items=200, sessions_per_user=20, seed=3)
    env = gym.make("SlateRerankSynthetic-v0", synthetic=small)
    steps = _random_episode(env, np.random.default_rng(0), seed=1)
    info = steps[-1][2]
    assert {"true_reward", "eval_reward", "list_reward"} <= set(info)
    assert 0 <= info["true_reward"] <= 6


def test_make_without_import_and_offline_default() -> None:
    code = (
        "import gymnasium as gym; env = gym.make('rerank_env:SlateRerank-v0'); "
        "obs, _ = env.reset(seed=0); print(obs['candidates'].shape, env.unwrapped.task.summary())"
    )
    env_vars = {"RERANK_ENV_DATA": "/nonexistent", "PATH": ""}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env_vars, check=True
    )
    # 19 content columns (genres, year), then the retriever's 64 ALS factors, then
    # the initial score.
    assert "(50, 84)" in out.stdout and "ml-100k / transformer simulator" in out.stdout


def test_seeded_runs_are_identical_and_seeds_matter() -> None:
    runs = []
    for _ in range(2):
        env = gym.make("SlateRerank-v0", click_mode="sampled", reward_mode="dense")
        rng = np.random.default_rng(7)
        runs.append([_random_episode(env, rng, seed=3 if k == 0 else None) for k in range(3)])
    _assert_same(runs[0], runs[1])
    other = gym.make("SlateRerank-v0", click_mode="sampled", reward_mode="dense")
    different = _random_episode(other, np.random.default_rng(7), seed=4)
    assert different[0][2]["request"] != runs[0][0][0][2]["request"]


@pytest.mark.parametrize("click_mode", ["expected", "sampled"])
def test_dense_rewards_sum_exactly_to_the_sparse_reward(click_mode) -> None:
    dense = gym.make("SlateRerank-v0", reward_mode="dense", click_mode=click_mode)
    sparse = gym.make("SlateRerank-v0", reward_mode="sparse", click_mode=click_mode)
    for seed in range(5):
        a = _random_episode(dense, np.random.default_rng(seed), seed=seed)
        b = _random_episode(sparse, np.random.default_rng(seed), seed=seed)
        dense_rewards = [reward for _, reward, _ in a[1:]]
        sparse_rewards = [reward for _, reward, _ in b[1:]]
        assert sparse_rewards[:-1] == [0.0] * 5
        assert sum(dense_rewards) == sparse_rewards[-1] == b[-1][2]["list_reward"]
        if click_mode == "sampled":
            assert dense_rewards == [float(c) for c in a[-1][2]["clicks"]]
        else:
            np.testing.assert_allclose(dense_rewards, a[-1][2]["click_probs"])


def test_rewards_match_the_batched_scoring_api() -> None:
    env = gym.make("SlateRerank-v0", reward_mode="dense", split="test")
    task = env.unwrapped.task
    steps = _random_episode(env, np.random.default_rng(1), seed=1)
    info = steps[-1][2]
    slate = steps[-1][0]["slate"]
    values = task.prefix_values([info["request"]], slate[None])[0].numpy()
    np.testing.assert_allclose(np.diff(values, prepend=0), [r for _, r, _ in steps[1:]], rtol=1e-6)
    held_out = task.expected_reward([info["request"]], slate[None], "eval")
    assert info["eval_reward"] == pytest.approx(float(held_out[0]), rel=1e-6)
    assert info["eval_reward"] != pytest.approx(info["list_reward"], rel=1e-4)
    # Many lists in one call equal the lists scored one at a time.
    rng = np.random.default_rng(0)
    requests = task.sample_requests("test", 16, rng)
    lists = np.stack([rng.permutation(50)[:6] for _ in requests])
    batched = task.expected_reward(requests, lists)
    single = torch.cat(
        [task.expected_reward(requests[k : k + 1], lists[k : k + 1]) for k in range(16)]
    )
    torch.testing.assert_close(batched, single)
    prefixes = lists.copy()
    prefixes[:, 3:] = -1
    torch.testing.assert_close(
        task.expected_reward(requests, prefixes), task.prefix_values(requests, lists)[:, 2]
    )


@pytest.mark.parametrize("mode", [("sparse", "expected"), ("dense", "sampled")])
def test_vector_env_matches_single_envs_step_for_step(mode) -> None:
    reward_mode, click_mode = mode
    num_envs, seed = 4, 11
    vector = gym.make_vec(
        "SlateRerank-v0", num_envs=num_envs, reward_mode=reward_mode, click_mode=click_mode
    )
    assert vector.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    singles = [
        gym.make("SlateRerank-v0", reward_mode=reward_mode, click_mode=click_mode)
        for _ in range(num_envs)
    ]
    rng = np.random.default_rng(0)
    v_obs, v_info = vector.reset(seed=seed)
    s_obs = [env.reset(seed=seed + k)[0] for k, env in enumerate(singles)]
    for step in range(3 * 7):  # three episodes, with the autoreset steps
        for k in range(num_envs):
            for key in s_obs[k]:
                np.testing.assert_array_equal(v_obs[key][k], s_obs[k][key], err_msg=key)
        actions = np.array([rng.choice(np.flatnonzero(m)) for m in v_obs["action_mask"]])
        v_obs, v_rewards, v_term, v_trunc, v_info = vector.step(actions)
        if step % 7 == 6:  # NEXT_STEP autoreset: the single envs reset now
            s_obs = [env.reset()[0] for env in singles]
            assert not v_term.any() and (v_rewards == 0).all()
            continue
        for k, env in enumerate(singles):
            s_obs[k], reward, terminated, _, info = env.step(actions[k])
            assert v_rewards[k] == pytest.approx(reward, rel=1e-6, abs=1e-9)
            assert v_term[k] == terminated and not v_trunc[k]
            if terminated:
                assert v_info["eval_reward"][k] == pytest.approx(info["eval_reward"], rel=1e-6)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), picks=st.lists(st.integers(0, 10_000), min_size=6, max_size=6))
def test_an_item_is_never_placed_twice(seed, picks) -> None:
    env = gym.make("SlateRerank-PBM-v0")
    obs, _ = env.reset(seed=seed)
    for pick in picks:
        valid = np.flatnonzero(obs["action_mask"])
        assert len(valid) == 50 - obs["step"]
        action = valid[pick % len(valid)]
        placed = obs["slate"][: obs["step"]]
        with pytest.raises(InvalidActionError):
            if len(placed):
                env.step(placed[pick % len(placed)])
            else:
                raise InvalidActionError("nothing placed yet")
        obs, _, terminated, _, info = env.step(action)
    assert terminated
    assert len(set(info["slate_items"].tolist())) == 6
    assert set(info["slate_items"]) <= set(env.unwrapped.task.candidates_np[info["request"]])


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (50, r"action 50 is out of range; valid: \[0, 1, 2"),
        (-1, r"action -1 is out of range"),
        (1.0, r"action 1.0 must be an integer candidate position \(dtype float64"),
        (True, r"action True must be an integer"),
        ("3", r"action '3' must be an integer"),
        (np.array([1, 2]), r"must be one integer candidate position \(a scalar\)"),
    ],
)
def test_invalid_actions_are_refused_with_the_valid_choices(action, message) -> None:
    env = gym.make("SlateRerank-v0").unwrapped
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=message):
        env.step(action)


def test_masked_action_and_stepping_after_the_end() -> None:
    env = gym.make("SlateRerank-v0").unwrapped
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(0)
    env.reset(seed=0)
    env.step(4)
    with pytest.raises(
        InvalidActionError,
        match=r"action 4 places a candidate that is already in the slate \[4\]; "
        r"valid: \[0, 1, 2, 3, 5.*MaskablePPO.*invalid_actions='remap'",
    ):
        env.step(4)
    for action in (0, 1, 2, 3, 5):
        env.step(action)
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step(6)
    vector = gym.make_vec("SlateRerank-v0", num_envs=3)
    with pytest.raises(RuntimeError, match="before reset"):
        vector.step(np.zeros(3, dtype=int))
    vector.reset(seed=0)
    vector.step(np.array([1, 2, 3]))
    with pytest.raises(
        InvalidActionError, match="action 2 of sub-environment 1 places a candidate"
    ):
        vector.step(np.array([0, 2, 0]))


def test_action_masks_and_random_sampling_agree() -> None:
    env = gym.make("SlateRerank-v0")
    obs, _ = env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(6):
        mask = env.unwrapped.action_masks()
        np.testing.assert_array_equal(mask, obs["action_mask"].astype(bool))
        action = env.action_space.sample()
        assert mask[action]
        obs, *_ = env.step(action)


def test_vector_action_space_samples_valid_actions() -> None:
    envs = gym.make_vec("SlateRerank-v0", num_envs=64)
    envs.reset(seed=0)
    envs.action_space.seed(0)
    ended = 0
    for _ in range(2 * 7):  # two episodes with the autoreset step; a repeat would raise
        _, _, terminated, _, _ = envs.step(envs.action_space.sample())
        ended += int(terminated.all())
    assert ended == 2 and isinstance(envs.action_space, gym.spaces.MultiDiscrete)


def test_splits_never_mix() -> None:
    env = gym.make("SlateRerank-v0", split="test")
    task = env.unwrapped.task
    test_requests = set(task.requests("test").tolist())
    seen = {env.reset(seed=seed)[1]["request"] for seed in range(50)}
    assert seen <= test_requests and len(seen) > 40
    train_request = int(task.requests("train")[0])
    with pytest.raises(ValueError, match=f"request {train_request} is not a 'test' request"):
        env.reset(options={"request": train_request})
    chosen = int(task.requests("test")[5])
    assert env.reset(options={"request": chosen})[1]["request"] == chosen


def test_list_env_scores_whole_lists_and_refuses_bad_ones() -> None:
    env = gym.make("SlateRerankList-v0", split="test").unwrapped
    obs, info = env.reset(seed=0)
    assert set(obs) == {"user", "candidates", "initial_scores"}
    action = np.array([5, 0, 9, 1, 2, 3])
    _, reward, terminated, _, step_info = env.step(action)
    expected = env.task.expected_reward([info["request"]], action[None])
    assert terminated and reward == pytest.approx(float(expected[0]), rel=1e-6)
    assert step_info["eval_reward"] > 0
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=r"lists candidate 5 more than once"):
        env.step(np.array([5, 0, 5, 1, 2, 3]))
    with pytest.raises(InvalidActionError, match=r"position 50 is not a candidate"):
        env.step(np.array([50, 0, 4, 1, 2, 3]))
    with pytest.raises(InvalidActionError, match=r"has shape \(5,\)"):
        env.step(np.array([0, 1, 2, 3, 4]))
    sample = env.action_space.sample()
    assert env.action_space.contains(sample) and len(set(sample.tolist())) == 6
    assert not env.action_space.contains(np.array([1, 1, 2, 3, 4, 5]))


def test_bad_construction_arguments_are_explained(tmp_path) -> None:
    # Python's own wording, which clients such as TorchRL recognise.
    with pytest.raises(
        TypeError,
        match=r"SlateRerankEnv.__init__\(\) got an unexpected keyword argument 'num_candidate'",
    ):
        gym.make("SlateRerank-v0", num_candidate=10)
    with pytest.raises(
        ConfigError, match=r"num_candidates \(N = 4\) must be >= slate_length \(L = 6\)"
    ):
        gym.make("SlateRerank-v0", num_candidates=4)
    with pytest.raises(ConfigError, match="simulator must be one of .*, got 'dbn'"):
        gym.make("SlateRerank-v0", simulator="dbn")
    with pytest.raises(ConfigError, match="data_dir '.*nowhere' does not exist"):
        gym.make("SlateRerank-v0", dataset="ml-1m", data_dir=tmp_path / "nowhere")
    needs = "dataset=.ml-1m. needs data_dir=PATH.*grouplens.org/datasets/movielens/1m"
    with pytest.raises(ConfigError, match=needs):
        gym.make("SlateRerank-v0", dataset="ml-1m")
    with pytest.raises(ValueError, match="reward_mode must be one of"):
        gym.make("SlateRerank-v0", reward_mode="shaped")
    from simulators.bundle import DEFAULT_BUNDLE_DIR

    with pytest.raises(ConfigError, match="was built from 'ml-100k', but dataset='synthetic'"):
        make_task(dataset="synthetic", bundle=DEFAULT_BUNDLE_DIR)
    with pytest.raises(
        ConfigError, match="slate_length=7 but the simulators of .* know 6 positions"
    ):
        make_task(bundle=DEFAULT_BUNDLE_DIR, slate_length=7, num_candidates=50)


def test_envs_take_a_built_task_or_a_config_and_their_spec_rebuilds_them() -> None:
    from rerank_env import TaskConfig
    from rerank_env.vector import SlateRerankVectorEnv

    config = TaskConfig(num_candidates=12, slate_length=4)
    task = make_task(config)
    assert task.config == config and make_task(num_candidates=12, slate_length=4).config == config
    by_fields = gym.make("SlateRerank-v0", num_candidates=12, slate_length=4)
    by_config = gym.make("SlateRerank-v0", task=config)
    by_task = gym.make("SlateRerank-v0", task=task)
    assert by_task.unwrapped.task is task  # shared as it is, not rebuilt
    rebuilt = gym.make(by_fields.spec)
    episodes = [
        _random_episode(env, np.random.default_rng(3), seed=3)
        for env in (by_fields, by_config, by_task, rebuilt)
    ]
    for other in episodes[1:]:
        _assert_same(episodes[0], other)
    vector = SlateRerankVectorEnv(2, task=task)
    assert vector.task is task and gym.make("SlateRerankList-v0", task=task).unwrapped.task is task
    with pytest.raises(TypeError, match="a built task is used as it is; pass a TaskConfig"):
        gym.make("SlateRerank-v0", task=task, num_candidates=10)
    with pytest.raises(TypeError, match="task must be a RerankTask, a TaskConfig or None"):
        gym.make("SlateRerank-v0", task={"num_candidates": 10})
    # Fields on top of a config; the config is validated again.
    assert (
        gym.make("SlateRerank-v0", task=config, num_candidates=8).unwrapped.task.num_candidates == 8
    )
    with pytest.raises(ConfigError, match=r"num_candidates \(N = 3\) must be >= slate_length"):
        config.replace(num_candidates=3)
    with pytest.raises(ConfigError, match=r"unknown TaskConfig field\(s\) \['n'\]"):
        config.replace(n=3)


def test_task_config_normalises_what_it_is_given(tmp_path) -> None:
    from rerank_env import AssumedComposition, TaskConfig
    from simulators.data.synthetic_config import SyntheticConfig

    assert TaskConfig(composition="assumed").composition == AssumedComposition()
    # The default composition is the dataset's, also after a change of dataset.
    assert TaskConfig().resolved_composition() == AssumedComposition()
    assert TaskConfig().replace(dataset="synthetic").resolved_composition() == "fitted"
    assert TaskConfig(dataset="synthetic", composition="none").resolved_composition() == "none"
    assert TaskConfig(composition={"position_bias": 0.5}).composition == AssumedComposition(0.5)
    assert TaskConfig(dataset="synthetic", slate_length=5).synthetic == SyntheticConfig(
        slate_length=5
    )
    assert TaskConfig(data_dir=tmp_path).data_dir == str(tmp_path.resolve())
    assert TaskConfig.for_env("SlateRerank-PBM-v0", {"reward_mode": "dense"}) == TaskConfig(
        simulator="pbm"
    )
    with pytest.raises(ConfigError, match="unknown environment 'CartPole-v1'"):
        TaskConfig.for_env("CartPole-v1")
    with pytest.raises(ConfigError, match="cold_start must be a ColdStartConfig"):
        TaskConfig(cold_start=0.1)
    with pytest.raises(ConfigError, match="synthetic=... only applies to dataset='synthetic'"):
        TaskConfig(synthetic=SyntheticConfig())
    described = make_task(composition="none").description
    assert described["composition"] == "none" and described["fitted_composition"] is None
    assert make_task().description["composition"] == {
        "position_bias": 1.0,
        "diversity_strength": 2.0,
    }


def test_smaller_lists_and_composition_options() -> None:
    env = gym.make(
        "SlateRerank-v0",
        num_candidates=10,
        slate_length=4,
        composition={"diversity_strength": 0.0},
    )
    obs, _ = env.reset(seed=0)
    assert obs["candidates"].shape[0] == 10 and obs["slate"].shape == (4,)
    steps = _random_episode(env, np.random.default_rng(0), seed=0)
    assert len(steps) == 5
    text = gym.make("SlateRerank-v0", render_mode="ansi")
    text.reset(seed=0)
    text.step(0)
    assert "p(click)" in text.render()
    indices = gym.make("SlateRerank-v0", features="indices")
    obs, info = indices.reset(seed=0)
    task = indices.unwrapped.task
    np.testing.assert_array_equal(obs["candidates"], task.candidates_np[info["request"]])


def test_ml1m_format_dataset_from_a_user_path(tmp_path) -> None:
    from simulators.data.synthetic_config import SyntheticConfig
    from simulators.data.synthetic_world import SyntheticWorld

    # A small world written in the ML-1M format stands in for the real ML-1M files.
    folder = SyntheticWorld(
        SyntheticConfig(n_users=120, n_items=200, sessions_per_user=20, seed=3)
    ).write_logs(tmp_path / "ml-1m")
    env = gym.make(
        "SlateRerank-v0", dataset="ml-1m", data_dir=folder, simulator="pbm", progress=False
    )
    task = env.unwrapped.task
    assert task.description["dataset"] == "ml-1m" and not task.description["embedded_bundle"]
    steps = _random_episode(env, np.random.default_rng(0), seed=0)
    assert steps[-1][2]["eval_reward"] > 0 and "true_reward" not in steps[-1][2]
    # The fitted bundle lives in the user cache, never in the package.
    assert task.description["bundle"].startswith(os.environ["RERANK_ENV_CACHE"])


def test_review_edge_cases_are_refused_or_handled() -> None:
    vector = gym.make_vec("SlateRerank-v0", num_envs=2)
    vector.reset(seed=0)
    with pytest.raises(InvalidActionError, match=r"shape \(\) given; expected .* shape \(2,\)"):
        vector.step(np.int64(3))
    with pytest.raises(InvalidActionError, match=r"shape \(2, 1\)"):
        vector.step(np.array([[1], [2]]))
    obs, _ = vector.reset(seed=[5, None])
    single = gym.make("SlateRerank-v0")
    np.testing.assert_array_equal(obs["candidates"][0], single.reset(seed=5)[0]["candidates"])
    with pytest.raises(ValueError, match="read-only"):
        obs["candidates"][0, 0, 0] = 1.0
    # A refused forced request consumes no randomness and keeps the running episode.
    env = gym.make("SlateRerank-v0", split="test")
    env.reset(seed=3)
    train_request = int(env.unwrapped.task.requests("train")[0])
    with pytest.raises(ValueError, match="is not a 'test' request"):
        env.reset(options={"request": train_request})
    with pytest.raises(ValueError, match="integer request indices"):
        env.reset(options={"request": 44.7})
    after, _ = env.reset()
    fresh = gym.make("SlateRerank-v0", split="test")
    fresh.reset(seed=3)
    np.testing.assert_array_equal(after["candidates"], fresh.reset()[0]["candidates"])
    task = env.unwrapped.task
    with pytest.raises(ValueError, match="request indices in 0.."):
        task.expected_reward([-1], np.array([[0, 1]]))
    # Shared simulators must stay in eval mode.
    task.simulators["train"].train()
    try:
        with pytest.raises(RuntimeError, match="train mode"):
            env.step(0)
    finally:
        task.simulators["train"].eval()


def test_pointwise_simulator_on_the_default_dataset_is_fitted_into_the_cache(data_root) -> None:
    from simulators.data import PipelineConfig

    # The embedded bundle has no pointwise model: it is fitted on first use, in the cache.
    task = make_task(simulator="pointwise", pipeline=PipelineConfig(), progress=False)
    assert not task.description["embedded_bundle"]
    assert task.description["bundle"].startswith(os.environ["RERANK_ENV_CACHE"])


def test_the_gr2_protocol_task_offers_k_candidates_holding_the_next_item() -> None:
    task = make_task(protocol="gr2", slate_length=5)
    assert task.description["protocol"] == "gr2" and task.config.protocol == "gr2"
    assert (task.num_candidates, task.slate_length) == (10, 5)
    requests = task.requests("test")
    targets = task.pool.gr2_target_pos[requests]
    assert len(requests) == 243 and ((targets >= 0) & (targets < 10)).all()
    # The request's next item is among its candidates, where gr2_target_pos says.
    rebuilt = make_task(task.config)
    assert np.array_equal(rebuilt.candidates_np, task.candidates_np)
    with pytest.raises(ConfigError, match="protocol must be one of"):
        make_task(protocol="listwise")
    with pytest.raises(ConfigError, match="slate_length must be <= 10"):
        make_task(protocol="gr2", slate_length=12, num_candidates=50)
