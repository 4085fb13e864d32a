"""GR2's language: its vocabulary, the facts it states, prompts, rationales, answers.

Everything GR2 reads and writes is a sequence over one small vocabulary:

* control tokens (``<bos>``, ``<think>``, ``<rank>``, ...);
* structured-reasoning words: ``genre_g`` (``genre_none`` for an item without
  one), ``year_b`` and ``pop_b`` buckets, ``pos_p`` (a candidate's pre-ranked
  position, 1-based), ``fit_low|mid|high`` (how well a candidate's genres match
  the user's history), ``div_low|mid|high`` (how many genres the top of a ranking
  spans);
* semantic-ID tokens: level ``l`` code ``c`` of the shared tokenizer
  (``task.tokenizer``), so an item is ``levels`` tokens wherever it appears.

A GR2 sequence (``K`` candidates, ``levels`` tokens per item)::

    <bos> <hist> S(h_1) .. S(h_H) <cands> S(c_1) .. S(c_K) <think>      (prompt)
    <user> genre_a genre_b genre_c                                      (rationale)
    <cand> S(c) pos_p genre_g year_y pop_q fit_f   (for the top cited candidates)
    <div> div_d </think>
    <rank> S(r_1) .. S(r_K) <eos>                                       (answer)

The prompt's candidates come in the pre-ranker's order, so copying it is possible
(and is the reward hack GR2's conditional format reward stops). Facts are computed
from the training split only (bucket edges, popularity), never from test data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import cached_property

import numpy as np

from rerank_env.task import RerankTask

CONTROL = (
    "<pad>",
    "<bos>",
    "<eos>",
    "<hist>",
    "<cands>",
    "<think>",
    "</think>",
    "<rank>",
    "<user>",
    "<cand>",
    "<div>",
    "<next>",
    "<caption>",
    "<describe>",
    "<attr>",
)
FIT_WORDS = ("fit_low", "fit_mid", "fit_high")
DIVERSITY_WORDS = ("div_low", "div_mid", "div_high")
#: A candidate's fit: the largest history share of its genres, cut at these values.
FIT_THRESHOLDS = (0.15, 0.35)
#: A ranking's diversity: distinct best genres among its top five, as a share, cut here.
DIVERSITY_THRESHOLDS = (0.5, 0.8)
#: Genres the ``<user>`` part of a rationale names at most.
USER_GENRES = 3


@dataclasses.dataclass(frozen=True)
class GR2Vocabulary:
    """Token ids of GR2's language (control, words, semantic IDs, in that order).

    Args:
        n_genres: Genre (category) flags of the items.
        year_buckets: Release-year words.
        popularity_buckets: Popularity words.
        candidates: K, position words ``pos_1 .. pos_K``.
        sid_sizes: Codes of each semantic-ID level (``task.tokenizer.level_sizes``).
    """

    n_genres: int
    year_buckets: int
    popularity_buckets: int
    candidates: int
    sid_sizes: tuple[int, ...]

    @cached_property
    def words(self) -> tuple[str, ...]:
        """The reasoning words, in token order."""
        return (
            *(f"genre_{g}" for g in range(self.n_genres)),
            "genre_none",
            *(f"year_{b}" for b in range(self.year_buckets)),
            *(f"pop_{b}" for b in range(self.popularity_buckets)),
            *(f"pos_{p}" for p in range(1, self.candidates + 1)),
            *FIT_WORDS,
            *DIVERSITY_WORDS,
        )

    @cached_property
    def _index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate((*CONTROL, *self.words))}

    @property
    def sid_offset(self) -> int:
        """Id of the first semantic-ID token."""
        return len(CONTROL) + len(self.words)

    @property
    def size(self) -> int:
        """Tokens in all."""
        return self.sid_offset + int(sum(self.sid_sizes))

    @property
    def levels(self) -> int:
        """Semantic-ID tokens per item."""
        return len(self.sid_sizes)

    def id(self, name: str) -> int:
        """The id of a control token or word, e.g. ``vocab.id("<rank>")``.

        Raises:
            KeyError: ``name`` is neither (the message lists the valid names).
        """
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(
                f"{name!r} is not a GR2 token; control tokens {CONTROL}, words "
                f"{self.words[:4]} .. {self.words[-3:]}"
            ) from None

    def ids(self, names: Sequence[str]) -> np.ndarray:
        """Ids of several names, int64."""
        return np.array([self.id(name) for name in names], dtype=np.int64)

    def word_range(self, kind: str) -> tuple[int, int]:
        """``[first, end)`` ids of a word kind: genre, year, pop, pos, fit or div."""
        return self._word_ranges[kind]

    @cached_property
    def _word_ranges(self) -> dict[str, tuple[int, int]]:
        ranges = {}
        for kind in ("genre", "year", "pop", "pos", "fit", "div"):
            ids = [i for i, word in enumerate(self.words) if word.startswith(f"{kind}_")]
            ranges[kind] = (len(CONTROL) + ids[0], len(CONTROL) + ids[-1] + 1)
        return ranges

    def describe(self, tokens: Sequence[int]) -> str:
        """Readable text of a token sequence; an item's code reads ``<a_12><b_3><c_40>``."""
        offsets = np.concatenate([[0], np.cumsum(self.sid_sizes)])
        names = (*CONTROL, *self.words)
        parts = []
        for token in np.asarray(tokens).tolist():
            if token < self.sid_offset:
                parts.append(names[token])
                continue
            code = token - self.sid_offset
            level = int(np.searchsorted(offsets, code, side="right") - 1)
            parts.append(f"<{chr(ord('a') + level)}_{code - offsets[level]}>")
        return " ".join(parts)


