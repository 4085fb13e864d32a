"""Fitting click simulators on logged slates, and the metrics that judge them."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.stats import rankdata

from simulators.base import ClickSimulator, SlateBatch, isolated_torch_rng
from simulators.data.pipeline import RerankData
from simulators.progress import progress_bar


def logged_slates(
    data: RerankData, split: str, *, history_length: int = 50, device: str | torch.device = "cpu"
) -> tuple[SlateBatch, torch.Tensor]:
    """The logged slates of ``split`` as a :class:`SlateBatch` and their click labels.

    Returns:
        ``(batch, clicks)`` with ``clicks`` bool ``[S, L]``.
    """
    index = data.split_indices(split)
    history, _ = data.history(index, history_length)
    batch = SlateBatch(
        users=torch.as_tensor(data.request_user[index], dtype=torch.long),
        items=torch.as_tensor(data.logged_items[index], dtype=torch.long),
        histories=torch.as_tensor(history, dtype=torch.long),
    ).to(device)
    return batch, torch.as_tensor(data.logged_clicks[index], device=device)


def _rows(batch: SlateBatch, rows: torch.Tensor) -> SlateBatch:
    return SlateBatch(batch.users[rows], batch.items[rows], batch.histories[rows])


@dataclass
class FitResult:
    """What :func:`fit_simulator` did.

    Attributes:
        train_nll: Mean training negative log-likelihood per list, per epoch.
        valid_nll: Mean validation negative log-likelihood per list, per epoch.
        best_epoch: Epoch (0-based) whose weights were kept.
    """

    train_nll: list[float] = field(default_factory=list)
    valid_nll: list[float] = field(default_factory=list)
    best_epoch: int = -1


def fit_simulator(
    model: ClickSimulator,
    data: RerankData,
    *,
    epochs: int = 20,
    batch_size: int = 256,
    learning_rate: float = 5e-3,
    weight_decay: float = 1e-5,
    patience: int = 3,
    seed: int = 0,
    progress: bool = True,
    device: str | torch.device = "cpu",
    train_rows: np.ndarray | None = None,
    valid_rows: np.ndarray | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    weight_decay_per_epoch: float | None = None,
) -> FitResult:
    """Maximise the model's log-likelihood of the training slates (Adam).

    Keeps the weights of the epoch with the best validation likelihood and stops
    after ``patience`` epochs without improvement.

    Args:
        model: A simulator with a ``log_likelihood(batch, clicks)`` method.
        data: Processed data; train slates fit, valid slates select.
        epochs: Maximum passes over the training slates.
        batch_size: Slates per gradient step.
        learning_rate: Adam step size.
        weight_decay: Adam (L2) weight decay.
        patience: Epochs without validation improvement before stopping.
        seed: Seed of the shuffling generator.
        progress: Show a progress bar over epochs (on terminals).
        device: Where to train.
        train_rows: Rows of the training slates to fit on, with repeats allowed (a
            bootstrap resample); ``None`` uses all of them.
        valid_rows: Rows of the validation slates that select the epoch (e.g. the
            same users' half as ``train_rows``, :func:`disjoint_halves`); ``None``
            uses all of them.
        optimizer: An optimizer over the model's parameters (e.g. Adam with a
            parameter group per learning rate, as
            :func:`~simulators.composition_fit.fit_composition` builds);
            ``None``: Adam with ``learning_rate`` and ``weight_decay``. Build it
            after moving the model to ``device``.
        weight_decay_per_epoch: Train with AdamW's decoupled weight decay instead of
            Adam's coupled L2 (``weight_decay`` is then unused): a shrink of
            ``learning_rate * weight_decay_per_epoch`` per pass over the training
            slates whatever their number (the per-step decay is this divided by the
            steps per epoch). Adam's coupled L2 is divided by each parameter's
            gradient scale and so acts harder the rarer a user's or item's rows
            are: its best value falls as the logs grow (1e-3 at 12,600 synthetic
            slates, 1e-5 at 126,000), and so does AdamW's best per-step decay
            (1 and 0.1), while 50 per epoch was best or tied best at both sizes
            (docs/benchmarks.md, "Weight decay that scales with the data").

    Raises:
        ValueError: ``weight_decay_per_epoch`` negative or given with ``optimizer``, or
            no training or no validation slates.
    """
    if weight_decay_per_epoch is not None and (weight_decay_per_epoch < 0 or optimizer is not None):
        raise ValueError(
            f"weight_decay_per_epoch must be >= 0 and builds its own AdamW, got "
            f"{weight_decay_per_epoch} with optimizer={optimizer!r}: drop one of them"
        )
    model.to(device)
    train, train_clicks = logged_slates(data, "train", device=device)
    if train_rows is not None:
        picked = torch.as_tensor(train_rows, dtype=torch.long, device=device)
        train, train_clicks = _rows(train, picked), train_clicks[picked]
    valid, valid_clicks = logged_slates(data, "valid", device=device)
    if valid_rows is not None:
        picked = torch.as_tensor(valid_rows, dtype=torch.long, device=device)
        valid, valid_clicks = _rows(valid, picked), valid_clicks[picked]
    for split, slates, rows in (("train", train, train_rows), ("valid", valid, valid_rows)):
        if len(slates.users) == 0:
            source = f"{split}_rows selects none" if rows is not None else "the data has none"
            raise ValueError(
                f"fit_simulator got no {split} slates ({source}): a model needs training "
                "slates to learn from and validation slates to choose its epoch by"
            )
    if weight_decay_per_epoch is not None:
        steps_per_epoch = math.ceil(len(train.users) / batch_size)
        optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=learning_rate,
            weight_decay=weight_decay_per_epoch / steps_per_epoch,
        )
    elif optimizer is None:
        optimizer = torch.optim.Adam(
            model.parameters(), lr=learning_rate, weight_decay=weight_decay
        )
    generator = torch.Generator().manual_seed(seed)
    result = FitResult()
    best_state, best = copy.deepcopy(model.state_dict()), math.inf
    bar = progress_bar(
        description=f"fit {type(model).__name__}", enabled=progress, iterable=range(epochs)
    )
    # enable_grad: callers may be inside torch.no_grad() (e.g. an env built lazily).
    with isolated_torch_rng(seed), torch.enable_grad():  # dropout uses the global generator
        for epoch in bar:
            model.train()
            order = torch.randperm(len(train.users), generator=generator).to(device)
            total = 0.0
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                loss = -model.log_likelihood(_rows(train, rows), train_clicks[rows]).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(rows)
            result.train_nll.append(total / len(order))
            model.eval()
            with torch.no_grad():
                valid_nll = float(-model.log_likelihood(valid, valid_clicks).mean())
            result.valid_nll.append(valid_nll)
            bar.set_postfix(valid_nll=f"{valid_nll:.4f}")
            if valid_nll < best - 1e-5:
                best, result.best_epoch = valid_nll, epoch
                best_state = copy.deepcopy(model.state_dict())
            elif epoch - result.best_epoch >= patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return result


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    labels = np.asarray(labels, dtype=bool)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def log_loss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy."""
    p = np.clip(probs, eps, 1 - eps)
    return float(-np.mean(np.where(labels, np.log(p), np.log(1 - p))))


