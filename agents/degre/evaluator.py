"""DeGRe's lookahead evaluator: cumulative-regression heads over list prefixes.

The evaluator values every prefix ``l_{1:t}`` of a list by the distribution of its
cumulative clicks ``V_t``: ``K`` heads give ``P(V_t >= k)``, monotone in ``k`` by
construction, and ``E[V_t] = sum_k P(V_t >= k)``. It is fitted with binary
cross-entropy per head on prefixes of logged slates and of lists sampled around
the initial order, all scored by the task's training simulator
(:func:`fit_evaluator`); :class:`LookaheadScorer` serves it as a
:class:`~agents.common.scorers.ListScorer` (mining, REINFORCE, the teacher's beam).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agents.base import UnsupportedTaskError
from agents.common.nn import feature_tables, transformer_stack
from agents.common.sampling import torch_generator
from agents.common.scorers import ListScorer, PrefixScorer
from agents.common.telemetry import TrainingLogger
from agents.common.training import gradient_step, minibatches, training_mode
from agents.degre.config import DeGReConfig
from rerank_env.task import RerankTask
from simulators.base import SlateBatch
from simulators.progress import progress_bar

#: Sampling temperatures of the lists the evaluator is fitted on (``inf``: uniform
#: random lists): from near the initial order to anywhere, so the evaluator has
#: seen the region beam search explores.
EVALUATOR_LIST_TEMPERATURES = (0.25, 0.5, 1.0, 2.0, math.inf)


def poisson_binomial_tails(probs: torch.Tensor, heads: int) -> torch.Tensor:
    """``P(V_t >= k)`` of independent clicks, ``[M, T, heads]``.

    Args:
        probs: Click probability of each position ``[M, T]``; ``V_t`` is the number
            of clicks on positions ``1..t``.
        heads: K; ``k`` runs over ``1..K`` (``P(V_t >= k) = 0`` for ``k > t``).
    """
    batch, steps = probs.shape
    if steps > heads:
        raise ValueError(f"{steps} positions need at least as many heads, got heads={heads}")
    counts = torch.zeros(batch, heads + 1, dtype=probs.dtype, device=probs.device)
    counts[:, 0] = 1.0  # P(V_0 = 0)
    tails = []
    for t in range(steps):
        p = probs[:, t : t + 1]
        shifted = torch.cat([torch.zeros_like(counts[:, :1]), counts[:, :-1]], dim=1)
        counts = counts * (1 - p) + shifted * p
        # P(V >= k) = sum_{j >= k} P(V = j); T <= K, so no count exceeds K.
        tails.append(counts.flip(1).cumsum(1).flip(1)[:, 1:])
    return torch.stack(tails, dim=1)


def count_tails(clicks: torch.Tensor, heads: int) -> torch.Tensor:
    """``1[V_t >= k]`` of observed clicks ``[M, T]`` (bool), float ``[M, T, heads]``."""
    cumulative = clicks.float().cumsum(dim=1)
    k = torch.arange(1, heads + 1, device=clicks.device, dtype=torch.float32)
    return (cumulative[..., None] >= k).float()


class LookaheadEvaluator(nn.Module):
    """Causal Transformer over a list prefix with cumulative regression heads.

    Input: a context token (projected user features plus the mean features of the
    user's history) followed by the projected features of the listed items, each
    with its slot embedding. The output at item ``t`` gives ``K`` logits of
    ``P(V_t >= k)``: the first head freely, each next one by subtracting a
    softplus, so ``P(V_t >= k)`` never increases with ``k``.

    Args:
        user_dim: Du.
        item_dim: Di.
        max_length: K, the longest list (and the number of heads).
        dim: Width.
        layers: Transformer layers.
        heads: Attention heads.
        dropout: Dropout inside the Transformer.
    """

    def __init__(
        self,
        user_dim: int,
        item_dim: int,
        *,
        max_length: int,
        dim: int = 64,
        layers: int = 2,
        heads: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.max_length = max_length
        self.user_proj = nn.Linear(user_dim, dim)
        self.history_proj = nn.Linear(item_dim, dim)
        self.item_proj = nn.Linear(item_dim, dim)
        # Click models are bilinear in user and item: give the tokens that term directly.
        self.user_match = nn.Linear(user_dim, dim)
        self.item_match = nn.Linear(item_dim, dim)
        self.slot = nn.Embedding(max_length + 1, dim)
        self.encoder = transformer_stack(dim, heads, layers, dropout)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, max_length)

    def context(self, user: torch.Tensor, history_mean: torch.Tensor) -> torch.Tensor:
        """What every sequence of a request starts from, ``[M, 2d]``.

        The first token (user and history) and the user's matching vector, whose
        elementwise product with each item's is added to the item's token.
        """
        token = self.user_proj(user) + self.history_proj(history_mean)
        return torch.cat([token, self.user_match(user)], dim=1)

    def tail_logits(self, context: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits of ``P(V_t >= k)``, ``[M, T, K]``.

        Args:
            context: :meth:`context` of each sequence ``[M, 2d]``.
            items: Item features of each prefix ``[M, T, Di]`` (``T <= K``).
        """
        steps = items.shape[1]
        if steps > self.max_length:
            raise UnsupportedTaskError(
                f"list of {steps} items; this evaluator was built for at most "
                f"max_length={self.max_length}"
            )
        first, user_match = context.chunk(2, dim=1)
        item_tokens = self.item_proj(items) + user_match[:, None] * self.item_match(items)
        tokens = torch.cat([first[:, None], item_tokens], dim=1)
        tokens = tokens + self.slot.weight[: steps + 1]
        causal = nn.Transformer.generate_square_subsequent_mask(steps + 1, device=items.device)
        hidden = self.norm(self.encoder(tokens, mask=causal, is_causal=True))[:, 1:]
        raw = self.head(hidden)
        first = raw[..., :1]
        return torch.cat([first, first - F.softplus(raw[..., 1:]).cumsum(dim=-1)], dim=-1)

    @staticmethod
    def head_mask(steps: int, heads: int, device: torch.device | str) -> torch.Tensor:
        """Which heads are meaningful at each prefix length: ``k <= t``, bool ``[T, K]``."""
        t = torch.arange(1, steps + 1, device=device)[:, None]
        return torch.arange(1, heads + 1, device=device)[None] <= t

    def prefix_values(self, context: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``E[V_t] = sum_{k <= t} P(V_t >= k)`` of every prefix, ``[M, T]``."""
        probs = torch.sigmoid(self.tail_logits(context, items))
        mask = self.head_mask(items.shape[1], self.max_length, items.device)
        return (probs * mask).sum(dim=-1)

    def request_context(self, task: RerankTask, requests: torch.Tensor) -> torch.Tensor:
        """:meth:`context` of each request (its user's features and history), ``[M, 2d]``."""
        tables = feature_tables(task)
        return self.context(
            tables.users[tables.request_user[requests]], tables.history_mean(requests)
        )

    def request_inputs(
        self, task: RerankTask, requests: torch.Tensor, items: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(context [M, 2d], item features [M, T, Di])`` of item lists of ``requests``."""
        return self.request_context(task, requests), feature_tables(task).items[items]


class LookaheadScorer(ListScorer):
    """A :class:`LookaheadEvaluator` as a list scorer: ``E[V_t]`` of every prefix.

    Args:
        evaluator: The fitted evaluator.
    """

    def __init__(self, evaluator: LookaheadEvaluator) -> None:
        super().__init__()
        self.evaluator = evaluator

    def _prefix_values(
        self, task: RerankTask, requests: torch.Tensor, slots: torch.Tensor
    ) -> torch.Tensor:
        evaluator = self.evaluator.to(task.device).eval()
        items = torch.gather(task.candidates[requests], 1, slots)
        return evaluator.prefix_values(*evaluator.request_inputs(task, requests, items))

    def prefix_scorer(self, task: RerankTask, requests: np.ndarray) -> PrefixScorer:
        """Beam-search scorer with each request's context computed once."""
        evaluator = self.evaluator.to(task.device).eval()
        requests_t = torch.as_tensor(np.array(requests), device=task.device)
        candidates = task.candidates[requests_t]
        items_table = feature_tables(task).items
        context = evaluator.request_context(task, requests_t)

        def score(rows: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
            self.calls += len(rows)
            items = items_table[torch.gather(candidates[rows], 1, slots)]
            return evaluator.prefix_values(context[rows], items)[:, -1]

        return score


# ---------------------------------------------------------------------- fitting


def fit_evaluator(
    evaluator: LookaheadEvaluator,
    task: RerankTask,
    settings: DeGReConfig,
    logger: TrainingLogger,
    progress: bool = False,
) -> int:
    """Fit ``evaluator`` on simulator-scored lists; returns the simulator calls spent.

    The epoch with the best validation BCE is kept. Logs every update (stage
    ``"evaluator"``: ``loss``, ``grad_norm``) and every epoch's validation BCE and the
    mean absolute error of ``E[V_L]`` against the simulator (``"evaluator_valid"``).
    """
    evaluator = evaluator.to(task.device)
    rng = np.random.default_rng(settings.seed)
    clicks_rng = torch_generator(settings.seed, task.device)
    train_requests = task.requests("train")
    if settings.train_requests is not None and settings.train_requests < len(train_requests):
        subset = np.random.default_rng(settings.seed + 2).permutation(len(train_requests))
        train_requests = np.sort(train_requests[subset[: settings.train_requests]])
    train, calls = evaluator_data(task, settings, train_requests, rng, clicks_rng, train=True)
    valid, valid_calls = evaluator_data(
        task,
        settings,
        task.requests("valid")[: settings.eval_requests],
        rng,
        clicks_rng,
        train=False,
    )
    optimiser = torch.optim.Adam(evaluator.parameters(), lr=settings.learning_rate)
    best, best_state = math.inf, None
    bar = progress_bar(settings.evaluator_epochs, "DeGRe evaluator", progress)
    for epoch in range(1, settings.evaluator_epochs + 1):
        with training_mode(evaluator):
            for batch in minibatches(np.arange(len(train[0])), settings.evaluator_batch_size, rng):
                loss = evaluator_loss(task, evaluator, train, batch)
                norm = gradient_step(optimiser, loss, list(evaluator.parameters()))
                logger.log("evaluator", loss=loss.item(), grad_norm=norm)
        with torch.no_grad():
            every = np.arange(len(valid[0]))
            valid_loss = evaluator_loss(task, evaluator, valid, every).item()
            context, features = evaluator.request_inputs(task, valid[0], valid[1])
            predicted = evaluator.prefix_values(context, features)[:, -1]
            # E[V_L] of the targets: the sum of the last prefix's tail probabilities.
            error = (predicted - valid[2][:, -1].sum(dim=-1)).abs().mean().item()
        logger.log(
            "evaluator_valid",
            step=epoch,
            evaluator_epoch=epoch,
            evaluator_valid_bce=valid_loss,
            evaluator_valid_mae=error,
        )
        if valid_loss < best:
            best = valid_loss
            best_state = {k: v.detach().clone() for k, v in evaluator.state_dict().items()}
        bar.update()
        bar.set_postfix(valid_bce=f"{valid_loss:.4f}", mae=f"{error:.3f}")
    bar.close()
    if best_state is not None:
        evaluator.load_state_dict(best_state)
    evaluator.eval()
    return calls + valid_calls


def evaluator_data(
    task: RerankTask,
    settings: DeGReConfig,
    requests: np.ndarray,
    rng: np.random.Generator,
    clicks_rng: torch.Generator,
    *,
    train: bool,
) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], int]:
    """``((requests [M], items [M, L], tails [M, L, K]), simulator calls)`` to learn from.

    Lists: each request's logged slate (when ``logged_slates``) and
    ``evaluator_lists`` lists of its candidates sampled around the initial order
    at several temperatures. Targets: the training simulator's (``targets``), or
    the logged clicks for logged slates with ``logged_clicks``. Validation data
    always uses expected targets and no logged slates (it measures how well the
    evaluator matches the training simulator).
    """
    length, n = task.slate_length, task.num_candidates
    heads, calls = length, 0
    request_parts, item_parts, tail_parts = [], [], []
    simulator = task.simulators["train"]
    if train and settings.logged_slates and task.pool.slate_length >= length:
        rows = torch.as_tensor(np.array(requests), device=task.device)
        logged = SlateBatch(
            task.users[rows],
            torch.as_tensor(task.pool.logged_items[requests, :length], device=task.device),
            task.histories[rows],
        )
        if settings.logged_clicks:
            clicks = torch.as_tensor(task.pool.logged_clicks[requests, :length], device=task.device)
            tail_parts.append(count_tails(clicks, heads))
        else:
            probs = simulator.click_probs(logged)
            tail_parts.append(_tails(settings, probs, heads, clicks_rng))
            calls += len(rows)
        request_parts.append(rows)
        item_parts.append(logged.items)
    count = settings.evaluator_lists if train else 4
    repeated = np.repeat(requests, count)
    scores = task.scores_np[repeated]
    scores = (scores - scores.mean(1, keepdims=True)) / scores.std(1, keepdims=True).clip(1e-6)
    temperatures = np.array(EVALUATOR_LIST_TEMPERATURES)[
        rng.integers(0, len(EVALUATOR_LIST_TEMPERATURES), len(repeated))
    ]
    gumbel = -np.log(-np.log(rng.random((len(repeated), n)).clip(1e-12, 1 - 1e-12)))
    with np.errstate(divide="ignore", invalid="ignore"):
        keys = np.where(np.isinf(temperatures)[:, None], 0.0, scores / temperatures[:, None])
    slots = np.argsort(-(keys + gumbel), axis=1)[:, :length]
    for part in np.array_split(np.arange(len(repeated)), max(1, len(repeated) // 8192)):
        batch = task.slate_batch(repeated[part], slots[part])
        probs = simulator.click_probs(batch)
        tail_parts.append(
            _tails(settings, probs, heads, clicks_rng)
            if train
            else poisson_binomial_tails(probs, heads)
        )
        item_parts.append(batch.items)
        request_parts.append(torch.as_tensor(repeated[part], device=task.device))
    calls += len(repeated)
    return (torch.cat(request_parts), torch.cat(item_parts), torch.cat(tail_parts)), calls


def _tails(
    settings: DeGReConfig, probs: torch.Tensor, heads: int, generator: torch.Generator
) -> torch.Tensor:
    """Training targets from click probabilities, as ``settings.targets`` says."""
    if settings.targets == "sampled":
        drawn = torch.rand(probs.shape, generator=generator, device=probs.device)
        return count_tails(drawn < probs, heads)
    return poisson_binomial_tails(probs, heads)


def evaluator_loss(
    task: RerankTask,
    evaluator: LookaheadEvaluator,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    batch: np.ndarray,
) -> torch.Tensor:
    """Mean BCE of the meaningful heads (``k <= t``) over ``batch``'s rows of ``data``."""
    rows = torch.as_tensor(batch, device=task.device)
    requests, items, tails = data[0][rows], data[1][rows], data[2][rows]
    context, features = evaluator.request_inputs(task, requests, items)
    logits = evaluator.tail_logits(context, features)
    mask = LookaheadEvaluator.head_mask(items.shape[1], evaluator.max_length, items.device)
    losses = F.binary_cross_entropy_with_logits(logits, tails, reduction="none")
    return (losses * mask).sum() / (mask.sum() * len(batch))


__all__: list[Any] = [
    "EVALUATOR_LIST_TEMPERATURES",
    "LookaheadEvaluator",
    "LookaheadScorer",
    "count_tails",
    "evaluator_data",
    "evaluator_loss",
    "fit_evaluator",
    "poisson_binomial_tails",
]
