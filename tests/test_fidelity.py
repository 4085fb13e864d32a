"""Fidelity metrics: learned simulators judged against a known truth (issue 20)."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau

from simulators.data import PipelineConfig, load_rerank_data
from simulators.data.synthetic_config import SyntheticConfig
from simulators.data.synthetic_world import SyntheticWorld, TrueClickModel, true_simulator_for
from simulators.factory import SimulatorSpec, build_simulator
from simulators.fidelity import (
    Requests,
    alternative_lists,
    argmax_transfer,
    fidelity_metrics,
    kendall_tau_rows,
    lead_ratio,
    pointwise_sort,
    within_request_agreement,
)
from simulators.report import FIDELITY_COLUMNS, write_report
from simulators.training import disjoint_halves, fit_simulator

WORLD = SyntheticConfig(n_users=80, n_items=150, sessions_per_user=8, seed=5)
LENGTH = 6


@pytest.fixture(scope="module")
def world():
    data = load_rerank_data(
        "synthetic",
        config=PipelineConfig(num_candidates=20, retriever="pop"),
        synthetic=WORLD,
        progress=False,
    )
    index = data.split_indices("test")[:40]
    requests = Requests(
        torch.as_tensor(data.request_user[index]),
        torch.as_tensor(data.history(index, 20)[0]),
        torch.as_tensor(data.candidates[index]),
    )
    truth = true_simulator_for(data, WORLD)
    # The truth without its list effects: right about items, blind to composition.
    blind = TrueClickModel(
        SyntheticWorld(dataclasses.replace(WORLD, satiation=0.0, complementarity=0.0)),
        user_index=data.user_ids - 1,
        item_index=data.item_ids - 1,
    )
    return requests, truth, blind, data


def test_the_truth_judged_against_itself_is_perfect(world) -> None:
    requests, truth, *_ = world
    metrics = fidelity_metrics(truth, truth, requests, LENGTH, lists=12)
    assert metrics["regret_pct"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["kendall_tau_random"] == pytest.approx(1.0)
    assert metrics["kendall_tau_local"] == pytest.approx(1.0)
    assert metrics["lead_ratio"] == pytest.approx(1.0)
    assert metrics["click_level_ratio"] == pytest.approx(1.0)
    assert metrics["true_lead"] > 0  # beam beats the pointwise sort in this world


def test_a_composition_blind_model_is_caught(world) -> None:
    requests, truth, blind, _ = world
    metrics = fidelity_metrics(blind, truth, requests, LENGTH, lists=16)
    # Searching it lists same-category items together, which the truth punishes.
    assert metrics["regret_pct"] > 1.0
    assert metrics["kendall_tau_local"] < 0.9
    # It still knows which items users like: far better than chance on random lists.
    assert metrics["kendall_tau_random"] > 0.3
    # Without satiation every item looks better than it is: clicks overestimated.
    assert metrics["click_level_ratio"] > 1.0


def test_kendall_tau_rows_matches_scipy_with_ties() -> None:
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(0, 4, (5, 9), generator=generator).double()
    b = torch.randn(5, 9, generator=generator, dtype=torch.float64)
    b[:, :3] = b[:, :1]  # ties in b as well
    ours = kendall_tau_rows(a, b)
    for row in range(5):
        expected = kendalltau(a[row].numpy(), b[row].numpy(), variant="b").statistic
        assert ours[row].item() == pytest.approx(expected)
    assert kendall_tau_rows(torch.ones(1, 4), torch.arange(4.0)[None]).isnan().all()


def test_alternative_lists_are_valid_lists_of_the_requests_candidates(world) -> None:
    requests, truth, *_ = world
    generator = torch.Generator().manual_seed(1)
    reference = pointwise_sort(truth, requests, LENGTH)
    for pool in ("random", "local"):
        lists = alternative_lists(requests, LENGTH, 8, generator, pool=pool, reference=reference)
        assert lists.shape == (len(requests.users), 8, LENGTH)
        for row in range(len(requests.users)):
            candidates = set(requests.candidates[row].tolist())
            for items in lists[row].tolist():
                assert len(set(items)) == LENGTH and set(items) <= candidates
    local = alternative_lists(requests, LENGTH, 8, generator, pool="local", reference=reference)
    # Two moves change at most 4 positions of the reference.
    assert ((local != reference[:, None]).sum(-1) <= 4).all()
    assert (local != reference[:, None]).any()


def test_pointwise_sort_puts_the_best_single_item_first(world) -> None:
    requests, truth, *_ = world
    lists = pointwise_sort(truth, requests, LENGTH)
    first = requests.lists(lists[:, :1])
    for slot in range(requests.candidates.shape[1]):
        other = requests.lists(requests.candidates[:, slot : slot + 1])
        assert (truth.expected_reward(first) >= truth.expected_reward(other) - 1e-6).all()


def test_lead_ratio_and_transfer_report_what_they_are_given(world) -> None:
    requests, truth, blind, _ = world
    baseline = pointwise_sort(truth, requests, LENGTH)
    same = lead_ratio(blind, truth, requests, baseline, baseline)
    assert same["judge_lead"] == 0 and same["true_lead"] == 0
    assert same["lead_ratio"] != same["lead_ratio"]  # NaN: no lead to compare with
    transfer = argmax_transfer(truth, truth, requests, LENGTH, width=4)
    assert transfer["learned_argmax_true"] == pytest.approx(transfer["true_argmax_true"])


def test_bad_inputs_get_clear_errors(world) -> None:
    requests, truth, *_ = world
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="pool must be one of"):
        alternative_lists(requests, LENGTH, 4, generator, pool="nearby")
    with pytest.raises(ValueError, match="pass reference="):
        alternative_lists(requests, LENGTH, 4, generator, pool="local")
    with pytest.raises(ValueError, match=">= 2 lists"):
        alternative_lists(requests, LENGTH, 1, generator)
    with pytest.raises(ValueError, match="length must be in"):
        alternative_lists(requests, 99, 4, generator)
    bad_reference = requests.candidates[:, :LENGTH].clone()
    bad_reference[0, 1] = bad_reference[0, 0]  # a repeated item
    with pytest.raises(ValueError, match="L distinct items"):
        alternative_lists(requests, LENGTH, 4, generator, pool="local", reference=bad_reference)
    with pytest.raises(ValueError, match="one B"):
        Requests(requests.users[:3], requests.histories, requests.candidates)
    with pytest.raises(ValueError, match="one list per request"):
        requests.lists(requests.candidates[:2, :LENGTH])
    # Lists that all tie (the same list M times): no ordering, NaN rather than an error.
    same = requests.candidates[:, None, :LENGTH].expand(-1, 4, -1)
    assert math.isnan(within_request_agreement(truth, truth, requests, same)["kendall_tau"])
    with pytest.raises(ValueError, match="alternatives hold"):
        within_request_agreement(truth, truth, requests, torch.zeros(2, 4, LENGTH).long())


def test_the_simulator_report_adds_fidelity_columns_when_the_truth_is_known(
    world, tmp_path: Path
) -> None:
    _, truth, blind, data = world
    write_report({"truth": truth, "blind": blind}, data, tmp_path, requests=20, truth=truth)
    with open(tmp_path / "metrics.csv", newline="") as handle:
        rows = {row["simulator"]: row for row in csv.DictReader(handle)}
    assert set(FIDELITY_COLUMNS) <= set(rows["truth"])
    assert float(rows["truth"]["regret_pct"]) == pytest.approx(0.0, abs=1e-4)
    assert float(rows["truth"]["kendall_tau_local"]) == pytest.approx(1.0)
    assert float(rows["blind"]["kendall_tau_local"]) < 0.95
    assert "kendall_tau_local" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("by", ["users", "sessions"])
def test_disjoint_halves_share_no_slate(world, by: str) -> None:
    data = world[3]
    first, second = disjoint_halves(data, by=by, seed=3)
    for split in ("train", "valid"):
        rows = len(data.split_indices(split))
        a, b = first[split], second[split]
        assert len(np.intersect1d(a, b)) == 0 and len(a) + len(b) == rows
        users = data.request_user[data.split_indices(split)]
        shared = np.intersect1d(users[a], users[b])
        if by == "users":
            assert len(shared) == 0  # a user's slates all go one way
        else:
            # every user with two or more slates is in both halves, evenly dealt
            counts = np.bincount(users)
            assert set(shared) == set(np.flatnonzero(counts >= 2))
            assert abs(np.bincount(users[a], minlength=len(counts)) - counts / 2).max() <= 0.5
    again = disjoint_halves(data, by=by, seed=3)
    assert all(np.array_equal(first[s], again[0][s]) for s in ("train", "valid"))
    with pytest.raises(ValueError, match="by must be one of"):
        disjoint_halves(data, by="items")


def test_halves_that_leave_a_member_without_validation_slates_are_refused(world) -> None:
    from simulators.composition_fit import member_rows
    from simulators.data.errors import ConfigError

    # 8 sessions a user leave one validation slate each: dealt by sessions, every
    # one goes to the first half, and the judge could not choose its epoch.
    data = world[3]
    users = data.request_user[data.split_indices("valid")]
    assert np.bincount(users).max() == 1
    with pytest.raises(ConfigError, match="held-out member's half with no valid slates"):
        member_rows(data, "sessions", 2)
    first, second = member_rows(data, "users", 2)  # whole users split: both halves
    assert len(first["valid"]) > 0 and len(second["valid"]) > 0
    users, items = torch.as_tensor(data.user_features), torch.as_tensor(data.item_features)
    model = build_simulator(SimulatorSpec.for_data(data, "pointwise", dim=4), users, items)
    with pytest.raises(ValueError, match="no valid slates"):
        fit_simulator(model, data, epochs=1, valid_rows=np.empty(0, dtype=np.int64))


def test_a_fit_on_one_half_only_sees_that_half(world) -> None:
    # valid_rows select the epoch on the half's own validation slates: a model fitted
    # on half the users is judged on those users, and its fit differs from the other's.
    data = world[3]
    first, second = disjoint_halves(data, by="users", seed=0)
    users, items = torch.as_tensor(data.user_features), torch.as_tensor(data.item_features)
    fits = []
    for half in (first, second):
        model = build_simulator(SimulatorSpec.for_data(data, "pointwise", dim=4), users, items)
        result = fit_simulator(
            model,
            data,
            epochs=2,
            progress=False,
            train_rows=half["train"],
            valid_rows=half["valid"],
        )
        fits.append(result)
    assert fits[0].train_nll != fits[1].train_nll
    assert fits[0].valid_nll != fits[1].valid_nll
