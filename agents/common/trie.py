"""Decoding items as semantic-ID codes under a per-request trie of candidates.

A generator over a global token vocabulary (GloRank's SID tokens, GR2's language
model) writes an item as its code, ``levels`` tokens long; only codes of the
request's candidates that are not placed yet may be written. :class:`CandidateTrie`
keeps that state for a batch of rows on the device: which candidates still match
the prefix written so far, each row's level, which candidates are used. Rows
advance independently (``active``), so one row may be writing a code while another
writes something else (GR2's reasoning words); GloRank advances all rows at once.
"""

from __future__ import annotations

import torch


class CandidateTrie:
    """Rows writing candidates' codes token by token, each candidate at most once.

    Args:
        codes: Each row's candidates' codes as token ids, long ``[M, K, levels]``.
            Codes must be unique within a row (the semantic-ID tokenizer resolves
            collisions), so a completed code names one candidate.

    Attributes:
        level: Tokens of the current code written per row, long ``[M]``.
        matching: Candidates whose code starts with the row's current prefix, ``[M, K]``.
        used: Candidates already completed (placed or cited), bool ``[M, K]``.
    """

    def __init__(self, codes: torch.Tensor) -> None:
        self.codes = codes
        rows, self.k, self.levels = codes.shape
        self.level = torch.zeros(rows, dtype=torch.long, device=codes.device)
        self.matching = torch.ones(rows, self.k, dtype=torch.bool, device=codes.device)
        self.used = torch.zeros(rows, self.k, dtype=torch.bool, device=codes.device)
        # While every call advanced all rows, they share one level, known here: the
        # fast path (a slice instead of a gather, no per-row bookkeeping) that
        # GloRank's decoding loop runs 18 times per list.
        self._shared_level: int | None = 0

    @property
    def shared_level(self) -> int | None:
        """The level every row is at while all rows advanced together, else ``None``."""
        return self._shared_level

    def next_tokens(self) -> torch.Tensor:
        """Each candidate's token at its row's current level, long ``[M, K]``."""
        if self._shared_level is not None:
            return self.codes[:, :, self._shared_level]
        index = self.level[:, None, None].expand(-1, self.k, 1)
        return self.codes.gather(2, index).squeeze(2)

    def mask(self, vocab_size: int, active: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens that continue an unused candidate's code, bool ``[M, vocab_size]``.

        Rows where ``active`` (bool ``[M]``) is false allow nothing.
        """
        valid = ~self.used & self.matching
        if active is not None:
            valid &= active[:, None]
        allowed = torch.zeros(len(valid), vocab_size, device=self.codes.device)
        return allowed.scatter_add_(1, self.next_tokens(), valid.float()) > 0

    def advance(self, tokens: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
        """Write ``tokens`` ``[M]`` (in ``active`` rows; all by default).

        Returns:
            The candidate position each row completed with this token, long ``[M]``
            (-1 where none): it is marked used and the row starts a new code.
        """
        if active is None and self._shared_level is not None:
            return self._advance_all(tokens)
        self._shared_level = None  # rows may now be at different levels
        if active is None:
            active = torch.ones(len(tokens), dtype=torch.bool, device=tokens.device)
        self.matching &= ~active[:, None] | (self.next_tokens() == tokens[:, None])
        self.level += active.long()
        complete = active & (self.level == self.levels)
        # The first unused candidate with this code (codes are unique per item).
        position = (~self.used & self.matching).float().argmax(dim=1)
        done = torch.where(complete, position, torch.full_like(position, -1))
        rows = torch.nonzero(complete).flatten()
        self.used[rows, position[rows]] = True
        self.matching[complete] = True
        self.level[complete] = 0
        return done

    def _advance_all(self, tokens: torch.Tensor) -> torch.Tensor:
        """:meth:`advance` of every row while all rows share one level."""
        self.matching &= self.next_tokens() == tokens[:, None]
        self._shared_level += 1
        self.level += 1
        if self._shared_level < self.levels:
            return torch.full_like(tokens, -1)
        position = (~self.used & self.matching).float().argmax(dim=1)
        self.used[torch.arange(len(tokens), device=tokens.device), position] = True
        self.matching.fill_(True)
        self.level.zero_()
        self._shared_level = 0
        return position

    def select(self, rows: torch.Tensor) -> None:
        """Keep rows ``rows`` (e.g. a beam's parents), in that order."""
        self.codes, self.level = self.codes[rows], self.level[rows]
        self.matching, self.used = self.matching[rows], self.used[rows]
