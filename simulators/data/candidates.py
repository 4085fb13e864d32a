"""Each request's candidates: retrieval, injection of logged items, GR2 candidates.

Steps 6-7 of :mod:`simulators.data.pipeline`: one retrieval per request gives both
the ``num_candidates`` candidates of the main protocol and the ``gr2_candidates``
pre-ranked candidates of the GR2 protocol; logged items the retriever missed are
injected where the config asks for it.
"""

from __future__ import annotations

import numpy as np

from simulators.data.pipeline_config import PipelineConfig
from simulators.data.retrieval import Retriever
from simulators.data.top_k import RetrievalRequests


def inject_required(
    retrieved: np.ndarray,
    retrieved_scores: np.ndarray,
    required: np.ndarray,
    required_scores: np.ndarray,
    required_mask: np.ndarray,
    position: str,
    stream_keys: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Make every request's candidates contain its required items.

    Missing required items (``required[r][required_mask[r]]``) replace the
    lowest-scored retrieved ones and go either to uniformly random slots
    (``"random"``) or to their retriever-score rank (``"score"``). Row ``r`` draws
    its slots from its own generator seeded by ``stream_keys[r]``, so one request's
    candidates never depend on another request (of another split, say).

    Returns:
        ``(candidates, scores, injected)`` with the shape of ``retrieved``.
    """
    candidates = retrieved.copy()
    scores = retrieved_scores.copy()
    injected = np.zeros(retrieved.shape, dtype=bool)
    size = retrieved.shape[1]
    in_retrieved = (required[:, :, None] == retrieved[:, None, :]).any(axis=2)
    missing = required_mask & ~in_retrieved
    for r in np.flatnonzero(missing.any(axis=1)):
        add, add_scores = required[r][missing[r]], required_scores[r][missing[r]]
        # Make room by dropping the lowest-scored retrieved items that are not required.
        protected = np.isin(retrieved[r], required[r][required_mask[r]])
        kept = np.ones(size, dtype=bool)
        kept[np.flatnonzero(~protected)[-len(add) :]] = False
        kept_items, kept_scores = retrieved[r, kept], retrieved_scores[r, kept]
        if position == "random":
            rng = np.random.default_rng(stream_keys[r].tolist())
            is_new = np.zeros(size, dtype=bool)
            is_new[rng.choice(size, size=len(add), replace=False)] = True
            shuffled = rng.permutation(len(add))
            candidates[r, is_new] = add[shuffled]
            scores[r, is_new] = add_scores[shuffled]
            candidates[r, ~is_new] = kept_items
            scores[r, ~is_new] = kept_scores
            injected[r, is_new] = True
        else:
            merged = np.concatenate([kept_items, add])
            merged_scores = np.concatenate([kept_scores, add_scores])
            flags = np.arange(size) >= len(kept_items)
            order = np.lexsort((merged, -merged_scores))
            candidates[r], scores[r], injected[r] = (
                merged[order],
                merged_scores[order],
                flags[order],
            )
    return candidates, scores, injected


def build_candidates(
    retriever: Retriever,
    requests: RetrievalRequests,
    logged_items: np.ndarray,
    logged_ratings: np.ndarray,
    config: PipelineConfig,
    stream_keys: np.ndarray,
    progress: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Candidates of the main (N) protocol and of the GR2 (K) protocol."""
    # One retrieval of the wider list serves both protocols (its prefix is the top K).
    widest, widest_scores, logged_scores = retriever.top_k(
        requests,
        max(config.num_candidates, config.gr2_candidates),
        logged_items,
        progress=progress,
    )
    retrieved = widest[:, : config.num_candidates]
    retrieved_scores = widest_scores[:, : config.num_candidates]
    gr2_retrieved = widest[:, : config.gr2_candidates]
    gr2_scores = widest_scores[:, : config.gr2_candidates]
    positive = logged_ratings >= config.click_threshold
    if config.inject == "none":
        must = np.zeros_like(positive)
    else:
        must = positive if config.inject == "positives" else np.ones_like(positive)
    candidates, scores, injected = inject_required(
        retrieved,
        retrieved_scores,
        logged_items,
        logged_scores,
        must,
        config.inject_position,
        np.column_stack([stream_keys, np.zeros_like(stream_keys[:, 0])]),
    )
    # One logged position at a time: an [R, N, L] comparison is gigabytes at 25M ratings.
    rating = np.zeros(candidates.shape, dtype=np.float32)
    retrieved_positive = np.zeros_like(positive)
    for slot in range(logged_items.shape[1]):
        logged = logged_items[:, slot : slot + 1]
        rating += (candidates == logged) * logged_ratings[:, slot : slot + 1]
        retrieved_positive[:, slot] = positive[:, slot] & (retrieved == logged).any(axis=1)
    main = {
        "candidates": candidates,
        "scores": scores,
        "rating": rating,
        "injected": injected,
        # Logged positives the retriever found on its own (for recall@N).
        "retrieved_positive": retrieved_positive,
    }

    # GR2: the true next item is the first logged positive, time order.
    request = np.flatnonzero(positive.any(axis=1))
    first = positive[request].argmax(axis=1)[:, None]
    target = np.take_along_axis(logged_items[request], first, axis=1)
    if config.gr2_mode == "filter":
        # Only requests whose pre-ranked top K already holds the true next item.
        holds = (gr2_retrieved[request] == target).any(axis=1)
        request, first, target = request[holds], first[holds], target[holds]
    target_scores = np.take_along_axis(logged_scores[request], first, axis=1)
    gr2_candidates, _, gr2_injected = inject_required(
        gr2_retrieved[request],
        gr2_scores[request],
        target,
        target_scores,
        np.ones_like(target, dtype=bool),
        config.inject_position,
        np.column_stack([stream_keys[request], np.ones_like(request)]),
    )
    gr2 = {
        "request": request.astype(np.int64),
        "candidates": gr2_candidates,
        "target_pos": (gr2_candidates == target).argmax(axis=1).astype(np.int64),
        "injected": gr2_injected.any(axis=1),
    }
    return main, gr2
