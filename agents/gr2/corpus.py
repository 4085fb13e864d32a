"""GR2's mid-training corpus, and the report of what mid-training taught.

Mid-training (stage 0, :func:`agents.gr2.stages.mid_train`) mixes four language
tasks in turn, each a list of token sequences with the index of their first scored
token (:func:`mid_training_corpus`):

* ``next-sid``: training histories in semantic IDs, each code given the ones before;
* ``caption``: an item's code, then its attribute words (genres, year, popularity);
* ``describe``: the attribute words, then the item's code;
* ``grammar``: rationales of the training simulator's own top candidates (no
  answer, no ``x*``).

The captioning tasks leave out :data:`CAPTION_HOLDOUT` of the items
(:func:`caption_split`); :func:`mid_training_report` scores the student on them and
on validation requests, before and after.
"""

from __future__ import annotations

import numpy as np
import torch

from agents.gr2 import language as lang
from agents.gr2.config import GR2Config
from agents.gr2.language import GR2Vocabulary, ItemFacts
from agents.gr2.model import pad, token_log_probs
from rerank_env.task import RerankTask

#: Share of items held out of the captioning tasks to measure what mid-training taught.
CAPTION_HOLDOUT = 0.1

#: A mid-training task's sequences and the index of each one's first scored token.
Sequences = tuple[list[np.ndarray], np.ndarray]


