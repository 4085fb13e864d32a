"""What the command line shows: help texts, progress lines, the compact results table."""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rerank_env
from agents.cli import build_parser, main
from agents.compare import cli as compare_cli
from agents.compare.presets import PRESET_TIMES, PRESETS
from agents.evaluation import compact_table
from simulators.bundle import BundleConfig
from simulators.cli_help import field_docs, plain
from simulators.data.pipeline_config import PipelineConfig
from simulators.progress import LogProgress, progress_bar

STAMP = re.compile(r"^\[\d\d:\d\d:\d\d\] ")
ROOT = Path(__file__).resolve().parents[1]


def _parsers(parser: argparse.ArgumentParser, path: str = "rerank-env"):
    """``(command path, parser)`` for ``parser`` and every subcommand under it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


ALL_PARSERS = [*_parsers(build_parser()), ("python -m agents.compare", compare_cli._parser())]


@pytest.mark.parametrize("path, parser", ALL_PARSERS, ids=[path for path, _ in ALL_PARSERS])
def test_every_option_has_help_with_its_default_and_no_markup(path, parser) -> None:
    text = parser.format_help()
    assert "``" not in text and ":func:" not in text and ":class:" not in text, path
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not action.option_strings or action.default is argparse.SUPPRESS:
            continue  # positionals, --help, --version
        assert action.help, f"{path} {action.option_strings[0]} has no help"
        shown = formatter._get_help_string(action)
        assert "(default" in shown, f"{path} {action.option_strings[0]}: {shown!r}"
    # and it renders (a % in a help text would break argparse's formatting)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--help"])
    assert exit_info.value.code == 0


def test_compare_help_names_environments_presets_agents_and_times(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = capsys.readouterr().out
    for env_id in rerank_env.VARIANTS:
        assert env_id in text
    for preset, times in PRESET_TIMES.items():
        assert preset in text and times in " ".join(text.split())
    assert "glorank-local" in text and "beam-<B>" in text
    assert "(default: 5)" in " ".join(text.split())  # --seeds
    assert "--preset quick alone runs the same agents at their full budgets" in " ".join(
        text.split()
    )


def test_data_options_take_their_help_from_the_config_docstring() -> None:
    docs = field_docs(PipelineConfig)
    assert set(docs) == {field for field in PipelineConfig.__dataclass_fields__}
    assert docs["k_core"] == "Minimum ratings per user and per item (applied until stable)"
    assert docs["split"].startswith('"user" (time-ordered split per user)')  # no markup
    assert set(field_docs(BundleConfig)) == set(BundleConfig.__dataclass_fields__)
    help_text = " ".join(dict(ALL_PARSERS)["rerank-env data"].format_help().split())
    assert (
        "--k-core INT Minimum ratings per user and per item (applied until stable) "
        "(default: 5)" in help_text
    )

    class Undocumented:
        """No attributes section."""

    with pytest.raises(ValueError, match="no 'Attributes:' section"):
        field_docs(Undocumented)


def test_plain_strips_restructured_text() -> None:
    assert plain("``rerank-env compare`` and :func:`~agents.evaluation.summarise`") == (
        "rerank-env compare and summarise"
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_log_progress_writes_timestamped_lines_at_start_interval_and_end() -> None:
    stream, clock = io.StringIO(), FakeClock()
    bar = LogProgress(total=40, description="PRM", interval=10, stream=stream, clock=clock)
    for _ in range(5):  # 5 steps of 3 s: a line once 10 s have passed since the last
        clock.now += 3
        bar.update()
    bar.set_postfix(loss=0.41234, epoch=3)
    clock.now += 12
    bar.update()
    bar.close()
    bar.close()  # closing twice writes one last line
    lines = stream.getvalue().splitlines()
    assert all(STAMP.match(line) for line in lines), lines
    bodies = [STAMP.sub("", line) for line in lines]
    assert bodies == [
        "PRM: started, 0/40",
        "PRM: 4/40 (10%), 12 s",
        "PRM: 6/40 (15%), 27 s, loss=0.4123, epoch=3",
        "PRM: done, 6/40 in 27 s, loss=0.4123, epoch=3",
    ]


def test_log_progress_wraps_an_iterable_and_closes_on_break() -> None:
    stream = io.StringIO()
    seen = []
    for item in LogProgress(range(10), description="fit", stream=stream):
        seen.append(item)
        if item == 2:
            break
    assert seen == [0, 1, 2]
    assert stream.getvalue().splitlines()[-1].endswith("fit: done, 2/10 in 0 s")


def test_progress_bar_logs_lines_off_a_terminal_and_nothing_when_disabled(capsys) -> None:
    # pytest's captured stderr is not a terminal: lines, not a bar
    assert isinstance(progress_bar(3, "phase", True), LogProgress)
    assert "phase: started, 0/3" in capsys.readouterr().err
    quiet = progress_bar(3, "phase", False)
    quiet.update()
    quiet.close()
    assert capsys.readouterr().err == ""


def _summary(names, seeds=5.0):
    summary = []
    for name in names:
        row = {"agent": name, "seeds": seeds, "fit_s": 1234.5}
        for metric, value in (
            ("reward_eval", 2.4567),
            ("pct_beam", 95.31),
            ("hr@1%", 0.5),
            ("ndcg", 0.123),
            ("latency_ms", 53.25),
        ):
            row.update({metric: value, f"{metric}_low": value - 0.01, f"{metric}_high": value})
        summary.append(row)
    return summary


def test_compact_table_fits_80_columns_for_the_readme_job_and_100_for_every_preset() -> None:
    readme = _summary([*PRESETS["quick"][:-1], "gen-eval(pointwise-greedy)", "beam-8"])
    readme[0]["latency_ms"] = float("nan")  # shown as "-"
    lines = compact_table(readme).splitlines()
    assert max(map(len, lines)) <= 80, max(lines, key=len)
    assert lines[0].split() == ["held-out", "%", "of", "ms", "per", "fit"]
    assert lines[1].split() == ["agent", "reward", "beam", "HR@1%", "NDCG@L", "request", "s"]
    assert "seeds" not in compact_table(readme)  # every agent has the same seed count
    assert "2.457 ± 0.005" in lines[2] and lines[2].split()[-2] == "-"
    assert lines[2].split()[-1] == "1234"  # fit s, rounded
    every = [name for names in PRESETS.values() for name in names]
    mixed = _summary(every) + _summary(["gen-eval(pointwise-greedy)"], seeds=1.0)
    table = compact_table(mixed)
    assert max(map(len, table.splitlines())) <= 100
    assert table.splitlines()[1].split()[:2] == ["agent", "seeds"]  # counts differ: shown


@pytest.mark.slow
def test_piped_compare_logs_progress_before_it_ends_and_quiet_keeps_the_results(
    tmp_path,
) -> None:
    command = [
        sys.executable,
        "-m",
        "agents.compare",
        "--env-kwarg",
        "num_candidates=10",
        "--env-kwarg",
        "slate_length=4",
        "--agents",
        "initial-order,seq2slate,beam-4",
        "--backend",
        "local",  # the trainers' own lines come from runs in this process
        "--budget",
        "tiny",
        "--seeds",
        "2",
        "--requests",
        "30",
        "--permutations",
        "20",
        "--out",
        str(tmp_path),
        "--name",
        "piped",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    started = time.monotonic()
    first = process.stderr.readline()
    first_after = time.monotonic() - started
    running = process.poll() is None  # the line came while the run was still going
    table, rest = process.communicate(timeout=600)
    errors = first + rest
    assert process.returncode == 0, errors
    assert running and STAMP.match(first), (first, first_after)
    assert first_after < 30
    log = errors.splitlines()
    assert any("Seq2Slate: started" in line for line in log)  # the trainer's own lines
    assert any(re.search(r"seed 1 seq2slate: fit .* held-out reward", line) for line in log)
    assert "Headroom:" in table and table.count("Headroom:") == 1
    assert max(map(len, table.splitlines())) <= 100
    assert "(default" not in table  # plain results, nothing of the help
    # --quiet: no progress at all, the same results on stdout
    quiet = subprocess.run(
        [*command[:-1], "quiet", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=600,
    )
    assert quiet.stderr == ""
    assert "seq2slate" in quiet.stdout and "Headroom:" in quiet.stdout


def test_figures_leave_the_callers_matplotlib_backend_alone(tmp_path) -> None:
    # A notebook that imports the suite and runs compare still shows its own plots:
    # no module switches the global backend (they draw on pyplot-free Figures).
    code = (
        "import types, matplotlib\n"
        "import simulators.report\n"
        "from agents.compare import plot_results\n"
        "summary = [{'agent': 'a', 'latency_ms': 1.0, 'reward_eval': 2.0,\n"
        "            'reward_eval_low': 1.9, 'reward_eval_high': 2.1}]\n"
        "curves = [{'agent': 'a', 'seed': 0, 'x': 1, 'y': 1.0, 'x_key': 'step', 'y_key': 'r'}]\n"
        "profiles = [{'agent': 'a', 'slot': 1, 'click_prob': 0.5}]\n"
        f"plot_results(__import__('pathlib').Path({str(tmp_path)!r}), summary, curves, profiles,\n"
        "             types.SimpleNamespace(requests=[0]))\n"
        "print(matplotlib.get_backend())\n"
    )
    environment = {**os.environ, "MPLBACKEND": "svg"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, check=True
    )
    assert result.stdout.strip() == "svg"
    assert {p.name for p in tmp_path.iterdir()} == {
        "learning_curves.png",
        "pareto.png",
        "credit_profile.png",
    }