def calibration_bins(
    labels: np.ndarray, probs: np.ndarray, bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-width probability bins: mean prediction, observed rate, share of samples.

    Only non-empty bins are returned (the points of a reliability plot).
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)
    filled = [b for b in range(bins) if (which == b).any()]
    predicted = np.array([probs[which == b].mean() for b in filled])
    observed = np.array([labels[which == b].mean() for b in filled])
    share = np.array([(which == b).mean() for b in filled])
    return predicted, observed, share


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """ECE: bin-size-weighted mean gap between predicted and observed click rates."""
    predicted, observed, share = calibration_bins(labels, probs, bins)
    return float((share * np.abs(predicted - observed)).sum())


def prediction_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """``auc``, ``logloss`` and ``ece`` of click probabilities against click labels."""
    return {
        "auc": roc_auc(labels, probs),
        "logloss": log_loss(labels, probs),
        "ece": expected_calibration_error(labels, probs),
    }


def bootstrap_slates(data: RerankData, seed: int) -> np.ndarray:
    """Rows of the training slates resampled with replacement (a bootstrap).

    Slates, not users, are resampled, so most users keep some slates (a user with
    ``k`` slates loses all with probability about ``e^-k``). Resampling whole users
    left a third of them untrained in each member.
    """
    rng = np.random.default_rng(seed)
    count = len(data.split_indices("train"))
    return np.sort(rng.integers(0, count, size=count))


