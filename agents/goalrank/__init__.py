"""GoalRank: a generator-only reranker trained on group-relative reference policies.

GoalRank (ICLR 2026) argues that one large generator beats any finite
generator-evaluator ensemble. It is trained without an evaluator at serving time:

1. a **reward model** values whole lists: the context-aware click model learned
   from the logged slates (``reward_model="learned"``, the paper's setting;
   :mod:`agents.common.reward_model`) or the task's training simulator itself
   (``reward_model="simulator"``);
2. for each training request a **group** of ``group_size`` lists comes from the
   current policy (``policy_share`` of the group, sampled) *and* from auxiliary
   policies (each one's greedy list and Plackett-Luce perturbations of it; by
   default InitialOrder and PointwiseGreedy), scored in one batched call: the
   paper found groups sampled from the policy alone not diverse enough;
3. the **reference policy** of the group is ``pi_ref(l | B) = softmax_B(z(l) / tau)``
   with ``z`` the rewards standardised within the group, and the loss is
   ``-sum_{l in B} pi_ref(l | B) log pi_theta(l | u)``, ``log pi_theta`` the sum of
   the generator's step log-probabilities (teacher-forced).

The generator is the shared :class:`~agents.common.pointer.PointerPolicy`; ``size`` picks a
width/depth preset from about 0.1M to about 10M parameters (:data:`SIZE_PRESETS`).
Serving is one greedy pass.

The package: :mod:`~agents.goalrank.config` (:class:`GoalRankConfig`, presets,
:data:`SIZE_PRESETS`), :mod:`~agents.goalrank.agent` (:class:`GoalRank`: the
training loop, top to bottom) and :mod:`~agents.goalrank.diagnostics`
(:func:`group_agreement`). The reference policy and loss are the shared ones of
:mod:`agents.common.losses`.
"""

from agents.goalrank.agent import GoalRank
from agents.goalrank.config import SIZE_PRESETS, GoalRankConfig, RewardModelKind
from agents.goalrank.diagnostics import group_agreement

__all__ = ["SIZE_PRESETS", "GoalRank", "GoalRankConfig", "RewardModelKind", "group_agreement"]
