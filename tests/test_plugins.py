"""Agents by entry point, configs with presets, and checkpoint errors."""

from __future__ import annotations

import pytest
import torch

from agents.baselines import InitialOrder, PointwiseGreedy, PointwiseGreedyConfig
from agents.cli import main
from agents.common.specs import agent_from_spec, agent_spec, entry_point, load_agent_class
from agents.degre import DeGRe, DeGReConfig
from agents.goalrank import GoalRank, GoalRankConfig
from agents.registry import make_agent, register, registered
from agents.seq2slate import Seq2Slate, Seq2SlateConfig
from simulators.checkpoint import CheckpointError
from simulators.data.errors import ConfigError


class ReverseInitialOrder(InitialOrder):
    """An agent defined outside the agents package (here, in a test module)."""

    name = "reverse-initial"

    def scores(self, task, requests):
        return -super().scores(task, requests)


def test_entry_points_name_the_public_package() -> None:
    assert entry_point(DeGRe) == "agents.degre:DeGRe"
    assert entry_point(GoalRank) == "agents.goalrank:GoalRank"
    assert entry_point(ReverseInitialOrder) == f"{__name__}:ReverseInitialOrder"
    assert load_agent_class("agents.degre:DeGRe") is DeGRe
    with pytest.raises(ValueError, match="'DeGRe' is not an agent entry point"):
        load_agent_class("DeGRe")  # a bare class name is not an entry point


def test_entry_points_that_are_not_agents_are_refused() -> None:
    with pytest.raises(ValueError, match="'os:system' does not name an Agent subclass"):
        load_agent_class("os:system")
    with pytest.raises(ValueError, match="not an agent entry point: expected 'module.path:Cl"):
        load_agent_class("no colon here")
    with pytest.raises(ValueError, match="cannot import 'nowhere_at_all'"):
        load_agent_class("nowhere_at_all:Agent")
    with pytest.raises(ValueError, match="not imported; import it before loading"):
        load_agent_class("never_imported_package.agents:Agent", allow_import=False)


def test_a_custom_agent_by_entry_point_in_make_agent_register_and_specs() -> None:
    name = f"{__name__}:ReverseInitialOrder"
    agent = make_agent(name, seed=3, budget="quick")
    assert isinstance(agent, ReverseInitialOrder)
    assert agent_from_spec(agent_spec(agent)).name == "reverse-initial"
    register("reverse-initial-test", name, "the initial order reversed", overwrite=True)
    assert "reverse-initial-test" in registered()
    with pytest.raises(ValueError, match="already registered"):
        register("reverse-initial-test", name, "again")
    with pytest.raises(ValueError, match="unknown agent 'nope'.*entry point 'module.path:Cl"):
        make_agent("nope")


