"""Composed simulator (examination + diminishing returns), beam search, order diagnostics."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from simulators.base import SlateBatch
from simulators.click_models import Attractiveness, PointwiseModel
from simulators.composed import ComposedSimulator, dcg_examination, implied_position_bias
from simulators.context_model import ContextAwareSimulator
from simulators.search import beam_search, order_sensitivity

N_USERS, N_ITEMS = 4, 9


def _features(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(N_USERS, 3, generator=generator), torch.rand(N_ITEMS, 5, generator=generator)


def _composed(strength: float = 2.0, bias: float = 1.0) -> ComposedSimulator:
    users, items = _features()
    base = PointwiseModel(Attractiveness(users, items, dim=4, init_std=0.8))
    return ComposedSimulator(
        base, items, position_bias=bias, diversity_strength=strength, max_positions=4
    )


def _requests(batch: int = 3, n: int = 6):
    generator = torch.Generator().manual_seed(1)
    candidates = torch.stack(
        [torch.randperm(N_ITEMS, generator=generator)[:n] for _ in range(batch)]
    )
    return torch.arange(batch) % N_USERS, torch.full((batch, 0), -1, dtype=torch.long), candidates


def test_composed_reduces_to_its_base_without_effects() -> None:
    sim = _composed(strength=0.0, bias=0.0)
    users, histories, candidates = _requests()
    batch = SlateBatch(users, candidates[:, :4], histories)
    with torch.no_grad():
        torch.testing.assert_close(sim.click_probs(batch), sim.base.click_probs(batch))


def test_diminishing_returns_penalise_an_item_under_a_similar_one() -> None:
    users, items = _features()
    items = items.clone()
    items[1] = items[0]  # item 1 is a copy of item 0
    base = PointwiseModel(Attractiveness(users, items, dim=4, init_std=0.8))
    sim = ComposedSimulator(base, items, position_bias=0.0, diversity_strength=3.0, max_positions=4)
    batch = SlateBatch(
        torch.tensor([0, 0]), torch.tensor([[0, 1], [2, 1]]), torch.empty(2, 0, dtype=torch.long)
    )
    with torch.no_grad():
        probs = sim.click_probs(batch)
    assert probs[0, 1] < probs[1, 1]  # the copy is worth less under its twin
    assert torch.isclose(sim.redundancy(batch.items)[0, 1], torch.tensor(1.0))


def test_dcg_examination_prior() -> None:
    torch.testing.assert_close(dcg_examination(3), torch.tensor([1.0, 1 / 1.5849625, 0.5]))
    torch.testing.assert_close(dcg_examination(3, 0.0), torch.ones(3))


@pytest.mark.parametrize("make", ["composed", "context"])
def test_full_width_beam_search_finds_the_exhaustive_optimum(make) -> None:
    if make == "composed":
        sim = _composed()
    else:
        users, items = _features()
        sim = ContextAwareSimulator(
            Attractiveness(users, items, dim=8, init_std=0.5), max_positions=4
        )
        with torch.no_grad():
            sim.head.weight.normal_(generator=torch.Generator().manual_seed(0))
    sim.eval()
    users, histories, candidates = _requests(n=5)
    length = 3
    lists, values = beam_search(sim, users, histories, candidates, length, width=60)
    for b in range(len(users)):
        with torch.no_grad():
            best = max(
                float(
                    sim.expected_reward(
                        SlateBatch(
                            users[b : b + 1], candidates[b, list(p)][None], histories[b : b + 1]
                        )
                    )
                )
                for p in itertools.permutations(range(5), length)
            )
        assert float(values[b]) == pytest.approx(best, abs=1e-6)
        assert len(set(lists[b].tolist())) == length and set(lists[b].tolist()) <= set(
            candidates[b].tolist()
        )


def test_narrow_beams_never_beat_wider_ones_by_much_and_greedy_is_valid() -> None:
    sim = _composed()
    users, histories, candidates = _requests(batch=5, n=7)
    _, greedy = beam_search(sim, users, histories, candidates, 4, width=1)
    _, wide = beam_search(sim, users, histories, candidates, 4, width=200)
    assert (wide >= greedy - 1e-6).all()
    with pytest.raises(ValueError, match="length must be in"):
        beam_search(sim, users, histories, candidates, 8)


def test_order_sensitivity_is_zero_without_position_or_context_effects() -> None:
    users, histories, candidates = _requests()
    batch = SlateBatch(users, candidates[:, :4], histories)
    flat = order_sensitivity(
        _composed(strength=0.0, bias=0.0), batch, 10, torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(flat, torch.zeros_like(flat), atol=1e-6, rtol=0)
    sensitive = order_sensitivity(_composed(), batch, 10, torch.Generator().manual_seed(0))
    assert (sensitive > 0.01).all()


def test_examination_from_randomised_logs_recovers_relative_examination() -> None:
    from simulators.composed import examination_from_randomised_logs

    true_exam = np.array([1.0, 0.6, 0.3])
    rng = np.random.default_rng(0)
    shown = np.full(3, 200_000)
    clicks = rng.binomial(shown, 0.05 * true_exam)
    exam = examination_from_randomised_logs(clicks, shown).numpy()
    np.testing.assert_allclose(exam, true_exam, rtol=0.05)
    assert exam.max() == 1.0


def test_examination_from_randomised_logs_refuses_too_few_clicks(data_root) -> None:
    from simulators.composed import examination_from_randomised_logs
    from simulators.data import load_open_bandit

    clicks, shown = load_open_bandit(data_root / "open-bandit").position_ctr()
    with pytest.raises(ValueError, match=r"too few clicks .*\[13, 14, 11\] per position"):
        examination_from_randomised_logs(clicks, shown)
    with pytest.raises(ValueError, match="same length"):
        examination_from_randomised_logs(np.ones(3), np.ones(4))


def _fitted_like(strength: float = 1.5) -> ComposedSimulator:
    """A trainable composition at set values (sum redundancy, a pair matrix)."""
    users, items = _features()
    base = PointwiseModel(Attractiveness(users, items, dim=4, init_std=0.8))
    pairs = torch.randn(5, 5, generator=torch.Generator().manual_seed(2))
    return ComposedSimulator(
        base,
        items,
        examination=torch.tensor([1.0, 0.7, 0.5, 0.3]),
        diversity_strength=strength,
        max_positions=4,
        redundancy="sum",
        complementarity=pairs,
        trainable=True,
    )


def test_trainable_composition_matches_its_fixed_copy_and_the_formula() -> None:
    sim = _fitted_like()
    fixed = sim.with_base(sim.base)
    assert not fixed.trainable and not [n for n, _ in fixed.named_parameters() if "base" not in n]
    users, histories, candidates = _requests()
    batch = SlateBatch(users, candidates[:, :4], histories)
    with torch.no_grad():
        probs = sim.click_probs(batch)
        torch.testing.assert_close(fixed.click_probs(batch), probs)
        # Last-position fast path = the full computation's last column, every prefix.
        for k in range(1, 5):
            prefix = SlateBatch(users, candidates[:, :k], histories)
            torch.testing.assert_close(sim.last_click_probs(prefix), probs[:, k - 1])
        # The formula by hand for position 2 of row 0.
        u = torch.nn.functional.normalize(_features()[1][batch.items[0]], dim=1)
        pairs = (sim.pair_matrix + sim.pair_matrix.T) / 2
        pairs = pairs - torch.diag(torch.diagonal(pairs))
        effect = -1.5 * (u[2] @ u[:2].T).clamp(min=0).sum() + (u[2] @ pairs @ u[:2].T).sum()
        base = sim.base.click_probs(batch)[0, 2]
        expected = 0.5 * torch.sigmoid(torch.logit(base) + effect)
    torch.testing.assert_close(probs[0, 2], expected)
    composition = sim.composition()
    assert composition.examination[0] == 1.0 and composition.redundancy == "sum"
    assert composition.diversity_strength == pytest.approx(1.5)
    assert all(composition.complementarity[i][i] == 0 for i in range(5))


@pytest.mark.parametrize("form", ["max", "sum"])
@pytest.mark.parametrize("pairs", [False, True])
def test_composed_prefix_scorer_equals_the_model_in_any_order(form, pairs) -> None:
    """The running redundancy/complement of the env's scorer = the full formula."""
    users, items = _features()
    base = PointwiseModel(Attractiveness(users, items, dim=4, init_std=0.8))
    matrix = torch.randn(5, 5, generator=torch.Generator().manual_seed(3)) if pairs else None
    sim = ComposedSimulator(
        base,
        items,
        diversity_strength=1.5,
        max_positions=4,
        redundancy=form,
        complementarity=matrix,
    ).eval()
    requests, histories, candidates = _requests(batch=8)
    generator = torch.Generator().manual_seed(4)
    order = torch.stack([torch.randperm(6, generator=generator)[:4] for _ in range(8)])
    with torch.no_grad():
        expected = sim.click_probs(SlateBatch(requests, candidates.gather(1, order), histories))
        scorer = sim.prefix_scorer(requests, candidates, histories, 4)
        got = torch.stack([scorer.place(order[:, t]) for t in range(4)], dim=1)
    torch.testing.assert_close(got, expected)
    assert (expected[:, 1:] != expected[:, :1]).any()  # the effects act


