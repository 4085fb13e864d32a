"""GloRank: trie-constrained decoding, SFT, PPO, the local twin, seeds and checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.base import UnsupportedTaskError
from agents.common.nn import RequestInputs
from agents.glorank import GloRank, GloRankConfig, GloRankPolicy, output_gradient_variance
from agents.registry import make_agent
from simulators.checkpoint import CheckpointError
from simulators.data.errors import ConfigError
from simulators.data.semantic_id_config import SemanticIdConfig

#: Stage 1 on 128 logged demonstrations and a few PPO iterations on the small task.
TINY = GloRankConfig.tiny(sft_source="logged", train_requests=500)


def _random_requests(seed: int, batch: int, n: int, levels: int, codebook: int):
    """Random features and code tables with few codes per level (shared prefixes)."""
    rng = np.random.default_rng(seed)
    inputs = RequestInputs(
        torch.as_tensor(rng.normal(size=(batch, 5)), dtype=torch.float32),
        torch.as_tensor(rng.normal(size=(batch, n, 7)), dtype=torch.float32),
        torch.as_tensor(rng.normal(size=(batch, n)), dtype=torch.float32),
    )
    codes = rng.integers(0, codebook, (batch, n, levels))
    # Make every candidate's code unique within its request with one extra level.
    _, rank = np.unique(codes.reshape(batch * n, levels), axis=0, return_inverse=True)
    index = np.zeros((batch, n), dtype=np.int64)
    for b in range(batch):
        seen: dict[tuple, int] = {}
        for j in range(n):
            key = tuple(codes[b, j])
            index[b, j] = seen.get(key, 0)
            seen[key] = index[b, j] + 1
    codes = np.concatenate([codes, index[..., None]], axis=2)
    offsets = codebook * np.arange(levels + 1)
    return inputs, torch.as_tensor(codes + offsets), codebook * levels + n


def _brute_force_masks(lists: np.ndarray, tokens: np.ndarray, vocab: int) -> np.ndarray:
    batch, length = lists.shape
    levels = tokens.shape[2]
    masks = np.zeros((batch, length * levels, vocab), dtype=bool)
    for b in range(batch):
        for k in range(length):
            placed = set(lists[b, :k].tolist())
            target = tokens[b, lists[b, k]]
            for level in range(levels):
                for j in range(tokens.shape[1]):
                    if j not in placed and (tokens[b, j, :level] == target[:level]).all():
                        masks[b, k * levels + level, tokens[b, j, level]] = True
    return masks


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(4, 9),
    levels=st.integers(1, 3),
    codebook=st.integers(2, 3),
    head=st.sampled_from(["global", "local", "index"]),
)
def test_decoded_lists_are_valid_and_match_teacher_forcing(seed, n, levels, codebook, head):
    """Random candidate sets whose codes collide on every level but the extra one."""
    inputs, tokens, vocab = _random_requests(seed, 3, n, levels, codebook)
    torch.manual_seed(seed)
    policy = GloRankPolicy(5, 7, vocab, levels + 1, head=head, dim=16, heads=2, max_length=4)
    length = min(4, n)
    generator = torch.Generator().manual_seed(seed)
    prefix = torch.full((3, length), -1)
    prefix[0, 0] = n - 1  # one request starts with its last candidate
    for mode in ("greedy", "sample", "beam"):
        lists, log_probs = policy.decode(
            inputs, tokens, length, mode=mode, generator=generator, beam_width=3, prefix=prefix
        )
        assert lists.shape == (3, length)
        for row in lists.tolist():
            assert len(set(row)) == length and all(0 <= p < n for p in row)
        assert lists[0, 0] == n - 1 and log_probs[0, 0] == 0  # forced, not chosen
        taken, _, _, _ = policy.evaluate(inputs, tokens, lists)
        free = torch.ones_like(taken, dtype=torch.bool)
        free[0, : policy.steps_per_item] = False
        torch.testing.assert_close(taken[free], log_probs[free], atol=1e-5, rtol=1e-5)
    if head == "global":  # the teacher-forced masks are the trie, by brute force
        masks = policy.teacher_masks(lists, tokens).numpy()
        np.testing.assert_array_equal(
            masks, _brute_force_masks(lists.numpy(), tokens.numpy(), vocab)
        )


def test_beam_search_finds_lists_at_least_as_likely_as_greedy() -> None:
    inputs, tokens, vocab = _random_requests(0, 8, 8, 2, 3)
    torch.manual_seed(0)
    policy = GloRankPolicy(5, 7, vocab, 3, dim=16, heads=2, max_length=4)
    _, greedy = policy.decode(inputs, tokens, 4, mode="greedy")
    _, beam = policy.decode(inputs, tokens, 4, mode="beam", beam_width=6)
    assert (beam.sum(dim=1) >= greedy.sum(dim=1) - 1e-5).all()


def test_sft_raises_token_accuracy_and_ppo_improves_on_its_start(small_task) -> None:
    agent = GloRank(TINY.replace(sft_epochs=6, ppo_iterations=30, eval_every=10, seed=1))
    agent.fit(small_task)
    sft = [row for row in agent.history if row["stage"] == "sft"]
    steps = len(sft) // 6
    first = np.mean([row["token_accuracy"] for row in sft[:steps]])
    last = np.mean([row["token_accuracy"] for row in sft[-steps:]])
    assert last > first + 0.05
    curve = [row for row in agent.history if row["stage"] == "curve"]
    after_sft = next(row for row in curve if row["sft_done"] and row["iteration"] == 0)
    best_ppo = max(row["valid_reward"] for row in curve if row["iteration"] > 0)
    assert best_ppo > after_sft["valid_reward"]
    ppo = [row for row in agent.history if row["stage"] == "ppo"]
    assert {"approx_kl", "clip_fraction", "value_loss", "entropy", "grad_norm"} <= set(ppo[0])
    lists = agent.rank(small_task, small_task.requests("test")[:64])
    assert all(len(set(row)) == small_task.slate_length for row in lists.tolist())


def test_local_twin_has_the_same_backbone_and_budget(small_task) -> None:
    glo = GloRank(TINY.replace(ppo_iterations=1)).setup(small_task)
    local = GloRank(TINY.replace(ppo_iterations=1, head="local")).setup(small_task)
    assert local.name == "glorank-local-logged" and glo.name == "glorank-logged"
    shared = {
        name: p.shape
        for name, p in glo.modules["policy"].named_parameters()
        if not name.startswith(("output", "query", "key"))
    }
    local_shared = {
        name: p.shape
        for name, p in local.modules["policy"].named_parameters()
        if not name.startswith(("output", "query", "key"))
    }
    assert shared == local_shared  # only the output head differs
    ratio = glo.parameter_count() / local.parameter_count()
    assert 0.9 < ratio < 1.1


def test_seeded_runs_are_identical_and_seeds_matter(small_task) -> None:
    config = TINY.replace(sft_epochs=1, ppo_iterations=2, eval_every=2)
    requests = small_task.requests("test")[:32]
    runs = [GloRank(config).fit(small_task) for _ in range(2)]
    assert runs[0].history == runs[1].history
    np.testing.assert_array_equal(
        runs[0].rank(small_task, requests), runs[1].rank(small_task, requests)
    )
    np.testing.assert_array_equal(
        runs[0].sample(small_task, requests, 3, seed=4),
        runs[1].sample(small_task, requests, 3, seed=4),
    )
    other = GloRank(config.replace(seed=1)).fit(small_task)
    assert other.history != runs[0].history


def test_checkpoints_round_trip_and_refuse_other_semantic_ids(small_task, tmp_path) -> None:
    from rerank_env import make_task

    agent = GloRank(TINY.replace(sft_epochs=1, ppo_iterations=1)).fit(small_task)
    path = agent.save(tmp_path / "glorank.pt")
    loaded = GloRank.load(path)
    requests = small_task.requests("test")[:32]
    np.testing.assert_array_equal(
        loaded.rank(small_task, requests), agent.rank(small_task, requests)
    )
    other_ids = make_task(
        num_candidates=10,
        slate_length=4,
        semantic_ids=SemanticIdConfig(levels=2, codebook_size=32, collisions="extra-level"),
    )
    with pytest.raises(UnsupportedTaskError, match="other semantic IDs"):
        loaded.rank(other_ids, requests)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="damaged, truncated"):
        GloRank.load(path)


def test_bad_settings_are_refused_and_registered_variants_build() -> None:
    with pytest.raises(ConfigError, match="head must be one of"):
        GloRankConfig(head="both")
    with pytest.raises(ConfigError, match="trains nothing"):
        GloRankConfig(sft_source="none", ppo_iterations=0)
    with pytest.raises(ConfigError, match="clip_high must be in"):
        GloRankConfig(clip_high=1.5)
    with pytest.raises(ConfigError, match="needs group_size >= 2"):
        GloRankConfig(advantage="grpo", group_size=1)
    names = {
        name: make_agent(name, budget="tiny").name
        for name in ("glorank", "glorank-local", "glorank-index", "glorank-sft", "glorank-scratch")
    }
    assert names == {
        "glorank": "glorank",
        "glorank-local": "glorank-local",
        "glorank-index": "glorank-index",
        "glorank-sft": "glorank-sft",
        "glorank-scratch": "glorank-scratch",
    }


def test_index_head_scores_positions_and_refuses_more_candidates(small_task) -> None:
    from rerank_env import make_task

    agent = GloRank(TINY.replace(head="index", sft_epochs=1, ppo_iterations=1)).fit(small_task)
    policy = agent.modules["policy"]
    assert policy.output.out_features == small_task.num_candidates
    assert policy.output_parameters() == [policy.output.weight]
    lists = agent.rank(small_task, small_task.requests("test")[:16])
    assert all(len(set(row)) == small_task.slate_length for row in lists.tolist())
    wider = make_task(num_candidates=20, slate_length=4)
    with pytest.raises(UnsupportedTaskError, match="index head over 10"):
        agent.rank(wider, wider.requests("test")[:2])


@pytest.mark.parametrize("advantage", ["group-mean", "grpo", "gae"])
def test_every_advantage_and_kl_to_the_sft_policy_train(small_task, advantage) -> None:
    config = TINY.replace(
        sft_epochs=1, ppo_iterations=2, advantage=advantage, kl_coef=0.1, clip_high=0.28
    )
    agent = GloRank(config).fit(small_task)
    ppo = [row for row in agent.history if row["stage"] == "ppo"]
    assert len(ppo) == 2
    # Only GAE trains the value head; the KL estimator is >= 0 (up to rounding).
    assert all((row["value_loss"] > 0) == (advantage == "gae") for row in ppo)
    assert all(np.isfinite(row["kl_to_sft"]) and row["kl_to_sft"] >= -1e-6 for row in ppo)


@pytest.mark.parametrize("head", ["global", "local", "index"])
def test_output_gradient_variance_measures_the_spread_across_batches(small_task, head) -> None:
    policy = GloRank(TINY.replace(head=head)).setup(small_task).modules["policy"]
    rows = small_task.requests("valid")[:16]
    lists = np.tile(np.arange(4), (16, 1))
    # The same mini-batch twice: the gradient does not vary.
    same = output_gradient_variance(
        policy, small_task, np.tile(rows[:8], 2), np.tile(lists[:8], (2, 1)), batch_size=8
    )
    assert same["variance"] < 1e-12 * max(same["mean_norm2"], 1) and same["mean_norm2"] > 0
    other = output_gradient_variance(policy, small_task, rows, lists, batch_size=4)
    assert other["batches"] == 4 and other["variance"] > 0 and np.isfinite(other["relative"])
    with pytest.raises(ValueError, match="a variance needs at least 2"):
        output_gradient_variance(policy, small_task, rows[:4], lists[:4], batch_size=4)


def test_decoder_cache_equals_the_full_decoder_step_by_step() -> None:
    from agents.common.nn import DecoderCache, decoder_stack

    torch.manual_seed(0)
    decoder = decoder_stack(16, 2, 2).eval()
    memory, sequence = torch.randn(5, 7, 16), torch.randn(5, 4, 16)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(4)
    with torch.no_grad():
        full = decoder(sequence, memory, tgt_mask=causal, tgt_is_causal=True)
        cache = DecoderCache(decoder, memory)
        steps = [cache.step(sequence[:, t : t + 1]) for t in range(3)]
        # Reordering rows (a beam's parents) keeps each row's own history.
        rows = torch.tensor([4, 0, 0, 2, 1])
        cache.select(rows)
        last = cache.step(sequence[rows, 3:4])
    torch.testing.assert_close(torch.cat(steps, dim=1), full[:, :3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(last[:, 0], full[rows, 3], atol=1e-5, rtol=1e-5)
    post_norm = torch.nn.TransformerDecoder(
        torch.nn.TransformerDecoderLayer(16, 2, 32, batch_first=True), 1
    )
    with pytest.raises(ValueError, match="norm_first"):
        DecoderCache(post_norm, memory)
