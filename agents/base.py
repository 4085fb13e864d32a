"""The agent interface: rank a batch of requests, or act step by step in an env.

Every agent implements one method, :meth:`Agent.rank`: for a batch of requests of
a :class:`~rerank_env.task.RerankTask`, return one list of ``L`` candidate positions
per request (the numbers the environments' actions use), each starting with the
given prefix when one is given. Everything else is derived from it:

* :func:`checked_rank` validates what an agent returns and names the agent, the
  request and the problem when a list is invalid;
* :meth:`Agent.policy` wraps an agent for step-by-step use in ``SlateRerank-v0`` or
  its vector form, with Stable-Baselines3's ``predict`` signature. At every step it
  asks the agent to complete the slate placed so far, so the step-wise and batch
  forms give the same lists, and an agent stays correct if someone else chose the
  earlier slots.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

from agents.common.config import AgentConfig
from agents.common.distributed import DataParallel, data_parallel
from agents.common.imports import checkpoint_loading
from agents.common.sampling import request_gumbel
from agents.common.telemetry import TrainingLogger
from rerank_env.task import RerankTask
from simulators._io import atomic_torch_save
from simulators.base import PAD
from simulators.checkpoint import CheckpointError

if TYPE_CHECKING:
    from typing_extensions import Self

#: Version of the agent checkpoint format written and read (sub-agents named by entry point).
AGENT_FORMAT_VERSION = 2


class InvalidListError(ValueError):
    """An agent returned a list that is not a valid slate for its request."""


class UnsupportedTaskError(ValueError):
    """An agent cannot rank this task (e.g. a policy trained for another N)."""


class Agent(ABC):
    """A reranker. Subclasses implement :meth:`rank` (trainable ones: :class:`TrainableAgent`).

    Attributes:
        name: Short name used in tables and error messages.
    """

    name: str = "agent"

    @abstractmethod
    def rank(
        self, task: RerankTask, requests: np.ndarray, prefixes: np.ndarray | None = None
    ) -> np.ndarray:
        """Lists for ``requests``: int ``[B, L]`` candidate positions, no repeats.

        Args:
            task: The task whose candidates and simulators the requests index.
            requests: Request indices, int ``[B]``.
            prefixes: Optional int ``[B, L]``: slots already filled (``-1`` for empty
                slots, filled ones first); each returned list must start with them.
        """

    def config(self) -> dict[str, Any]:
        """The constructor's keyword arguments (JSON-like), for specs and result tables."""
        return {}

    @classmethod
    def from_preset(cls, budget: str = "full", *, seed: int = 0, **kwargs: Any) -> Agent:
        """This agent with the settings of a training budget (``"tiny"``, ``"quick"``, ``"full"``).

        Agents with a config dataclass (:attr:`TrainableAgent.config_class`) take its
        preset; others are built from ``kwargs`` (and ``seed`` if they take one).
        The command-line registry builds every agent this way.
        """
        if "seed" in inspect.signature(cls).parameters:
            kwargs["seed"] = seed
        return cls(**kwargs)

    def check_task(self, task: RerankTask) -> None:
        """Raise :class:`UnsupportedTaskError` if this agent cannot rank ``task``.

        ``compare`` calls it before any training, so an impossible combination fails
        at once rather than after the other agents have trained.
        """
        return None  # most agents rank any task

    def policy(self, env: gym.Env | gym.vector.VectorEnv) -> AgentPolicy:
        """A step-wise policy of this agent in ``env`` (single or native vector env)."""
        return AgentPolicy(self, env)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class ScoringAgent(Agent):
    """An agent that scores candidates independently of the slots: the list is the top L.

    Subclasses implement :meth:`scores`; ranking and Plackett-Luce sampling (used by
    generator-evaluator rerankers) come from it.
    """

    @abstractmethod
    def scores(self, task: RerankTask, requests: np.ndarray) -> np.ndarray:
        """Higher is better, float ``[B, N]``."""

    def rank(
        self, task: RerankTask, requests: np.ndarray, prefixes: np.ndarray | None = None
    ) -> np.ndarray:
        """Complete each prefix with the unused candidates of highest score."""
        return complete_by_scores(self.scores(task, requests), task.slate_length, prefixes)

    def sample(
        self,
        task: RerankTask,
        requests: np.ndarray,
        count: int,
        seed: int,
        prefixes: np.ndarray | None = None,
        temperature: float = 1.0,
    ) -> np.ndarray:
        """``count`` Plackett-Luce lists per request, ``[B, count, L]``.

        Scores are standardised within each request, divided by ``temperature`` and
        perturbed with Gumbel noise; the top ``L`` of the perturbed scores is a
        Plackett-Luce sample without replacement (Kool et al., 2019). A request's
        lists depend only on ``(seed, request)``, not on the rest of the batch.
        """
        scores = np.asarray(self.scores(task, requests), dtype=np.float64)
        spread = scores.std(axis=1, keepdims=True)
        scores = (scores - scores.mean(axis=1, keepdims=True)) / np.where(spread > 0, spread, 1.0)
        batch, n = scores.shape
        gumbel = request_gumbel(seed, requests, (count, n))
        perturbed = (scores[:, None] / temperature + gumbel).reshape(batch * count, n)
        repeated = None if prefixes is None else np.repeat(np.asarray(prefixes), count, axis=0)
        lists = complete_by_scores(perturbed, task.slate_length, repeated)
        return lists.reshape(batch, count, task.slate_length)


