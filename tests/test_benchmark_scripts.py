"""The benchmark scripts that choose settings refuse to read the test split."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("script", "arguments"),
    [
        ("bench_sb3_policy.py", ["--study", "tune", "--split", "test"]),
        ("bench_goalrank.py", ["temperature", "--split", "test"]),
    ],
)
def test_tuning_studies_refuse_the_test_split(script: str, arguments: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *arguments],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "validation requests only" in result.stderr and "--split valid" in result.stderr


def test_evaluation_split_defaults_by_what_the_study_does() -> None:
    import argparse

    from agents.common.commands import evaluation_split

    parser = argparse.ArgumentParser()
    assert evaluation_split(parser, None, chooses=True, what="a study") == "valid"
    assert evaluation_split(parser, None, chooses=False, what="a study") == "test"
    assert evaluation_split(parser, "valid", chooses=False, what="a study") == "valid"
    with pytest.raises(SystemExit):
        evaluation_split(parser, "test", chooses=True, what="a study")
