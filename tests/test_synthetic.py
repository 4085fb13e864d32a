"""The synthetic world: its true model, its logs, and the pipeline on them."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from simulators.base import SlateBatch
from simulators.data import PipelineConfig, load_rerank_data
from simulators.data.synthetic_config import SyntheticConfig
from simulators.data.synthetic_world import SyntheticWorld, TrueClickModel, true_simulator_for
from simulators.training import logged_slates, roc_auc

SMALL = SyntheticConfig(n_users=120, n_items=200, sessions_per_user=20, seed=3)


@pytest.fixture(scope="module")
def small_data():
    return load_rerank_data(
        "synthetic",
        config=PipelineConfig(num_candidates=30, retriever="pop"),
        synthetic=SMALL,
        progress=False,
    )


def test_true_model_is_top_down_with_exact_prefix_values() -> None:
    model = SyntheticWorld(SMALL).true_model()
    batch = SlateBatch(
        torch.tensor([0, 5, 7]),
        torch.tensor([[1, 2, 3, 4, 5, 6], [9, 8, 7, 6, 5, 4], [0, 10, 20, 30, 40, 50]]),
        torch.empty(3, 0, dtype=torch.long),
    )
    full = model.prefix_values(batch)
    for k in range(1, 7):
        prefix = batch.items.clone()
        prefix[:, k:] = -1
        torch.testing.assert_close(
            model.expected_reward(SlateBatch(batch.users, prefix, batch.histories)), full[:, k - 1]
        )


def test_satiation_and_complementarity_act_on_items_above() -> None:
    world = SyntheticWorld(dataclasses.replace(SMALL, complementarity=0.0, position_bias=0.0))
    model = world.true_model()
    category = world.item_category
    a, b = np.flatnonzero(category == category[0])[:2]  # two items of one category
    other = int(np.flatnonzero(category != category[0])[0])
    user = torch.tensor([0, 0])
    lists = torch.tensor([[a, b], [other, b]])
    probs = model.click_probs(SlateBatch(user, lists, torch.empty(2, 0, dtype=torch.long)))
    assert probs[0, 1] < probs[1, 1]  # b is worth less under an item of its own category


def test_logs_follow_the_true_model(small_data) -> None:
    truth = true_simulator_for(small_data, SMALL)
    assert isinstance(truth, TrueClickModel)
    batch, clicks = logged_slates(small_data, "train")
    with torch.no_grad():
        probs = truth.click_probs(batch).numpy()
    labels = clicks.numpy()
    # Clicks were drawn from these probabilities: rates agree, and they rank well.
    assert abs(labels.mean() - probs.mean()) < 0.02
    assert roc_auc(labels.ravel(), probs.ravel()) > 0.65
    # Position effect of the true model shows in the logs' click rate per slot.
    rates = labels.mean(axis=0)
    assert rates[0] > rates[-1]


def test_world_is_seeded_and_logs_are_ml1m_files(tmp_path) -> None:
    first = SyntheticWorld(SMALL).write_logs(tmp_path / "a")
    second = SyntheticWorld(SMALL).write_logs(tmp_path / "b")
    for name in ("ratings.dat", "movies.dat", "users.dat"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    other = SyntheticWorld(dataclasses.replace(SMALL, seed=4)).write_logs(tmp_path / "c")
    assert (other / "ratings.dat").read_bytes() != (first / "ratings.dat").read_bytes()
    lines = (first / "ratings.dat").read_text().splitlines()
    assert len(lines) == SMALL.n_users * SMALL.sessions_per_user * SMALL.slate_length
    pairs = {tuple(line.split("::")[:2]) for line in lines}
    assert len(pairs) == len(lines)  # a user meets an item at most once


def test_invalid_world_configs() -> None:
    with pytest.raises(ValueError, match="n_categories must be in"):
        SyntheticConfig(n_categories=30)
    with pytest.raises(ValueError, match="must leave pool_size items unseen"):
        SyntheticWorld(SyntheticConfig(n_items=100, sessions_per_user=20)).write_logs(
            "/nonexistent"
        )


def test_true_model_rejects_other_data(data_root) -> None:
    data = load_rerank_data("ml-100k", data_root, PipelineConfig(retriever="pop"), progress=False)
    with pytest.raises(ValueError, match="needs synthetic data"):
        true_simulator_for(data)


def test_enumerated_likelihood_of_true_marginals_is_consistent() -> None:
    # Sampled clicks follow the exact marginals (checked on one list by enumeration).
    model = SyntheticWorld(SMALL).true_model()
    batch = SlateBatch(
        torch.tensor([1]), torch.tensor([[3, 1, 4]]), torch.empty(1, 0, dtype=torch.long)
    )
    probs = model.click_probs(batch)[0]
    draws = (
        model.sample_clicks(
            SlateBatch(
                batch.users.repeat(20000),
                batch.items.repeat(20000, 1),
                batch.histories.repeat(20000, 1),
            ),
            torch.Generator().manual_seed(0),
        )
        .float()
        .mean(0)
    )
    torch.testing.assert_close(draws, probs, atol=0.015, rtol=0)
    assert list(itertools.accumulate(probs.tolist()))[-1] == pytest.approx(
        float(model.expected_reward(batch))
    )
