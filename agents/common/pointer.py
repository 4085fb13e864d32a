"""The pointer policy: a list generator that points at one candidate per slot.

* :class:`PointerDecoder`: a causal decoder that points at the next candidate,
  with the already placed ones masked; teacher-forced log-probabilities for
  training and greedy or sampled decoding (sampling without replacement),
  batched over requests, completing given prefixes;
* :class:`PointerPolicy`: :class:`~agents.common.nn.CandidateSetEncoder` + decoder,
  the generator DeGRe, GoalRank and Seq2Slate train;
* :func:`greedy_lists` / :func:`sampled_lists`: serve a pointer policy (sampling
  by Gumbel-max with per-request noise, :func:`~agents.common.sampling.request_gumbel`,
  so a request's lists do not depend on the batch).

Lists are candidate positions (``0 .. N-1``), ``-1`` pads a prefix's empty slots,
as everywhere in the suite.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from agents.base import UnsupportedTaskError, empty_prefixes
from agents.common.nn import (
    CandidateSetEncoder,
    RequestInputs,
    masked_entropy,
    request_inputs,
    transformer_stack,
)
from agents.common.sampling import request_gumbel
from rerank_env.task import RerankTask
from simulators.base import PAD

#: Pointer logits are squashed into [-C, C] (Bello et al.'s trick; keeps early
#: training from collapsing onto one candidate).
POINTER_CLIP = 10.0


class PointerDecoder(nn.Module):
    """Causal decoder with a pointer head over the remaining candidates.

    The decoder reads ``[user, c_1, ..., c_t]`` (the user first, then the encodings
    of the candidates placed so far, plus a slot embedding) through causal
    self-attention; its output at step ``t`` is a query whose scaled dot product
    with every candidate's encoding gives the logits of slot ``t + 1``. Placed
    candidates get ``-inf``.

    Args:
        dim: Width (the encoder's).
        layers: Decoder layers.
        heads: Attention heads.
        max_length: Largest L.
        dropout: Dropout inside the Transformer.
    """

    def __init__(
        self,
        dim: int = 64,
        *,
        layers: int = 2,
        heads: int = 4,
        max_length: int = 16,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.max_length = max_length
        self.slot = nn.Embedding(max_length, dim)
        self.decoder = transformer_stack(dim, heads, layers, dropout)
        self.norm = nn.LayerNorm(dim)
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)

    def _check_length(self, length: int) -> None:
        if length > self.max_length:
            raise UnsupportedTaskError(
                f"slate length {length} exceeds this decoder's max_length={self.max_length} "
                "(it was built for shorter lists)"
            )

    def logits(
        self, encoded: torch.Tensor, user: torch.Tensor, slots: torch.Tensor
    ) -> torch.Tensor:
        """Teacher-forced logits of every step, ``[B, T, N]``.

        Args:
            encoded: Candidate encodings ``[B, N, d]``.
            user: User encoding ``[B, d]``.
            slots: The list so far, long ``[B, T]``; step ``t``'s logits see
                ``slots[:, :t]`` and mask those candidates.
        """
        return self.states_and_logits(encoded, user, slots)[1]

    def states_and_logits(
        self, encoded: torch.Tensor, user: torch.Tensor, slots: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(decoder states [B, T, d], logits [B, T, N])`` of every step (see :meth:`logits`).

        The state of step ``t`` summarises the user and the candidates placed
        before it: what an actor-critic's value head reads (:mod:`agents.sb3_policy`).
        """
        batch, steps = slots.shape
        self._check_length(steps)
        n = encoded.shape[1]
        placed = torch.gather(
            encoded, 1, slots[:, : steps - 1, None].expand(-1, -1, encoded.shape[2])
        )
        sequence = torch.cat([user[:, None], placed], dim=1) + self.slot.weight[:steps]
        causal = nn.Transformer.generate_square_subsequent_mask(steps, device=encoded.device)
        hidden = self.norm(self.decoder(sequence, mask=causal, is_causal=True))
        scores = torch.einsum("btd,bnd->btn", self.query(hidden), self.key(encoded))
        logits = POINTER_CLIP * torch.tanh(scores / math.sqrt(encoded.shape[2]))
        # Step t masks the candidates placed at steps < t.
        earlier = torch.zeros(batch, steps, n, dtype=torch.bool, device=encoded.device)
        if steps > 1:
            one_hot = torch.nn.functional.one_hot(slots[:, : steps - 1], n).bool()
            earlier[:, 1:] = one_hot.cumsum(dim=1).bool()
        return hidden, logits.masked_fill(earlier, float("-inf"))

    def decode(
        self,
        encoded: torch.Tensor,
        user: torch.Tensor,
        length: int,
        *,
        greedy: bool = True,
        generator: torch.Generator | None = None,
        prefix: torch.Tensor | None = None,
        temperature: float = 1.0,
        gumbel: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode lists of ``length`` candidates, one slot at a time.

        Args:
            encoded: Candidate encodings ``[B, N, d]``.
            user: User encoding ``[B, d]``.
            length: L.
            greedy: Take the most likely candidate; else sample (without
                replacement: placed candidates are masked).
            generator: Torch generator for sampling.
            prefix: Optional long ``[B, L]`` with ``-1`` in the slots to decode;
                filled slots are kept (a prefix: filled slots come first).
            temperature: Softmax temperature when sampling.
            gumbel: Optional Gumbel noise ``[B, L, N]``: sample by the Gumbel-max
                trick with this noise instead of drawing from ``generator`` (so a
                row's list depends only on its own noise, not on the batch).

        Returns:
            ``(slots [B, L], step_log_probs [B, L])``; a prefix's kept slots have
            log-probability 0 (the policy did not choose them).
        """
        self._check_length(length)
        batch = encoded.shape[0]
        slots = torch.full((batch, length), PAD, dtype=torch.long, device=encoded.device)
        log_probs = torch.zeros(batch, length, device=encoded.device)
        for t in range(length):
            step_logits = self.logits(encoded, user, slots[:, : t + 1].clamp(min=0))[:, t]
            step_log_probs = torch.log_softmax(step_logits / temperature, dim=1)
            if greedy:
                choice = step_log_probs.argmax(dim=1)
            elif gumbel is not None:
                choice = (step_log_probs + gumbel[:, t]).argmax(dim=1)
            else:
                choice = torch.multinomial(step_log_probs.exp(), 1, generator=generator)[:, 0]
            if prefix is not None:
                kept = prefix[:, t] != PAD
                choice = torch.where(kept, prefix[:, t], choice)
            chosen = step_log_probs.gather(1, choice[:, None])[:, 0]
            if prefix is not None:
                chosen = torch.where(kept, torch.zeros_like(chosen), chosen)
            slots[:, t] = choice
            log_probs[:, t] = chosen
        return slots, log_probs


class PointerPolicy(nn.Module):
    """A list generator: :class:`CandidateSetEncoder` + :class:`PointerDecoder`.

    Args:
        user_dim: Du.
        item_dim: Di.
        dim: Width.
        encoder_layers: Encoder depth.
        decoder_layers: Decoder depth.
        heads: Attention heads.
        initial_order: Whether the encoder sees the initial rank.
        max_length: Largest L.
    """

    def __init__(
        self,
        user_dim: int,
        item_dim: int,
        *,
        dim: int = 64,
        encoder_layers: int = 2,
        decoder_layers: int = 2,
        heads: int = 4,
        initial_order: bool = True,
        max_length: int = 16,
    ) -> None:
        super().__init__()
        self.encoder = CandidateSetEncoder(
            user_dim,
            item_dim,
            dim=dim,
            layers=encoder_layers,
            heads=heads,
            initial_order=initial_order,
        )
        self.decoder = PointerDecoder(
            dim, layers=decoder_layers, heads=heads, max_length=max_length
        )

    def encode(self, inputs: RequestInputs, repeats: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidate and user encodings, each request's repeated ``repeats`` times in a row.

        Encoding once and repeating is what makes many samples per request cheap.
        """
        encoded, user = self.encoder(inputs)
        if repeats > 1:
            encoded, user = (
                encoded.repeat_interleave(repeats, 0),
                user.repeat_interleave(repeats, 0),
            )
        return encoded, user

    def step_logits(
        self, inputs: RequestInputs, slots: torch.Tensor, repeats: int = 1
    ) -> torch.Tensor:
        """Masked logits of every step given the lists, ``[B * repeats, L, N]``.

        Args:
            inputs: B requests.
            slots: Lists, long ``[B * repeats, L]`` (request ``b``'s lists in rows
                ``b * repeats ...``).
            repeats: Lists per request.
        """
        encoded, user = self.encode(inputs, repeats)
        return self.decoder.logits(encoded, user, slots)

    def step_states_and_logits(
        self, inputs: RequestInputs, slots: torch.Tensor, repeats: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(decoder states [B * repeats, L, d], masked logits [B * repeats, L, N])``.

        The state of step ``t`` summarises the user and the items above slot ``t``:
        what a critic reads (:mod:`agents.policy_gradient`'s PPO).
        """
        encoded, user = self.encode(inputs, repeats)
        return self.decoder.states_and_logits(encoded, user, slots)

    def step_log_probs(
        self, inputs: RequestInputs, slots: torch.Tensor, repeats: int = 1
    ) -> torch.Tensor:
        """Log-probability of each slot of the given lists, ``[B * repeats, L]``."""
        return self.step_log_probs_and_entropy(inputs, slots, repeats)[0]

    def step_log_probs_and_entropy(
        self, inputs: RequestInputs, slots: torch.Tensor, repeats: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log-probabilities [B * repeats, L], entropies [B * repeats, L])`` of each step.

        One forward pass gives both: the entropy of each step's distribution over
        the remaining candidates (what the telemetry records, and what an entropy
        bonus maximises) costs no second pass.
        """
        log_probs = torch.log_softmax(self.step_logits(inputs, slots, repeats), dim=2)
        return log_probs.gather(2, slots[..., None])[..., 0], masked_entropy(log_probs)

    def generate(
        self,
        inputs: RequestInputs,
        length: int,
        *,
        greedy: bool = True,
        generator: torch.Generator | None = None,
        prefix: torch.Tensor | None = None,
        temperature: float = 1.0,
        repeats: int = 1,
        gumbel: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode ``repeats`` lists per request: ``(slots, step_log_probs)``, ``[B * repeats, L]``.

        See :meth:`PointerDecoder.decode`; ``prefix`` is ``[B * repeats, L]``.
        """
        encoded, user = self.encode(inputs, repeats)
        return self.decoder.decode(
            encoded,
            user,
            length,
            greedy=greedy,
            generator=generator,
            prefix=prefix,
            temperature=temperature,
            gumbel=gumbel,
        )


@torch.no_grad()
def greedy_lists(
    policy: PointerPolicy,
    task: RerankTask,
    requests: np.ndarray,
    prefixes: np.ndarray | None = None,
) -> np.ndarray:
    """``policy``'s greedy lists for ``requests``, completing any prefix, ``[B, L]``."""
    policy = policy.to(task.device).eval()
    length = task.slate_length
    prefixes = empty_prefixes(len(requests), length) if prefixes is None else prefixes
    slots, _ = policy.generate(
        request_inputs(task, requests),
        length,
        greedy=True,
        prefix=torch.as_tensor(np.asarray(prefixes), device=task.device),
    )
    return slots.cpu().numpy()


@torch.no_grad()
def sampled_lists(
    policy: PointerPolicy,
    task: RerankTask,
    requests: np.ndarray,
    count: int,
    seed: int,
    prefixes: np.ndarray | None = None,
    temperature: float = 1.0,
) -> np.ndarray:
    """``count`` lists per request sampled from ``policy``, ``[B, count, L]``.

    A request's lists depend only on ``(seed, request)`` (Gumbel-max sampling with
    per-request noise), not on the rest of the batch.
    """
    policy = policy.to(task.device).eval()
    length = task.slate_length
    prefixes = empty_prefixes(len(requests), length) if prefixes is None else prefixes
    slots, _ = policy.generate(
        request_inputs(task, requests),
        length,
        greedy=False,
        prefix=torch.as_tensor(np.repeat(np.asarray(prefixes), count, axis=0), device=task.device),
        temperature=temperature,
        repeats=count,
        gumbel=torch.as_tensor(
            request_gumbel(seed, requests, (count, length, task.num_candidates)),
            dtype=torch.float32,
            device=task.device,
        ).reshape(len(requests) * count, length, task.num_candidates),
    )
    return slots.cpu().numpy().reshape(len(requests), count, length)