def test_compare_command_line_takes_an_entry_point(tmp_path, capsys) -> None:
    code = main(
        [
            "compare",
            "--env-kwarg",
            "num_candidates=10",
            "--env-kwarg",
            "slate_length=4",
            "--agents",
            f"initial-order,{__name__}:ReverseInitialOrder",
            "--seeds",
            "1",
            "--requests",
            "20",
            "--permutations",
            "10",
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert code == 0
    results = next(tmp_path.iterdir()) / "results.csv"
    assert "reverse-initial" in results.read_text()
    assert main(["compare", "--agents", "os:system", "--out", str(tmp_path)]) == 2
    assert "does not name an Agent subclass" in capsys.readouterr().err


def test_configs_are_frozen_typed_and_have_presets() -> None:
    quick, default = DeGReConfig.quick(seed=2), DeGReConfig()
    assert quick.mining_requests == 200 and default.mining_requests == 2000 and quick.seed == 2
    assert DeGReConfig.preset("full") == default and DeGReConfig.preset("tiny").train_requests
    with pytest.raises(ConfigError, match=r"unknown DeGReConfig field\(s\) \['beam'\]"):
        DeGReConfig.from_dict({"beam": 4})
    with pytest.raises(ConfigError, match="unknown budget 'huge'"):
        DeGReConfig.preset("huge")
    with pytest.raises(ConfigError, match="keep_lists must be in"):
        DeGReConfig(beam_width=2, keep_lists=4)
    agent = DeGRe(quick, beam_width=4)
    assert agent.settings == quick.replace(beam_width=4) and agent.settings.beam_width == 4
    with pytest.raises(AttributeError, match="frozen DeGReConfig.*settings.replace"):
        agent.beam_width = 8
    with pytest.raises(TypeError, match="takes a DeGReConfig"):
        DeGRe(GoalRankConfig())
    # The registry reads the same presets: a budget is written once.
    assert make_agent("degre", seed=1, budget="quick").settings == DeGReConfig.quick(seed=1)
    assert make_agent("seq2slate-dense", budget="tiny").settings == Seq2SlateConfig.tiny(
        reward="dense"
    )
    goalrank = make_agent("goalrank", seed=4, budget="quick")
    assert goalrank.settings == GoalRankConfig.quick(seed=4)
    assert goalrank.auxiliary[1].settings == PointwiseGreedyConfig.quick(seed=4)


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory, small_task):
    task = small_task
    agent = Seq2Slate(Seq2SlateConfig.tiny(iterations=2))
    agent.fit(task)
    path = agent.save(tmp_path_factory.mktemp("ckpt") / "seq2slate.pt")
    return task, agent, path


def test_checkpoints_store_the_config_and_the_training_log(trained_checkpoint) -> None:
    task, agent, path = trained_checkpoint
    payload = torch.load(path, weights_only=True)
    assert payload["config_class"] == "Seq2SlateConfig"
    assert Seq2SlateConfig.from_dict(payload["config"]) == agent.settings
    loaded = Seq2Slate.load(path)
    assert loaded.settings == agent.settings and loaded.history == agent.history
    assert {"loss", "entropy", "grad_norm", "simulator_calls"} <= set(loaded.history[1])


def test_damaged_checkpoints_get_a_clear_error_and_a_fix(trained_checkpoint, tmp_path) -> None:
    _, _, path = trained_checkpoint
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x04not a checkpoint at all" * 10)
    for damaged in (truncated, garbage):
        with pytest.raises(CheckpointError) as raised:
            Seq2Slate.load(damaged)
        message = str(raised.value)
        assert "damaged, truncated or not a rerank-env agent checkpoint" in message
        assert "agent.save(path)" in message and "weights_only" not in message
    with pytest.raises(CheckpointError, match="no agent checkpoint at .*save one"):
        Seq2Slate.load(tmp_path / "missing.pt")


def test_from_preset_builds_agents_without_configs_too() -> None:
    assert make_agent("random", seed=7).seed == 7
    assert make_agent("beam-3").width == 3


def test_compare_takes_local_and_pretrained_instances(tmp_path, small_task) -> None:
    import csv

    from agents.baselines import RandomAgent
    from agents.compare import run_compare

    class LocalRandom(RandomAgent):  # defined in a function: no importable entry point
        name = "local-random"

    pretrained = PointwiseGreedy(PointwiseGreedyConfig.tiny(seed=9)).fit(small_task)
    folder = run_compare(
        env_kwargs={"num_candidates": 10, "slate_length": 4},
        agents=[LocalRandom(seed=0), pretrained],
        seeds=2,
        requests=20,
        permutations=10,
        budget="tiny",
        out=tmp_path,
        progress=False,
    )
    rows = list(csv.DictReader((folder / "per_seed.csv").open()))
    local = [row for row in rows if row["agent"] == "local-random"]
    assert local[0]["reward_eval"] != local[1]["reward_eval"]  # rebuilt with each seed
    greedy = [row for row in rows if row["agent"] == "pointwise-greedy"]
    assert len(greedy) == 2 and greedy[0]["reward_eval"] == greedy[1]["reward_eval"]
    assert pretrained.settings.seed == 9 and pretrained.fitted  # the caller's agent as it was


def test_checkpoint_specs_may_not_import_new_modules(trained_checkpoint, tmp_path) -> None:
    from agents.generator_evaluator import GeneratorEvaluator

    task, agent, path = trained_checkpoint
    composite = GeneratorEvaluator([InitialOrder()], lists_per_generator=2).fit(task)
    saved = composite.save(tmp_path / "ge.pt")
    payload = torch.load(saved, weights_only=True)
    payload["config"]["generators"][0]["agent"] = "never_imported_package.agents:Agent"
    torch.save(payload, tmp_path / "hostile.pt")
    with pytest.raises(CheckpointError, match="not imported; import it before loading"):
        GeneratorEvaluator.load(tmp_path / "hostile.pt")


def test_agents_that_cannot_be_built_by_name_get_a_clear_error(capsys, tmp_path) -> None:
    with pytest.raises(ValueError, match="from_preset.*give its constructor defaults"):
        make_agent("agents.base:Agent")  # abstract
    assert main(["compare", "--agents", "agents.base:Agent", "--out", str(tmp_path)]) == 2
    assert "give its constructor defaults" in capsys.readouterr().err
    with pytest.raises(ValueError, match="must map to tuples of registered names"):
        register("bad-components", "agents.baselines:InitialOrder", "x", components={"g": "prm"})


def test_sb3_options_are_copied_and_none_means_none() -> None:
    from agents.sb3 import SB3Agent

    options = {"n_steps": 64, "policy_kwargs": {"net_arch": [8]}}
    agent = SB3Agent("MaskablePPO", algorithm_kwargs=options)
    options["policy_kwargs"]["net_arch"].append(16)
    assert agent.settings.algorithm_kwargs["policy_kwargs"] == {"net_arch": [8]}
    with pytest.raises(TypeError):
        agent.settings.algorithm_kwargs["n_steps"] = 1  # read-only
    assert dict(SB3Agent(algorithm_kwargs=None).settings.algorithm_kwargs) == {}
    shared = make_agent("maskable-ppo").settings.algorithm_kwargs
    assert shared is not make_agent("maskable-ppo").settings.algorithm_kwargs


def test_every_registered_agent_has_a_name_of_its_own() -> None:
    # compare stores and tabulates runs by agent name: two registered variants that
    # build agents of one name would share their records (goalrank-composed once did).
    from agents.registry import registered

    names: dict[str, list[str]] = {}
    for key in registered():
        names.setdefault(make_agent(key).name, []).append(key)
    assert {name: keys for name, keys in names.items() if len(keys) > 1} == {}