def caption_split(task: RerankTask, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Items the captioning tasks train on, and the held-out ones they are scored on.

    Args:
        task: A GR2-protocol task (its trained, not withheld items are split).
        rng: Draws which items are held out (one draw per item).

    Returns:
        ``(captioned, held_out)`` item indices.
    """
    items = np.flatnonzero(task.pool.trained_items() & ~task.withheld_items)
    held = rng.random(len(items)) < CAPTION_HOLDOUT
    return items[~held], items[held]


def attribute_tokens(vocab: GR2Vocabulary, facts: ItemFacts, item: int) -> np.ndarray:
    """``genre.. year_b pop_b`` of an item (``genre_none`` when it has no genre)."""
    genres = np.flatnonzero(facts.genres[item])
    names = [f"genre_{g}" for g in genres] or ["genre_none"]
    names += [f"year_{facts.year_bucket[item]}", f"pop_{facts.popularity_bucket[item]}"]
    return vocab.ids(names)


def mid_training_corpus(
    task: RerankTask,
    settings: GR2Config,
    vocab: GR2Vocabulary,
    facts: ItemFacts,
    pool: np.ndarray,
    slot_one: np.ndarray,
    captioned: np.ndarray,
) -> dict[str, Sequences]:
    """Sequences (and the index of their first scored token) of each mid-training task.

    Args:
        task: The GR2-protocol task.
        settings: The agent's config (``mid_tasks``, ``history_items``,
            ``cited_candidates``).
        vocab: The student's vocabulary.
        facts: The task's item facts in that vocabulary.
        pool: The training requests used.
        slot_one: :func:`~agents.common.scorers.slot_one_values` of ``pool``.
        captioned: The items of the captioning tasks (:func:`caption_split`).

    Returns:
        The tasks of ``settings.mid_tasks`` by name (``caption`` and ``describe``
        come together).
    """
    corpus: dict[str, Sequences] = {}
    if "next-sid" in settings.mid_tasks:
        corpus["next-sid"] = _next_sid(task, vocab, facts, pool, settings.history_items)
    if "caption" in settings.mid_tasks or "describe" in settings.mid_tasks:
        corpus["caption"], corpus["describe"] = _captions(vocab, facts, captioned)
    if "grammar" in settings.mid_tasks:
        # Rationales of the simulator's own top candidates, no answer, no x*.
        order = np.argsort(-slot_one, axis=1, kind="stable")
        histories = lang.recent_history(task, pool, settings.history_items)
        candidates = task.candidates_np[pool]
        sequences, starts = [], []
        for history, cands, ranking in zip(histories, candidates, order, strict=True):
            prompt = lang.prompt(vocab, facts, history, cands)
            reasoning = lang.rationale(
                vocab, facts, history, cands, ranking, settings.cited_candidates
            )
            sequences.append(np.concatenate([prompt, reasoning]))
            starts.append(len(prompt))
        corpus["grammar"] = (sequences, np.array(starts))
    return corpus


def _next_sid(
    task: RerankTask, vocab: GR2Vocabulary, facts: ItemFacts, pool: np.ndarray, history: int
) -> Sequences:
    """Training histories of two items or more, scored from the second item on."""
    histories = lang.recent_history(task, pool, history + 1)
    sequences = [
        np.concatenate(
            [
                vocab.ids(["<bos>", "<next>", "<hist>"]),
                facts.sid_tokens[h].reshape(-1),
                vocab.ids(["<eos>"]),
            ]
        )
        for h in histories
        if len(h) >= 2
    ]
    # Scored from the second item on: each next code given the ones before.
    return sequences, np.full(len(sequences), 3 + vocab.levels)


def _captions(
    vocab: GR2Vocabulary, facts: ItemFacts, captioned: np.ndarray
) -> tuple[Sequences, Sequences]:
    """``caption`` (code -> attributes) and ``describe`` (attributes -> code) sequences."""
    captions, descriptions = [], []
    for item in captioned:
        attributes = attribute_tokens(vocab, facts, item)
        code = facts.sid_tokens[item]
        captions.append(_translation(vocab, "<caption>", code, attributes))
        descriptions.append(_translation(vocab, "<describe>", attributes, code))
    return (
        (captions, np.full(len(captions), 3 + vocab.levels)),
        (descriptions, np.array([len(d) - vocab.levels - 1 for d in descriptions])),
    )


def _translation(
    vocab: GR2Vocabulary, task: str, source: np.ndarray, target: np.ndarray
) -> np.ndarray:
    """``<bos> task source <attr> target <eos>``."""
    return np.concatenate(
        [vocab.ids(["<bos>", task]), source, vocab.ids(["<attr>"]), target, vocab.ids(["<eos>"])]
    )


def mid_training_report(
    student: torch.nn.Module,
    task: RerankTask,
    vocab: GR2Vocabulary,
    facts: ItemFacts,
    requests: np.ndarray,
    held_out: np.ndarray,
    *,
    history_items: int,
) -> dict[str, float]:
    """Held-out next-SID recall@1 among the K candidates, and captioning accuracy.

    Args:
        student: The student (put in evaluation mode).
        task: The GR2-protocol task.
        vocab: The student's vocabulary.
        facts: The task's item facts in that vocabulary.
        requests: Validation requests of the next-SID score.
        held_out: Items left out of the captioning tasks (:func:`caption_split`).
        history_items: Items of history in a prompt.

    Returns:
        ``next_sid_recall@1`` and, with held-out items,
        ``caption_{genre,year,pop}_accuracy``.
    """
    student.eval()
    device = task.device
    # Next-SID: which candidate's code does the model find likeliest after the history?
    histories = lang.recent_history(task, requests, history_items)
    candidates = task.candidates_np[requests]
    sequences, starts = [], []
    for history, cands in zip(histories, candidates, strict=True):
        head = np.concatenate(
            [vocab.ids(["<bos>", "<next>", "<hist>"]), facts.sid_tokens[history].reshape(-1)]
        )
        for item in cands:
            sequences.append(np.concatenate([head, facts.sid_tokens[item]]))
            starts.append(len(head))
    with torch.no_grad():
        log_probs, _ = token_log_probs(
            student,
            *pad(sequences, vocab.id("<pad>"), device),
            None,
            torch.as_tensor(np.array(starts), device=device),
        )
    scores = log_probs.sum(dim=1).reshape(len(requests), task.num_candidates).cpu().numpy()
    targets = task.pool.gr2_target_pos[requests]
    report = {"next_sid_recall@1": float((scores.argmax(axis=1) == targets).mean())}
    if len(held_out):
        report.update(_caption_accuracy(student, task, vocab, facts, held_out))
    return report


def _caption_accuracy(
    student: torch.nn.Module,
    task: RerankTask,
    vocab: GR2Vocabulary,
    facts: ItemFacts,
    held_out: np.ndarray,
) -> dict[str, float]:
    """Captioning held-out items: how often the likeliest genre / year / popularity word is right.

    A genre guess is right when the item has that genre (``genre_none``: when it has none).
    """
    prompts = [
        np.concatenate(
            [vocab.ids(["<bos>", "<caption>"]), facts.sid_tokens[item], vocab.ids(["<attr>"])]
        )
        for item in held_out
    ]
    ids, attention = pad(prompts, vocab.id("<pad>"), task.device)
    with torch.no_grad():
        logits = student(input_ids=ids, attention_mask=attention).logits[:, -1]
    report: dict[str, float] = {}
    for kind, truth in (
        ("genre", None),
        ("year", facts.year_bucket[held_out]),
        ("pop", facts.popularity_bucket[held_out]),
    ):
        lo, hi = vocab.word_range(kind)
        guess = logits[:, lo:hi].argmax(dim=1).cpu().numpy()
        if kind == "genre":
            genres = facts.genres[held_out]
            none = ~genres.any(axis=1)
            hit = np.where(
                guess == hi - lo - 1,
                none,
                genres[np.arange(len(guess)), np.minimum(guess, genres.shape[1] - 1)],
            )
            report["caption_genre_accuracy"] = float(hit.mean())
        else:
            report[f"caption_{kind}_accuracy"] = float((guess == truth).mean())
    return report
