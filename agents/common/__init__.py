"""Pieces every method under :mod:`agents` shares, written once.

Import from the submodules; this package's ``__init__`` imports nothing, so a
module low in the import graph (:mod:`agents.base`) can use
:mod:`agents.common.sampling` without pulling the rest in (no import cycles).

* :mod:`~agents.common.sampling`: per-request Gumbel noise, torch generators;
* :mod:`~agents.common.nn`: request features, the candidate-set encoder, the
  Transformer stacks;
* :mod:`~agents.common.pointer`: the pointer decoder,
  :class:`~agents.common.pointer.PointerPolicy` and its greedy / sampled lists;
* :mod:`~agents.common.pointer_agent`: :class:`~agents.common.pointer_agent.PointerAgent`,
  the base of agents whose model is a ``PointerPolicy`` (rank, sample, learning curve);
* :mod:`~agents.common.scorers`: :class:`~agents.common.scorers.ListScorer`, the one
  interface for valuing lists (a simulator, a learned click model, an evaluator);
* :mod:`~agents.common.losses`: returns, group advantages and policy-gradient
  losses (REINFORCE, group-relative reference policy, PPO / DAPO clipping, GAE);
* :mod:`~agents.common.telemetry`: the training logger (CSV, TensorBoard);
* :mod:`~agents.common.config`: the base of the methods' frozen config dataclasses;
* :mod:`~agents.common.specs`: agents named by entry points (``"agents.degre:DeGRe"``);
* :mod:`~agents.common.training`: mini-batches, progress bars, train mode;
* :mod:`~agents.common.reward_model`: the click model learned from the logs.
"""
