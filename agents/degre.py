"""DeGRe: dense-supervised generative reranking.

DeGRe (KDD 2026 ADS) trains a one-pass list generator to reach the quality of a
beam search it could not afford at serving time. Three stages, all in
:meth:`DeGRe.fit`:

1. **Lookahead evaluator** (:class:`LookaheadEvaluator`): a causal Transformer over
   ``[user, item_1, ..., item_t]`` that predicts, for every prefix ``l_{1:t}`` of a
   list, the distribution of its cumulative value ``V_t`` (clicks on positions
   ``1..t``) by *cumulative regression*: ``K`` heads give ``P(V_t >= k)`` for
   ``k = 1..K`` and ``E[V_t] = sum_k P(V_t >= k)``. The heads are monotone in ``k``
   by construction. It is fitted with binary cross-entropy per head on the prefixes
   of logged slates and of lists sampled around the initial order, both scored by
   the task's *training* simulator (``targets="expected"``: the exact tail
   probabilities of the simulator's independent per-position clicks;
   ``"sampled"``: one draw of clicks). ``evaluator="simulator"`` skips it and
   uses the training simulator itself, the ablation "true evaluator vs learned".
2. **Offline mining**: beam search of width ``beam_width`` over each training
   request's candidate permutations, scored by the evaluator, keeps the top
   ``keep_lists`` lists (the initial order competes too, so the best mined list is
   never worse than it under the evaluator) with, at every step, the evaluator's
   value of appending each remaining candidate to the mined prefix (the scores
   the search computed anyway).
3. **Dense supervision** of a :class:`~agents.nn.PointerPolicy` (candidate-set
   encoder, causal pointer decoder whose first input is the user): at each step of
   a mined list, cross-entropy on the hard label (the mined item) plus
   ``soft_weight`` times ``KL(soft || p_theta)``, ``soft = softmax(values / temperature)``
   over the remaining candidates; each list weighted by its value. Serving is
   one greedy pass.

``supervision="sparse"`` trains the same generator by REINFORCE with the
evaluator's list value instead, at the same number of evaluator calls as the
dense configuration would spend (the credit-assignment ablation);
``decode="evaluator-beam"`` skips the generator and serves the evaluator's own
beam search (the teacher DeGRe distils). Mining runs in ``rounds``: after each
round the generator trains on everything mined so far, which gives the learning
curve of reward against evaluator calls. A call is one sequence scored: a prefix
in beam search, a sampled list in REINFORCE (a top-down scorer values all of a
list's prefixes in one pass); with ``evaluator="simulator"`` they are simulator
calls.

Reading of the paper marked [I] in ``docs/agents.md``: ``V`` is the click count of
the prefix (the simulator is top-down, so a prefix's value does not depend on what
follows), and the heads are trained with BCE on ``1[V_t >= k]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agents.base import TrainableAgent, UnsupportedTaskError, complete_by_scores, empty_prefixes
from agents.nn import (
    PointerPolicy,
    feature_tables,
    greedy_lists,
    input_dims,
    request_inputs,
    sampled_lists,
    torch_generator,
)
from agents.seq2slate import advantages
from agents.training import minibatches, progress_bar, training_mode
from rerank_env.task import RerankTask
from simulators.base import PAD, SlateBatch, isolated_torch_rng
from simulators.search import beam_search_slots

EvaluatorKind = Literal["learned", "simulator"]
Targets = Literal["expected", "sampled"]
Supervision = Literal["dense", "sparse"]
ListWeight = Literal["value", "uniform"]
Decode = Literal["generator", "evaluator-beam"]

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
        layer = nn.TransformerEncoderLayer(
            dim, heads, 2 * dim, dropout=dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
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


@dataclass
class MinedLists:
    """What mining produced: lists with their step-wise evaluator values.

    Attributes:
        requests: Request of each list ``[M]``.
        lists: Candidate slots ``[M, L]``.
        values: The evaluator's value of each list ``[M]``.
        step_values: Value of each prefix of each list ``[M, L]``.
        extension_values: Value of appending each candidate to the list's prefix
            before step ``t``, ``[M, L, N]``; ``-inf`` for placed candidates.
        from_beam: Whether each list came from the beam search (else it is the
            initial order, kept because the beam found nothing better), ``[M]``.
    """

    requests: np.ndarray
    lists: torch.Tensor
    values: torch.Tensor
    step_values: torch.Tensor
    extension_values: torch.Tensor
    from_beam: np.ndarray

    def __len__(self) -> int:
        return len(self.requests)

    @staticmethod
    def concatenate(parts: list[MinedLists]) -> MinedLists:
        """All ``parts`` as one."""
        return MinedLists(
            np.concatenate([p.requests for p in parts]),
            torch.cat([p.lists for p in parts]),
            torch.cat([p.values for p in parts]),
            torch.cat([p.step_values for p in parts]),
            torch.cat([p.extension_values for p in parts]),
            np.concatenate([p.from_beam for p in parts]),
        )


def beam_calls_per_request(candidates: int, length: int, width: int) -> int:
    """Prefixes a beam search of ``width`` scores for one request (every valid extension)."""
    calls, beams = 0, 1
    for step in range(length):
        calls += beams * (candidates - step)
        beams = min(width, beams * (candidates - step))
    return calls


def mining_calls_per_request(candidates: int, length: int, width: int) -> int:
    """Evaluator calls of mining one request: the beam search and the initial order.

    The soft labels of the beam's lists reuse the search's scores. A request whose
    initial order beats a kept beam list costs ``sum_t (N - t)`` more calls (its
    extensions were never scored): rare, and not included here.
    """
    return beam_calls_per_request(candidates, length, width) + 1


class DeGRe(TrainableAgent):
    """Dense-supervised generative reranker (lookahead evaluator -> greedy generator).

    Args:
        evaluator: ``"learned"`` (:class:`LookaheadEvaluator` fitted on logs and
            simulator-scored lists) or ``"simulator"`` (the training simulator).
        targets: The learned evaluator's targets on simulator-scored lists:
            ``"expected"`` (exact ``P(V_t >= k)``) or ``"sampled"`` (one click draw).
        logged_slates: Also fit the evaluator on the logged slates (realistic lists).
        logged_clicks: Their logged clicks as targets instead of the training
            simulator's. Off by default: logged slates are the items users chose, so
            their clicks are far above any candidate list's and bias the evaluator
            upward (see ``docs/agents.md``).
        evaluator_lists: Simulator-scored lists per training request.
        evaluator_epochs: Evaluator epochs (the best by validation loss is kept).
        evaluator_dim: Evaluator width.
        evaluator_layers: Evaluator Transformer layers.
        beam_width: Mining beam width B.
        keep_lists: Mined lists kept per request (``<= beam_width``).
        mining_requests: Training requests mined (at most all of them).
        rounds: Mining rounds; the generator trains after each on all lists so far.
        supervision: ``"dense"`` (mined step labels) or ``"sparse"`` (REINFORCE with
            the evaluator's list value, at the dense configuration's evaluator calls
            unless ``sparse_iterations`` is given).
        soft_weight: lambda, the weight of the soft-label KL term (0: hard labels only).
        temperature: tau of the soft labels.
        list_weight: ``"value"`` (lists weighted by value over the mean value) or
            ``"uniform"``.
        epochs: Generator epochs over the mined lists after each round.
        batch_size: Mined lists per generator step.
        learning_rate: Adam step size (evaluator and generator).
        sparse_samples: Lists sampled per request in the sparse ablation.
        sparse_batch: Requests per step in the sparse ablation.
        sparse_iterations: Steps of the sparse ablation (``None``: match calls).
        dim: Generator width.
        encoder_layers: Candidate-set encoder layers.
        decoder_layers: Pointer decoder layers.
        heads: Attention heads (evaluator and generator).
        decode: ``"generator"`` (one greedy pass, DeGRe) or ``"evaluator-beam"``
            (beam search of ``beam_width`` with the evaluator, its teacher).
        mining_batch: Requests mined per batched search.
        eval_requests: Validation requests of the learning curve (also the learned
            evaluator's validation set, 4 lists each).
        seed: Initialisation, sampling and mining-order seed.
    """

    name = "degre"
    curve = ("evaluator_calls", "valid_reward")

    def __init__(
        self,
        evaluator: EvaluatorKind = "learned",
        targets: Targets = "expected",
        logged_slates: bool = True,
        logged_clicks: bool = False,
        evaluator_lists: int = 8,
        evaluator_epochs: int = 10,
        evaluator_dim: int = 64,
        evaluator_layers: int = 2,
        beam_width: int = 8,
        keep_lists: int = 4,
        mining_requests: int = 2000,
        rounds: int = 4,
        supervision: Supervision = "dense",
        soft_weight: float = 1.0,
        temperature: float = 0.1,
        list_weight: ListWeight = "value",
        epochs: int = 4,
        batch_size: int = 128,
        learning_rate: float = 1e-3,
        sparse_samples: int = 8,
        sparse_batch: int = 64,
        sparse_iterations: int | None = None,
        dim: int = 64,
        encoder_layers: int = 2,
        decoder_layers: int = 1,
        heads: int = 4,
        decode: Decode = "generator",
        mining_batch: int = 64,
        eval_requests: int = 256,
        seed: int = 0,
    ) -> None:
        super().__init__()
        choices = {
            "evaluator": (evaluator, ("learned", "simulator")),
            "targets": (targets, ("expected", "sampled")),
            "supervision": (supervision, ("dense", "sparse")),
            "list_weight": (list_weight, ("value", "uniform")),
            "decode": (decode, ("generator", "evaluator-beam")),
        }
        for key, (value, valid) in choices.items():
            if value not in valid:
                raise ValueError(f"{key} must be one of {valid}, got {value!r}")
        if not 1 <= keep_lists <= beam_width:
            raise ValueError(
                f"keep_lists must be in [1, beam_width={beam_width}], got {keep_lists}"
            )
        counts = {
            "mining_requests": mining_requests, "rounds": rounds, "mining_batch": mining_batch,
            "evaluator_epochs": evaluator_epochs, "evaluator_lists": evaluator_lists,
            "epochs": epochs, "batch_size": batch_size, "sparse_batch": sparse_batch,
            "eval_requests": eval_requests,
        }  # fmt: skip
        for key, value in counts.items():
            if value < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        if sparse_iterations is not None and sparse_iterations < 1:
            raise ValueError(f"sparse_iterations must be >= 1 or None, got {sparse_iterations}")
        if temperature <= 0 or soft_weight < 0:
            raise ValueError(
                f"temperature must be > 0 and soft_weight >= 0, got {temperature}, {soft_weight}"
            )
        if sparse_samples < 2:
            raise ValueError(f"sparse_samples must be >= 2 (the baseline), got {sparse_samples}")
        self.evaluator, self.targets, self.logged_slates = evaluator, targets, logged_slates
        self.logged_clicks = logged_clicks
        self.evaluator_lists, self.evaluator_epochs = evaluator_lists, evaluator_epochs
        self.evaluator_dim, self.evaluator_layers = evaluator_dim, evaluator_layers
        self.beam_width, self.keep_lists, self.mining_requests = (
            beam_width,
            keep_lists,
            mining_requests,
        )
        self.rounds, self.supervision, self.soft_weight = rounds, supervision, soft_weight
        self.temperature, self.list_weight, self.epochs = temperature, list_weight, epochs
        self.batch_size, self.learning_rate = batch_size, learning_rate
        self.sparse_samples, self.sparse_batch = sparse_samples, sparse_batch
        self.sparse_iterations = sparse_iterations
        self.dim, self.encoder_layers, self.decoder_layers = dim, encoder_layers, decoder_layers
        self.heads, self.decode, self.mining_batch = heads, decode, mining_batch
        self.eval_requests, self.seed = eval_requests, seed
        self.name = _name(evaluator, supervision, soft_weight, decode, beam_width)
        self.simulator_calls = 0  # lists or prefixes the training simulator scored in fit
        self.evaluator_calls = 0  # sequences (prefixes or lists) the evaluator scored

    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        keys = (
            "evaluator", "targets", "logged_slates", "logged_clicks", "evaluator_lists",
            "evaluator_epochs",
            "evaluator_dim", "evaluator_layers", "beam_width", "keep_lists", "mining_requests",
            "rounds", "supervision", "soft_weight", "temperature", "list_weight", "epochs",
            "batch_size", "learning_rate", "sparse_samples", "sparse_batch",
            "sparse_iterations", "dim", "encoder_layers", "decoder_layers", "heads", "decode",
            "mining_batch", "eval_requests", "seed",
        )  # fmt: skip
        return {key: getattr(self, key) for key in keys}

    def _build_info(self, task: RerankTask) -> dict[str, Any]:
        user_dim, item_dim = input_dims(task)
        return {"user_dim": user_dim, "item_dim": item_dim, "max_length": task.slate_length}

    def _build(self, task: RerankTask | None = None) -> None:
        info = self.build_info
        self.modules = {}
        with isolated_torch_rng(self.seed):
            if self.evaluator == "learned":
                self.modules["evaluator"] = LookaheadEvaluator(
                    info["user_dim"],
                    info["item_dim"],
                    max_length=info["max_length"],
                    dim=self.evaluator_dim,
                    layers=self.evaluator_layers,
                    heads=self.heads,
                )
            if self.decode == "generator":
                self.modules["policy"] = PointerPolicy(
                    info["user_dim"],
                    info["item_dim"],
                    dim=self.dim,
                    encoder_layers=self.encoder_layers,
                    decoder_layers=self.decoder_layers,
                    heads=self.heads,
                    max_length=info["max_length"],
                )

    def check_task(self, task: RerankTask) -> None:
        """Refuse tasks with fewer distinct lists than ``keep_lists``."""
        if self.keep_lists > math.perm(task.num_candidates, task.slate_length):
            raise UnsupportedTaskError(
                f"keep_lists={self.keep_lists} exceeds the P(N, L) lists of this task"
            )

    # ------------------------------------------------------------------ training

    def fit(self, task: RerankTask, *, progress: bool = False) -> DeGRe:
        """Fit the evaluator, then mine and distil (or REINFORCE, or nothing to distil)."""
        self.check_task(task)
        self.setup(task)
        self.simulator_calls = self.evaluator_calls = 0
        if self.evaluator == "learned":
            self._fit_evaluator(task, progress)
        if self.decode == "generator":
            curve_requests = task.requests("valid")[: self.eval_requests]
            self.history.append(self._curve_point(task, curve_requests))
            if self.supervision == "dense":
                self._fit_dense(task, curve_requests, progress)
            else:
                self._fit_sparse(task, curve_requests, progress)
        for module in self.modules.values():
            module.eval()
        self.fitted = True
        return self

    def _fit_evaluator(self, task: RerankTask, progress: bool) -> None:
        evaluator = self.modules["evaluator"].to(task.device)
        rng = np.random.default_rng(self.seed)
        clicks_rng = torch_generator(self.seed, task.device)
        train = self._evaluator_data(task, task.requests("train"), rng, clicks_rng, train=True)
        valid = self._evaluator_data(
            task, task.requests("valid")[: self.eval_requests], rng, clicks_rng, train=False
        )
        optimiser = torch.optim.Adam(evaluator.parameters(), lr=self.learning_rate)
        best, best_state = math.inf, None
        bar = progress_bar(self.evaluator_epochs, "DeGRe evaluator", progress)
        for epoch in range(1, self.evaluator_epochs + 1):
            with training_mode(evaluator):
                for batch in minibatches(np.arange(len(train[0])), 512, rng):
                    loss = self._evaluator_loss(task, evaluator, train, batch)
                    optimiser.zero_grad()
                    loss.backward()
                    optimiser.step()
            with torch.no_grad():
                every = np.arange(len(valid[0]))
                valid_loss = self._evaluator_loss(task, evaluator, valid, every).item()
                predicted = self._evaluator_values(task, evaluator, valid[0], valid[1])[:, -1]
                # E[V_L] of the targets: the sum of the last prefix's tail probabilities.
                error = (predicted - valid[2][:, -1].sum(dim=-1)).abs().mean().item()
            self.history.append(
                {"evaluator_epoch": epoch, "evaluator_valid_bce": valid_loss,
                 "evaluator_valid_mae": error}
            )  # fmt: skip
            if valid_loss < best:
                best = valid_loss
                best_state = {k: v.detach().clone() for k, v in evaluator.state_dict().items()}
            bar.update()
            bar.set_postfix(valid_bce=f"{valid_loss:.4f}", mae=f"{error:.3f}")
        bar.close()
        if best_state is not None:
            evaluator.load_state_dict(best_state)
        evaluator.eval()

    def _evaluator_data(
        self,
        task: RerankTask,
        requests: np.ndarray,
        rng: np.random.Generator,
        clicks_rng: torch.Generator,
        *,
        train: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(requests [M], items [M, L], tails [M, L, K])`` the evaluator learns from.

        Lists: each request's logged slate (when ``logged_slates``) and
        ``evaluator_lists`` lists of its candidates sampled around the initial order
        at several temperatures. Targets: the training simulator's (``targets``), or
        the logged clicks for logged slates with ``logged_clicks``. Validation data
        always uses expected targets and no logged slates (it measures how well the
        evaluator matches the training simulator).
        """
        length, n = task.slate_length, task.num_candidates
        heads = length
        request_parts, item_parts, tail_parts = [], [], []
        simulator = task.simulators["train"]
        if train and self.logged_slates and task.pool.slate_length >= length:
            rows = torch.as_tensor(np.array(requests), device=task.device)
            logged = SlateBatch(
                task.users[rows],
                torch.as_tensor(task.pool.logged_items[requests, :length], device=task.device),
                task.histories[rows],
            )
            if self.logged_clicks:
                clicks = torch.as_tensor(
                    task.pool.logged_clicks[requests, :length], device=task.device
                )
                tail_parts.append(count_tails(clicks, heads))
            else:
                probs = simulator.click_probs(logged)
                tail_parts.append(self._tails(probs, heads, clicks_rng))
                self.simulator_calls += len(rows)
            request_parts.append(rows)
            item_parts.append(logged.items)
        count = self.evaluator_lists if train else 4
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
                self._tails(probs, heads, clicks_rng) if train
                else poisson_binomial_tails(probs, heads)
            )  # fmt: skip
            item_parts.append(batch.items)
            request_parts.append(torch.as_tensor(repeated[part], device=task.device))
        self.simulator_calls += len(repeated)
        return torch.cat(request_parts), torch.cat(item_parts), torch.cat(tail_parts)

    def _tails(self, probs: torch.Tensor, heads: int, generator: torch.Generator) -> torch.Tensor:
        """Training targets from click probabilities, as ``targets`` says."""
        if self.targets == "sampled":
            drawn = torch.rand(probs.shape, generator=generator, device=probs.device)
            return count_tails(drawn < probs, heads)
        return poisson_binomial_tails(probs, heads)

    def _evaluator_values(
        self,
        task: RerankTask,
        evaluator: LookaheadEvaluator,
        requests: torch.Tensor,
        items: torch.Tensor,
    ) -> torch.Tensor:
        context, features = self._evaluator_inputs(task, evaluator, requests, items)
        return evaluator.prefix_values(context, features)

    @staticmethod
    def _evaluator_inputs(
        task: RerankTask,
        evaluator: LookaheadEvaluator,
        requests: torch.Tensor,
        items: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        tables = feature_tables(task)
        context = evaluator.context(
            tables.users[tables.request_user[requests]], tables.history_mean(requests)
        )
        return context, tables.items[items]

    def _evaluator_loss(
        self,
        task: RerankTask,
        evaluator: LookaheadEvaluator,
        data: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        batch: np.ndarray,
    ) -> torch.Tensor:
        rows = torch.as_tensor(batch, device=task.device)
        requests, items, tails = data[0][rows], data[1][rows], data[2][rows]
        context, features = self._evaluator_inputs(task, evaluator, requests, items)
        logits = evaluator.tail_logits(context, features)
        mask = LookaheadEvaluator.head_mask(items.shape[1], evaluator.max_length, items.device)
        losses = F.binary_cross_entropy_with_logits(logits, tails, reduction="none")
        return (losses * mask).sum() / (mask.sum() * len(batch))

    # ------------------------------------------------------------------ mining

    def _scorer(self, task: RerankTask, requests: np.ndarray) -> Any:
        """``score(rows, slots)`` of prefixes of ``requests``' candidates (counts calls)."""
        requests_t = torch.as_tensor(np.array(requests), device=task.device)
        candidates = task.candidates[requests_t]
        if self.evaluator == "learned":
            evaluator = self.modules["evaluator"].to(task.device).eval()
            tables = feature_tables(task)
            context = evaluator.context(
                tables.users[tables.request_user[requests_t]], tables.history_mean(requests_t)
            )

            def score(rows: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
                self.evaluator_calls += len(rows)
                items = tables.items[torch.gather(candidates[rows], 1, slots)]
                return evaluator.prefix_values(context[rows], items)[:, -1]

        else:

            def score(rows: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
                self.evaluator_calls += len(rows)
                self.simulator_calls += len(rows)
                return task.expected_reward(requests_t[rows], slots, "train")

        return score

    @torch.no_grad()
    def mine(self, task: RerankTask, requests: np.ndarray, progress: bool = False) -> MinedLists:
        """Beam-search each request's best lists under the evaluator, with step values."""
        self._require_built()
        parts = []
        bar = progress_bar(len(requests), "DeGRe mining", progress)
        for start in range(0, len(requests), self.mining_batch):
            chunk = np.asarray(requests[start : start + self.mining_batch], dtype=np.int64)
            parts.append(self._mine_chunk(task, chunk))
            bar.update(len(chunk))
        bar.close()
        return MinedLists.concatenate(parts)

    def _mine_chunk(self, task: RerankTask, requests: np.ndarray) -> MinedLists:
        batch, n, length = len(requests), task.num_candidates, task.slate_length
        device, keep = task.device, self.keep_lists
        score = self._scorer(task, requests)
        slots, values, extensions = beam_search_slots(
            score, batch, n, length, self.beam_width, keep=keep, device=device,
            return_extensions=True,
        )  # fmt: skip
        # The initial order competes with the beam's lists (unless already among them).
        initial = torch.as_tensor(
            complete_by_scores(task.scores_np[requests], length, None), device=device
        )[:, None]
        initial_value = score(torch.arange(batch, device=device), initial[:, 0])
        duplicate = (slots == initial).all(dim=2).any(dim=1)
        pooled_values = torch.cat(
            [values, initial_value.masked_fill(duplicate, -torch.inf)[:, None]], dim=1
        )
        order = pooled_values.argsort(dim=1, descending=True, stable=True)[:, :keep]
        from_beam = order < keep
        slots = torch.gather(
            torch.cat([slots, initial], dim=1), 1, order[..., None].expand(-1, -1, length)
        )
        values = torch.gather(pooled_values, 1, order)
        extensions = torch.cat(
            [extensions, torch.zeros_like(extensions[:, :1])], dim=1
        )  # a slot for the initial order's, filled below where it is kept
        extensions = torch.gather(extensions, 1, order[..., None, None].expand(-1, -1, length, n))
        kept_initial = ~from_beam
        if kept_initial.any():  # the beam never scored these prefixes: score them now
            rows = kept_initial.nonzero()[:, 0]
            extensions[kept_initial] = self._extension_values(score, rows, initial[rows, 0], n)
        lists = slots.reshape(batch * keep, length)
        extension = extensions.reshape(batch * keep, length, n).float()
        return MinedLists(
            np.repeat(requests, keep),
            lists,
            values.reshape(-1).float(),
            extension.gather(2, lists[..., None])[..., 0],
            extension,
            from_beam.reshape(-1).cpu().numpy(),
        )

    @staticmethod
    def _extension_values(
        score: Any, rows: torch.Tensor, lists: torch.Tensor, n: int
    ) -> torch.Tensor:
        """Scores of each prefix of ``lists`` extended by every candidate, ``[M, L, N]``."""
        count, length = lists.shape
        extension = torch.full((count, length, n), -torch.inf, device=lists.device)
        every = torch.arange(n, device=lists.device)
        for step in range(length):
            free = torch.ones(count, n, dtype=torch.bool, device=lists.device)
            if step:
                free.scatter_(1, lists[:, :step], False)
            prefixes = lists[:, None, :step].expand(-1, n, step)
            extended = torch.cat([prefixes, every.expand(count, n)[..., None]], dim=2)
            extension[:, step][free] = score(rows[:, None].expand(-1, n)[free], extended[free])
        return extension

    # ------------------------------------------------------------------ generator

    def _fit_dense(self, task: RerankTask, curve_requests: np.ndarray, progress: bool) -> None:
        policy = self.modules["policy"].to(task.device)
        rng = np.random.default_rng(self.seed + 1)
        optimiser = torch.optim.Adam(policy.parameters(), lr=self.learning_rate)
        train = task.requests("train")
        chosen = rng.permutation(train)[: min(self.mining_requests, len(train))]
        mined: list[MinedLists] = []
        bar = progress_bar(self.rounds, "DeGRe rounds", progress)
        for chunk in np.array_split(chosen, min(self.rounds, len(chosen))):
            mined.append(self.mine(task, chunk, progress))
            data = MinedLists.concatenate(mined)
            weights = (
                data.values / data.values.mean().clamp(min=1e-6)
                if self.list_weight == "value"
                else torch.ones_like(data.values)
            )
            for _ in range(self.epochs):
                for batch in minibatches(np.arange(len(data)), self.batch_size, rng):
                    loss = self.dense_loss(task, policy, data, weights, batch)
                    with training_mode(policy):
                        optimiser.zero_grad()
                        loss.backward()
                        optimiser.step()
            point = self._curve_point(task, curve_requests)
            point["mined_lists"] = len(data)
            point["mined_value"] = data.values.mean().item()
            self.history.append(point)
            bar.update()
            bar.set_postfix(valid_reward=f"{point['valid_reward']:.3f}")
        bar.close()

    def dense_loss(
        self,
        task: RerankTask,
        policy: PointerPolicy,
        data: MinedLists,
        weights: torch.Tensor,
        batch: np.ndarray,
    ) -> torch.Tensor:
        """Value-weighted ``sum_t CE(hard_t) + lambda * KL(soft_t || p_t)`` of ``batch``."""
        rows = torch.as_tensor(batch, device=task.device)
        lists = data.lists[rows]
        with training_mode(policy):
            logits = policy.step_logits(request_inputs(task, data.requests[batch]), lists)
            log_probs = torch.log_softmax(logits, dim=2)
            loss = -log_probs.gather(2, lists[..., None])[..., 0]  # hard labels, [b, L]
            if self.soft_weight:
                soft_logits = data.extension_values[rows] / self.temperature
                soft = torch.softmax(soft_logits, dim=2)
                log_soft = torch.log_softmax(soft_logits, dim=2)
                kl = torch.where(soft > 0, soft * (log_soft - log_probs), 0.0).sum(dim=2)
                loss = loss + self.soft_weight * kl
            w = weights[rows]
            return (w * loss.sum(dim=1)).sum() / w.sum().clamp(min=1e-12)

    def _list_prefix_values(
        self, task: RerankTask, requests: np.ndarray, slots: torch.Tensor
    ) -> torch.Tensor:
        """The evaluator's value of every prefix of each list, ``[M, L]``.

        One call per list: a top-down scorer values all prefixes in one pass.
        """
        self.evaluator_calls += len(slots)
        if self.evaluator == "simulator":
            self.simulator_calls += len(slots)
            return task.prefix_values(requests, slots, "train")
        evaluator = self.modules["evaluator"].to(task.device).eval()
        requests_t = torch.as_tensor(np.array(requests), device=task.device)
        items = torch.gather(task.candidates[requests_t], 1, slots)
        return self._evaluator_values(task, evaluator, requests_t, items)

    def sparse_iterations_for(self, task: RerankTask) -> int:
        """REINFORCE steps of the sparse ablation: the dense run's evaluator calls."""
        if self.sparse_iterations is not None:
            return self.sparse_iterations
        mined = min(self.mining_requests, len(task.requests("train")))
        calls = mined * mining_calls_per_request(
            task.num_candidates, task.slate_length, self.beam_width
        )
        return max(1, math.ceil(calls / (self.sparse_batch * self.sparse_samples)))

    def _fit_sparse(self, task: RerankTask, curve_requests: np.ndarray, progress: bool) -> None:
        policy = self.modules["policy"].to(task.device)
        request_rng = np.random.default_rng(self.seed + 1)
        list_rng = torch_generator(self.seed, task.device)
        optimiser = torch.optim.Adam(policy.parameters(), lr=self.learning_rate)
        iterations, length = self.sparse_iterations_for(task), task.slate_length
        every = max(1, math.ceil(iterations / (4 * self.rounds)))  # a finer curve than dense
        bar = progress_bar(iterations, "DeGRe sparse", progress)
        for iteration in range(1, iterations + 1):
            rows = task.sample_requests("train", self.sparse_batch, request_rng)
            repeated = np.repeat(rows, self.sparse_samples)
            inputs = request_inputs(task, rows)
            with torch.no_grad():
                slots, _ = policy.generate(
                    inputs, length, greedy=False, generator=list_rng, repeats=self.sparse_samples
                )
                values = self._list_prefix_values(task, repeated, slots)
            advantage = advantages(values, self.sparse_samples, "sparse")
            with training_mode(policy):
                log_probs = policy.step_log_probs(inputs, slots, repeats=self.sparse_samples)
                loss = -(advantage * log_probs).sum(dim=1).mean()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            bar.update()
            if iteration % every == 0 or iteration == iterations:
                self.history.append(self._curve_point(task, curve_requests))
        bar.close()

    def _curve_point(self, task: RerankTask, requests: np.ndarray) -> dict[str, float]:
        lists = self.rank(task, requests)
        return {
            "evaluator_calls": self.evaluator_calls,
            "simulator_calls": self.simulator_calls,
            "valid_reward": task.expected_reward(requests, lists, "train").mean().item(),
        }

    # ------------------------------------------------------------------ serving

    def rank(
        self, task: RerankTask, requests: np.ndarray, prefixes: np.ndarray | None = None
    ) -> np.ndarray:
        """One greedy pass of the generator (or the evaluator's beam search)."""
        self._require_built()
        requests = np.asarray(requests, dtype=np.int64)
        if self.decode == "generator":
            return greedy_lists(self.modules["policy"], task, requests, prefixes)
        return self._beam_rank(task, requests, prefixes)

    @torch.no_grad()
    def _beam_rank(
        self, task: RerankTask, requests: np.ndarray, prefixes: np.ndarray | None
    ) -> np.ndarray:
        length = task.slate_length
        prefixes = empty_prefixes(len(requests), length) if prefixes is None else prefixes
        counts = (prefixes != PAD).sum(axis=1)
        lists = np.empty((len(requests), length), dtype=np.int64)
        calls = (self.evaluator_calls, self.simulator_calls)  # serving is not training
        for count in np.unique(counts):  # one search per prefix length
            group = np.flatnonzero(counts == count)
            if count == length:
                lists[group] = prefixes[group]
                continue
            slots, _ = beam_search_slots(
                self._scorer(task, requests[group]),
                len(group),
                task.num_candidates,
                length,
                self.beam_width,
                torch.as_tensor(prefixes[group, :count], device=task.device),
                device=task.device,
            )
            lists[group] = slots[:, 0].cpu().numpy()
        self.evaluator_calls, self.simulator_calls = calls
        return lists

    @property
    def can_sample(self) -> bool:
        """Whether :meth:`sample` works: only with a generator."""
        return self.decode == "generator"

    def sample(
        self,
        task: RerankTask,
        requests: np.ndarray,
        count: int,
        seed: int,
        prefixes: np.ndarray | None = None,
        temperature: float = 1.0,
    ) -> np.ndarray:
        """``count`` lists per request sampled from the generator, ``[B, count, L]``."""
        self._require_built()
        if self.decode != "generator":
            raise TypeError(
                f"{self.name!r} has no generator to sample from (decode={self.decode!r})"
            )
        return sampled_lists(
            self.modules["policy"], task, requests, count, seed, prefixes, temperature
        )


def _name(
    evaluator: str, supervision: str, soft_weight: float, decode: str, beam_width: int
) -> str:
    """The registry-style name of a configuration.

    ``degre``, ``degre-sparse``, ``degre-hard`` or ``degre-beam<B>``, with ``-sim``
    when the training simulator is the evaluator.
    """
    if decode == "evaluator-beam":
        base = f"degre-beam{beam_width}"
    elif supervision == "sparse":
        base = "degre-sparse"
    else:
        base = "degre" if soft_weight else "degre-hard"
    return base + ("-sim" if evaluator == "simulator" else "")