@dataclasses.dataclass(frozen=True)
class ItemFacts:
    """What GR2's rationales say about items, computed from the training split.

    Attributes:
        genres: Genre flags, bool ``[I, G]``.
        year_bucket: Release-year bucket (quantiles of the training items), ``[I]``.
        popularity_bucket: Bucket of training interactions (quantiles over the
            training items; an item with none is in bucket 0), ``[I]``.
        sid_tokens: Every item's semantic ID as GR2 token ids, ``[I, levels]``.
    """

    genres: np.ndarray
    year_bucket: np.ndarray
    popularity_bucket: np.ndarray
    sid_tokens: np.ndarray

    @classmethod
    def from_task(cls, task: RerankTask, vocab: GR2Vocabulary) -> ItemFacts:
        """The facts of ``task``'s items (training requests only; cold start respected)."""
        pool = task.pool
        trained = pool.trained_items()
        year = pool.item_features[:, -1]
        train = pool.split_indices("train")
        logged = pool.logged_items[train]
        counts = np.bincount(logged[logged >= 0], minlength=pool.n_items)
        return cls(
            genres=pool.genres(),
            year_bucket=_buckets(year, year[trained], vocab.year_buckets),
            popularity_bucket=_buckets(counts, counts[trained], vocab.popularity_buckets),
            sid_tokens=task.tokenizer.tokens + vocab.sid_offset,
        )


def _buckets(values: np.ndarray, reference: np.ndarray, count: int) -> np.ndarray:
    """Bucket of each value among ``count`` quantile buckets of ``reference``."""
    if count == 1 or not len(reference):
        return np.zeros(len(values), dtype=np.int64)
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, count + 1)[1:-1]))
    return np.searchsorted(edges, values, side="right").astype(np.int64)


def vocabulary_for(task: RerankTask, year_buckets: int, popularity_buckets: int) -> GR2Vocabulary:
    """GR2's vocabulary for ``task`` (its genres, K and semantic IDs)."""
    return GR2Vocabulary(
        n_genres=task.pool.genres().shape[1],
        year_buckets=year_buckets,
        popularity_buckets=popularity_buckets,
        candidates=task.num_candidates,
        sid_sizes=tuple(int(s) for s in task.tokenizer.level_sizes),
    )


def recent_history(task: RerankTask, requests: np.ndarray, items: int) -> list[np.ndarray]:
    """The ``items`` most recent history items of each request, oldest first."""
    pool = task.pool
    histories, lengths = pool.histories[requests], pool.history_lengths[requests]
    return [history[max(0, n - items) : n] for history, n in zip(histories, lengths, strict=True)]


def genre_affinity(facts: ItemFacts, history: np.ndarray) -> np.ndarray:
    """Share of ``history``'s items in each genre, ``[G]`` (zeros for no history)."""
    if not len(history):
        return np.zeros(facts.genres.shape[1])
    return facts.genres[history].mean(axis=0)


def prompt(vocab: GR2Vocabulary, facts: ItemFacts, history: np.ndarray, candidates: np.ndarray):
    """``<bos> <hist> S(h..) <cands> S(c_1) .. S(c_K) <think>``, int64."""
    return np.concatenate(
        [
            vocab.ids(["<bos>", "<hist>"]),
            facts.sid_tokens[history].reshape(-1),
            vocab.ids(["<cands>"]),
            facts.sid_tokens[candidates].reshape(-1),
            vocab.ids(["<think>"]),
        ]
    )


