"""Click simulators: the shared interface, click-model likelihoods, fitting."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch

from simulators.base import SlateBatch, check_batch
from simulators.click_models import (
    Attractiveness,
    DependentClickModel,
    PointwiseModel,
    PositionBasedModel,
    cascade_model,
)
from simulators.training import (
    evaluate_simulator,
    expected_calibration_error,
    fit_simulator,
    roc_auc,
)

N_USERS, N_ITEMS, K = 5, 12, 4


def _attractiveness(seed: int = 0) -> Attractiveness:
    generator = torch.Generator().manual_seed(seed)
    features = (
        torch.rand(N_USERS, 3, generator=generator),
        torch.rand(N_ITEMS, 4, generator=generator),
    )
    return Attractiveness(*features, dim=4, init_std=0.5, seed=seed)


def _models():
    dcm = DependentClickModel(_attractiveness(), max_positions=K)
    with torch.no_grad():
        dcm.continuation_logit.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
    pbm = PositionBasedModel(_attractiveness(), max_positions=K)
    with torch.no_grad():
        pbm.examination_logit.copy_(torch.tensor([2.0, 1.0, 0.0, -1.0]))
    return {
        "pointwise": PointwiseModel(_attractiveness(), max_positions=K),
        "pbm": pbm,
        "dcm": dcm,
        "cascade": cascade_model(_attractiveness(), max_positions=K),
    }


MODELS = list(_models())


def _batch(rows: int = 6, length: int = K) -> SlateBatch:
    rng = np.random.default_rng(0)
    items = np.stack([rng.permutation(N_ITEMS)[:length] for _ in range(rows)])
    return SlateBatch(
        users=torch.as_tensor(rng.integers(0, N_USERS, rows)),
        items=torch.as_tensor(items),
        histories=torch.full((rows, 2), -1, dtype=torch.long),
    )


@pytest.mark.parametrize("name", MODELS)
def test_likelihood_is_a_distribution_whose_marginals_are_the_click_probs(name) -> None:
    model = _models()[name]
    batch = _batch()
    patterns = torch.tensor(list(itertools.product([False, True], repeat=K)))
    with torch.no_grad():
        total = torch.zeros(len(batch.users))
        marginal = torch.zeros(len(batch.users), K)
        for pattern in patterns:
            clicks = pattern.expand(len(batch.users), K)
            p = model.log_likelihood(batch, clicks).exp()
            total += p
            marginal += p[:, None] * pattern
        probs = model.click_probs(batch)
    torch.testing.assert_close(total, torch.ones_like(total), atol=2e-5, rtol=0)
    torch.testing.assert_close(marginal, probs, atol=2e-5, rtol=0)


@pytest.mark.parametrize("name", MODELS)
def test_prefixes_have_exact_values_and_dense_rewards_sum_to_the_list(name) -> None:
    model = _models()[name]
    batch = _batch()
    with torch.no_grad():
        full = model.prefix_values(batch)
        for k in range(1, K + 1):
            prefix = batch.items.clone()
            prefix[:, k:] = -1
            value = model.expected_reward(SlateBatch(batch.users, prefix, batch.histories))
            torch.testing.assert_close(value, full[:, k - 1])
        dense = torch.diff(full, dim=1, prepend=torch.zeros(len(batch.users), 1))
        torch.testing.assert_close(dense.sum(1), model.expected_reward(batch))
    assert (model.click_probs(batch) >= 0).all() and (model.click_probs(batch) <= 1).all()


def test_cascade_allows_one_click_only() -> None:
    model = _models()["cascade"]
    batch = _batch()
    two = torch.tensor([True, True, False, False]).expand(len(batch.users), K)
    one = torch.tensor([False, True, False, False]).expand(len(batch.users), K)
    with torch.no_grad():
        assert (model.log_likelihood(batch, two).exp() < 1e-5).all()
        assert (model.log_likelihood(batch, one).exp() > 1e-3).all()


def test_pbm_examination_scales_attractiveness() -> None:
    model = _models()["pbm"]
    batch = _batch()
    with torch.no_grad():
        ratio = model.click_probs(batch) / model.attract_probs(batch)
    torch.testing.assert_close(ratio, model.examination.expand_as(ratio))
    with pytest.raises(ValueError, match="examination_prior must be 4 probabilities"):
        PositionBasedModel(_attractiveness(), max_positions=4, examination_prior=torch.ones(3))


def test_sampled_clicks_follow_the_marginals_and_the_generator() -> None:
    model = _models()["pbm"]
    batch = _batch(rows=2)
    big = SlateBatch(
        batch.users.repeat(4000), batch.items.repeat(4000, 1), batch.histories.repeat(4000, 1)
    )
    first = model.sample_clicks(big, torch.Generator().manual_seed(1))
    again = model.sample_clicks(big, torch.Generator().manual_seed(1))
    assert torch.equal(first, again)
    with torch.no_grad():
        expected = model.click_probs(batch)
    observed = first.float().reshape(4000, 2, K).mean(0)
    torch.testing.assert_close(observed, expected, atol=0.03, rtol=0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: SlateBatch(b.users.float(), b.items, b.histories), "users must be a torch.long"),
        (lambda b: SlateBatch(b.users[:2], b.items, b.histories), "disagree on the batch size"),
        (lambda b: SlateBatch(b.users, b.items[0], b.histories), "items must have 2 dimension"),
        (lambda b: SlateBatch(b.users + 100, b.items, b.histories), r"users must be in \[0, 5\)"),
        (lambda b: SlateBatch(b.users, b.items + 100, b.histories), r"items must be item indices"),
        (
            lambda b: SlateBatch(
                b.users, torch.tensor([[1, -1, 2, 3]] * len(b.users)), b.histories
            ),
            "has an item after padding",
        ),
        (
            lambda b: SlateBatch(b.users, torch.tensor([[1, 1, 2, 3]] * len(b.users)), b.histories),
            "lists an item twice",
        ),
    ],
)
def test_malformed_batches_are_refused_by_name(change, message) -> None:
    with pytest.raises(ValueError, match=message):
        check_batch(change(_batch()), N_USERS, N_ITEMS)


def test_lists_longer_than_the_model_knows_are_refused() -> None:
    with pytest.raises(ValueError, match="knows 4 positions, got lists of 5"):
        _models()["pbm"].click_probs(_batch(length=5))


def test_metrics_on_known_cases() -> None:
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert roc_auc(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    labels = np.array([1, 0] * 50, dtype=bool)
    assert expected_calibration_error(labels, np.full(100, 0.5)) == pytest.approx(0.0)
    assert expected_calibration_error(labels, np.full(100, 0.9)) == pytest.approx(0.4)


@pytest.fixture(scope="module")
def ml100k(data_root):
    from simulators.data import PipelineConfig, load_rerank_data

    return load_rerank_data("ml-100k", data_root, PipelineConfig(retriever="pop"), progress=False)


@pytest.mark.parametrize(("name", "min_auc"), [("pointwise", 0.7), ("dcm", 0.6)])
def test_short_fit_beats_the_untrained_model_on_ml100k(ml100k, name, min_auc) -> None:
    features = torch.as_tensor(ml100k.user_features), torch.as_tensor(ml100k.item_features)
    attract = Attractiveness(*features, dim=16)
    model = PointwiseModel(attract) if name == "pointwise" else DependentClickModel(attract)
    before = evaluate_simulator(model, ml100k, "valid")
    result = fit_simulator(model, ml100k, epochs=2, progress=False)
    after = evaluate_simulator(model, ml100k, "valid")
    assert after["nll_per_list"] < before["nll_per_list"] - 0.1
    assert after["auc"] > min_auc > before["auc"]
    assert result.valid_nll[result.best_epoch] == min(result.valid_nll)


def test_fitting_is_seeded_even_with_dropout(ml100k) -> None:
    from simulators.context_model import ContextAwareSimulator

    def run():
        features = torch.as_tensor(ml100k.user_features), torch.as_tensor(ml100k.item_features)
        model = ContextAwareSimulator(Attractiveness(*features, dim=8, seed=3), dropout=0.3)
        fit_simulator(model, ml100k, epochs=1, seed=5, progress=False)
        return model.state_dict()

    first = run()
    torch.rand(3)  # global state moves between the runs: must not matter
    second = run()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_inference_cache_matches_and_follows_weight_changes() -> None:
    users = torch.randn(5, 3)
    items = torch.randn(7, 4)
    model = Attractiveness(users, items, dim=4, seed=0).eval()
    u, i = torch.tensor([0, 3]), torch.tensor([[1, 2], [6, 0]])
    with torch.no_grad():
        cached = model(u, i)
        assert model._tables is not None
    torch.testing.assert_close(cached, model(u, i))  # grad enabled: no cache used
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["user_embedding.weight"] += 1.0
    model.load_state_dict(state)
    with torch.no_grad():
        after_load = model(u, i)
    assert not torch.allclose(after_load, cached)
    torch.testing.assert_close(after_load, model(u, i).detach())
    # An optimiser step or an in-place edit in eval mode invalidates the cache too.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model(u, i).pow(2).sum().backward()
    optimizer.step()
    with torch.no_grad():
        stepped = model(u, i)
    torch.testing.assert_close(stepped, model(u, i).detach())
    with torch.no_grad():
        model.item_embedding.weight.mul_(2.0)
        edited = model(u, i)
    assert not torch.allclose(stepped, edited)
    torch.testing.assert_close(edited, model(u, i).detach())
    assert copy.deepcopy(model)._tables is None


def test_context_model_inference_path_matches_the_nn_encoder() -> None:
    from simulators.base import SlateBatch
    from simulators.context_model import ContextAwareSimulator

    attract = Attractiveness(torch.randn(6, 3), torch.randn(12, 4), dim=8, seed=0)
    model = ContextAwareSimulator(attract, max_positions=6, layers=2, heads=2, seed=1).eval()
    with torch.no_grad():  # give the zero-initialised head and the layers some signal
        for parameter in model.parameters():
            parameter.add_(
                0.3 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(2))
            )
    batch = SlateBatch(
        torch.tensor([0, 5, 2]),
        torch.tensor([[1, 2, 3, 4, -1, -1], [0, 11, 7, 6, 5, 4], [9, -1, -1, -1, -1, -1]]),
        torch.tensor([[3, 4, -1], [-1, -1, -1], [1, 2, 8]]),
    )
    reference = model.click_probs(batch).detach()  # grad on: nn.TransformerEncoder
    with torch.no_grad():
        fast = model.click_probs(batch)  # the inference path
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-6)
    assert (reference[batch.mask] > 0.01).all() and reference.std() > 0.01
    # Runs of one request's lists share the history summary: the same summary, bit
    # for bit, as computing it row by row, and the same click probabilities as
    # scoring each list on its own (to float precision: the layers' matrix products
    # may sum in another order at another batch size).
    runs = SlateBatch(
        batch.users.repeat_interleave(3),
        batch.items.repeat_interleave(3, dim=0)[:, :4],
        batch.histories.repeat_interleave(3, dim=0),
    )
    with torch.no_grad():
        shared = model._context(runs)
        row_by_row = model._context_of(runs.users, runs.histories)
        together = model.click_probs(runs)
        alone = torch.cat([model.click_probs(runs_row) for runs_row in _rows(runs)])
    assert torch.equal(shared, row_by_row)
    torch.testing.assert_close(together, alone, rtol=1e-6, atol=1e-7)


def _rows(batch: SlateBatch) -> list[SlateBatch]:
    """Each list of ``batch`` as a batch of one."""
    return [
        SlateBatch(batch.users[i : i + 1], batch.items[i : i + 1], batch.histories[i : i + 1])
        for i in range(len(batch.users))
    ]