#: How :func:`disjoint_halves` splits the logs.
HALF_SPLITS = ("users", "sessions")


def disjoint_halves(
    data: RerankData, by: str = "users", seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Two halves of the logged slates that share no slate, for independent models.

    ``by="users"``: a random half of the users and their slates, the other half
    theirs (a model fitted on one half meets the other half's users cold: only
    their features and histories tell it anything). ``by="sessions"``: every
    user's slates dealt alternately, in a random order, to the two halves (both
    halves know every user with at least two slates).

    Args:
        data: Processed data (or a request pool).
        by: ``"users"`` or ``"sessions"``.
        seed: Seed of the split.

    Returns:
        Two dicts ``{"train": rows, "valid": rows}`` of row indices into the
        ``train`` and ``valid`` logged slates (:func:`logged_slates`), for
        :func:`fit_simulator`'s ``train_rows`` and ``valid_rows``.

    Raises:
        ValueError: An unknown ``by``.
    """
    if by not in HALF_SPLITS:
        raise ValueError(f"by must be one of {HALF_SPLITS}, got {by!r}")
    rng = np.random.default_rng(seed)
    every_user = np.unique(data.request_user)
    first_users = rng.permutation(every_user)[: len(every_user) // 2]
    halves: tuple[dict[str, np.ndarray], dict[str, np.ndarray]] = ({}, {})
    for split in ("train", "valid"):
        users = np.asarray(data.request_user[data.split_indices(split)])
        if by == "users":
            first = np.isin(users, first_users)
        else:
            # A random order, then each user's slates counted in it: even ones first.
            order = rng.permutation(len(users))
            grouped = order[np.argsort(users[order], kind="stable")]
            starts = np.searchsorted(users[grouped], users[grouped], side="left")
            rank = np.empty(len(users), dtype=np.int64)
            rank[grouped] = np.arange(len(users)) - starts
            first = rank % 2 == 0
        halves[0][split] = np.flatnonzero(first)
        halves[1][split] = np.flatnonzero(~first)
    return halves


def fit_members(
    members: list[ClickSimulator],
    data: RerankData,
    *,
    seed: int = 0,
    bootstrap: bool = False,
    rows: list[dict[str, np.ndarray] | None] | None = None,
    **fit_options: object,
) -> list[FitResult]:
    """Fit ensemble members one by one: member ``k`` with seed ``seed + k``.

    Args:
        members: The (unfitted) members.
        data: Processed data (or a request pool).
        seed: Seed of member 0.
        bootstrap: Fit each member on :func:`bootstrap_slates` of the training slates.
        rows: Per member, ``{"train": rows, "valid": rows}`` of the logged slates it
            is fitted and selected on (e.g. :func:`disjoint_halves`), or ``None``
            (all); not with ``bootstrap``.
        **fit_options: Passed to :func:`fit_simulator` (epochs, learning rate, ...).

    Raises:
        ValueError: ``rows`` with ``bootstrap``, or not one entry per member.
    """
    if rows is not None and (bootstrap or len(rows) != len(members)):
        raise ValueError(
            f"rows needs one entry per member ({len(members)}, got {len(rows)}) and no bootstrap"
        )
    if bootstrap:
        rows = [
            {"train": bootstrap_slates(data, seed + k), "valid": None} for k in range(len(members))
        ]
    rows = rows or [None] * len(members)
    return [
        fit_simulator(
            member,
            data,
            seed=seed + k,
            train_rows=None if rows[k] is None else rows[k]["train"],
            valid_rows=None if rows[k] is None else rows[k]["valid"],
            **fit_options,
        )
        for k, member in enumerate(members)
    ]


@torch.no_grad()
def evaluate_simulator(
    model: ClickSimulator, data: RerankData, split: str = "test", *, device: str = "cpu"
) -> dict[str, float]:
    """Per-position click prediction quality on the logged slates of ``split``.

    Returns:
        ``auc``, ``logloss``, ``ece`` of the per-position click probabilities, and
        ``nll_per_list`` (the model's own list likelihood).
    """
    model.to(device).eval()
    batch, clicks = logged_slates(data, split, device=device)
    probs = model.click_probs(batch).cpu().numpy().ravel()
    labels = clicks.cpu().numpy().ravel()
    nll = float(-model.log_likelihood(batch, clicks).mean())
    return {**prediction_metrics(labels, probs), "nll_per_list": nll}
