"""GoalRank: a generator-only reranker trained on group-relative reference policies.

GoalRank (ICLR 2026) argues that one large generator beats any finite
generator-evaluator ensemble. It is trained without an evaluator at serving time:

1. a **reward model** values whole lists: the context-aware click model learned
   from the logged slates (``reward_model="learned"``, the paper's setting;
   :mod:`agents.reward_model`) or the task's training simulator itself
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

The generator is the shared :class:`~agents.nn.PointerPolicy`; ``size`` picks a
width/depth preset from about 0.1M to about 10M parameters (:data:`SIZE_PRESETS`).
Serving is one greedy pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from agents.base import Agent, TrainableAgent, can_sample
from agents.nn import (
    PointerPolicy,
    greedy_lists,
    input_dims,
    request_inputs,
    sampled_lists,
    torch_generator,
)
from agents.reward_model import build_reward_model, fit_reward_model, reward_model_spec
from agents.training import progress_bar, training_mode
from rerank_env.task import RerankTask
from simulators.base import isolated_torch_rng

RewardModelKind = Literal["learned", "simulator"]

#: Generator presets: ``(dim, encoder_layers, decoder_layers, heads)``, named by their
#: approximate parameter count on ML-100K features.
SIZE_PRESETS: dict[str, tuple[int, int, int, int]] = {
    "0.1M": (64, 2, 1, 4),
    "0.6M": (128, 2, 2, 4),
    "2M": (192, 3, 3, 4),
    "10M": (384, 4, 4, 8),
}


def reference_policy(rewards: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``pi_ref(l | B)``: softmax over each group of its standardised rewards, ``[B, G]``.

    Args:
        rewards: Reward of each list of each group ``[B, G]``.
        temperature: tau; lower puts more mass on the group's best lists.

    A group whose rewards are all equal gets the uniform distribution.
    """
    spread = rewards.std(dim=1, keepdim=True, unbiased=False)
    standardised = (rewards - rewards.mean(dim=1, keepdim=True)) / spread.clamp(min=1e-8)
    return torch.softmax(standardised / temperature, dim=1)