def test_trainable_effects_get_gradients_and_position_zero_stays_fixed() -> None:
    sim = _fitted_like()
    users, histories, candidates = _requests()
    clicks = torch.zeros(3, 4, dtype=torch.bool)
    clicks[:, 1] = True
    loss = -sim.log_likelihood(SlateBatch(users, candidates[:, :4], histories), clicks).mean()
    loss.backward()
    for name in ("examination_logits", "strength", "pair_matrix"):
        assert getattr(sim, name).grad.abs().sum() > 0, name
    assert "first_examination" in dict(sim.named_buffers())


def test_implied_position_bias_inverts_the_dcg_curve() -> None:
    for bias in (0.0, 0.5, 1.0, 2.5):
        assert implied_position_bias(dcg_examination(6, bias)) == pytest.approx(bias, abs=1e-5)


def test_composition_arguments_are_checked() -> None:
    users, items = _features()
    base = PointwiseModel(Attractiveness(users, items, dim=4))
    with pytest.raises(ValueError, match="redundancy must be one of"):
        ComposedSimulator(base, items, redundancy="mean")
    with pytest.raises(ValueError, match=r"complementarity must be \[5, 5\]"):
        ComposedSimulator(base, items, complementarity=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="position_bias must be >= 0"):
        ComposedSimulator(base, items, position_bias=-1.0)
    # A negative strength is a similarity bonus, as a fit may find; a fitted one
    # must survive being fixed for serving.
    fitted = ComposedSimulator(base, items, diversity_strength=-1.0, trainable=True)
    assert fitted.with_base(base).diversity_strength == -1.0


def test_the_similarity_table_equals_the_vector_products_and_is_not_pickled() -> None:
    import pickle

    sim = _composed(strength=1.5).eval()
    users, histories, candidates = _requests(batch=5)
    batch = SlateBatch(users, candidates[:, :4], histories)
    with torch.no_grad():
        with_table = sim.click_probs(batch)
        assert sim._similarity_cache is not None  # a catalogue of 12 items: tabled
        copy = pickle.loads(pickle.dumps(sim))
        assert copy._similarity_cache is None  # rebuilt where it is used, not shipped
        copy.SIMILARITY_TABLE_MAX_ITEMS = 0  # the large-catalogue path: vector products
        torch.testing.assert_close(copy.click_probs(batch), with_table)
        assert copy._similarity_cache is None
        torch.testing.assert_close(
            copy.pair_similarity(candidates, candidates),
            sim.pair_similarity(candidates, candidates),
        )
