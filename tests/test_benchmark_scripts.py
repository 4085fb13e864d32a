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