def group_loss(list_log_probs: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``-sum_l pi_ref(l) log pi_theta(l)`` averaged over groups.

    Args:
        list_log_probs: ``log pi_theta(l | u)`` of each list ``[B, G]``.
        reference: ``pi_ref`` ``[B, G]`` (no gradient flows into it).
    """
    return -(reference.detach() * list_log_probs).sum(dim=1).mean()


def group_agreement(
    model_rewards: torch.Tensor, reference_rewards: torch.Tensor
) -> dict[str, float]:
    """How well a reward model orders the lists of each group, judged by reference rewards.

    GoalRank only learns what the reward model's *within-group* ordering says, so this
    is the diagnostic that matters for it (not the model's NLL on the logs).

    Args:
        model_rewards: The reward model's value of each list ``[B, G]``.
        reference_rewards: The reference's (e.g. a simulator's) value of the same
            lists ``[B, G]``.

    Returns:
        ``spearman``: mean within-group rank correlation (groups where either side
        is constant are left out); ``pick_gain``: mean reference reward of the
        model's favourite list minus the group mean; ``best_gain``: the same for the
        reference's own favourite (the most ``pick_gain`` can be);
        ``model_spread`` and ``reference_spread``: mean within-group standard
        deviations.
    """
    if model_rewards.shape != reference_rewards.shape or model_rewards.dim() != 2:
        raise ValueError(
            f"expected two [B, G] tensors of one shape, got {tuple(model_rewards.shape)} "
            f"and {tuple(reference_rewards.shape)}"
        )
    model = model_rewards.double().cpu()
    reference = reference_rewards.double().cpu()

    def centred_ranks(values: torch.Tensor) -> torch.Tensor:
        ranks = values.argsort(dim=1, stable=True).argsort(dim=1).double()
        return ranks - ranks.mean(dim=1, keepdim=True)

    varied = (model.std(dim=1) > 0) & (reference.std(dim=1) > 0)
    a, b = centred_ranks(model[varied]), centred_ranks(reference[varied])
    correlation = (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1))
    mean = reference.mean(dim=1)
    picked = reference.gather(1, model.argmax(dim=1, keepdim=True)).squeeze(1)
    return {
        "spearman": correlation.mean().item() if len(correlation) else float("nan"),
        "pick_gain": (picked - mean).mean().item(),
        "best_gain": (reference.max(dim=1).values - mean).mean().item(),
        "model_spread": model.std(dim=1, unbiased=False).mean().item(),
        "reference_spread": reference.std(dim=1, unbiased=False).mean().item(),
    }


class GoalRank(TrainableAgent):
    """Generator trained on group-relative reference policies of a reward model.

    Args:
        reward_model: ``"learned"`` (click model fitted on the logs) or
            ``"simulator"`` (the task's training simulator).
        reward_model_epochs: Maximum epochs of the learned reward model.
        group_size: G, lists per request per step.
        policy_share: Share of each group sampled from the current policy (at least
            one list); the rest comes from the auxiliary policies.
        auxiliary: Auxiliary policies (agents that can ``sample``, or their specs);
            untrained ones are trained by :meth:`fit`. Default: InitialOrder and
            PointwiseGreedy.
        auxiliary_temperature: Plackett-Luce temperature of their perturbations.
        temperature: tau of the reference policy. The default 0.1 was chosen on
            validation requests of ``SlateRerank-v0`` (docs/benchmarks.md): 1.0 spreads
            the reference over the whole group and learns markedly less.
        size: Generator preset (:data:`SIZE_PRESETS`).
        iterations: Training steps.
        batch_size: Requests per step.
        learning_rate: Adam step size.
        eval_every: Learning-curve point every this many steps.
        eval_requests: Validation requests of the learning curve.
        seed: Initialisation, sampling and request-order seed.
    """

    curve = ("reward_calls", "valid_reward")

    def __init__(
        self,
        reward_model: RewardModelKind = "learned",
        reward_model_epochs: int = 20,
        group_size: int = 16,
        policy_share: float = 0.5,
        auxiliary: Sequence[Agent | dict[str, Any]] | None = None,
        auxiliary_temperature: float = 1.0,
        temperature: float = 0.1,
        size: str = "0.1M",
        iterations: int = 300,
        batch_size: int = 64,
        learning_rate: float = 1e-3,
        eval_every: int = 25,
        eval_requests: int = 256,
        seed: int = 0,
    ) -> None:
        from agents.registry import agent_from_spec

        super().__init__()
        if reward_model not in ("learned", "simulator"):
            raise ValueError(f"reward_model must be 'learned' or 'simulator', got {reward_model!r}")
        if group_size < 2:
            raise ValueError(
                f"group_size must be >= 2 (a reference policy needs a group), got {group_size}"
            )
        if not 0 < policy_share <= 1:
            raise ValueError(f"policy_share must be in (0, 1], got {policy_share}")
        if size not in SIZE_PRESETS:
            raise ValueError(f"unknown size {size!r}; presets: {sorted(SIZE_PRESETS)}")
        if temperature <= 0 or auxiliary_temperature <= 0:
            raise ValueError(
                f"temperatures must be > 0, got temperature={temperature}, "
                f"auxiliary_temperature={auxiliary_temperature}"
            )
        if auxiliary is None:
            from agents.baselines import InitialOrder, PointwiseGreedy

            auxiliary = [InitialOrder(), PointwiseGreedy(seed=seed)]
        self.auxiliary = [agent_from_spec(a) if isinstance(a, dict) else a for a in auxiliary]
        for agent in self.auxiliary:
            if not can_sample(agent):
                raise TypeError(
                    f"auxiliary policy {agent.name!r} cannot sample lists (no sample(...) "
                    "method); use a ScoringAgent (InitialOrder, PointwiseGreedy, PRM) or a "
                    "pointer-network agent"
                )
        self.policy_lists = max(1, round(group_size * policy_share))
        if self.policy_lists < group_size and not self.auxiliary:
            raise ValueError("policy_share < 1 needs at least one auxiliary policy")
        self.reward_model, self.reward_model_epochs = reward_model, reward_model_epochs
        self.group_size, self.policy_share = group_size, policy_share
        self.auxiliary_temperature, self.temperature, self.size = (
            auxiliary_temperature, temperature, size,
        )  # fmt: skip
        self.iterations, self.batch_size, self.learning_rate = iterations, batch_size, learning_rate
        self.eval_every, self.eval_requests, self.seed = eval_every, eval_requests, seed
        self.name = "goalrank" + ("-sim" if reward_model == "simulator" else "")
        if size != "0.1M":
            self.name += f"-{size}"
        self.reward_calls = 0

    def config(self) -> dict[str, Any]:
        """Constructor arguments; auxiliary policies as specs."""
        from agents.registry import agent_spec

        keys = (
            "reward_model", "reward_model_epochs", "group_size", "policy_share",
            "auxiliary_temperature", "temperature", "size", "iterations", "batch_size",
            "learning_rate", "eval_every", "eval_requests", "seed",
        )  # fmt: skip
        return {
            **{key: getattr(self, key) for key in keys},
            "auxiliary": [agent_spec(a) for a in self.auxiliary],
        }

    def _build_info(self, task: RerankTask) -> dict[str, Any]:
        user_dim, item_dim = input_dims(task)
        info: dict[str, Any] = {
            "user_dim": user_dim, "item_dim": item_dim, "max_length": task.slate_length,
        }  # fmt: skip
        if self.reward_model == "learned":
            info["reward_model_spec"] = reward_model_spec(task, self.seed)
        return info

    def _build(self, task: RerankTask | None = None) -> None:
        info = self.build_info
        dim, encoder_layers, decoder_layers, heads = SIZE_PRESETS[self.size]
        with isolated_torch_rng(self.seed):
            policy = PointerPolicy(
                info["user_dim"],
                info["item_dim"],
                dim=dim,
                encoder_layers=encoder_layers,
                decoder_layers=decoder_layers,
                heads=heads,
                max_length=info["max_length"],
            )
        self.modules = {"policy": policy}
        if self.reward_model == "learned":
            self.modules["reward_model"] = build_reward_model(
                info["reward_model_spec"], task, self.seed
            )

    def parameter_count(self) -> int:
        """Parameters of the generator (the model that serves)."""
        self._require_built()
        return sum(p.numel() for p in self.modules["policy"].parameters())

    # ------------------------------------------------------------------ training

    def fit(self, task: RerankTask, *, progress: bool = False) -> GoalRank:
        """Fit the reward model and auxiliary policies, then the generator."""
        for agent in self.auxiliary:
            if isinstance(agent, TrainableAgent) and not agent.fitted:
                agent.fit(task, progress=progress)
        self.setup(task)
        self.reward_calls = 0
        if self.reward_model == "learned":
            valid_nll = fit_reward_model(
                self.modules["reward_model"], task, epochs=self.reward_model_epochs,
                seed=self.seed, progress=progress,
            )  # fmt: skip
            self.history += [
                {"reward_model_epoch": epoch + 1, "reward_model_valid_nll": nll}
                for epoch, nll in enumerate(valid_nll)
            ]
        policy = self.modules["policy"].to(task.device)
        request_rng = np.random.default_rng(self.seed)
        list_rng = torch_generator(self.seed, task.device)
        optimiser = torch.optim.Adam(policy.parameters(), lr=self.learning_rate)
        curve_requests = task.requests("valid")[: self.eval_requests]
        self.history.append(self._curve_point(task, curve_requests, 0))
        bar = progress_bar(self.iterations, "GoalRank", progress)
        for iteration in range(1, self.iterations + 1):
            rows = task.sample_requests("train", self.batch_size, request_rng)
            group = self.group(task, rows, list_rng, iteration)
            rewards = self.rewards(task, rows, group)
            reference = reference_policy(rewards, self.temperature)
            with training_mode(policy):
                log_probs = policy.step_log_probs(
                    request_inputs(task, rows),
                    torch.as_tensor(group, device=task.device).reshape(-1, task.slate_length),
                    repeats=self.group_size,
                )
                loss = group_loss(log_probs.sum(dim=1).reshape(len(rows), -1), reference)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            bar.update()
            bar.set_postfix(group_reward=f"{rewards.mean().item():.3f}")
            if iteration % self.eval_every == 0 or iteration == self.iterations:
                point = self._curve_point(task, curve_requests, iteration)
                point["group_reward"] = rewards.mean().item()
                self.history.append(point)
        bar.close()
        for module in self.modules.values():
            module.eval()
        self.fitted = True
        return self

    @torch.no_grad()
    def group(
        self,
        task: RerankTask,
        requests: np.ndarray,
        generator: torch.Generator,
        iteration: int = 0,
    ) -> np.ndarray:
        """Each request's group: policy samples, then auxiliary lists, ``[B, G, L]``.

        Each auxiliary policy contributes its greedy list and Plackett-Luce samples
        (``iteration`` varies their seed); the auxiliary lists are shared out as
        evenly as possible.
        """
        policy = self.modules["policy"].to(task.device).eval()
        length = task.slate_length
        sampled, _ = policy.generate(
            request_inputs(task, requests), length, greedy=False, generator=generator,
            repeats=self.policy_lists,
        )  # fmt: skip
        parts = [sampled.cpu().numpy().reshape(len(requests), self.policy_lists, length)]
        remaining = self.group_size - self.policy_lists
        shares = np.diff(np.linspace(0, remaining, len(self.auxiliary) + 1).round().astype(int))
        for index, (agent, count) in enumerate(zip(self.auxiliary, shares, strict=True)):
            if count == 0:
                continue
            parts.append(agent.rank(task, requests)[:, None])
            if count > 1:
                seed = (self.seed * 1_000_003 + iteration) * 97 + index
                parts.append(
                    agent.sample(
                        task,
                        requests,
                        int(count) - 1,
                        seed,
                        temperature=self.auxiliary_temperature,
                    )  # fmt: skip
                )
        return np.concatenate(parts, axis=1)

    @torch.no_grad()
    def rewards(self, task: RerankTask, requests: np.ndarray, lists: np.ndarray) -> torch.Tensor:
        """The reward model's value of each list ``[B, G, L]``, in one call, ``[B, G]``."""
        batch, count, length = lists.shape
        flat_requests = np.repeat(np.asarray(requests), count)
        flat_lists = lists.reshape(batch * count, length)
        self.reward_calls += len(flat_lists)
        if self.reward_model == "simulator":
            values = task.expected_reward(flat_requests, flat_lists, "train")
        else:
            model = self.modules["reward_model"].to(task.device).eval()
            values = model.expected_reward(task.slate_batch(flat_requests, flat_lists))
        return values.reshape(batch, count)

    def _curve_point(self, task: RerankTask, requests: np.ndarray, iteration: int) -> dict:
        lists = self.rank(task, requests)
        return {
            "iteration": iteration,
            "reward_calls": self.reward_calls,
            "valid_reward": task.expected_reward(requests, lists, "train").mean().item(),
        }

    # ------------------------------------------------------------------ serving

    def rank(
        self, task: RerankTask, requests: np.ndarray, prefixes: np.ndarray | None = None
    ) -> np.ndarray:
        """Greedy decoding in one batched pass, completing any prefix."""
        self._require_built()
        return greedy_lists(self.modules["policy"], task, requests, prefixes)

    def sample(
        self,
        task: RerankTask,
        requests: np.ndarray,
        count: int,
        seed: int,
        prefixes: np.ndarray | None = None,
        temperature: float = 1.0,
    ) -> np.ndarray:
        """``count`` lists per request sampled from the generator, ``[B, count, L]``."""
        self._require_built()
        return sampled_lists(
            self.modules["policy"], task, requests, count, seed, prefixes, temperature
        )
