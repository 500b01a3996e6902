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


def test_flags_for_config_keys_are_declared_by_trainconfig() -> None:
    """A flag that sets a training key takes its type and help from ``TrainConfig`` (one declaration):
    the field's first docstring sentence is in the help, and a bad value is refused by the field's
    range, spelled as the key is spelled."""
    from click.testing import CliRunner

    from trainer.docs_keys import field_docs

    docs = field_docs()
    for command, keys in (("analyze", ("d_sae", "l1_alpha", "learning_rate", "resample_interval", "total_steps")),
                          ("track", ("batch_size", "d_sae", "l1_alpha", "learning_rate", "seed", "threads"))):
        params = {p.name: p for p in main.commands[command].params}
        for key in keys:
            opt = params[key]
            assert opt.opts == ["--" + key.replace("_", "-")], (command, key)
            assert opt.help.startswith(docs[key].split(". ")[0].rstrip(".")), (command, key, opt.help)
    res = CliRunner().invoke(main, ["analyze", "x.csv", "--d-sae", "0"])
    assert res.exit_code == 2 and "Invalid value for '--d-sae'" in res.output