class TrainableAgent(Agent):
    """An agent with parameters: ``fit(task)``, ``save(path)``, ``load(path)``.

    Subclasses implement :meth:`_train` (the method's own training stages),
    :meth:`_build_info` (the shapes a task implies) and :meth:`_build` (create
    ``self.modules`` from ``self.build_info``), and hold their config in
    ``self.settings`` (or implement :meth:`config`). :meth:`fit` is the template
    they share; :meth:`_setup` is its hook for work before the modules are built
    (fitting sub-agents). :meth:`setup` gives the untrained agent (``fit`` starts
    from it; tests compare against it). Checkpoints hold the format version, the
    class, the config, the build info, every module's weights and metadata, and are
    written atomically.
    """

    #: ``(x, y)`` keys of :attr:`history` that make its learning curve.
    curve: tuple[str, str] | None = None
    #: The frozen config dataclass of this method (``None``: keyword arguments only).
    config_class: ClassVar[type[AgentConfig] | None] = None

    def __init__(self) -> None:
        self.modules: dict[str, torch.nn.Module] = {}
        self.build_info: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []  # training log rows written by fit
        self.fitted = False  # set by fit and load; setup alone builds untrained modules
        #: Folder for the training log (``curves.csv``, TensorBoard); ``None``: memory only.
        self.log_dir: Path | None = None

    # ------------------------------------------------------------------ configuration

    def _settings_from(self, config: AgentConfig | None, overrides: dict[str, Any]) -> Any:
        """``config`` (default: the config class's defaults) with ``overrides`` applied."""
        cls = self.config_class
        if cls is None:
            raise TypeError(f"{type(self).__name__} has no config_class to build settings from")
        if config is None:
            return cls.from_dict(overrides)
        if not isinstance(config, cls):
            raise TypeError(
                f"{type(self).__name__} takes a {cls.__name__} (e.g. {cls.__name__}.quick()), "
                f"got {type(config).__name__}"
            )
        return config.replace(**overrides) if overrides else config

    def __setattr__(self, name: str, value: Any) -> None:
        settings = self.__dict__.get("settings")
        if settings is not None and name in {f.name for f in dataclasses.fields(settings)}:
            raise AttributeError(
                f"{name} is a field of this agent's frozen {type(settings).__name__}: build a "
                f"new agent, e.g. {type(self).__name__}(agent.settings.replace({name}=...))"
            )
        super().__setattr__(name, value)

    def training_logger(self) -> TrainingLogger:
        """A :class:`~agents.common.telemetry.TrainingLogger` into ``history`` (and ``log_dir``)."""
        return TrainingLogger(
            self.history, self.log_dir, curve_x=None if self.curve is None else self.curve[0]
        )

    @classmethod
    def from_preset(cls, budget: str = "full", *, seed: int = 0, **kwargs: Any) -> Agent:
        """This agent with the settings of a budget's preset; ``kwargs`` override fields.

        Keyword arguments that are not config fields (an agent's sub-agents) go to
        the constructor.
        """
        if cls.config_class is None:
            return super().from_preset(budget, seed=seed, **kwargs)
        names = {f.name for f in dataclasses.fields(cls.config_class)}
        fields = {k: v for k, v in kwargs.items() if k in names}
        others = {k: v for k, v in kwargs.items() if k not in names}
        if "seed" in names:
            fields["seed"] = seed
        return cls(config=cls.config_class.preset(budget, **fields), **others)

    def config(self) -> dict[str, Any]:
        """The constructor's keyword arguments (JSON-like), for checkpoints and tables."""
        settings = self.__dict__.get("settings")
        if settings is None:
            raise NotImplementedError(f"{type(self).__name__} must implement config()")
        return settings.to_dict()

    def fit(self, task: RerankTask, *, progress: bool = False) -> Self:
        """Train on ``task`` (training requests only); returns ``self``.

        The template every method shares (as Stable-Baselines3's ``learn``): check
        the task, :meth:`_setup` (build the untrained modules), join the
        data-parallel group when ``torchrun`` started this process
        (:mod:`agents.common.distributed`; rank 0 alone writes the log), open the
        training logger, run the method's :meth:`_train`, then put every module in
        evaluation mode and mark the agent fitted.

        Raises:
            UnsupportedTaskError: The agent cannot rank ``task``.
        """
        self._check_new_task(task)
        self._setup(task, progress=progress)
        parallel = data_parallel(task.device)
        if not parallel.is_main:
            self.log_dir = None
        logger = self.training_logger()
        try:
            self._train(task, logger=logger, parallel=parallel, progress=progress)
        finally:
            logger.close()  # what was logged reaches curves.csv even if training fails
        for module in self.modules.values():
            module.eval()
        self.fitted = True
        return self

    def _check_new_task(self, task: RerankTask) -> None:
        """:meth:`check_task` as for an untrained agent: ``fit`` builds anew for ``task``."""
        built, self.build_info = self.build_info, {}
        try:
            self.check_task(task)
        finally:
            self.build_info = built

    def _setup(self, task: RerankTask, *, progress: bool = False) -> None:
        """``fit``'s first stage: build the untrained modules (:meth:`setup`).

        Composite agents override it to fit their untrained sub-agents first.
        """
        self.setup(task)

    @abstractmethod
    def _train(
        self,
        task: RerankTask,
        *,
        logger: TrainingLogger,
        parallel: DataParallel,
        progress: bool,
    ) -> None:
        """The method's training stages, on the modules :meth:`_setup` built.

        Args:
            task: The task (training requests only; validation for curves).
            logger: Rows of the training log (``fit`` closes it).
            parallel: This process's place among data-parallel processes (one
                process unless ``torchrun`` started several).
            progress: Show progress bars.
        """

    @abstractmethod
    def _build_info(self, task: RerankTask) -> dict[str, Any]:
        """What building the modules for ``task`` needs (JSON-like: shapes, sizes)."""

    @abstractmethod
    def _build(self, task: RerankTask | None = None) -> None:
        """Create ``self.modules`` from ``self.build_info``.

        ``task`` is ``None`` when loading a checkpoint: tensors that the weights
        restore may start as zeros.
        """

    def setup(self, task: RerankTask) -> TrainableAgent:
        """Build untrained modules for ``task`` (seeded by the agent's seed); returns ``self``."""
        self.build_info = self._build_info(task)
        self._build(task)
        self.history = []
        return self

    def _require_built(self) -> None:
        if not self.build_info:
            raise RuntimeError(
                f"agent {self.name!r} is not trained: call fit(task) or "
                f"{type(self).__name__}.load(path) first (or setup(task) for an untrained one)"
            )

    def save(self, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
        """Write a checkpoint to ``path`` atomically; returns the path."""
        self._require_built()
        for what, value in (("config", self.config()), ("metadata", metadata or {})):
            try:
                json.dumps(value)
            except TypeError as err:
                raise ValueError(
                    f"cannot save {self.name!r}: its {what} must be JSON-like (numbers, "
                    f"strings, lists, dicts) so the checkpoint loads safely; {err}"
                ) from None
        payload = {
            "format_version": AGENT_FORMAT_VERSION,
            "agent": type(self).__name__,
            "config_class": None if self.config_class is None else self.config_class.__name__,
            "config": self.config(),
            "build_info": self.build_info,
            "state_dicts": {
                name: {key: t.detach().cpu() for key, t in module.state_dict().items()}
                for name, module in self.modules.items()
            },
            "metadata": {
                **(metadata or {}),
                "history": self.history,
                "fitted": self.fitted,
                "saved_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            },
        }
        return atomic_torch_save(path, payload)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> TrainableAgent:
        """An agent rebuilt from a checkpoint written by :meth:`save`.

        Raises:
            CheckpointError: The file is missing, not a checkpoint, of another format
                version, or of another agent class.
        """
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(
                f"no agent checkpoint at {path}: save one with agent.save(path) after fit"
            )
        try:
            payload = torch.load(path, map_location=device, weights_only=True)
        except Exception as err:  # torch raises many types for a damaged file
            # torch's own message suggests weights_only=False, which would run arbitrary
            # code from the file: never do that (nor chain it); say what is wrong instead.
            raise CheckpointError(
                f"cannot read agent checkpoint {path}: the file is damaged, truncated or "
                f"not a rerank-env agent checkpoint ({type(err).__name__}). Save it again "
                f"with agent.save(path), or retrain the agent"
            ) from None
        version = payload.get("format_version") if isinstance(payload, dict) else None
        if version != AGENT_FORMAT_VERSION:
            raise CheckpointError(
                f"{path} has agent checkpoint format version {version!r}; this version of "
                f"rerank-env reads version {AGENT_FORMAT_VERSION}: retrain and save the agent "
                "again with this version"
            )
        if payload.get("agent") != cls.__name__:
            raise CheckpointError(
                f"{path} holds a {payload.get('agent')} agent, not a {cls.__name__}: load it "
                f"with {payload.get('agent')}.load"
            )
        missing = {"config", "build_info", "state_dicts", "metadata"} - set(payload)
        if missing:
            raise CheckpointError(f"{path} is damaged: it lacks {sorted(missing)}")
        try:
            with checkpoint_loading():  # specs inside may not import arbitrary modules
                agent = cls(**payload["config"])
            agent.build_info = dict(payload["build_info"])
            agent._build()
            for name, module in agent.modules.items():
                module.load_state_dict(payload["state_dicts"][name])
                module.to(device).eval()
        except (TypeError, KeyError, RuntimeError, ValueError) as err:
            raise CheckpointError(
                f"{path} does not fit {cls.__name__} of this rerank-env version: {err}"
            ) from err
        agent.history = list(payload["metadata"].get("history", []))
        agent.fitted = bool(payload["metadata"].get("fitted", True))
        return agent


def can_sample(agent: Agent) -> bool:
    """Whether ``agent`` can propose sampled lists (``sample(task, requests, count, seed)``)."""
    return callable(getattr(agent, "sample", None)) and bool(getattr(agent, "can_sample", True))


def empty_prefixes(batch: int, length: int) -> np.ndarray:
    """``[batch, length]`` of ``-1``: nothing placed yet."""
    return np.full((batch, length), PAD, dtype=np.int64)


def checked_rank(
    agent: Agent, task: RerankTask, requests: np.ndarray, prefixes: np.ndarray | None = None
) -> np.ndarray:
    """``agent.rank(...)``, refused with :class:`InvalidListError` if any list is invalid."""
    requests = np.asarray(requests, dtype=np.int64)
    return validated_lists(agent, task, requests, agent.rank(task, requests, prefixes), prefixes)


def validated_lists(
    agent: Agent,
    task: RerankTask,
    requests: np.ndarray,
    lists: Any,
    prefixes: np.ndarray | None = None,
) -> np.ndarray:
    """``lists`` that ``agent`` returned for ``requests`` as int64, or :class:`InvalidListError`."""
    lists = np.asarray(lists)
    n, length = task.num_candidates, task.slate_length
    where = f"agent {agent.name!r}"
    if lists.shape != (len(requests), length):
        raise InvalidListError(
            f"{where} returned lists of shape {lists.shape} for {len(requests)} requests; "
            f"expected ({len(requests)}, {length}): L = {length} candidate positions each"
        )
    if not np.issubdtype(lists.dtype, np.integer):
        raise InvalidListError(f"{where} returned {lists.dtype} lists; expected integers")
    for row in range(len(lists)):
        problem = _list_problem(lists[row], n)
        if problem is None and prefixes is not None:
            filled = prefixes[row][prefixes[row] != PAD]
            if not np.array_equal(lists[row, : len(filled)], filled):
                problem = f"does not start with the given prefix {filled.tolist()}"
        if problem is not None:
            raise InvalidListError(
                f"{where} returned an invalid list for request {int(requests[row])}: "
                f"{lists[row].tolist()} {problem}"
            )
    return lists.astype(np.int64)


def _list_problem(row: np.ndarray, n: int) -> str | None:
    outside = (row < 0) | (row >= n)
    if outside.any():
        return f"holds position {int(row[outside][0])}, not a candidate (valid: 0..{n - 1})"
    values, counts = np.unique(row, return_counts=True)
    if (counts > 1).any():
        return f"lists candidate {int(values[counts > 1][0])} twice"
    return None


def complete_by_scores(scores: np.ndarray, length: int, prefixes: np.ndarray | None) -> np.ndarray:
    """Each prefix completed with the best-scored unused candidates, ``[B, L]``.

    Args:
        scores: Higher is better, float ``[B, N]``.
        length: ``L``.
        prefixes: ``[B, L]`` with ``-1`` in empty slots, or ``None``.
    """
    scores = np.array(scores, dtype=np.float64)
    batch = len(scores)
    prefixes = empty_prefixes(batch, length) if prefixes is None else np.asarray(prefixes)
    placed = prefixes != PAD
    rows, slots = np.nonzero(placed)
    scores[rows, prefixes[rows, slots]] = -np.inf  # placed candidates come last
    order = np.argsort(-scores, axis=1, kind="stable")
    lists = prefixes.copy()
    counts = placed.sum(axis=1)
    for count in np.unique(counts):  # rows with the same prefix length fill the same slots
        group = counts == count
        lists[group, count:] = order[group, : length - count]
    return lists


class AgentPolicy:
    """An :class:`Agent` acting step by step, with SB3's ``predict`` signature.

    At a request's first step the agent ranks it and the list is kept as a plan;
    later steps follow the plan while the placed slots agree with it. Where they do
    not (another policy chose a slot, or a new request started) the agent is asked
    again to complete what is placed. So the step-wise lists equal the batch lists,
    even for agents that search or sample, at one ``rank`` call per request.

    Args:
        agent: The agent.
        env: ``SlateRerank-v0`` (possibly wrapped) or its native vector env; the
            current requests are read from it.
    """

    def __init__(self, agent: Agent, env: Any) -> None:
        self.agent = agent
        self.env = env.unwrapped if hasattr(env, "unwrapped") else env
        if not hasattr(self.env, "episodes") or not hasattr(self.env, "task"):
            raise TypeError(
                f"AgentPolicy needs a SlateRerank environment (single or vector), got {env!r}"
            )
        self._plans: np.ndarray | None = None
        self._plan_requests: np.ndarray | None = None

    def predict(
        self,
        observation: dict[str, np.ndarray],
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, None]:
        """The next slot's action for the observed slate(s): ``(actions, None)``."""
        slate = np.asarray(observation["slate"])
        single = slate.ndim == 1
        slates = slate[None] if single else slate
        step = int(np.asarray(observation["step"]).reshape(-1)[0])
        if step >= slates.shape[1]:
            # The vector env's final observation: its next step resets and ignores actions.
            actions = np.zeros(len(slates), dtype=np.int64)
            return (actions[0] if single else actions), None
        requests = self.env.episodes.request.copy()
        if self._plans is None or self._plans.shape != slates.shape:
            self._plans = np.full(slates.shape, PAD, dtype=np.int64)
            self._plan_requests = np.full(len(slates), -1, dtype=np.int64)
        stale = (self._plan_requests != requests) | (self._plans[:, :step] != slates[:, :step]).any(
            axis=1
        )
        if stale.any():
            rows = np.flatnonzero(stale)
            self._plans[rows] = checked_rank(
                self.agent, self.env.task, requests[rows], slates[rows]
            )
            self._plan_requests[rows] = requests[rows]
        actions = self._plans[:, step].copy()
        return (actions[0] if single else actions), None
