"""The README's promises: its commands run, CI runs its test command, every command has help."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from sae_report.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _block_after(heading: str) -> list[str]:
    section = README.split(heading, 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, f"no bash block after {heading!r}"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_setup_is_two_commands_and_ci_runs_the_test_command() -> None:
    setup = README.split("## Set-up: two commands on a fresh machine", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", setup, re.S)
    assert len(commands) == 2
    main_job, test_command = commands
    assert main_job.endswith("sae-report train --report")
    assert "pytest" in test_command
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines(), ".ci/run must call the README's test command verbatim"


@pytest.mark.parametrize("name", sorted(main.commands))
def test_every_command_has_help_with_an_example(name: str) -> None:
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, f"{name} --help shows no example"


def test_try_it_commands_run_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    commands = _block_after("## Try it without training")
    assert commands, "README lost its demo block"
    for line in commands:
        argv = shlex.split(line)
        assert argv[0] == "sae-report"
        result = CliRunner().invoke(main, argv[1:])
        assert result.exit_code == 0, f"{line}\n{result.output}"
    report = (tmp_path / "demo" / "train_e01c6183" / "report" / "report.md").read_text()
    assert "Initial collapse" in report and "late_spike" in report.replace("Late spike", "late_spike")
    assert (tmp_path / "next.yaml").exists()
