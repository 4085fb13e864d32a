"""GloRank's generator: a candidate-set encoder and a causal decoder with one of two heads.

* ``head="global"`` (GloRank): each step emits one semantic-ID token from the
  global vocabulary (``task.tokenizer``); output neuron ``v`` is the same code in
  every request. Steps are constrained by a prefix trie over the request's
  remaining candidates, so every decoded list is ``L`` distinct candidates.
* ``head="local"`` (the paper's ablation, ``glorank-local``): each step points at a
  candidate position, as the pointer networks of the suite do; output ``j`` is a
  different item in every request.
* ``head="index"`` (``glorank-index``): the literal local-index output of the
  paper's variance argument, a ``Linear(d, N)`` whose row ``j`` scores the
  candidate at position ``j``, whatever item that is.

Both share everything else: the encoder reads each candidate's features, initial
score, the user, and the embedding of the candidate's semantic ID; the decoder
(causal self-attention over the steps so far, cross-attention to the candidates)
has the same width and depth; a value head reads the decoder's states (PPO's
critic). Lists go in and come out as candidate positions, as everywhere in the suite.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import nn

from agents.common.nn import (
    CandidateSetEncoder,
    DecoderCache,
    RequestInputs,
    decoder_stack,
    masked_entropy,
)
from agents.common.pointer import POINTER_CLIP
from agents.common.trie import CandidateTrie
from rerank_env.task import RerankTask
from simulators.base import PAD

Head = Literal["global", "local", "index"]
HEADS = ("global", "local", "index")
DecodeMode = Literal["greedy", "sample", "beam"]


def candidate_tokens(task: RerankTask, requests: np.ndarray) -> torch.Tensor:
    """The requests' candidates' semantic IDs as global tokens, long ``[B, N, levels]``.

    :func:`~agents.common.nn.request_inputs`'s twin: the policy's other input.
    """
    tokens = task.tokenizer.tokens[task.candidates_np[np.asarray(requests)]]
    return torch.as_tensor(tokens, device=task.device)


class GloRankPolicy(nn.Module):
    """Encoder, causal decoder, and a global-token or local-pointer output head.

    Args:
        user_dim: Du.
        item_dim: Di.
        vocab_size: Semantic-ID tokens over all levels, V.
        levels: Tokens per item.
        head: ``"global"`` (tokens), ``"local"`` (a pointer over candidate positions)
            or ``"index"`` (a ``Linear(d, max_candidates)`` over positions).
        dim: Width.
        encoder_layers: Encoder depth.
        decoder_layers: Decoder depth.
        heads: Attention heads.
        max_length: Largest L.
        initial_order: Whether the encoder sees each candidate's initial rank.
        tied_output: Global head: token ``v``'s logit is the decoder state's dot
            product with ``v``'s input embedding (plus a bias), the embedding the
            encoder adds to each candidate holding ``v``; else a free ``Linear``.
        detach_value: The value head reads the decoder states without sending
            gradients into them (the critic does not reshape the policy).
        max_candidates: Index head: the largest N (rows of its output layer).
    """

    def __init__(
        self,
        user_dim: int,
        item_dim: int,
        vocab_size: int,
        levels: int,
        *,
        head: Head = "global",
        dim: int = 64,
        encoder_layers: int = 2,
        decoder_layers: int = 2,
        heads: int = 4,
        max_length: int = 16,
        initial_order: bool = True,
        tied_output: bool = True,
        detach_value: bool = True,
        max_candidates: int = 256,
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        self.head, self.levels, self.vocab_size = head, levels, vocab_size
        self.tied_output, self.detach_value = tied_output, detach_value
        self.max_length = max_length
        #: Decoder steps per placed item.
        self.steps_per_item = levels if head == "global" else 1
        self.encoder = CandidateSetEncoder(
            user_dim,
            item_dim,
            dim=dim,
            layers=encoder_layers,
            heads=heads,
            initial_order=initial_order,
        )
        self.sid_embedding = nn.Embedding(vocab_size, dim)
        # Sized for token steps under both heads, so the twins' backbones are identical.
        self.position = nn.Embedding(max_length * levels + 1, dim)
        self.decoder = decoder_stack(dim, heads, decoder_layers)
        self.norm = nn.LayerNorm(dim)
        if head == "global" and tied_output:
            self.output_bias = nn.Parameter(torch.zeros(vocab_size))
        elif head == "global":
            self.output = nn.Linear(dim, vocab_size)  # one neuron per code, in every request
        elif head == "index":
            self.output = nn.Linear(dim, max_candidates)  # one neuron per position
        else:
            self.query = nn.Linear(dim, dim)
            self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, 1)

    def output_parameters(self) -> list[nn.Parameter]:
        """The output layer's weights (the gradient-variance study measures these)."""
        if self.head == "global":
            return [self.sid_embedding.weight if self.tied_output else self.output.weight]
        if self.head == "index":
            return [self.output.weight]
        return [self.query.weight, self.key.weight]

    def action_count(self, candidates: int) -> int:
        """A: choices per step (V tokens, or N positions)."""
        return self.vocab_size if self.head == "global" else candidates

    # ------------------------------------------------------------------ pieces

    def encode(
        self, inputs: RequestInputs, candidate_tokens: torch.Tensor, repeats: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(candidates [M, N, d], user [M, d], candidate tokens [M, N, levels])``.

        Each request's rows are repeated ``repeats`` times in a row (``M = B * repeats``).
        """
        encoded, user = self.encoder(inputs, self.sid_embedding(candidate_tokens).sum(dim=2))
        if repeats > 1:
            encoded = encoded.repeat_interleave(repeats, 0)
            user = user.repeat_interleave(repeats, 0)
            candidate_tokens = candidate_tokens.repeat_interleave(repeats, 0)
        return encoded, user, candidate_tokens

    def _hidden(self, encoded: torch.Tensor, user: torch.Tensor, actions: torch.Tensor):
        """Decoder states after reading ``[user, a_1 .. a_T]``, ``[M, T + 1, d]``."""
        steps = actions.shape[1] + 1
        if steps > self.position.num_embeddings:
            raise ValueError(
                f"{steps - 1} decoder steps; this model was built for lists of at most "
                f"{self.max_length} items"
            )
        sequence = torch.cat([user[:, None], self._read(encoded, actions)], dim=1)
        sequence = sequence + self.position.weight[:steps]
        causal = nn.Transformer.generate_square_subsequent_mask(steps, device=encoded.device)
        return self.norm(self.decoder(sequence, encoded, tgt_mask=causal, tgt_is_causal=True))

    def _read(self, encoded: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """What the decoder reads for ``actions`` ``[M, T]``: ``[M, T, d]``."""
        if self.head == "global":
            return self.sid_embedding(actions)
        return torch.gather(encoded, 1, actions[..., None].expand(-1, -1, encoded.shape[2]))

    def _next_input(
        self, encoded: torch.Tensor, user: torch.Tensor, last: torch.Tensor | None, step: int
    ) -> torch.Tensor:
        """Decoder input at ``step`` ``[M, 1, d]``: the user first, then the last action."""
        read = user[:, None] if last is None else self._read(encoded, last[:, None])
        return read + self.position.weight[step]

    def _check_steps(self, length: int) -> None:
        if length > self.max_length:
            raise ValueError(
                f"lists of {length} items; this model was built for at most {self.max_length} items"
            )

    def _logits(self, hidden: torch.Tensor, encoded: torch.Tensor) -> torch.Tensor:
        """Unmasked logits ``[M, T, A]`` of decoder states ``[M, T, d]``."""
        if self.head == "global" and self.tied_output:
            return hidden @ self.sid_embedding.weight.T + self.output_bias
        if self.head == "global":
            return self.output(hidden)
        if self.head == "index":
            n = encoded.shape[1]
            if n > self.output.out_features:
                raise ValueError(
                    f"{n} candidates per request; this index head has "
                    f"{self.output.out_features} outputs (max_candidates)"
                )
            return self.output(hidden)[..., :n]
        scores = torch.einsum("btd,bnd->btn", self.query(hidden), self.key(encoded))
        return POINTER_CLIP * torch.tanh(scores / math.sqrt(encoded.shape[2]))

    def actions_of(self, lists: torch.Tensor, candidate_tokens: torch.Tensor) -> torch.Tensor:
        """The decoder's actions writing ``lists`` (positions ``[M, L]``), ``[M, S]``."""
        if self.head != "global":
            return lists
        index = lists[..., None].expand(-1, -1, self.levels)
        return torch.gather(candidate_tokens, 1, index).reshape(len(lists), -1)

    def teacher_masks(self, lists: torch.Tensor, candidate_tokens: torch.Tensor) -> torch.Tensor:
        """Valid actions at every step of writing ``lists``, bool ``[M, S, A]``.

        Global: the tokens that continue step ``s``'s prefix towards a candidate not
        placed before its item (the trie); local: the candidates not placed yet.
        """
        batch, length = lists.shape
        n = candidate_tokens.shape[1]
        earlier = torch.zeros(batch, length, n, dtype=torch.bool, device=lists.device)
        if length > 1:
            one_hot = torch.nn.functional.one_hot(lists[:, : length - 1], n).bool()
            earlier[:, 1:] = one_hot.cumsum(dim=1).bool()
        if self.head != "global":
            return ~earlier
        chosen = torch.gather(candidate_tokens, 1, lists[..., None].expand(-1, -1, self.levels))
        same = candidate_tokens[:, None] == chosen[:, :, None]  # [M, L, N, levels]
        # Level l's prefix is levels < l: all candidates match an empty prefix.
        prefix_match = torch.cat(
            [torch.ones_like(same[..., :1]), same[..., :-1].cumprod(dim=3).bool()], dim=3
        )
        valid = (~earlier)[..., None] & prefix_match  # [M, L, N, levels]
        index = candidate_tokens.permute(0, 2, 1)[:, None].expand(-1, length, -1, -1)
        masks = torch.zeros(batch, length, self.levels, self.vocab_size, device=lists.device)
        masks.scatter_add_(3, index, valid.permute(0, 1, 3, 2).float())
        return (masks > 0).reshape(batch, length * self.levels, self.vocab_size)

    # ------------------------------------------------------------------ training

    def evaluate(
        self,
        inputs: RequestInputs,
        candidate_tokens: torch.Tensor,
        lists: torch.Tensor,
        repeats: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forced ``(log_probs, entropy, values, correct)``, each ``[M, S]``.

        ``log_probs``: of each action writing ``lists`` under the mask; ``entropy``:
        of each step's masked distribution; ``values``: the critic's value of the
        state before each step; ``correct``: whether the step's most likely action
        is the list's (token accuracy).
        """
        encoded, user, tokens = self.encode(inputs, candidate_tokens, repeats)
        actions = self.actions_of(lists, tokens)
        hidden = self._hidden(encoded, user, actions[:, :-1])
        logits = self._logits(hidden, encoded)
        logits = logits.masked_fill(~self.teacher_masks(lists, tokens), float("-inf"))
        log_probs = torch.log_softmax(logits, dim=2)
        taken = log_probs.gather(2, actions[..., None])[..., 0]
        correct = log_probs.argmax(dim=2) == actions
        values = self.value(hidden.detach() if self.detach_value else hidden)[..., 0]
        return taken, masked_entropy(log_probs), values, correct

    # ------------------------------------------------------------------ decoding

    @torch.no_grad()
    def decode(
        self,
        inputs: RequestInputs,
        candidate_tokens: torch.Tensor,
        length: int,
        *,
        mode: DecodeMode = "greedy",
        generator: torch.Generator | None = None,
        gumbel: torch.Tensor | None = None,
        prefix: torch.Tensor | None = None,
        temperature: float = 1.0,
        beam_width: int = 4,
        repeats: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode lists of ``length`` candidates: ``(lists [M, L], log_probs [M, S])``.

        Args:
            inputs: B requests.
            candidate_tokens: Their candidates' codes as tokens, long ``[B, N, levels]``.
            length: L.
            mode: ``"greedy"``, ``"sample"`` or ``"beam"``.
            generator: Torch generator of ``"sample"``.
            gumbel: Gumbel noise ``[M, S, A]``: ``"sample"`` takes the Gumbel-max of
                it instead of drawing from ``generator``, so a row's list depends on
                its own noise only.
            beam_width: Sequences per request kept by ``"beam"`` (by total
                log-probability); the best is returned.
            prefix: Candidate positions every list starts with, long ``[M, L]``,
                ``-1`` in the slots to decode; forced steps have log-probability 0.
            temperature: Softmax temperature when sampling.
            repeats: Lists per request (rows ``b * repeats ...``), not with beams.
        """
        encoded, user, tokens = self.encode(inputs, candidate_tokens, repeats)
        if mode == "beam":
            return self._beam(encoded, user, tokens, length, beam_width, prefix)
        self._check_steps(length)
        cursor = _Cursor(tokens, self.head == "global", self.vocab_size)
        cache, choice = DecoderCache(self.decoder, encoded), None
        log_probs = []
        for step in range(length * self.steps_per_item):
            hidden = self.norm(cache.step(self._next_input(encoded, user, choice, step)))
            logits = self._logits(hidden, encoded)[:, 0]
            step_log_probs = torch.log_softmax(
                logits.masked_fill(~cursor.mask(), float("-inf")) / temperature, dim=1
            )
            if mode == "greedy":
                choice = step_log_probs.argmax(dim=1)
            elif gumbel is not None:
                choice = (step_log_probs + gumbel[:, step]).argmax(dim=1)
            else:
                choice = torch.multinomial(step_log_probs.exp(), 1, generator=generator)[:, 0]
            chosen = step_log_probs.gather(1, choice[:, None])[:, 0]
            if prefix is not None:
                forced = prefix[:, step // self.steps_per_item]
                kept = forced != PAD
                choice = torch.where(kept, cursor.action_for(forced.clamp(min=0)), choice)
                chosen = torch.where(kept, torch.zeros_like(chosen), chosen)
            cursor.advance(choice)
            log_probs.append(chosen)
        return cursor.lists(length), torch.stack(log_probs, dim=1)

    def _beam(
        self,
        encoded: torch.Tensor,
        user: torch.Tensor,
        tokens: torch.Tensor,
        length: int,
        width: int,
        prefix: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Beam search: the most likely of ``width`` sequences per request."""
        batch, device = encoded.shape[0], encoded.device
        encoded, user = encoded.repeat_interleave(width, 0), user.repeat_interleave(width, 0)
        tokens = tokens.repeat_interleave(width, 0)
        if prefix is not None:
            prefix = prefix.repeat_interleave(width, 0)
        self._check_steps(length)
        cursor = _Cursor(tokens, self.head == "global", self.vocab_size)
        cache, choice = DecoderCache(self.decoder, encoded), None
        step_log_probs = torch.zeros(batch * width, 0, device=device)
        score = torch.full((batch, width), float("-inf"), device=device)
        score[:, 0] = 0.0  # one live beam until the first expansion
        for step in range(length * self.steps_per_item):
            hidden = self.norm(cache.step(self._next_input(encoded, user, choice, step)))
            logits = self._logits(hidden, encoded)[:, 0]
            mask = cursor.mask()
            if prefix is not None:
                forced = prefix[:, step // self.steps_per_item]
                kept = forced != PAD
                only = torch.zeros_like(mask).scatter_(
                    1, cursor.action_for(forced.clamp(min=0))[:, None], True
                )
                mask = torch.where(kept[:, None], only, mask)
            # A dead beam's state may allow nothing: let it through (its score is -inf).
            mask = mask | ~mask.any(dim=1, keepdim=True)
            log_probs = torch.log_softmax(logits.masked_fill(~mask, float("-inf")), dim=1)
            if prefix is not None:
                log_probs = torch.where(
                    kept[:, None] & mask, torch.zeros_like(log_probs), log_probs
                )
            choices = log_probs.shape[1]
            total = (score.reshape(-1, 1) + log_probs).reshape(batch, width * choices)
            score, index = total.topk(width, dim=1)
            parent = torch.arange(batch, device=device)[:, None] * width + index // choices
            parent, choice = parent.reshape(-1), (index % choices).reshape(-1)
            chosen = log_probs[parent, choice]
            cursor.select(parent)
            cache.select(parent)
            step_log_probs = torch.cat([step_log_probs[parent], chosen[:, None]], dim=1)
            cursor.advance(choice)
        best = torch.arange(batch, device=device) * width + score.argmax(dim=1)
        return cursor.lists(length)[best], step_log_probs[best]


class _Cursor:
    """Where each row's decoding is: placed candidates and (global) the code prefix.

    The global head writes codes under :class:`~agents.common.trie.CandidateTrie`
    (all rows advance together: every code is ``levels`` tokens long); the local
    and index heads point at positions.

    Args:
        tokens: Candidates' codes as tokens, long ``[M, N, levels]``.
        tokens_out: Actions are semantic-ID tokens (global head), else positions.
        vocab_size: V (global head).
    """

    def __init__(self, tokens: torch.Tensor, tokens_out: bool, vocab_size: int) -> None:
        self.tokens_out, self.vocab_size = tokens_out, vocab_size
        self.trie = CandidateTrie(tokens)
        self._lists: list[torch.Tensor] = []

    def mask(self) -> torch.Tensor:
        """Valid actions now, bool ``[M, A]``."""
        if not self.tokens_out:
            return ~self.trie.used
        return self.trie.mask(self.vocab_size)

    def action_for(self, positions: torch.Tensor) -> torch.Tensor:
        """The action that continues writing candidate ``positions`` ``[M]``."""
        if not self.tokens_out:
            return positions
        return self.trie.next_tokens().gather(1, positions[:, None]).squeeze(1)

    def advance(self, actions: torch.Tensor) -> None:
        """Take ``actions`` ``[M]``; an item completes after its last token."""
        if not self.tokens_out:
            self.trie.used[torch.arange(len(actions), device=actions.device), actions] = True
            self._lists.append(actions)
            return
        placed = self.trie.advance(actions)
        if self.trie.shared_level == 0:  # rows advance together: all just completed a code
            self._lists.append(placed)

    def select(self, rows: torch.Tensor) -> None:
        """Keep rows ``rows`` (a beam's parents), in that order."""
        self.trie.select(rows)
        self._lists = [column[rows] for column in self._lists]

    def lists(self, length: int) -> torch.Tensor:
        """The placed candidates, positions ``[M, L]``."""
        return torch.stack(self._lists[:length], dim=1)
