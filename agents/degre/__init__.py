"""DeGRe: dense-supervised generative reranking.

DeGRe (KDD 2026 ADS) trains a one-pass list generator to reach the quality of a
beam search it could not afford at serving time. Three stages, all in
:meth:`DeGRe.fit` (``agents/degre/agent.py``):

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
3. **Dense supervision** of a :class:`~agents.common.pointer.PointerPolicy` (candidate-set
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

The package: :mod:`~agents.degre.config` (:class:`DeGReConfig` and its presets),
:mod:`~agents.degre.evaluator` (stage 1), :mod:`~agents.degre.mining` (stage 2),
:mod:`~agents.degre.generator` (stage 3's loss) and :mod:`~agents.degre.agent`
(:class:`DeGRe`: the training loop, top to bottom, and serving).
"""

from agents.degre.agent import DeGRe
from agents.degre.config import Decode, DeGReConfig, EvaluatorKind, ListWeight, Supervision, Targets
from agents.degre.evaluator import (
    EVALUATOR_LIST_TEMPERATURES,
    LookaheadEvaluator,
    LookaheadScorer,
    count_tails,
    poisson_binomial_tails,
)
from agents.degre.mining import MinedLists, beam_calls_per_request, mine, mining_calls_per_request

__all__ = [
    "EVALUATOR_LIST_TEMPERATURES",
    "DeGRe",
    "DeGReConfig",
    "Decode",
    "EvaluatorKind",
    "ListWeight",
    "LookaheadEvaluator",
    "LookaheadScorer",
    "MinedLists",
    "Supervision",
    "Targets",
    "beam_calls_per_request",
    "count_tails",
    "mine",
    "mining_calls_per_request",
    "poisson_binomial_tails",
]
