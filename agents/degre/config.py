"""DeGRe's settings: one frozen dataclass with its budgets as presets."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

from agents.common.config import AgentConfig
from simulators.data.errors import ConfigError

EvaluatorKind = Literal["learned", "simulator"]
Targets = Literal["expected", "sampled"]
Supervision = Literal["dense", "sparse"]
ListWeight = Literal["value", "uniform"]
Decode = Literal["generator", "evaluator-beam"]


@dataclasses.dataclass(frozen=True)
class DeGReConfig(AgentConfig):
    """Everything that defines a DeGRe run (see :mod:`agents.degre`).

    Attributes:
        evaluator: ``"learned"`` (:class:`~agents.degre.evaluator.LookaheadEvaluator`
            fitted on logs and simulator-scored lists) or ``"simulator"`` (the
            training simulator).
        targets: The learned evaluator's targets on simulator-scored lists:
            ``"expected"`` (exact ``P(V_t >= k)``) or ``"sampled"`` (one click draw).
        logged_slates: Also fit the evaluator on the logged slates (realistic lists).
        logged_clicks: Their logged clicks as targets instead of the training
            simulator's. Off by default: logged slates are the items users chose, so
            their clicks are far above any candidate list's and bias the evaluator
            upward (see ``docs/agents.md``).
        evaluator_lists: Simulator-scored lists per training request.
        evaluator_epochs: Evaluator epochs (the best by validation loss is kept).
        evaluator_dim: Evaluator width.
        evaluator_layers: Evaluator Transformer layers.
        evaluator_batch_size: Prefix sequences per evaluator step.
        train_requests: Training requests the evaluator is fitted on (a random
            subset, for tests and quick runs); ``None``: all of them.
        beam_width: Mining beam width B.
        keep_lists: Mined lists kept per request (``<= beam_width``).
        mining_requests: Training requests mined (at most all of them).
        rounds: Mining rounds; the generator trains after each on all lists so far.
        supervision: ``"dense"`` (mined step labels) or ``"sparse"`` (REINFORCE with
            the evaluator's list value, at the dense configuration's evaluator calls
            unless ``sparse_iterations`` is given).
        soft_weight: lambda, the weight of the soft-label KL term (0: hard labels only).
        temperature: tau of the soft labels.
        list_weight: ``"value"`` (lists weighted by value over the mean value) or
            ``"uniform"``.
        epochs: Generator epochs over the mined lists after each round.
        batch_size: Mined lists per generator step.
        learning_rate: Adam step size (evaluator and generator).
        sparse_samples: Lists sampled per request in the sparse ablation.
        sparse_batch: Requests per step in the sparse ablation.
        sparse_iterations: Steps of the sparse ablation (``None``: match calls).
        dim: Generator width.
        encoder_layers: Candidate-set encoder layers.
        decoder_layers: Pointer decoder layers.
        heads: Attention heads (evaluator and generator).
        decode: ``"generator"`` (one greedy pass, DeGRe) or ``"evaluator-beam"``
            (beam search of ``beam_width`` with the evaluator, its teacher).
        mining_batch: Requests mined per batched search.
        eval_requests: Validation requests of the learning curve (also the learned
            evaluator's validation set, 4 lists each).
        seed: Initialisation, sampling and mining-order seed.
    """

    evaluator: EvaluatorKind = "learned"
    targets: Targets = "expected"
    logged_slates: bool = True
    logged_clicks: bool = False
    evaluator_lists: int = 8
    evaluator_epochs: int = 10
    evaluator_dim: int = 64
    evaluator_layers: int = 2
    evaluator_batch_size: int = 512
    train_requests: int | None = None
    beam_width: int = 8
    keep_lists: int = 4
    mining_requests: int = 2000
    rounds: int = 4
    supervision: Supervision = "dense"
    soft_weight: float = 1.0
    temperature: float = 0.1
    list_weight: ListWeight = "value"
    epochs: int = 4
    batch_size: int = 128
    learning_rate: float = 1e-3
    sparse_samples: int = 8
    sparse_batch: int = 64
    sparse_iterations: int | None = None
    dim: int = 64
    encoder_layers: int = 2
    decoder_layers: int = 1
    heads: int = 4
    decode: Decode = "generator"
    mining_batch: int = 64
    eval_requests: int = 256
    seed: int = 0

    QUICK: ClassVar[dict[str, Any]] = {
        "evaluator_lists": 4,
        "evaluator_epochs": 3,
        "mining_requests": 200,
        "rounds": 2,
    }
    #: Small but real: on N = 10, L = 4 the evaluator and generator learn in seconds.
    TINY: ClassVar[dict[str, Any]] = {
        "evaluator_lists": 2,
        "evaluator_epochs": 3,
        "evaluator_dim": 32,
        "dim": 32,
        "train_requests": 4000,
        "evaluator_batch_size": 128,
        "mining_requests": 256,
        "rounds": 2,
        "epochs": 3,
        "beam_width": 4,
        "keep_lists": 2,
        "eval_requests": 128,
    }

    def validate(self) -> None:
        """Refuse out-of-range fields, naming the field, the value and what is valid."""
        self._choice("evaluator", ("learned", "simulator"))
        self._choice("targets", ("expected", "sampled"))
        self._choice("supervision", ("dense", "sparse"))
        self._choice("list_weight", ("value", "uniform"))
        self._choice("decode", ("generator", "evaluator-beam"))
        if not 1 <= self.keep_lists <= self.beam_width:
            raise ConfigError(
                f"keep_lists must be in [1, beam_width={self.beam_width}], got {self.keep_lists}"
            )
        self._at_least(
            1,
            "mining_requests",
            "rounds",
            "mining_batch",
            "evaluator_epochs",
            "evaluator_batch_size",
            "evaluator_lists",
            "epochs",
            "batch_size",
            "sparse_batch",
            "eval_requests",
            "sparse_iterations",
            "train_requests",
        )
        if self.temperature <= 0 or self.soft_weight < 0:
            raise ConfigError(
                f"temperature must be > 0 and soft_weight >= 0, got {self.temperature}, "
                f"{self.soft_weight}"
            )
        if self.sparse_samples < 2:
            raise ConfigError(
                f"sparse_samples must be >= 2 (the baseline), got {self.sparse_samples}"
            )

    @property
    def name(self) -> str:
        """The registry-style name of this configuration.

        ``degre``, ``degre-sparse``, ``degre-hard`` or ``degre-beam<B>``, with ``-sim``
        when the training simulator is the evaluator.
        """
        if self.decode == "evaluator-beam":
            base = f"degre-beam{self.beam_width}"
        elif self.supervision == "sparse":
            base = "degre-sparse"
        else:
            base = "degre" if self.soft_weight else "degre-hard"
        return base + ("-sim" if self.evaluator == "simulator" else "")
