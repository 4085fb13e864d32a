"""A list-level reward model learned from the logs, shared by agents that need one.

The generator-evaluator's ``evaluator="learned"`` and GoalRank's
``reward_model="learned"`` use the same model: the context-aware click model of
:mod:`simulators.context_model` (a causal Transformer over the list, so it values
order and context), fitted on the training requests' logged slates and clicks. Its
list reward is the expected number of clicks.

With ``composition=True`` the model is wrapped in a trainable
:class:`~simulators.composed.ComposedSimulator` (examination per position, a
redundancy strength over the items' genre vectors summed over the items above, a
complementarity matrix) fitted jointly with it, with the effects' own step sizes
(:func:`~simulators.composition_fit.composition_optimizer`): every part of it is learned
from the logs, as the simulators' ``composition="fitted"`` is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rerank_env.task import RerankTask
from simulators.base import ClickSimulator, isolated_torch_rng
from simulators.composed import ComposedSimulator
from simulators.composition_fit import composition_optimizer, fittable_composition
from simulators.factory import SimulatorSpec, build_simulator
from simulators.training import fit_simulator


def reward_model_spec(task: RerankTask, seed: int) -> dict[str, Any]:
    """The (JSON) spec of a learned reward model for ``task``, for ``build_info``."""
    pool = task.pool
    return SimulatorSpec(
        kind="transformer",
        n_users=pool.n_users,
        n_items=pool.n_items,
        user_feature_dim=pool.user_features.shape[1],
        item_feature_dim=pool.item_features.shape[1],
        max_positions=pool.slate_length,
        seed=seed,
    ).to_dict()


def build_reward_model(
    spec: dict[str, Any], task: RerankTask | None, seed: int, *, composition: bool = False
) -> ClickSimulator:
    """An untrained reward model from :func:`reward_model_spec`.

    ``task`` is ``None`` when loading a checkpoint (the weights restore the feature
    tables, and the composition's item vectors). ``composition``: wrapped in a
    trainable composition (module docstring).
    """
    features = (
        (None, None)
        if task is None
        else (torch.as_tensor(task.pool.user_features), torch.as_tensor(task.pool.item_features))
    )
    with isolated_torch_rng(seed):
        model = build_simulator(SimulatorSpec(**spec), *features)
    if not composition:
        return model
    # The genre columns, as the bundles' compositions use (the last one is the year).
    genres = (
        torch.zeros(spec["n_items"], spec["item_feature_dim"] - 1)
        if task is None
        else torch.as_tensor(task.pool.item_features[:, :-1])
    )
    return fittable_composition(model, genres, spec["max_positions"])


def fit_reward_model(
    model: ClickSimulator,
    task: RerankTask,
    *,
    epochs: int,
    seed: int,
    progress: bool = False,
    train_requests: int | None = None,
) -> list[float]:
    """Fit ``model`` on the task's logged training slates; the validation NLL per epoch.

    Args:
        model: From :func:`build_reward_model`.
        task: Its logged training slates fit, the validation slates select the epoch.
        epochs: Maximum epochs.
        seed: Shuffling seed (and of the subset below).
        progress: Show a progress bar (on terminals).
        train_requests: Fit on this many training slates, drawn without
            replacement (a data-volume knob for tests and quick runs); ``None``: all.
    """
    rows = None
    available = len(task.pool.split_indices("train"))
    if train_requests is not None and train_requests < available:
        rows = np.sort(np.random.default_rng(seed + 2).permutation(available)[:train_requests])
    optimizer = None
    if isinstance(model, ComposedSimulator) and model.trainable:
        optimizer = composition_optimizer(model.to(task.device))
    report = fit_simulator(
        model,
        task.pool,
        epochs=epochs,
        seed=seed,
        progress=progress,
        train_rows=rows,
        optimizer=optimizer,
        device=task.device,
    )
    model.eval()
    return list(report.valid_nll)