def rationale(
    vocab: GR2Vocabulary,
    facts: ItemFacts,
    history: np.ndarray,
    candidates: np.ndarray,
    ranking: np.ndarray,
    cited: int,
) -> np.ndarray:
    """A structured rationale for ``ranking`` (positions), ending with ``</think>``.

    It names the user's top genres in ``history``, then the first ``cited``
    candidates of ``ranking`` with their evidence (pre-ranked position, the genre
    of theirs the user likes best, year and popularity buckets, fit), then the
    diversity of the ranking's top five.
    """
    affinity = genre_affinity(facts, history)
    liked = [g for g in np.argsort(-affinity, kind="stable")[:USER_GENRES] if affinity[g] > 0]
    tokens = [vocab.id("<user>"), *(vocab.id(f"genre_{g}") for g in liked)]
    best = [_best_genre(facts, affinity, item) for item in candidates]
    for position in ranking[:cited]:
        item = candidates[position]
        genre, share = best[position]
        fit = int(np.searchsorted(FIT_THRESHOLDS, share, side="right"))
        tokens += [vocab.id("<cand>"), *facts.sid_tokens[item].tolist()]
        tokens += vocab.ids(
            [
                f"pos_{position + 1}",
                "genre_none" if genre < 0 else f"genre_{genre}",
                f"year_{facts.year_bucket[item]}",
                f"pop_{facts.popularity_bucket[item]}",
                FIT_WORDS[fit],
            ]
        ).tolist()
    top = ranking[:5]
    spread = len({best[p][0] for p in top}) / len(top)
    diversity = DIVERSITY_WORDS[int(np.searchsorted(DIVERSITY_THRESHOLDS, spread, side="right"))]
    tokens += vocab.ids(["<div>", diversity, "</think>"]).tolist()
    return np.array(tokens, dtype=np.int64)


def _best_genre(facts: ItemFacts, affinity: np.ndarray, item: int) -> tuple[int, float]:
    """The item's genre the user likes best and its share (``-1`` if it has none)."""
    genres = np.flatnonzero(facts.genres[item])
    if not len(genres):
        return -1, 0.0
    genre = genres[np.argmax(affinity[genres])]
    return int(genre), float(affinity[genre])


def longest_rationale(vocab: GR2Vocabulary, cited: int) -> int:
    """Tokens of the longest rationale :func:`rationale` writes, ``</think>`` included."""
    return 1 + USER_GENRES + cited * (1 + vocab.levels + 5) + 3


def answer(vocab: GR2Vocabulary, facts: ItemFacts, candidates: np.ndarray, ranking: np.ndarray):
    """``<rank> S(r_1) .. S(r_K) <eos>`` for ``ranking`` (positions), int64."""
    codes = facts.sid_tokens[candidates[ranking]].reshape(-1)
    return np.concatenate([vocab.ids(["<rank>"]), codes, vocab.ids(["<eos>"])])


def well_formed(vocab: GR2Vocabulary, reasoning: np.ndarray, candidate_sids: np.ndarray) -> bool:
    """Whether a reasoning segment follows the rationale grammar.

    ``<user> genre{0..3, distinct} (<cand> S(c) pos genre year pop fit){1..}
    <div> div </think>``, each cited code a distinct candidate of the request, the
    segment closed by the model (the last token is ``</think>``). Facts are not
    checked for truth, only their kinds and order (the format reward's notion).

    Args:
        vocab: The vocabulary.
        reasoning: The tokens after ``<think>`` up to and including ``</think>``.
        candidate_sids: The request's candidates' codes as token ids ``[K, levels]``.
    """
    tokens = np.asarray(reasoning).tolist()
    if not tokens or tokens[0] != vocab.id("<user>") or tokens[-1] != vocab.id("</think>"):
        return False
    genre_lo, genre_hi = vocab.word_range("genre")
    i, genres = 1, set()
    while i < len(tokens) and genre_lo <= tokens[i] < genre_hi - 1:  # not genre_none
        genres.add(tokens[i])
        i += 1
    if len(genres) != i - 1 or len(genres) > USER_GENRES:
        return False
    codes = {tuple(row) for row in np.asarray(candidate_sids).tolist()}
    cited: set[tuple[int, ...]] = set()
    kinds = ("pos", "genre", "year", "pop", "fit")
    levels = vocab.levels
    while i < len(tokens) and tokens[i] == vocab.id("<cand>"):
        code = tuple(tokens[i + 1 : i + 1 + levels])
        if code not in codes or code in cited:
            return False
        cited.add(code)
        i += 1 + levels
        for kind in kinds:
            lo, hi = vocab.word_range(kind)
            if i >= len(tokens) or not lo <= tokens[i] < hi:
                return False
            i += 1
    div_lo, div_hi = vocab.word_range("div")
    return (
        bool(cited)
        and tokens[i : i + 1] == [vocab.id("<div>")]
        and i + 3 == len(tokens)
        and div_lo <= tokens[i + 1] < div_hi
    )


def trimmed(vocab: GR2Vocabulary, written: np.ndarray) -> np.ndarray:
    """Written tokens up to and including ``<eos>`` (no padding)."""
    return _through(written, vocab.id("<eos>"))


def reasoning_segment(vocab: GR2Vocabulary, written: np.ndarray) -> np.ndarray:
    """The reasoning segment of written tokens, up to and including ``</think>``."""
    return _through(written, vocab.id("</think>"))


def _through(written: np.ndarray, token: int) -> np.ndarray:
    """``written`` up to and including the first ``token`` (all of it if none)."""
    ends = np.flatnonzero(written == token)
    return written[: ends[0] + 1] if len(ends) else written
