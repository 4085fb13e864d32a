"""The layering rule: simulators <- rerank_env <- agents, never the other way."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"simulators": {"rerank_env", "agents"}, "rerank_env": {"agents"}}


def _imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_do_not_import_higher_ones(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported_top_levels(path) & FORBIDDEN[package])
        for path in files
        if _imported_top_levels(path) & FORBIDDEN[package]
    }
    assert not offenders, f"layering broken: {offenders}"


def test_library_code_uses_no_global_random_state() -> None:
    pattern_calls = (
        "np.random.seed(",
        "np.random.rand(",
        "np.random.randint(",
        "np.random.choice(",
        "np.random.normal(",
        "torch.manual_seed(",
        "random.random(",
        "random.seed(",
    )
    # simulators/base.py: isolated_torch_rng seeds torch inside fork_rng (state restored).
    # agents/evaluation.py: rliable draws from NumPy's global generator, so _seeded_rliable
    # seeds it inside preserved_global_rng (state restored; tested in test_policy_gradient).
    allowed = {("base.py", "torch.manual_seed("), ("evaluation.py", "np.random.seed(")}
    offenders = []
    for package in ("simulators", "rerank_env", "agents"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            offenders += [
                f"{path.name}: {call}"
                for call in pattern_calls
                # The stdlib's random.* must not match inside np.random.*.
                if re.search(r"(?<![\w.])" + re.escape(call), text)
                and (path.name, call) not in allowed
            ]
    assert not offenders


def test_building_a_simulator_leaves_global_torch_state_alone() -> None:
    import torch

    from simulators.click_models import Attractiveness
    from simulators.context_model import ContextAwareSimulator

    before = torch.random.get_rng_state()
    ContextAwareSimulator(Attractiveness(torch.zeros(3, 2), torch.zeros(4, 2), dim=8))
    assert torch.equal(before, torch.random.get_rng_state())
