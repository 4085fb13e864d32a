"""What GR2 may write after its prompt: a rationale, then a ranking of the K candidates.

:class:`DecodingConstraint` is a per-row state machine over the tokens written
after ``<think>``:

1. **reasoning**: any reasoning word, semantic-ID token, ``<user>``, ``<cand>``,
   ``<div>`` or ``</think>`` (so the model *can* break the rationale grammar: the
   format reward and the diagnostics measure whether it does), except that the
   code after ``<cand>`` (a citation) follows a prefix trie over the candidates
   not yet cited, so a citation always names a distinct candidate of the request;
   after ``max_reasoning`` tokens only ``</think>`` (a forced close, a format break);
2. ``<rank>``;
3. **ranking**: the next token of an unplaced candidate's code, by a prefix trie
   over the request's candidates, until all K are placed (so every ranking is a
   valid, complete permutation);
4. ``<eos>``, then ``<pad>``.

The same machine gives the masks of generation (:class:`ConstraintLogitsProcessor`,
a ``transformers`` logits processor for ``model.generate``) and of training
(:func:`replay_masks`: the mask before every written token, so the log-probabilities
PPO/DAPO and SFT optimise are those the sampler drew from).
"""

from __future__ import annotations

import torch

from agents.common.trie import CandidateTrie
from agents.gr2.language import CONTROL, GR2Vocabulary

REASONING, OPEN_RANK, RANKING, CLOSE, DONE = range(5)


class DecodingConstraint:
    """The grammar state of ``M`` rows, advanced one written token at a time.

    Args:
        vocab: GR2's vocabulary.
        candidate_sids: Each row's candidates' codes as token ids, long ``[M, K, levels]``
            (in the prompt's order; a ranking is positions into it).
        max_reasoning: L_max, reasoning tokens before the close is forced.

    Attributes:
        ranking: Candidate positions placed so far, long ``[M, K]`` (-1 where not yet).
        cited: Candidates the rationale cited, bool ``[M, K]``.
        reasoning_length: Reasoning tokens written (``</think>`` not counted), ``[M]``.
        forced_close: Rows whose ``</think>`` was forced at L_max, bool ``[M]``.
    """

    def __init__(
        self, vocab: GR2Vocabulary, candidate_sids: torch.Tensor, max_reasoning: int
    ) -> None:
        self.vocab, self.max_reasoning = vocab, max_reasoning
        rows, self.k, self.levels = candidate_sids.shape
        device = candidate_sids.device
        self.phase = torch.full((rows,), REASONING, dtype=torch.long, device=device)
        self.reasoning_length = torch.zeros(rows, dtype=torch.long, device=device)
        self.forced_close = torch.zeros(rows, dtype=torch.bool, device=device)
        self.citing = torch.zeros(rows, dtype=torch.bool, device=device)
        self._citations = CandidateTrie(candidate_sids)
        self._ranking = CandidateTrie(candidate_sids)
        self.ranking = torch.full((rows, self.k), -1, dtype=torch.long, device=device)
        reasoning = torch.zeros(vocab.size, dtype=torch.bool, device=device)
        reasoning[vocab.id("<user>") : vocab.id("<div>") + 1] = True  # <user> <cand> <div>
        reasoning[vocab.id("</think>")] = True
        reasoning[len(CONTROL) :] = True  # every word and semantic-ID token
        self._reasoning_tokens = reasoning
        self._ids = {
            name: vocab.id(name) for name in ("</think>", "<rank>", "<eos>", "<pad>", "<cand>")
        }

    @property
    def cited(self) -> torch.Tensor:
        """Candidates the rationale cited, bool ``[M, K]``."""
        return self._citations.used

    def allowed(self) -> torch.Tensor:
        """Tokens each row may write next, bool ``[M, V]``."""
        rows, size = len(self.phase), self.vocab.size
        mask = torch.zeros(rows, size, dtype=torch.bool, device=self.phase.device)
        thinking = self.phase == REASONING
        free = thinking & ~self.citing
        mask[free] = self._reasoning_tokens
        # No citation can start once every candidate has been cited.
        mask[free & self.cited.all(dim=1), self._ids["<cand>"]] = False
        mask |= self._citations.mask(size, thinking & self.citing)
        full = thinking & (self.reasoning_length >= self.max_reasoning)
        mask[full] = False
        mask[full, self._ids["</think>"]] = True
        mask[self.phase == OPEN_RANK, self._ids["<rank>"]] = True
        mask[self.phase == CLOSE, self._ids["<eos>"]] = True
        mask[self.phase == DONE, self._ids["<pad>"]] = True
        mask |= self._ranking.mask(size, self.phase == RANKING)
        return mask

    def advance(self, tokens: torch.Tensor) -> None:
        """Take the written ``tokens`` ``[M]`` (each must be allowed; not checked here)."""
        phase = self.phase.clone()
        thinking = phase == REASONING
        closing = thinking & (tokens == self._ids["</think>"])
        self.forced_close |= closing & (self.reasoning_length >= self.max_reasoning)
        self.reasoning_length += (thinking & ~closing).long()
        # A citation: <cand> then one uncited candidate's code (a forced close ends it).
        citing = thinking & self.citing & ~closing
        finished = self._citations.advance(tokens, citing) >= 0
        self.citing &= ~finished & ~closing
        self.citing |= thinking & ~self.citing & (tokens == self._ids["<cand>"]) & ~finished
        self.phase[closing] = OPEN_RANK
        self.phase[phase == OPEN_RANK] = RANKING
        self.phase[phase == CLOSE] = DONE
        ranking = phase == RANKING
        placed = self._ranking.advance(tokens, ranking)
        complete = placed >= 0
        if complete.any():
            slot = self._ranking.used.sum(dim=1) - 1
            rows = torch.nonzero(complete).flatten()
            self.ranking[rows, slot[rows]] = placed[rows]
            self.phase[complete & (slot == self.k - 1)] = CLOSE


def replay_masks(
    vocab: GR2Vocabulary, candidate_sids: torch.Tensor, written: torch.Tensor, max_reasoning: int
) -> tuple[torch.Tensor, DecodingConstraint]:
    """The allowed tokens before each written token, bool ``[M, T, V]``, and the final state.

    Args:
        vocab: GR2's vocabulary.
        candidate_sids: ``[M, K, levels]`` as in :class:`DecodingConstraint`.
        written: Tokens written after ``<think>``, long ``[M, T]`` (padded with ``<pad>``).
        max_reasoning: L_max.
    """
    constraint = DecodingConstraint(vocab, candidate_sids, max_reasoning)
    masks = []
    for step in range(written.shape[1]):
        masks.append(constraint.allowed())
        constraint.advance(written[:, step])
    return torch.stack(masks, dim=1), constraint


class ConstraintLogitsProcessor:
    """:class:`DecodingConstraint` as a ``transformers`` logits processor.

    ``model.generate(prompts, logits_processor=LogitsProcessorList([processor]))``
    then writes only what the grammar admits. Prompts must be left-padded to one
    length (``prompt_length``), as batched decoder-only generation needs, and
    already repeated for several samples per prompt. A processor serves one
    ``generate`` call.
    """

    def __init__(self, constraint: DecodingConstraint, prompt_length: int) -> None:
        self.constraint, self.prompt_length = constraint, prompt_length

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Advance by the last written token; ``scores`` with disallowed tokens at -inf."""
        if input_ids.shape[1] > self.prompt_length:
            self.constraint.advance(input_ids[:, -1])
        return scores.masked_fill(~self.constraint.allowed(), float("-inf"))
