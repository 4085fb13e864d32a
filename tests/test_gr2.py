"""GR2: its language, the decoding constraint, rewards, the teacher and a tiny end-to-end fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("transformers")

from agents.base import UnsupportedTaskError  # noqa: E402
from agents.common.losses import clipped_surrogate_loss  # noqa: E402
from agents.common.scorers import SimulatorScorer  # noqa: E402
from agents.gr2 import language as lang  # noqa: E402
from agents.gr2.agent import GR2  # noqa: E402
from agents.gr2.config import GR2Config  # noqa: E402
from agents.gr2.constraint import DecodingConstraint, replay_masks  # noqa: E402
from agents.gr2.model import build_student, generate, token_log_probs  # noqa: E402
from agents.gr2.rewards import (  # noqa: E402
    format_reward,
    informative_groups,
    kendall_tau_to_input,
    order_diagnostics,
    overlong_penalty,
    rank_reward,
)
from agents.gr2.teacher import teach  # noqa: E402
from simulators.data.errors import ConfigError  # noqa: E402

TINY = GR2Config.tiny()


@pytest.fixture(scope="module")
def gr2_task(small_task):
    return small_task.gr2_task()


@pytest.fixture(scope="module")
def trained(gr2_task):
    return GR2(TINY).fit(gr2_task)


def _vocab(k: int, sizes: tuple[int, ...]) -> lang.GR2Vocabulary:
    return lang.GR2Vocabulary(5, 3, 2, k, sizes)


def _random_codes(rng: np.random.Generator, rows: int, k: int, sizes, vocab) -> torch.Tensor:
    """Candidate codes that share prefixes often (few codes per level), unique per row."""
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]) + vocab.sid_offset
    out = np.zeros((rows, k, len(sizes)), dtype=np.int64)
    for row in range(rows):
        space = np.array(np.meshgrid(*[np.arange(s) for s in sizes])).reshape(len(sizes), -1).T
        out[row] = space[rng.choice(len(space), k, replace=False)] + offsets
    return torch.as_tensor(out)


# ------------------------------------------------------------------ the constraint


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(2, 8),
    sizes=st.sampled_from([(2, 2, 2), (3, 4), (2, 3, 2, 2), (9,)]),
    max_reasoning=st.integers(1, 6),
)
def test_any_walk_the_constraint_allows_ends_in_a_complete_ranking(seed, k, sizes, max_reasoning):
    """Random allowed tokens at every step: always a full permutation, then <eos>, <pad>."""
    if np.prod(sizes) < k:
        return
    rng = np.random.default_rng(seed)
    vocab = _vocab(k, sizes)
    codes = _random_codes(rng, 6, k, sizes, vocab)
    constraint = DecodingConstraint(vocab, codes, max_reasoning)
    generator = torch.Generator().manual_seed(seed)
    written, masks = [], []
    for _ in range(max_reasoning + 2 + k * len(sizes) + 2):
        allowed = constraint.allowed()
        assert allowed.any(dim=1).all()
        token = torch.multinomial(allowed.float(), 1, generator=generator).squeeze(1)
        masks.append(allowed)
        written.append(token)
        constraint.advance(token)
    written = torch.stack(written, dim=1)
    for row in range(6):
        assert sorted(constraint.ranking[row].tolist()) == list(range(k))
        tokens = written[row].tolist()
        close = tokens.index(vocab.id("</think>"))
        assert close <= max_reasoning and tokens[close + 1] == vocab.id("<rank>")
        # Every complete citation in the rationale names a distinct candidate.
        candidate_codes = [tuple(c) for c in codes[row].tolist()]
        starts = [i for i, t in enumerate(tokens[:close]) if t == vocab.id("<cand>")]
        cited = [tuple(tokens[i + 1 : i + 1 + len(sizes)]) for i in starts]
        cited = [c for c, i in zip(cited, starts, strict=True) if i + len(sizes) < close]
        assert all(c in candidate_codes for c in cited) and len(set(cited)) == len(cited)
        assert constraint.cited[row].sum() == len(cited)
        answer = tokens[close + 2 : close + 2 + k * len(sizes)]
        # The codes written are those of the ranking, in order.
        expected = codes[row][constraint.ranking[row]].reshape(-1).tolist()
        assert answer == expected
        assert tokens[close + 2 + k * len(sizes)] == vocab.id("<eos>")
        assert set(tokens[close + 3 + k * len(sizes) :]) <= {vocab.id("<pad>")}
    assert (constraint.forced_close == (constraint.reasoning_length >= max_reasoning)).all()
    replayed, final = replay_masks(vocab, codes, written, max_reasoning)
    assert torch.equal(replayed, torch.stack(masks, dim=1))
    assert torch.equal(final.ranking, constraint.ranking)


def test_the_ranking_trie_admits_only_codes_of_unplaced_candidates() -> None:
    vocab = _vocab(3, (2, 2))
    s = vocab.sid_offset
    codes = torch.tensor([[[s + 0, s + 2], [s + 0, s + 3], [s + 1, s + 2]]])
    constraint = DecodingConstraint(vocab, codes, 4)
    for token in ("</think>", "<rank>"):
        constraint.advance(torch.tensor([vocab.id(token)]))
    allowed = lambda: set(torch.nonzero(constraint.allowed()[0]).flatten().tolist())  # noqa: E731
    assert allowed() == {s + 0, s + 1}
    constraint.advance(torch.tensor([s + 0]))
    assert allowed() == {s + 2, s + 3}
    constraint.advance(torch.tensor([s + 3]))  # candidate 1 placed
    assert constraint.ranking[0, 0] == 1 and allowed() == {s + 0, s + 1}
    constraint.advance(torch.tensor([s + 0]))
    assert allowed() == {s + 2}  # only candidate 0 remains under prefix 0
    constraint.advance(torch.tensor([s + 2]))
    assert allowed() == {s + 1}


def test_transformers_generate_with_the_logits_processor_ranks_every_candidate() -> None:
    """The logits-processor route of transformers 5 drives the constraint, greedy and sampled."""
    rng = np.random.default_rng(0)
    vocab = _vocab(5, (3, 3))
    codes = _random_codes(rng, 4, 5, (3, 3), vocab)
    torch.manual_seed(0)
    model = build_student(vocab, dim=16, layers=1, heads=2, intermediate=32, max_length=128)
    prompts = [
        np.array([vocab.id("<bos>"), vocab.id("<cands>")] + [vocab.id("<think>")] * n)
        for n in (1, 3, 2, 1)
    ]
    for sample in (False, True):
        written, state = generate(model, vocab, prompts, codes, 6, sample=sample)
        for row in range(4):
            assert sorted(state.ranking[row].tolist()) == list(range(5))
            assert vocab.id("<eos>") in written[row].tolist()
    again, _ = generate(model, vocab, prompts, codes, 6)
    first, _ = generate(model, vocab, prompts, codes, 6)
    assert torch.equal(first, again)  # greedy decoding is deterministic


# ------------------------------------------------------------------ language


def test_teacher_rationales_are_well_formed_and_broken_ones_are_not(gr2_task) -> None:
    vocab = lang.vocabulary_for(gr2_task, 4, 3)
    facts = lang.ItemFacts.from_task(gr2_task, vocab)
    requests = gr2_task.requests("train")[:20]
    histories = lang.recent_history(gr2_task, requests, 10)
    for history, request in zip(histories, requests, strict=True):
        candidates = gr2_task.candidates_np[request]
        sids = facts.sid_tokens[candidates]
        ranking = np.random.default_rng(int(request)).permutation(len(candidates))
        text = lang.rationale(vocab, facts, history, candidates, ranking, 3)
        assert len(text) <= lang.longest_rationale(vocab, 3)
        assert lang.well_formed(vocab, text, sids)
        assert not lang.well_formed(vocab, text[:-1], sids)  # not closed
        assert not lang.well_formed(vocab, text[1:], sids)  # no <user>
        cand = vocab.id("<cand>")
        first = int(np.flatnonzero(text == cand)[0])
        block = text[first : first + 1 + vocab.levels + 5]
        twice = np.concatenate([text[: first + len(block)], block, text[first + len(block) :]])
        assert not lang.well_formed(vocab, twice, sids)  # one candidate cited twice
        swapped = text.copy()
        swapped[first + 1 + vocab.levels] = vocab.id("year_0")  # pos word expected
        assert not lang.well_formed(vocab, swapped, sids)
        other = facts.sid_tokens[np.setdiff1d(np.arange(len(facts.sid_tokens)), candidates)[0]]
        foreign = text.copy()
        foreign[first + 1 : first + 1 + vocab.levels] = other
        assert not lang.well_formed(vocab, foreign, sids)  # not a candidate of the request
    assert "<rank>" in vocab.describe(lang.answer(vocab, facts, candidates, ranking))


def test_facts_come_from_the_training_split(gr2_task) -> None:
    vocab = lang.vocabulary_for(gr2_task, 4, 3)
    facts = lang.ItemFacts.from_task(gr2_task, vocab)
    trained = gr2_task.pool.trained_items()
    assert set(np.unique(facts.year_bucket)) <= set(range(4))
    assert (facts.popularity_bucket[~trained] == 0).all()  # no training interactions
    counts = np.bincount(facts.year_bucket[trained], minlength=4) / trained.sum()
    assert counts.min() > 0.1  # quantile buckets of the training items
    with pytest.raises(KeyError, match="'genre_99' is not a GR2 token"):
        vocab.id("genre_99")


# ------------------------------------------------------------------ rewards


def test_rank_and_format_rewards_on_hand_computed_cases() -> None:
    pre = np.array([3, 3, 1, 5, 2])
    post = np.array([1, 3, 1, 7, 2])
    r_rank = rank_reward(pre, post, 10)
    np.testing.assert_allclose(r_rank, [0.2, 0.0, 0.0, -0.2, 0.0])
    formed = np.array([True, True, True, True, False])
    np.testing.assert_allclose(
        format_reward(r_rank, pre, formed, 0.5, "conditional"), [0.5, 0.0, 0.5, 0.0, 0.0]
    )
    np.testing.assert_allclose(
        format_reward(r_rank, pre, formed, 0.5, "unconditional"), [0.5, 0.5, 0.5, 0.5, 0.0]
    )
    assert not format_reward(r_rank, pre, formed, 0.5, "none").any()
    with pytest.raises(ValueError, match="must be one of"):
        format_reward(r_rank, pre, formed, 0.5, "always")


def test_overlong_shaping_and_dynamic_sampling() -> None:
    np.testing.assert_allclose(
        overlong_penalty(np.array([10, 12, 14, 16, 20]), 16, 4), [0, 0, -0.5, -1, -1]
    )
    np.testing.assert_allclose(overlong_penalty(np.array([16, 17]), 16, 0), [0, -1])
    groups = np.array([[0.1, 0.1, 0.1], [0.0, 0.2, 0.0], [-1, -1, -1]])
    assert informative_groups(groups).tolist() == [False, True, False]


def test_order_diagnostics_measure_copying_the_input() -> None:
    rankings = np.array([[0, 1, 2, 3], [3, 2, 1, 0], [1, 0, 2, 3]])
    np.testing.assert_allclose(kendall_tau_to_input(rankings), [1.0, -1.0, 4 / 6])
    report = order_diagnostics(rankings, np.array([2, 2, 0]), np.array([True, False, True]))
    assert report["copy_share"] == pytest.approx(1 / 3)
    assert report["target_rank_before"] == pytest.approx((3 + 3 + 1) / 3)
    assert report["target_rank_after"] == pytest.approx((3 + 2 + 2) / 3)
    assert report["format_breaks"] == pytest.approx(1 / 3)


def test_dapo_loss_equals_a_hand_computed_value() -> None:
    """Clip-higher (0.2 / 0.28) and token-level normalisation over a ragged batch."""
    new = torch.log(torch.tensor([[1.5, 1.1, 0.5], [0.7, 1.0, 1.0]]))
    old = torch.zeros(2, 3)
    advantage = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    loss, _ = clipped_surrogate_loss(
        new, old, advantage, mask=mask, clip_low=0.2, clip_high=0.28, token_level=True
    )
    # Row 1 (A = 1): min(r, clip(r, 0.8, 1.28)): 1.28, 1.1, 0.5. Row 2 (A = -2):
    # min(-2r, -2 clip(r)): -2 * max(r, clip(r)) = -1.6, -2.0 (the padded token is out).
    expected = -(1.28 + 1.1 + 0.5 - 1.6 - 2.0) / 5
    assert loss.item() == pytest.approx(expected, abs=1e-6)


# ------------------------------------------------------------------ teacher


def test_rejection_sampling_keeps_only_rankings_with_the_true_item_first(gr2_task) -> None:
    requests = gr2_task.requests("train")[:200]
    targets = gr2_task.pool.gr2_target_pos[requests]
    scorer = SimulatorScorer("train")
    kept = teach(gr2_task, requests, targets, scorer, np.random.default_rng(0), attempts=4)
    assert 0 < kept.acceptance_rate < 1
    index = np.searchsorted(requests, kept.requests)
    assert (kept.rankings[:, 0] == targets[index]).all()
    k = gr2_task.num_candidates
    assert all(sorted(row) == list(range(k)) for row in kept.rankings.tolist())
    assert (kept.attempts >= 1).all() and (kept.attempts <= 4).all()
    more = teach(gr2_task, requests, targets, scorer, np.random.default_rng(0), attempts=16)
    assert more.acceptance_rate >= kept.acceptance_rate  # more tries, more kept
    targeted = teach(gr2_task, requests, targets, scorer, np.random.default_rng(0), mode="targeted")
    assert targeted.acceptance_rate == 1 and (targeted.rankings[:, 0] == targets).all()
    with pytest.raises(ValueError, match="'rejection' or 'targeted'"):
        teach(gr2_task, requests, targets, scorer, np.random.default_rng(0), mode="oracle")


# ------------------------------------------------------------------ the agent


def test_config_refuses_bad_values_and_names_the_ablations() -> None:
    with pytest.raises(ConfigError, match="format_reward must be one of"):
        GR2Config(format_reward="always")
    with pytest.raises(ConfigError, match="mid_tasks must be a non-empty subset"):
        GR2Config(mid_tasks=("next-sid", "poetry"))
    with pytest.raises(ConfigError, match="overlong_cache"):
        GR2Config(max_reasoning_tokens=20, overlong_cache=20)
    assert GR2Config().name == "gr2"
    assert GR2Config(dapo_iterations=0).name == "gr2-sft"
    assert GR2Config(teacher="targeted", dapo_iterations=0).name == "gr2-targeted-sft"
    assert GR2Config(format_reward="unconditional").name == "gr2-unconditional"
    assert GR2Config(mid_steps=0).name == "gr2-no-mid"
    from agents.registry import make_agent

    for name in ("gr2", "gr2-sft", "gr2-targeted-sft", "gr2-unconditional", "gr2-no-mid"):
        assert make_agent(name, budget="tiny").name == name


def test_a_tiny_fit_ranks_validly_logs_every_stage_and_is_seeded(trained, gr2_task) -> None:
    stages = {row["stage"] for row in trained.history}
    assert {"mid", "mid_report", "teacher", "sft", "dapo", "curve"} <= stages
    dapo = [row for row in trained.history if row["stage"] == "dapo"]
    for key in (
        "copy_share",
        "kendall_tau",
        "target_rank_before",
        "target_rank_after",
        "format_breaks",
        "kept_groups",
        "clip_fraction",
        "rank_reward",
    ):
        assert key in dapo[0], key
    requests = gr2_task.requests("test")[:16]
    lists = trained.rank(gr2_task, requests)
    assert lists.shape == (16, gr2_task.slate_length)
    assert all(len(set(row)) == len(row) for row in lists.tolist())
    again = GR2(TINY).fit(gr2_task)
    np.testing.assert_array_equal(again.rank(gr2_task, requests), lists)
    prefixes = np.full((16, gr2_task.slate_length), -1)
    prefixes[:, 0] = 9
    assert (trained.rank(gr2_task, requests, prefixes)[:, 0] == 9).all()
    assert "<rank>" in trained.explain(gr2_task, requests[:1])[0]


def test_branching_between_stages_gives_the_runs_of_separate_fits(trained, gr2_task) -> None:
    """One mid-training + SFT, branched into two DAPO runs and a targeted SFT, equals
    three fits: each stage seeds itself, so studies can share the stages they share."""
    requests = gr2_task.requests("test")[:16]
    agent = GR2(TINY).setup(gr2_task).mid_train(gr2_task)
    targeted = agent.branch(teacher="targeted", dapo_iterations=0).supervise(gr2_task)
    agent.supervise(gr2_task)
    unconditional = agent.branch(format_reward="unconditional").reinforce(gr2_task)
    agent.reinforce(gr2_task)
    assert agent.stages_done == ["mid", "sft", "dapo"]
    np.testing.assert_array_equal(agent.rank(gr2_task, requests), trained.rank(gr2_task, requests))
    for branch, overrides in (
        (targeted, {"teacher": "targeted", "dapo_iterations": 0}),
        (unconditional, {"format_reward": "unconditional"}),
    ):
        alone = GR2(TINY.replace(**overrides)).fit(gr2_task)
        assert branch.name == alone.name
        np.testing.assert_array_equal(
            branch.rank(gr2_task, requests), alone.rank(gr2_task, requests)
        )
        assert branch.teacher_stats == alone.teacher_stats
    # The step counts continue across the stages' loggers.
    curve_steps = [row["step"] for row in agent.history if row["stage"] == "curve"]
    assert curve_steps == list(range(1, len(curve_steps) + 1))
    with pytest.raises(RuntimeError, match="already run its 'dapo' stage"):
        agent.reinforce(gr2_task)
    with pytest.raises(ConfigError, match=r"cannot change \['dim'\]"):
        agent.branch(dim=64)


def test_a_tiny_dapo_run_raises_its_mean_reward(gr2_task) -> None:
    """DAPO alone from an untrained student: it rambles to the reasoning limit (the
    overlong penalty) and ranks at random; sixteen iterations must lift the reward."""
    agent = GR2(TINY.replace(dapo_iterations=16, learning_rate=3e-3, eval_every=100))
    agent.setup(gr2_task).reinforce(gr2_task)
    dapo = [row for row in agent.history if row["stage"] == "dapo"]
    first = np.mean([row["reward"] for row in dapo[:3]])
    last = np.mean([row["reward"] for row in dapo[-3:]])
    assert last > first + 0.3, (first, last)
    assert np.mean([row["overlong"] for row in dapo[-3:]]) > dapo[0]["overlong"] + 0.3


def test_the_large_preset_builds_a_bigger_student_that_fits_the_task(gr2_task) -> None:
    large = GR2(GR2Config.large()).setup(gr2_task)
    default = GR2(GR2Config()).setup(gr2_task)
    assert large.parameter_count() > 10 * default.parameter_count()
    assert GR2Config.large(seed=3).seed == 3 and GR2Config.large().dapo_iterations == 1000


def test_mid_training_teaches_captions(gr2_task) -> None:
    agent = GR2(TINY.replace(mid_steps=150, mid_tasks=("caption",), dapo_iterations=0))
    agent.fit(gr2_task)
    report = agent.mid_report
    assert report["caption_genre_accuracy_after"] > report["caption_genre_accuracy_before"] + 0.1


def test_checkpoints_round_trip_and_refuse_other_tasks(trained, gr2_task, small_task, tmp_path):
    path = trained.save(tmp_path / "gr2.pt")
    loaded = GR2.load(path)
    requests = gr2_task.requests("test")[:8]
    np.testing.assert_array_equal(loaded.rank(gr2_task, requests), trained.rank(gr2_task, requests))
    with pytest.raises(UnsupportedTaskError, match="GR2 protocol"):
        trained.rank(small_task, small_task.requests("test")[:2])


def test_compare_runs_gr2_on_the_gr2_protocol_environment(tmp_path) -> None:
    """``--preset gr2`` picks SlateRerankGR2-v0; GR2 runs there and reports recall."""
    import csv

    from agents import compare
    from agents.compare import cli

    seen = cli.compare_kwargs(cli._parser().parse_args(["--preset", "gr2", "--quick"]))
    assert seen["env_id"] == "SlateRerankGR2-v0" and "gr2" in seen["agents"]
    folder = compare.run_compare(  # L = 3 keeps the exhaustive reference small
        env_id="SlateRerankGR2-v0",
        env_kwargs={"slate_length": 3},
        agents=["initial-order", "gr2"],
        seeds=1,
        requests=40,
        permutations=20,
        budget="tiny",
        out=tmp_path,
        name="gr2",
        progress=False,
    )
    rows = {row["agent"]: row for row in csv.DictReader((folder / "results.csv").open())}
    assert 0 <= float(rows["gr2"]["gr2_recall@5"]) <= 1
    # The pre-ranker's recall@1 is the share of requests whose next item it put first.
    assert float(rows["initial-order"]["gr2_recall@1"]) > 0


def test_the_dapo_loss_equals_trl_grpo_trainers_on_one_tiny_batch(tmp_path) -> None:
    """TRL's GRPOTrainer (loss_type="dapo") and the shared loss agree on the same inputs."""
    pytest.importorskip("trl")
    from datasets import Dataset
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast
    from trl import GRPOConfig, GRPOTrainer

    vocab = lang.GR2Vocabulary(3, 2, 2, 4, (4, 4))
    names = [*lang.CONTROL, *vocab.words] + [f"<sid_{i}>" for i in range(8)]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(
            models.WordLevel({name: i for i, name in enumerate(names)}, unk_token="<pad>")
        ),
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
    )
    torch.manual_seed(0)
    model = build_student(vocab, dim=16, layers=1, heads=2, intermediate=32, max_length=64)
    args = GRPOConfig(
        output_dir=str(tmp_path),
        loss_type="dapo",
        epsilon=0.2,
        epsilon_high=0.28,
        beta=0.0,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        report_to=[],
        use_cpu=True,
    )
    trainer = GRPOTrainer(
        model=model,
        args=args,
        processing_class=tokenizer,
        reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
        train_dataset=Dataset.from_dict({"prompt": ["<bos> <cands>"] * 4}),
    )
    generator = torch.Generator().manual_seed(1)
    prompt = torch.randint(len(lang.CONTROL), vocab.size, (3, 5), generator=generator)
    completion = torch.randint(len(lang.CONTROL), vocab.size, (3, 4), generator=generator)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]])
    advantages = torch.tensor([1.0, -0.5, 2.0])
    model.eval()
    with torch.no_grad():
        ids = torch.cat([prompt, completion], dim=1)
        attention = torch.cat([torch.ones_like(prompt), mask], dim=1)
        new, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, attention, 4)
        # Old log-probs on both sides of the clip range, so clip-higher matters.
        shift = torch.tensor([[0.3, -0.4, 0.05, 0.0], [-0.3, 0.2, 0.0, 0.1], [0.5, -0.5, 0.0, 0]])
        old = new + shift
        inputs = {
            "prompt_ids": prompt,
            "prompt_mask": torch.ones_like(prompt),
            "completion_ids": completion,
            "completion_mask": mask,
            "advantages": advantages,
            "old_per_token_logps": old,
            "num_items_in_batch": mask.sum(),
        }
        reference = trainer._compute_loss(model, inputs)
    ours, _ = clipped_surrogate_loss(
        new, old, advantages, mask=mask.bool(), clip_low=0.2, clip_high=0.28, token_level=True
    )
    assert ours.item() == pytest.approx(reference.item(), abs=1e-6)
    # Our own token log-probs of the same model agree with TRL's (fused head) closely.
    ours_lp, _ = token_log_probs(model, ids, attention, None, torch.full((3,), 5))
    assert ((ours_lp[:, 4:] - new) * mask).abs().max() < 1e-3
