"""GloRank: reranking in a global action space of semantic-ID tokens, SFT then PPO.

GloRank (arXiv 2604.25291) argues that a local-index output ("the j-th candidate")
gives one output neuron a different item in every request, adding a
mapping-induced variance to its gradient, and generates *global* item identifiers
instead: each item's semantic ID (``task.tokenizer``, see
:mod:`simulators.data.semantic_ids`), decoded under a prefix trie of the request's
candidates so every list is valid.

1. **Generator** (:mod:`~agents.glorank.model`): the shared candidate-set encoder
   (each candidate's features, initial score, the user, and its semantic ID's
   embedding) and a causal decoder whose output layer is the global token
   vocabulary; trie-constrained greedy, sampled and beam decoding, batched over
   requests. ``head="local"`` swaps the output for a pointer over candidate
   positions (``glorank-local``, the paper's ablation: same backbone, budget, stages).
2. **Stage 1, SFT**: token-level cross-entropy on demonstration lists, from beam
   search over the training simulator (``sft_source="beam"``) or the logged
   positives (``"logged"``).
3. **Stage 2, PPO** on the list reward of the training simulator: the clipped
   surrogate on token log-probabilities under the trie mask, a value head with GAE
   (or group-mean / GRPO group advantages), optional KL to the stage-1 policy,
   DAPO's clip-higher and token-level averaging as options; all through
   :mod:`agents.common.losses`.

The package: :mod:`~agents.glorank.config` (:class:`GloRankConfig`),
:mod:`~agents.glorank.model` (:class:`GloRankPolicy`), :mod:`~agents.glorank.agent`
(:class:`GloRank`: the training loop, top to bottom) and
:mod:`~agents.glorank.diagnostics` (:func:`output_gradient_variance`).
"""

from agents.glorank.agent import GloRank
from agents.glorank.config import GloRankConfig
from agents.glorank.diagnostics import output_gradient_variance
from agents.glorank.model import GloRankPolicy

__all__ = ["GloRank", "GloRankConfig", "GloRankPolicy", "output_gradient_variance"]
