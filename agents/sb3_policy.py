"""An SB3 actor-critic policy shaped like ``SlateRerank-v0``'s action space.

SB3's default ``MultiInputPolicy`` flattens the observation (``N x (Di + d)``
candidate features, the slate, the mask) into one vector for an MLP whose output
row ``j`` means "the candidate in position ``j``", a different item in every
request. It learns slowly (docs/benchmarks.md). :class:`SlatePolicy` gives each
candidate its logit from the suite's shared pointer network instead:

* :class:`SlateFeaturesExtractor` encodes the request's candidates with the
  :class:`~agents.common.nn.CandidateSetEncoder` every reranker here uses (a
  Transformer over the set, personalised by the user), reads the slate so far
  with the causal :class:`~agents.common.pointer.PointerDecoder`, and returns, for the
  current slot, one pointer logit per candidate (placed ones masked) and a state
  for the critic (the decoder's state and the mean candidate encoding);
* :class:`SlateHeads` (SB3's ``mlp_extractor``) passes the logits to the
  categorical distribution unchanged and runs the critic's MLP on the state.

One set of weights scores every candidate, whatever its position, so the policy is
permutation-equivariant in the candidates (up to the optional initial-rank
embedding) and its size does not grow with ``N``.

Use it as ``MaskablePPO(SlatePolicy, env)`` (sb3-contrib), or by name from the
suite: ``SB3Agent("MaskablePPO", policy="SlatePolicy")``, which is what
``maskable-ppo`` in ``rerank-env compare`` runs. It needs the dense observation
(``features="dense"``, the default).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, create_mlp
from torch import nn

from agents.common.nn import CandidateSetEncoder, RequestInputs, standardised_scores
from agents.common.pointer import PointerDecoder

#: Logit of a placed candidate: finite (SB3's categorical computes ``p log p``),
#: far below any pointer logit (those lie in ``[-10, 10]``).
PLACED_LOGIT = -1e8

#: The observation keys the policy reads (``SlateRerank-v0``'s dense observation).
OBSERVATION_KEYS = ("user", "candidates", "initial_scores", "slate", "step")


def _check_observation_space(observation_space: gym.Space) -> None:
    if not isinstance(observation_space, spaces.Dict):
        raise ValueError(
            f"SlatePolicy reads SlateRerank-v0's Dict observation; got {observation_space}"
        )
    missing = [key for key in OBSERVATION_KEYS if key not in observation_space.spaces]
    if missing:
        raise ValueError(
            f"SlatePolicy needs the observation keys {list(OBSERVATION_KEYS)}; missing "
            f"{missing} (it is made for SlateRerank-v0, one slot per step)"
        )
    candidates = observation_space["candidates"]
    if not np.issubdtype(candidates.dtype, np.floating) or len(candidates.shape) != 2:
        raise ValueError(
            "SlatePolicy needs candidate feature vectors, float [N, D]; got "
            f"{candidates}. Make the environment with features='dense' (the default), "
            "not features='indices'"
        )


def _scale_to_unit(box: spaces.Box) -> tuple[torch.Tensor, torch.Tensor]:
    """``(offset, scale)`` mapping the box's bounds onto ``[-1, 1]``."""
    low = torch.as_tensor(box.low, dtype=torch.float32)
    high = torch.as_tensor(box.high, dtype=torch.float32)
    if not (torch.isfinite(low).all() and torch.isfinite(high).all()):
        raise ValueError(
            f"SlatePolicy scales features by their observation-space bounds, which must "
            f"be finite; got {box}"
        )
    return (high + low) / 2, ((high - low) / 2).clamp(min=1e-6)


