"""``rerank-env compare``: train and evaluate a set of agents on one environment.

Also ``python -m agents.compare``. For every seed, every agent is built
(:func:`~agents.registry.make_agent`), trained on the training requests of the
environment's task and evaluated on its held-out test requests
(:mod:`agents.evaluation`). Agents without randomness (initial order, beam search,
oracle) are evaluated once and count for every seed. The run folder
``<out>/<name>/`` receives:

* ``results.md`` / ``results.csv``: mean over seeds with 95% intervals, a two-way
  bootstrap over seeds and requests (:mod:`agents.intervals`), and the
  environment's headroom (beam search vs pointwise greedy); ``results.md`` also has
  the paired table: every agent's difference from a reference agent
  (``--reference``) on the same requests, its interval, its minimum detectable
  difference and the probability of improvement; ``results.json`` holds both tables;
* ``per_seed.csv``, ``curves.csv`` (every trainer's training log: losses, entropy,
  gradient norm, reward, simulator calls, and the learning-curve points),
  ``position_clicks.csv``;
* ``learning_curves.png``, ``pareto.png`` (held-out reward vs latency),
  ``credit_profile.png`` (held-out click probability per slot);
* ``config.json`` (the command, versions, task, data checksum);
* ``logs/<agent>/seed<k>/``: each run's ``curves.csv`` and, when the ``tensorboard``
  package is installed, its TensorBoard events (``tensorboard --logdir runs/<name>/logs``).
* ``runs/<agent>/seed<k>.json`` (``seed-all.json`` for an agent without randomness)
  and its per-request values ``seed<k>.npz``, written as each run ends, and
  ``spec.json`` (the settings they were measured under):
  ``--resume`` reads them back, so an interrupted comparison continues where it
  stopped, and agents can be run in parts (``--agents a,b`` then ``--agents a,b,c,d
  --resume``) and tabulated together. It refuses a folder made with other settings.

Agents are registered names, ``beam-<B>``, entry points ``"module:Class"`` of your
own :class:`~agents.base.Agent` subclasses, or (in Python) agent instances.

The package: :mod:`~agents.compare.runs` (the runs, stored and resumed),
:mod:`~agents.compare.report` (tables and figures), :mod:`~agents.compare.presets`
(the agent sets) and :mod:`~agents.compare.cli` (the command line).
"""

from agents.compare.presets import FULL_AGENTS, PRESET_ENVS, PRESETS, QUICK_AGENTS
from agents.compare.report import learning_curves, plot_results, results_text
from agents.compare.runs import run_compare

__all__ = [
    "FULL_AGENTS",
    "PRESETS",
    "PRESET_ENVS",
    "QUICK_AGENTS",
    "learning_curves",
    "plot_results",
    "results_text",
    "run_compare",
]
