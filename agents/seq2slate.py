"""Seq2Slate: a pointer network trained with REINFORCE against the env reward.

Seq2Slate (Bello et al., 2018) decodes a list one slot at a time with a pointer
network over the candidates. Here it is trained on-policy against the task's
*training* simulator, the reward ``SlateRerank-v0`` pays: each iteration samples
``samples`` lists per training request (sampling without replacement), scores them
in one batched call, and takes a policy-gradient step with the mean reward of the
same request's lists as the baseline.

``reward="sparse"`` credits every slot with the list reward (the plain list-level
signal); ``reward="dense"`` credits slot ``t`` with its reward-to-go, the sum of
the dense per-slot rewards of ``SlateRerankDense-v0`` from ``t`` on, with a
per-slot baseline. The two differ only in credit assignment, which is what the
suite lets one study.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from agents.base import TrainableAgent
from agents.nn import (
    PointerPolicy,
    greedy_lists,
    input_dims,
    request_inputs,
    sampled_lists,
    torch_generator,
)
from agents.training import progress_bar, training_mode
from rerank_env.task import RerankTask
from simulators.base import isolated_torch_rng

Credit = Literal["sparse", "dense"]


def advantages(prefix_values: torch.Tensor, samples: int, credit: Credit) -> torch.Tensor:
    """Per-slot advantages of ``samples`` lists per request, ``[B * samples, L]``.

    Args:
        prefix_values: Expected clicks of every prefix of each list ``[B * S, L]``
            (request ``b``'s lists in consecutive rows).
        samples: S, lists per request.
        credit: ``"sparse"``: every slot gets the list reward minus the request's
            mean list reward; ``"dense"``: slot ``t`` gets its reward-to-go minus the
            request's mean reward-to-go at ``t``.
    """
    if credit == "sparse":
        returns = prefix_values[:, -1:].expand_as(prefix_values)
    elif credit == "dense":
        step_rewards = torch.diff(
            prefix_values, dim=1, prepend=torch.zeros_like(prefix_values[:, :1])
        )
        returns = step_rewards.flip(1).cumsum(1).flip(1)
    else:
        raise ValueError(f"credit must be 'sparse' or 'dense', got {credit!r}")
    grouped = returns.reshape(-1, samples, returns.shape[1])
    return (grouped - grouped.mean(dim=1, keepdim=True)).reshape_as(returns)


class Seq2Slate(TrainableAgent):
    """Pointer-network reranker trained by REINFORCE on the training simulator.

    Args:
        dim: Width.
        encoder_layers: Candidate-set encoder layers.
        decoder_layers: Pointer decoder layers.
        heads: Attention heads.
        iterations: Policy-gradient steps.
        batch_size: Training requests per step.
        samples: Lists sampled per request (the baseline is their mean reward).
        learning_rate: Adam step size.
        entropy: Weight of an entropy bonus on the sampled steps.
        reward: ``"sparse"`` (list reward on every slot) or ``"dense"`` (reward-to-go).
        eval_every: Record the greedy reward on validation requests every this many
            iterations (the learning curve).
        eval_requests: Validation requests in that curve.
        seed: Initialisation, request sampling and list sampling seed.
    """

    name = "seq2slate"
    curve = ("simulator_calls", "valid_reward")

    def __init__(
        self,
        dim: int = 64,
        encoder_layers: int = 2,
        decoder_layers: int = 1,
        heads: int = 4,
        iterations: int = 300,
        batch_size: int = 64,
        samples: int = 8,
        learning_rate: float = 1e-3,
        entropy: float = 0.0,
        reward: Credit = "sparse",
        eval_every: int = 25,
        eval_requests: int = 256,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if reward not in ("sparse", "dense"):
            raise ValueError(f"reward must be 'sparse' or 'dense', got {reward!r}")
        if samples < 2:
            raise ValueError(f"samples must be >= 2 (the baseline is their mean), got {samples}")
        self.dim, self.encoder_layers, self.decoder_layers = dim, encoder_layers, decoder_layers
        self.heads, self.iterations, self.batch_size = heads, iterations, batch_size
        self.samples, self.learning_rate, self.entropy = samples, learning_rate, entropy
        self.reward, self.eval_every, self.eval_requests = reward, eval_every, eval_requests
        self.seed = seed
        self.name = "seq2slate" if reward == "sparse" else "seq2slate-dense"

    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        keys = (
            "dim", "encoder_layers", "decoder_layers", "heads", "iterations", "batch_size",
            "samples", "learning_rate", "entropy", "reward", "eval_every", "eval_requests",
            "seed",
        )  # fmt: skip
        return {key: getattr(self, key) for key in keys}

    def _build_info(self, task: RerankTask) -> dict[str, Any]:
        user_dim, item_dim = input_dims(task)
        return {"user_dim": user_dim, "item_dim": item_dim, "max_length": task.slate_length}

    def _build(self, task: RerankTask | None = None) -> None:
        with isolated_torch_rng(self.seed):
            policy = PointerPolicy(
                self.build_info["user_dim"],
                self.build_info["item_dim"],
                dim=self.dim,
                encoder_layers=self.encoder_layers,
                decoder_layers=self.decoder_layers,
                heads=self.heads,
                max_length=self.build_info["max_length"],
            )
        self.modules = {"policy": policy}

    def fit(self, task: RerankTask, *, progress: bool = False) -> Seq2Slate:
        """REINFORCE on the training requests against the training simulator."""
        self.setup(task)
        policy = self.modules["policy"].to(task.device)
        request_rng = np.random.default_rng(self.seed)
        list_rng = torch_generator(self.seed, task.device)
        optimiser = torch.optim.Adam(policy.parameters(), lr=self.learning_rate)
        curve_requests = task.requests("valid")[: self.eval_requests]
        length, calls = task.slate_length, 0
        self.history = [self._curve_point(task, curve_requests, 0, 0)]
        bar = progress_bar(self.iterations, "Seq2Slate", progress)
        for iteration in range(1, self.iterations + 1):
            rows = task.sample_requests("train", self.batch_size, request_rng)
            inputs = request_inputs(task, rows)
            with torch.no_grad():
                slots, _ = policy.generate(
                    inputs, length, greedy=False, generator=list_rng, repeats=self.samples
                )
                values = task.prefix_values(np.repeat(rows, self.samples), slots, "train")
            calls += len(slots)
            advantage = advantages(values, self.samples, self.reward)
            with training_mode(policy):
                logits = policy.step_logits(inputs, slots, repeats=self.samples)
                log_probs = torch.log_softmax(logits, dim=2)
                chosen = log_probs.gather(2, slots[..., None])[..., 0]
                loss = -(advantage * chosen).sum(dim=1).mean()
                if self.entropy:
                    probs = log_probs.exp()
                    entropy = -(probs * log_probs.nan_to_num(neginf=0.0)).sum(dim=2).mean()
                    loss = loss - self.entropy * entropy
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            bar.update()
            bar.set_postfix(reward=f"{values[:, -1].mean().item():.3f}")
            if iteration % self.eval_every == 0 or iteration == self.iterations:
                point = self._curve_point(task, curve_requests, iteration, calls)
                point["sampled_reward"] = values[:, -1].mean().item()
                self.history.append(point)
        bar.close()
        policy.eval()
        self.fitted = True
        return self

    def _curve_point(
        self, task: RerankTask, requests: np.ndarray, iteration: int, calls: int
    ) -> dict[str, float]:
        lists = self.rank(task, requests)
        reward = task.expected_reward(requests, lists, "train").mean().item()
        return {"iteration": iteration, "simulator_calls": calls, "valid_reward": reward}

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
        """``count`` lists per request sampled from the policy, ``[B, count, L]``.

        A request's lists depend only on ``(seed, request)`` (see
        :func:`~agents.nn.sampled_lists`), not on the rest of the batch.
        """
        self._require_built()
        return sampled_lists(
            self.modules["policy"], task, requests, count, seed, prefixes, temperature
        )