class SlateFeaturesExtractor(BaseFeaturesExtractor):
    """Pointer logits and a critic state for the current slot.

    Features are ``[B, N + 2d]``: the ``N`` pointer logits of the next slot
    (``PLACED_LOGIT`` for placed candidates), the decoder's state at that slot and
    the mean candidate encoding. User and candidate features are scaled by their
    observation-space bounds onto ``[-1, 1]``; initial scores are standardised
    within each request (:func:`~agents.common.nn.standardised_scores`, as every
    reranker of the suite reads them).

    Args:
        observation_space: ``SlateRerank-v0``'s dense ``Dict`` observation space.
        dim: Width of the encoder and decoder (the defaults, small, learned fastest
            within a few thousand PPO steps: docs/benchmarks.md).
        encoder_layers: Transformer layers over the candidates.
        decoder_layers: Causal layers over the slate so far.
        heads: Attention heads.
        initial_order: Whether candidates see their rank in the initial list.
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        *,
        dim: int = 32,
        encoder_layers: int = 1,
        decoder_layers: int = 1,
        heads: int = 4,
        initial_order: bool = True,
    ) -> None:
        _check_observation_space(observation_space)
        n, item_dim = observation_space["candidates"].shape
        length = observation_space["slate"].shape[0]
        super().__init__(observation_space, features_dim=n + 2 * dim)
        self.num_candidates, self.dim = n, dim
        user_offset, user_scale = _scale_to_unit(observation_space["user"])
        # Every candidate row has the same bounds (the item table's).
        item_offset, item_scale = _scale_to_unit(observation_space["candidates"])
        for name, value in {
            "user_offset": user_offset,
            "user_scale": user_scale,
            "item_offset": item_offset[0],
            "item_scale": item_scale[0],
        }.items():
            self.register_buffer(name, value)
        self.encoder = CandidateSetEncoder(
            observation_space["user"].shape[0],
            item_dim,
            dim=dim,
            layers=encoder_layers,
            heads=heads,
            initial_order=initial_order,
            max_candidates=n,
        )
        self.decoder = PointerDecoder(dim, layers=decoder_layers, heads=heads, max_length=length)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[B, N + 2d]`` features of a batch of (SB3-preprocessed) observations."""
        inputs = RequestInputs(
            (observations["user"] - self.user_offset) / self.user_scale,
            (observations["candidates"] - self.item_offset) / self.item_scale,
            standardised_scores(observations["initial_scores"]),
        )
        encoded, user = self.encoder(inputs)
        # SB3 one-hot encodes the Discrete "step" ([B, L + 1], or [B, 1, L + 1] from
        # its rollout buffer); the last slot's index caps it (a finished episode's
        # observation is never acted on).
        slate = observations["slate"].long()
        step = observations["step"].reshape(len(slate), -1).argmax(dim=1)
        step = step.clamp(max=slate.shape[1] - 1)
        upto = int(step.max()) + 1  # decode only as far as the furthest row
        states, logits = self.decoder.states_and_logits(encoded, user, slate[:, :upto].clamp(min=0))
        rows = torch.arange(len(step), device=step.device)
        slot_logits = logits[rows, step].clamp(min=PLACED_LOGIT)
        return torch.cat([slot_logits, states[rows, step], encoded.mean(dim=1)], dim=1)


class SlateHeads(nn.Module):
    """SB3's ``mlp_extractor`` for :class:`SlatePolicy`.

    The actor's latent is the pointer logits themselves (``latent_dim_pi = N``; the
    policy's ``action_net`` is the identity); the critic's is an MLP over the state.

    Args:
        num_candidates: N.
        state_dim: Size of the critic's state (``2d``).
        value_hidden: Hidden sizes of the critic's MLP.
    """

    def __init__(self, num_candidates: int, state_dim: int, value_hidden: list[int]) -> None:
        super().__init__()
        self.num_candidates = num_candidates
        # SB3's own MLP builder (Linear + Tanh per hidden size, no output layer), as
        # its MlpExtractor makes the critic of its default policies.
        self.value_mlp = nn.Sequential(*create_mlp(state_dim, -1, value_hidden, nn.Tanh))
        self.latent_dim_pi = num_candidates
        self.latent_dim_vf = value_hidden[-1] if value_hidden else state_dim

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        """The pointer logits, ``[B, N]``."""
        return features[:, : self.num_candidates]

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        """The critic's latent, ``[B, latent_dim_vf]``."""
        return self.value_mlp(features[:, self.num_candidates :])

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(actor latent, critic latent)``."""
        return self.forward_actor(features), self.forward_critic(features)


class SlatePolicy(MaskableActorCriticPolicy):
    """Maskable actor-critic policy with a pointer over the candidates.

    Takes :class:`MaskableActorCriticPolicy`'s arguments; ``features_extractor_kwargs``
    go to :class:`SlateFeaturesExtractor` (``dim``, ``encoder_layers``,
    ``decoder_layers``, ``heads``, ``initial_order``), ``net_arch`` is the list of
    the critic's hidden sizes (default ``[64]``). Orthogonal initialisation is off by
    default: the Transformer keeps PyTorch's initialisation, as in every other
    reranker of the suite.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Any,
        net_arch: list[int] | None = None,
        ortho_init: bool = False,
        features_extractor_class: type[BaseFeaturesExtractor] = SlateFeaturesExtractor,
        **kwargs: Any,
    ) -> None:
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(
                f"SlatePolicy points at one candidate per step (Discrete(N)); got {action_space}"
            )
        if net_arch is not None and not (
            isinstance(net_arch, list) and all(isinstance(size, int) for size in net_arch)
        ):
            raise ValueError(
                f"SlatePolicy's net_arch is the critic's hidden sizes, a list of ints "
                f"(e.g. [64]); got {net_arch!r}"
            )
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=[64] if net_arch is None else net_arch,
            ortho_init=ortho_init,
            features_extractor_class=features_extractor_class,
            **kwargs,
        )

    def _build_mlp_extractor(self) -> None:
        extractor = self.features_extractor
        self.mlp_extractor = SlateHeads(
            extractor.num_candidates, 2 * extractor.dim, list(self.net_arch)
        )

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        # The logits are the actor's output: no linear layer on top of them. (The
        # parent built one; drop it and rebuild the optimizer over what remains.)
        self.action_net = nn.Identity()
        self.optimizer = self.optimizer_class(
            self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )


#: The suite's SB3 policies by name (``SB3AgentConfig.policy``).
POLICIES: dict[str, type[MaskableActorCriticPolicy]] = {"SlatePolicy": SlatePolicy}
