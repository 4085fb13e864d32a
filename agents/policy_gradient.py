"""Policy-gradient estimators for one pointer policy: the credit-assignment study's agent.

One :class:`~agents.common.pointer.PointerPolicy`, trained on the task's *training*
simulator for a fixed number of simulator calls (lists scored), by one of:

* ``estimator="reinforce"``: REINFORCE. ``credit="sparse"`` credits every slot
  with the list reward, ``credit="dense"`` credits slot ``t`` with its
  reward-to-go (the rewards of ``SlateRerankDense-v0`` from ``t`` on).
  ``baseline`` is the mean of the request's ``group_size`` lists (``"mean"``, what
  Seq2Slate uses), the mean of the *other* lists (``"leave-one-out"``: RLOO,
  unbiased), or none (``"none"``: the plain estimator, as a reference).
* ``estimator="ppo"``: PPO with GAE(1, ``gae_lambda``) advantages from a learned
  critic (a value head on the decoder state of each step), clipped surrogate,
  ``ppo_epochs`` passes over each batch (:func:`~agents.common.ppo.ppo_update`).
  ``credit="dense"`` pays ``r_t`` at each
  step, ``credit="sparse"`` pays the list reward at the last step only (the
  critic must then learn what the prefix is worth).

``clicks="expected"`` rewards slot ``t`` with its click probability ``p_t``;
``clicks="sampled"`` with a click drawn with probability ``p_t`` (the env's
``click_mode="sampled"``), which is what a logged-feedback learner would see.

Every estimator spends the same budget: ``simulator_calls`` lists scored, one call
per list (a top-down simulator values every prefix of a list in one pass).
:meth:`PolicyGradient.slot_gradients` measures each estimator's gradient per slot
across independent batches (its variance and signal-to-noise ratio), the
quantity ``benchmarks/bench_credit.py`` relates to the reward gap.

The pieces are the suite's shared ones (:mod:`agents.common.losses`,
:mod:`agents.common.nn`, :mod:`agents.common.telemetry`); the loop below reads top
to bottom.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from agents.common.config import AgentConfig
from agents.common.distributed import DataParallel
from agents.common.losses import (
    Credit,
    generalized_advantages,
    group_baseline,
    reinforce_loss,
    slot_returns,
)
from agents.common.nn import RequestInputs, masked_entropy, request_inputs
from agents.common.pointer_agent import PointerAgent
from agents.common.ppo import PolicyEvaluation, ppo_update
from agents.common.sampling import torch_generator
from agents.common.scorers import SimulatorScorer
from agents.common.telemetry import TrainingLogger
from agents.common.training import gradient_step, training_mode
from rerank_env.task import RerankTask
from simulators.base import isolated_torch_rng
from simulators.data.errors import ConfigError
from simulators.progress import progress_bar

__all__ = ["PolicyGradient", "PolicyGradientConfig", "Rollout"]

Estimator = Literal["reinforce", "ppo"]
Clicks = Literal["expected", "sampled"]


@dataclasses.dataclass(frozen=True)
class PolicyGradientConfig(AgentConfig):
    """Settings of :class:`PolicyGradient`.

    Attributes:
        estimator: ``"reinforce"`` or ``"ppo"`` (GAE with a learned critic).
        credit: ``"sparse"`` (list reward) or ``"dense"`` (per-slot rewards).
        baseline: REINFORCE's baseline: ``"mean"`` of the request's lists,
            ``"leave-one-out"`` (RLOO) or ``"none"``. PPO uses its critic instead
            (the field must stay ``"mean"``, its default).
        clicks: ``"expected"`` (click probabilities) or ``"sampled"`` (clicks).
        simulator_calls: Training budget: lists the training simulator scores.
        batch_size: Training requests per iteration.
        group_size: Lists sampled per request per iteration (the group of the baseline).
        learning_rate: Adam step size.
        entropy_coef: Weight of an entropy bonus.
        ppo_epochs: PPO: passes over each iteration's lists.
        minibatch_size: PPO: lists per gradient step, a multiple of ``group_size``
            (minibatches hold whole requests).
        clip_low: PPO: clip range of the probability ratio below 1.
        clip_high: PPO: above 1 (``None``: ``clip_low``).
        gae_lambda: PPO: GAE's lambda (1: Monte-Carlo returns minus the critic).
        value_coef: PPO: weight of the critic's squared error.
        dim: Width of the pointer policy.
        encoder_layers: Candidate-set encoder layers.
        decoder_layers: Pointer decoder layers.
        heads: Attention heads.
        curve_points: Learning-curve points (greedy reward on validation requests).
        eval_requests: Validation requests per curve point.
        seed: Initialisation, request, list and click sampling seed.
    """

    estimator: Estimator = "reinforce"
    credit: Credit = "sparse"
    baseline: Literal["mean", "leave-one-out", "none"] = "mean"
    clicks: Clicks = "expected"
    simulator_calls: int = 150_000
    batch_size: int = 64
    group_size: int = 8
    learning_rate: float = 1e-3
    entropy_coef: float = 0.0
    ppo_epochs: int = 4
    minibatch_size: int = 128
    clip_low: float = 0.2
    clip_high: float | None = None
    gae_lambda: float = 0.95
    value_coef: float = 0.5
    dim: int = 64
    encoder_layers: int = 2
    decoder_layers: int = 1
    heads: int = 4
    curve_points: int = 10
    eval_requests: int = 256
    seed: int = 0

    QUICK: ClassVar[dict[str, Any]] = {"simulator_calls": 30_720}
    TINY: ClassVar[dict[str, Any]] = {
        "simulator_calls": 5_120,
        "batch_size": 32,
        "minibatch_size": 64,
        "curve_points": 2,
        "eval_requests": 128,
        "dim": 32,
        "encoder_layers": 1,
    }

    def validate(self) -> None:
        """Refuse out-of-range fields."""
        self._choice("estimator", ("reinforce", "ppo"))
        self._choice("credit", ("sparse", "dense"))
        self._choice("baseline", ("mean", "leave-one-out", "none"))
        self._choice("clicks", ("expected", "sampled"))
        if self.estimator == "ppo" and self.baseline != "mean":
            raise ConfigError(
                f"baseline={self.baseline!r} applies to estimator='reinforce'; PPO's baseline "
                "is its critic: leave baseline at its default"
            )
        grouped = self.baseline in ("mean", "leave-one-out") and self.estimator == "reinforce"
        if grouped and self.group_size < 2:
            raise ConfigError(
                f"baseline={self.baseline!r} needs group_size >= 2 lists per request, got "
                f"{self.group_size}; raise group_size or use baseline='none'"
            )
        self._at_least(
            1,
            "simulator_calls",
            "batch_size",
            "group_size",
            "ppo_epochs",
            "minibatch_size",
            "dim",
            "encoder_layers",
            "decoder_layers",
            "heads",
            "curve_points",
            "eval_requests",
        )
        if self.estimator == "ppo" and self.minibatch_size % self.group_size:
            raise ConfigError(
                f"minibatch_size={self.minibatch_size} is not a multiple of group_size="
                f"{self.group_size} (minibatches hold whole requests): use e.g. "
                f"{max(1, self.minibatch_size // self.group_size) * self.group_size}"
            )
        if not 0 <= self.gae_lambda <= 1:
            raise ConfigError(f"gae_lambda must be in [0, 1], got {self.gae_lambda}")
        for name in ("clip_low", "clip_high"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be > 0, got {value}")

    @property
    def label(self) -> str:
        """A short name: estimator, credit and clicks (``"rloo-dense-sampled"``)."""
        head = {"mean": "reinforce", "leave-one-out": "rloo", "none": "reinforce-nobase"}
        name = "ppo-gae" if self.estimator == "ppo" else head[self.baseline]
        return f"{name}-{self.credit}" + ("-sampled" if self.clicks == "sampled" else "")

    def iterations_for(self) -> int:
        """Iterations the budget buys: ``ceil(simulator_calls / (batch_size * group_size))``."""
        return max(1, math.ceil(self.simulator_calls / (self.batch_size * self.group_size)))


@dataclasses.dataclass
class Rollout:
    """One iteration's lists and their rewards (``M = B * group_size`` lists, request-major).

    Attributes:
        requests: Training request of each list ``[M]``.
        inputs: The ``B`` requests' encoder inputs.
        slots: The lists ``[M, L]``.
        rewards: Per-slot rewards ``r_t`` ``[M, L]`` (probabilities or clicks).
    """

    requests: np.ndarray
    inputs: RequestInputs
    slots: torch.Tensor
    rewards: torch.Tensor


class PolicyGradient(PointerAgent):
    """A pointer policy trained by one policy-gradient estimator (see the module docstring).

    Args:
        config: A :class:`PolicyGradientConfig` (default: its defaults).
        **overrides: Config fields to change, e.g. ``PolicyGradient(baseline="leave-one-out")``.

    Attributes:
        simulator_calls: Lists the training simulator scored in ``fit``.
    """

    config_class = PolicyGradientConfig
    curve = ("simulator_calls", "valid_reward")

    def __init__(self, config: PolicyGradientConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        self.settings: PolicyGradientConfig = self._settings_from(config, overrides)
        self.name = self.settings.label
        self.scorer = SimulatorScorer("train")

    @property
    def simulator_calls(self) -> int:
        """Lists the training simulator scored in ``fit``."""
        return self.scorer.calls

    def _build(self, task: RerankTask | None = None) -> None:
        cfg = self.settings
        with isolated_torch_rng(cfg.seed):
            policy = self._pointer_policy(
                dim=cfg.dim,
                encoder_layers=cfg.encoder_layers,
                decoder_layers=cfg.decoder_layers,
                heads=cfg.heads,
            )
            self.modules = {"policy": policy}
            if cfg.estimator == "ppo":
                # The critic reads the policy's decoder state of each step (shared trunk).
                self.modules["critic"] = nn.Sequential(
                    nn.Linear(cfg.dim, cfg.dim), nn.Tanh(), nn.Linear(cfg.dim, 1)
                )

    # ------------------------------------------------------------------ training

    def _setup(self, task: RerankTask, *, progress: bool = False) -> None:
        self.setup(task)
        self.scorer = SimulatorScorer("train")

    def _train(
        self, task: RerankTask, *, logger: TrainingLogger, parallel: DataParallel, progress: bool
    ) -> None:
        """Train on the training requests until ``simulator_calls`` lists are scored."""
        cfg = self.settings
        modules = [m.to(task.device) for m in self.modules.values()]
        parameters = [p for m in modules for p in m.parameters()]
        optimiser = torch.optim.Adam(parameters, lr=cfg.learning_rate)
        request_rng = np.random.default_rng(cfg.seed)
        list_rng = torch_generator(cfg.seed, task.device)
        click_rng = torch_generator(cfg.seed + 1, task.device)
        curve_requests = task.requests("valid")[: cfg.eval_requests]
        iterations = cfg.iterations_for()
        every = max(1, math.ceil(iterations / cfg.curve_points))
        logger.log(
            "curve", **self.curve_point(task, curve_requests, iteration=0, simulator_calls=0)
        )
        bar = progress_bar(iterations, self.name, progress)
        for iteration in range(1, iterations + 1):
            rollout = self.rollout(task, cfg.batch_size, request_rng, list_rng, click_rng)
            if cfg.estimator == "reinforce":
                with training_mode(*modules):
                    log_probs, entropy = self.modules["policy"].step_log_probs_and_entropy(
                        rollout.inputs, rollout.slots, repeats=cfg.group_size
                    )
                    loss = reinforce_loss(log_probs, self.reinforce_advantages(rollout.rewards))
                    loss = loss - cfg.entropy_coef * entropy.mean()
                    norm = gradient_step(optimiser, loss, parameters)
                stats = {"loss": loss.item(), "entropy": entropy.mean().item(), "grad_norm": norm}
            else:
                stats = self._ppo_update(rollout, optimiser, parameters, request_rng)
            list_reward = rollout.rewards.sum(dim=1).mean().item()
            logger.log("policy", **stats, reward=list_reward, simulator_calls=self.simulator_calls)
            bar.update()
            bar.set_postfix(reward=f"{list_reward:.3f}")
            if iteration % every == 0 or iteration == iterations:
                point = self.curve_point(
                    task, curve_requests, iteration=iteration, simulator_calls=self.simulator_calls
                )
                logger.log("curve", **point)
        bar.close()

    def rollout(
        self,
        task: RerankTask,
        batch_size: int,
        request_rng: np.random.Generator,
        list_rng: torch.Generator,
        click_rng: torch.Generator,
    ) -> Rollout:
        """Sample ``group_size`` lists for each of ``batch_size`` training requests; score them."""
        cfg = self.settings
        rows = task.sample_requests("train", batch_size, request_rng)
        inputs = request_inputs(task, rows)
        requests = np.repeat(rows, cfg.group_size)
        with torch.no_grad():
            slots, _ = self.modules["policy"].generate(
                inputs, task.slate_length, greedy=False, generator=list_rng, repeats=cfg.group_size
            )
            prefix = self.scorer.prefix_values(task, requests, slots)
            rewards = torch.diff(prefix, dim=1, prepend=torch.zeros_like(prefix[:, :1]))
            if cfg.clicks == "sampled":
                draws = torch.rand(rewards.shape, generator=click_rng, device=rewards.device)
                rewards = (draws < rewards).to(rewards.dtype)
        return Rollout(requests, inputs, slots, rewards)

    def reinforce_advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        """REINFORCE's per-slot advantages ``[M, L]``: credited returns minus the baseline."""
        cfg = self.settings
        returns = slot_returns(rewards.cumsum(dim=1), cfg.credit)
        if cfg.baseline == "none":
            return returns
        return group_baseline(returns, cfg.group_size, cfg.baseline)

    def step_rewards(self, rewards: torch.Tensor) -> torch.Tensor:
        """What PPO is paid at each step: ``r_t`` (dense), or the list reward at the end."""
        if self.settings.credit == "dense":
            return rewards
        paid = torch.zeros_like(rewards)
        paid[:, -1] = rewards.sum(dim=1)
        return paid

    def values_and_log_probs(
        self, inputs: RequestInputs, slots: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(critic values, step log-probabilities, step entropies)``, each ``[M, L]``."""
        states, logits = self.modules["policy"].step_states_and_logits(
            inputs, slots, repeats=self.settings.group_size
        )
        log_probs = torch.log_softmax(logits, dim=2)
        chosen = log_probs.gather(2, slots[..., None])[..., 0]
        entropy = masked_entropy(log_probs)
        return self.modules["critic"](states)[..., 0], chosen, entropy

    def ppo_advantages(
        self, rollout: Rollout, values: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """GAE advantages and critic targets of a rollout, ``[M, L]``.

        Args:
            rollout: The lists and their rewards.
            values: The critic's values of its steps, if already computed (default:
                one pass of the current critic).
        """
        if values is None:
            with torch.no_grad():
                values, _, _ = self.values_and_log_probs(rollout.inputs, rollout.slots)
        return generalized_advantages(
            self.step_rewards(rollout.rewards), values, gamma=1.0, lam=self.settings.gae_lambda
        )

    def _ppo_update(
        self,
        rollout: Rollout,
        optimiser: torch.optim.Optimizer,
        parameters: list[torch.nn.Parameter],
        rng: np.random.Generator,
    ) -> dict[str, float]:
        """``ppo_epochs`` passes of clipped-surrogate + value steps over one rollout."""
        cfg = self.settings
        with torch.no_grad():  # one pass gives the critic's values and the old log-probs
            values, old_log_probs, _ = self.values_and_log_probs(rollout.inputs, rollout.slots)
        advantage, targets = self.ppo_advantages(rollout, values)
        advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)

        def evaluate(batch: np.ndarray) -> PolicyEvaluation:
            # Whole groups: the policy encodes each request once for its lists.
            lists = torch.as_tensor(batch, device=rollout.slots.device)
            requests = lists.reshape(-1, cfg.group_size)[:, 0] // cfg.group_size
            values, log_probs, entropy = self.values_and_log_probs(
                rollout.inputs.select(requests), rollout.slots[lists]
            )
            return PolicyEvaluation(log_probs, entropy, values=values)

        stats = ppo_update(
            evaluate,
            old_log_probs,
            advantage,
            optimiser=optimiser,
            parameters=parameters,
            modules=list(self.modules.values()),
            rng=rng,
            epochs=cfg.ppo_epochs,
            minibatch_size=cfg.minibatch_size,
            group_size=cfg.group_size,
            clip_low=cfg.clip_low,
            clip_high=cfg.clip_high,
            entropy_coef=cfg.entropy_coef,
            returns=targets,
            value_coef=cfg.value_coef,
        )
        keys = ("loss", "value_loss", "entropy", "grad_norm", "clip_fraction", "approx_kl")
        return {key: stats[key] for key in keys}

    # ------------------------------------------------------------------ measurement

    def slot_gradients(
        self,
        task: RerankTask,
        *,
        resamples: int = 16,
        batch_size: int | None = None,
        seed: int = 0,
        critic_warmup: int = 0,
    ) -> dict[str, np.ndarray]:
        """This estimator's gradient, slot by slot, over ``resamples`` independent batches.

        For each batch (fresh training requests, fresh lists and clicks from the
        current policy) and each slot ``t``, the gradient of slot ``t``'s term of the
        surrogate, ``-mean_lists A_t log pi(a_t)``, with respect to every policy
        weight. PPO's ``A_t`` is its GAE advantage (not standardised, so every
        estimator's gradient is in clicks); ``critic_warmup`` critic-only steps on
        fresh rollouts first fit its critic to the current policy.

        Args:
            task: The task (its training simulator scores the lists).
            resamples: Independent batches (at least 2).
            batch_size: Requests per batch (default: the config's).
            seed: Seed of the batches (not the agent's: the measurement only reads it).
            critic_warmup: PPO only: critic steps before measuring.

        Returns:
            ``variance`` ``[L]``: the trace of the gradient's covariance across
            batches; ``signal`` ``[L]``: the squared norm of its mean; ``snr``
            ``[L]``: signal / variance; ``mean_norm`` ``[L]``: mean gradient norm;
            ``whole`` ``[3]``: variance, signal and SNR of the whole gradient (the
            sum of the slots' terms).
        """
        if resamples < 2:
            raise ValueError(f"resamples must be >= 2 (a variance needs two), got {resamples}")
        self._require_built()
        cfg = self.settings
        batch_size = batch_size or cfg.batch_size
        request_rng = np.random.default_rng(seed)
        list_rng = torch_generator(seed, task.device)
        click_rng = torch_generator(seed + 1, task.device)
        policy = self.modules["policy"].to(task.device)
        parameters = [p for p in policy.parameters() if p.requires_grad]
        calls_before = self.scorer.calls
        if cfg.estimator == "ppo" and critic_warmup:
            self._fit_critic(task, critic_warmup, batch_size, request_rng, list_rng, click_rng)
        length = task.slate_length
        gradients = np.zeros(
            (resamples, length, sum(p.numel() for p in parameters)), dtype=np.float32
        )
        for sample in range(resamples):
            rollout = self.rollout(task, batch_size, request_rng, list_rng, click_rng)
            if cfg.estimator == "reinforce":
                advantage = self.reinforce_advantages(rollout.rewards)
            else:
                advantage = self.ppo_advantages(rollout)[0]
            with training_mode(policy):
                log_probs = policy.step_log_probs(rollout.inputs, rollout.slots, cfg.group_size)
                for t in range(length):
                    term = -(advantage[:, t].detach() * log_probs[:, t]).mean()
                    grads = torch.autograd.grad(term, parameters, retain_graph=t < length - 1)
                    gradients[sample, t] = torch.cat([g.reshape(-1) for g in grads]).cpu().numpy()
        self.scorer.calls = calls_before  # a measurement, not training
        variance, signal = _variance_and_signal(gradients)
        whole_variance, whole_signal = _variance_and_signal(gradients.sum(axis=1, keepdims=True))
        return {
            "variance": variance,
            "signal": signal,
            "snr": signal / np.maximum(variance, 1e-30),
            "mean_norm": np.linalg.norm(gradients, axis=2).mean(axis=0),
            "whole": np.array(
                [
                    whole_variance[0],
                    whole_signal[0],
                    whole_signal[0] / max(whole_variance[0], 1e-30),
                ]
            ),
        }

    def _fit_critic(
        self,
        task: RerankTask,
        steps: int,
        batch_size: int,
        request_rng: np.random.Generator,
        list_rng: torch.Generator,
        click_rng: torch.Generator,
    ) -> None:
        """Critic-only regression on fresh rollouts of the current (frozen) policy."""
        critic = self.modules["critic"].to(task.device)
        optimiser = torch.optim.Adam(critic.parameters(), lr=self.settings.learning_rate * 3)
        for _ in range(steps):
            rollout = self.rollout(task, batch_size, request_rng, list_rng, click_rng)
            paid = self.step_rewards(rollout.rewards)
            targets = paid.flip(1).cumsum(1).flip(1)  # Monte-Carlo returns (gamma = 1)
            with torch.no_grad():
                states, _ = self.modules["policy"].step_states_and_logits(
                    rollout.inputs, rollout.slots, repeats=self.settings.group_size
                )
            with training_mode(critic):
                loss = (critic(states)[..., 0] - targets).pow(2).mean()
                gradient_step(optimiser, loss, list(critic.parameters()))


def _variance_and_signal(gradients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per slot of ``[resamples, slots, weights]``: trace of the covariance, squared mean norm."""
    mean = gradients.mean(axis=0, dtype=np.float64)
    centred = gradients - mean
    variance = (centred.astype(np.float64) ** 2).sum(axis=(0, 2)) / (len(gradients) - 1)
    return variance, (mean**2).sum(axis=1)
