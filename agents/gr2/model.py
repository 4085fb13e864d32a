"""GR2's student: a small ``transformers`` causal LM built from a config, and its I/O.

No weights are downloaded: the model is ``LlamaForCausalLM(LlamaConfig(...))`` with
GR2's own vocabulary (:mod:`agents.gr2.language`), trained from scratch.
``transformers`` is an optional extra (``pip install -e ".[lm]"``).

* :func:`build_student`: the model from :class:`~agents.gr2.config.GR2Config` sizes.
* :func:`pad`: batches of variable-length sequences (right-padded for training,
  left-padded for generation), with attention masks.
* :func:`generate`: constrained greedy or sampled continuation of prompts through
  ``model.generate`` and :class:`~agents.gr2.constraint.ConstraintLogitsProcessor`.
* :func:`token_log_probs`: log-probabilities of written tokens under the
  constraint's masks (what SFT and DAPO optimise), with their entropies;
  :func:`sequence_log_probs` replays the constraint over written tokens for them.
* :func:`prompts`: the student's inputs for requests; :func:`greedy_outputs`: its
  greedy constrained outputs for them (the learning curve's and serving's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from agents.gr2 import language as lang
from agents.gr2.constraint import ConstraintLogitsProcessor, DecodingConstraint, replay_masks
from agents.gr2.language import GR2Vocabulary, ItemFacts
from rerank_env.task import RerankTask
from simulators.data.errors import ConfigError

#: Requests decoded per ``generate`` call when serving.
SERVE_BATCH = 256


def require_transformers() -> Any:
    """The ``transformers`` module, or a :class:`ConfigError` naming the extra."""
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            'GR2\'s student is a transformers model: pip install -e ".[lm]" (or pip install '
            "'transformers>=5')"
        ) from None
    return transformers


def build_student(
    vocab: GR2Vocabulary, *, dim: int, layers: int, heads: int, intermediate: int, max_length: int
) -> torch.nn.Module:
    """An untrained ``LlamaForCausalLM`` over GR2's vocabulary (seed the caller's RNG)."""
    transformers = require_transformers()
    config = transformers.LlamaConfig(
        vocab_size=vocab.size,
        hidden_size=dim,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_length,
        tie_word_embeddings=True,
        pad_token_id=vocab.id("<pad>"),
        bos_token_id=vocab.id("<bos>"),
        eos_token_id=vocab.id("<eos>"),
    )
    model = transformers.LlamaForCausalLM(config)
    model.generation_config = transformers.GenerationConfig(
        pad_token_id=vocab.id("<pad>"),
        bos_token_id=vocab.id("<bos>"),
        eos_token_id=vocab.id("<eos>"),
        do_sample=False,
        top_k=None,
        top_p=None,
    )
    return model


def pad(
    sequences: Sequence[np.ndarray], pad_id: int, device: Any, *, left: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, attention)`` ``[B, T]`` of variable-length sequences.

    Right-padded (sequences left-aligned) for training; ``left=True`` right-aligns
    them, as batched generation with a decoder-only model needs.
    """
    width = max(len(s) for s in sequences)
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    attention = np.zeros((len(sequences), width), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        columns = slice(width - len(sequence), width) if left else slice(0, len(sequence))
        ids[row, columns] = sequence
        attention[row, columns] = 1
    return torch.as_tensor(ids, device=device), torch.as_tensor(attention, device=device)


def positions(attention: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on each row's first real token (as ``generate`` does)."""
    return (attention.cumsum(dim=1) - 1).clamp(min=0)


def continuation_length(vocab: GR2Vocabulary, max_reasoning: int) -> int:
    """Tokens after ``<think>`` in the longest output: reasoning, ``</think> <rank>``, answer."""
    return max_reasoning + 2 + vocab.candidates * vocab.levels + 1


def generate(
    model: torch.nn.Module,
    vocab: GR2Vocabulary,
    prompts: Sequence[np.ndarray],
    candidate_sids: torch.Tensor,
    max_reasoning: int,
    *,
    sample: bool = False,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, DecodingConstraint]:
    """Constrained continuation of ``prompts``: ``(written [M, T], final constraint state)``.

    Sampling draws from torch's global generator: call it inside
    :func:`simulators.base.isolated_torch_rng` with a seed.

    Args:
        model: The student.
        vocab: Its vocabulary.
        prompts: One prompt per row (repeat a prompt for several samples).
        candidate_sids: ``[M, K, levels]``, each row's candidates in prompt order.
        max_reasoning: L_max.
        sample: Sample (``temperature``) instead of greedy decoding.
        temperature: Sampling temperature.
    """
    device = candidate_sids.device
    ids, attention = pad(prompts, vocab.id("<pad>"), device, left=True)
    constraint = DecodingConstraint(vocab, candidate_sids, max_reasoning)
    transformers = require_transformers()
    processor = ConstraintLogitsProcessor(constraint, ids.shape[1])
    with torch.no_grad():
        output = model.generate(
            input_ids=ids,
            attention_mask=attention,
            max_new_tokens=continuation_length(vocab, max_reasoning),
            do_sample=sample,
            temperature=temperature if sample else None,
            logits_processor=transformers.LogitsProcessorList([processor]),
        )
    written = output[:, ids.shape[1] :]
    # generate stops once every row is done: replay the last token to finish the state.
    constraint.advance(written[:, -1])
    return written, constraint


def token_log_probs(
    model: torch.nn.Module,
    ids: torch.Tensor,
    attention: torch.Tensor,
    masks: torch.Tensor | None,
    start: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability and entropy of each token from ``start`` on, ``[B, T - 1]`` each.

    Entry ``t`` is about token ``t + 1`` given tokens ``0 .. t``. Where ``masks`` is
    given (bool ``[B, T - 1, V]``), the distribution is the constrained one (the
    softmax over allowed tokens); entries before ``start`` (``[B]``, the first
    scored token's index) or on padding are 0.
    """
    logits = (
        model(input_ids=ids, attention_mask=attention, position_ids=positions(attention))
        .logits[:, :-1]
        .float()
    )
    if masks is not None:
        logits = logits.masked_fill(~masks, float("-inf"))
    log_p = torch.log_softmax(logits, dim=-1)
    target = ids[:, 1:]
    chosen = log_p.gather(2, target[:, :, None]).squeeze(2)
    probs = log_p.exp()
    entropy = -(probs * log_p.nan_to_num(neginf=0.0)).sum(dim=-1)
    steps = torch.arange(target.shape[1], device=ids.device)
    scored = (steps[None, :] + 1 >= start[:, None]) & (attention[:, 1:] > 0)
    return chosen.where(scored, torch.zeros_like(chosen)), entropy.where(
        scored, torch.zeros_like(entropy)
    )


def prompts(
    task: RerankTask,
    vocab: GR2Vocabulary,
    facts: ItemFacts,
    requests: np.ndarray,
    history_items: int,
) -> tuple[list[np.ndarray], torch.Tensor]:
    """Prompts of ``requests`` and their candidates' codes ``[B, K, levels]``."""
    histories = lang.recent_history(task, requests, history_items)
    candidates = task.candidates_np[requests]
    pairs = zip(histories, candidates, strict=True)
    texts = [lang.prompt(vocab, facts, history, cands) for history, cands in pairs]
    return texts, torch.as_tensor(facts.sid_tokens[candidates], device=task.device)


def sequence_log_probs(
    student: torch.nn.Module,
    vocab: GR2Vocabulary,
    sequences: list[np.ndarray],
    starts: np.ndarray,
    sids: torch.Tensor,
    max_reasoning: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Constrained log-probs and entropies of the written tokens, and their mask.

    Each sequence is a prompt (``starts[i]`` tokens) and what was written after
    it; ``sids`` are its candidates' codes ``[B, K, levels]`` (on the student's
    device). Returns ``[B, T - 1]`` tensors (entry ``t``: token ``t + 1``); the mask
    marks written tokens that were a choice (more than one token allowed).
    """
    device = sids.device
    pad_id = vocab.id("<pad>")
    ids, attention = pad(sequences, pad_id, device)
    batch, width = ids.shape
    written = torch.full(
        (batch, width - int(starts.min())), pad_id, dtype=torch.long, device=device
    )
    for row, (sequence, start) in enumerate(zip(sequences, starts, strict=True)):
        written[row, : len(sequence) - start] = torch.as_tensor(sequence[start:])
    masks, _ = replay_masks(vocab, sids, written, max_reasoning)
    full = torch.ones(batch, width - 1, vocab.size, dtype=torch.bool, device=device)
    choice = torch.zeros(batch, width - 1, dtype=torch.bool, device=device)
    for row, (sequence, start) in enumerate(zip(sequences, starts, strict=True)):
        length = len(sequence) - start
        full[row, start - 1 : start - 1 + length] = masks[row, :length]
        choice[row, start - 1 : start - 1 + length] = masks[row, :length].sum(dim=1) > 1
    start_t = torch.as_tensor(starts, device=device)
    log_probs, entropy = token_log_probs(student, ids, attention, full, start_t)
    return log_probs, entropy, choice


def greedy_outputs(
    student: torch.nn.Module,
    task: RerankTask,
    vocab: GR2Vocabulary,
    facts: ItemFacts,
    requests: np.ndarray,
    history_items: int,
    max_reasoning: int,
) -> dict[str, Any]:
    """The student's greedy constrained outputs for ``requests``, :data:`SERVE_BATCH` at a time.

    Args:
        student: The student, on the task's device (put in evaluation mode).
        task: The GR2-protocol task.
        vocab: The student's vocabulary.
        facts: The task's item facts in that vocabulary.
        requests: The requests (int ``[B]``).
        history_items: Items of history in a prompt.
        max_reasoning: L_max.

    Returns:
        ``rankings`` (positions ``[B, K]``), ``written`` (the tokens after
        ``<think>``, one array per request, up to ``<eos>``), ``well_formed``
        (bool ``[B]``: the rationale follows the grammar) and
        ``reasoning_length`` (``[B]``).
    """
    student.eval()
    rankings, written, formed, lengths = [], [], [], []
    for start in range(0, len(requests), SERVE_BATCH):
        batch = requests[start : start + SERVE_BATCH]
        texts, sids = prompts(task, vocab, facts, batch, history_items)
        tokens, state = generate(student, vocab, texts, sids, max_reasoning)
        rankings.append(state.ranking.cpu().numpy())
        lengths.append(state.reasoning_length.cpu().numpy())
        for row, codes in zip(tokens.cpu().numpy(), sids.cpu().numpy(), strict=True):
            written.append(lang.trimmed(vocab, row))
            formed.append(lang.well_formed(vocab, lang.reasoning_segment(vocab, row), codes))
    k = task.num_candidates
    return {
        "rankings": np.concatenate(rankings) if rankings else np.zeros((0, k), np.int64),
        "written": written,
        "well_formed": np.array(formed, dtype=bool),
        "reasoning_length": np.concatenate(lengths) if lengths else np.zeros(0, np.int64),
    }
