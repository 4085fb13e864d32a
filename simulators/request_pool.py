"""The request pool: every request of a dataset, as simulators and environments use it.

A :class:`RequestPool` is the part of processed data a bundle ships
(``requests.npz``): each request's user, candidates in the initial ranker's order
with its scores, recent history, the logged slate with binary click labels and the
split, the GR2 requests, user and item side features, and the upstream retriever's
user and item vectors. No rating values and no timestamps. It also builds cold-start
variants (:meth:`RequestPool.withholding`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulators._io import atomic_write
from simulators.checkpoint import CheckpointError
from simulators.data.errors import ConfigError
from simulators.data.pipeline import RerankData
from simulators.data.semantic_ids import items_with_interactions, semantic_id_features
from simulators.data.splits import SPLITS, split_code

#: ``request_split`` of a request in no split: its logs are kept for the held-out judge.
RESERVED = -1


@dataclass(frozen=True)
class RequestPool:
    """Every request of a dataset, with what simulators and environments need.

    It offers the slice of :class:`~simulators.data.pipeline.RerankData`'s interface
    that fitting and evaluating simulators use (``split_indices``, ``history``,
    ``request_user``, ``logged_items``, ``logged_clicks``, ``candidates``), so those
    functions take either.

    Attributes:
        dataset: Dataset name, e.g. ``"ml-100k"``.
        request_user: User index of each request, int64 ``[R]``.
        request_split: 0 train, 1 valid, 2 test, int8 ``[R]``; :data:`RESERVED`
            (-1) for a request in no split, whose logs are kept for the held-out
            judge (:meth:`reserve`).
        candidates: Candidate item indices in the initial ranker's order, int64 ``[R, N]``.
        candidate_scores: The initial ranker's score of each candidate, float32 ``[R, N]``.
        histories: Most recent history items before the request, left-aligned, ``-1``
            padded, int64 ``[R, H]``.
        history_lengths: Valid items in each history, int64 ``[R]``.
        logged_items: The logged slate, int64 ``[R, L]``.
        logged_clicks: Its binary click labels, bool ``[R, L]``.
        gr2_request: Request index of each GR2 request, int64 ``[Q]``.
        gr2_candidates: GR2 pre-ranked candidates, int64 ``[Q, K]``.
        gr2_target_pos: Position of the held-out next item in ``gr2_candidates``.
        user_features: float32 ``[U, Du]``.
        item_features: float32 ``[I, Di]``.
        item_titles: str ``[I]``.
        retriever_user_factors: The upstream retriever's user vectors, float32
            ``[U, F]`` (ALS user factors fitted on the training interactions;
            ``F = 0`` for retrievers without vectors): what a deployed reranker may
            read of the stage before it.
        retriever_item_factors: Its item vectors, float32 ``[I, F]``.
    """

    dataset: str
    request_user: np.ndarray
    request_split: np.ndarray
    candidates: np.ndarray
    candidate_scores: np.ndarray
    histories: np.ndarray
    history_lengths: np.ndarray
    logged_items: np.ndarray
    logged_clicks: np.ndarray
    gr2_request: np.ndarray
    gr2_candidates: np.ndarray
    gr2_target_pos: np.ndarray
    user_features: np.ndarray
    item_features: np.ndarray
    item_titles: np.ndarray
    retriever_user_factors: np.ndarray
    retriever_item_factors: np.ndarray

    @classmethod
    def from_data(cls, data: RerankData, history_length: int = 50) -> RequestPool:
        """The pool of processed data (histories cut to ``history_length`` items)."""
        every = np.arange(data.n_requests)
        histories, lengths = data.history(every, history_length)
        return cls(
            dataset=data.name,
            request_user=data.request_user.astype(np.int64),
            request_split=data.request_split.astype(np.int8),
            candidates=data.candidates.astype(np.int64),
            candidate_scores=data.candidate_scores.astype(np.float32),
            histories=histories.astype(np.int64),
            history_lengths=lengths.astype(np.int64),
            logged_items=data.logged_items.astype(np.int64),
            logged_clicks=data.logged_clicks.astype(bool),
            gr2_request=data.gr2_request.astype(np.int64),
            gr2_candidates=data.gr2_candidates.astype(np.int64),
            gr2_target_pos=data.gr2_target_pos.astype(np.int64),
            user_features=data.user_features.astype(np.float32),
            item_features=data.item_features.astype(np.float32),
            item_titles=np.asarray(data.item_titles, dtype=str),
            retriever_user_factors=data.retriever_user_factors.astype(np.float32),
            retriever_item_factors=data.retriever_item_factors.astype(np.float32),
        )

    @property
    def n_users(self) -> int:
        """Users (rows of ``user_features``)."""
        return len(self.user_features)

    @property
    def n_items(self) -> int:
        """Items (rows of ``item_features``)."""
        return len(self.item_features)

    @property
    def n_requests(self) -> int:
        """Requests."""
        return len(self.request_user)

    @property
    def num_candidates(self) -> int:
        """Candidates per request, N."""
        return self.candidates.shape[1]

    @property
    def slate_length(self) -> int:
        """Length of the logged slates, L."""
        return self.logged_items.shape[1]

    def reserve(self, requests: np.ndarray) -> RequestPool:
        """A copy in which ``requests`` belong to no split (their logs kept for the judge).

        A task's pool reserves the logged slates the held-out judge was fitted on
        (:meth:`~simulators.bundle.SimulatorBundle.judge_requests`), so that no agent
        trains on them: an agent fitted on its judge's data is scored by a model
        that shares its errors.

        Args:
            requests: Request indices of the ``train`` and ``valid`` splits.

        Raises:
            ValueError: An index out of range, or a test request (the test split is
                what every agent is scored on; reserving it would change the table).
        """
        requests = np.asarray(requests, dtype=np.int64)
        if len(requests) and (requests.min() < 0 or requests.max() >= self.n_requests):
            raise ValueError(
                f"requests to reserve must be indices in [0, {self.n_requests}), got "
                f"{requests.min()}..{requests.max()}"
            )
        if (self.request_split[requests] == split_code("test")).any():
            raise ValueError(
                "test requests cannot be reserved for the judge: the judge is fitted on "
                "training and validation logs only"
            )
        split = self.request_split.copy()
        split[requests] = RESERVED
        return dataclasses.replace(self, request_split=split)

    @property
    def reserved(self) -> np.ndarray:
        """Indices of the requests in no split (:meth:`reserve`)."""
        return np.flatnonzero(self.request_split == RESERVED)

    def split_indices(self, split: str) -> np.ndarray:
        """Request indices of ``"train"``, ``"valid"`` or ``"test"``."""
        return np.flatnonzero(self.request_split == split_code(split))

    def history(
        self, requests: np.ndarray | list[int], max_length: int = 50
    ) -> tuple[np.ndarray, np.ndarray]:
        """The most recent ``max_length`` history items of each request.

        Same contract as :meth:`RerankData.history`; ``max_length`` may not exceed
        the stored history length.
        """
        stored = self.histories.shape[1]
        if max_length > stored:
            raise ValueError(
                f"max_length={max_length} exceeds the {stored} history items this pool "
                "stores; rebuild it with a longer history_length"
            )
        requests = np.asarray(requests, dtype=np.int64)
        lengths = self.history_lengths[requests]
        kept = np.minimum(lengths, max_length)
        steps = np.arange(max_length)
        source = (lengths - kept)[:, None] + steps[None, :]
        valid = steps[None, :] < kept[:, None]
        rows = self.histories[requests[:, None], np.where(valid, source, 0)]
        return np.where(valid, rows, -1), kept

    def trained_items(self) -> np.ndarray:
        """Bool ``[I]``: items in a training request's logged slate or history.

        These are the items whose learned vectors were trained.
        """
        train = self.split_indices("train")
        return items_with_interactions(
            self.n_items, self.logged_items[train], self.histories[train]
        )

    def genres(self) -> np.ndarray:
        """Bool ``[I, G]`` genre (category) flags: the item features but the last (year)."""
        return self.item_features[:, :-1] > 0.5

    def semantic_id_inputs(
        self, item_vectors: np.ndarray, withheld: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(features [I, D], fitting rows bool [I])`` of the semantic-ID tokenizer.

        Features are the item side features next to ``item_vectors``; items without
        training interactions, and ``withheld`` items (bool ``[I]``, cold start),
        get content-only vectors and are not fitted on
        (:func:`~simulators.data.semantic_ids.semantic_id_features`).
        """
        fit_rows = self.trained_items()
        if withheld is not None:
            fit_rows &= ~np.asarray(withheld, dtype=bool)
        features = semantic_id_features(self.item_features, item_vectors, fit_rows)
        return features, fit_rows

    def withholding(
        self,
        withheld: np.ndarray,
        splits: tuple[str, ...] = ("train", "valid"),
        *,
        seed: int = 0,
    ) -> RequestPool:
        """A copy in which ``withheld`` items never occur in a request of ``splits`` (cold start).

        In each such request a withheld item is

        * removed from the candidates; the others move up in their initial order
          and the list is topped up at its end with items drawn at random (seeded)
          among the items that are neither withheld, candidates nor in the
          history, each scored like the last kept candidate;
        * removed from the history and from the logged slate (the rest move up;
          the end is ``-1`` padded, the clicks follow their items);
        * GR2 requests of ``splits`` whose candidates hold a withheld item are dropped.

        Requests of the other splits are unchanged, so test candidates still hold
        withheld items; the simulators (fitted beforehand) score every item.

        Args:
            withheld: Bool ``[I]``, the items to withhold.
            splits: Splits whose requests must not hold them.
            seed: Seed of the top-up draw.

        Raises:
            ConfigError: ``withheld`` is not a bool ``[I]`` mask, leaves too few items
                to fill a candidate list, or a split is unknown.
        """
        withheld = np.asarray(withheld)
        if withheld.dtype != bool or withheld.shape != (self.n_items,):
            raise ConfigError(
                f"withheld must be a bool mask over the {self.n_items} items, got dtype "
                f"{withheld.dtype} and shape {withheld.shape}"
            )
        unknown = [split for split in splits if split not in SPLITS]
        if unknown:
            raise ConfigError(f"unknown splits {unknown}; expected a subset of {SPLITS}")
        available = np.flatnonzero(~withheld)
        if len(available) < self.num_candidates + self.histories.shape[1]:
            raise ConfigError(
                f"withholding {int(withheld.sum())} of {self.n_items} items leaves "
                f"{len(available)}, too few to fill lists of N = {self.num_candidates} "
                "candidates; withhold fewer items"
            )
        generator = np.random.default_rng(seed)
        rows = np.flatnonzero(np.isin(self.request_split, [SPLITS.index(s) for s in splits]))
        candidates, scores = self.candidates.copy(), self.candidate_scores.copy()
        for row in rows[withheld[candidates[rows]].any(axis=1)]:
            keep = ~withheld[candidates[row]]
            kept, kept_scores = candidates[row, keep], scores[row, keep]
            missing = self.num_candidates - len(kept)
            taken = np.concatenate([kept, self.histories[row, : self.history_lengths[row]]])
            pool = available[~np.isin(available, taken)]
            candidates[row] = np.concatenate([kept, generator.choice(pool, missing, replace=False)])
            floor = kept_scores.min() if len(kept) else 0.0
            scores[row] = np.concatenate([kept_scores, np.full(missing, floor, np.float32)])
        histories, _ = _compacted(self.histories, withheld, rows)
        logged_items, order = _compacted(self.logged_items, withheld, rows)
        logged_clicks = np.take_along_axis(self.logged_clicks, order, axis=1) & (logged_items != -1)
        in_splits = np.isin(self.request_split[self.gr2_request], [SPLITS.index(s) for s in splits])
        gr2_kept = ~(in_splits & withheld[self.gr2_candidates].any(axis=1))
        return dataclasses.replace(
            self,
            candidates=candidates,
            candidate_scores=scores,
            histories=histories,
            history_lengths=(histories != -1).sum(axis=1).astype(np.int64),
            logged_items=logged_items,
            logged_clicks=logged_clicks,
            gr2_request=self.gr2_request[gr2_kept],
            gr2_candidates=self.gr2_candidates[gr2_kept],
            gr2_target_pos=self.gr2_target_pos[gr2_kept],
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array field by name (what :meth:`save` writes)."""
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "dataset"
        }

    def save(self, path: str | Path) -> Path:
        """Write the pool as a compressed ``.npz`` (no pickled objects), atomically."""
        arrays = self.arrays()
        # Indices fit in int32; halving them keeps the shipped bundle small.
        compact = {
            name: value.astype(np.int32) if value.dtype == np.int64 else value
            for name, value in arrays.items()
        }
        atomic_write(
            Path(path),
            lambda out: np.savez_compressed(out, dataset=np.asarray(self.dataset), **compact),
        )
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> RequestPool:
        """Read a pool written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as archive:
            fields = {}
            for f in dataclasses.fields(cls):
                if f.name not in archive.files:
                    raise CheckpointError(f"{path} has no array {f.name!r}: not a request pool")
                value = archive[f.name]
                fields[f.name] = value.astype(np.int64) if value.dtype == np.int32 else value
        fields["dataset"] = str(fields["dataset"])
        return cls(**fields)


def _compacted(
    items: np.ndarray, withheld: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``items`` without the withheld entries of ``rows``, and the column order used.

    The other entries move up in their order and the end is ``-1`` padded.
    """
    dropped = np.zeros(items.shape, dtype=bool)
    dropped[rows] = withheld[items[rows].clip(min=0)] & (items[rows] != -1)
    kept = np.where(dropped, -1, items)
    order = np.argsort(kept == -1, axis=1, kind="stable")
    return np.take_along_axis(kept, order, axis=1), order
