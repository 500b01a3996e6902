"""docs/cli.md is the commands' --help, regenerated: the reference cannot drift from the code."""

from __future__ import annotations

from pathlib import Path

from sae_report.cli import main
from sae_report.cli_reference import reference

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_the_cli_reference_is_the_commands_help() -> None:
    assert DOC.read_text(encoding="utf-8") == reference(), (
        "docs/cli.md is stale: python -m sae_report.cli_reference > docs/cli.md")


def test_the_reference_has_every_command() -> None:
    text = reference()
    for name in main.commands:
        assert f"## sae-report {name}\n" in text
        assert f"Usage: sae-report {name} " in text
