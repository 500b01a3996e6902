"""`sae-report train` through the CLI: config errors, kill -9, resume, Ctrl-C, non-finite loss, --report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sae_report.cli import main
from sae_report.runlog import read_run

torch = pytest.importorskip("torch")

TINY = ["d_in=16", "d_sae=64", "batch_size=128", "threads=1", "synth_active=3", "dead_window=50"]


def sets(*items: str) -> list[str]:
    out: list[str] = []
    for item in (*TINY, *items):
        out += ["--set", item]
    return out


def run_cli(*args: str):
    return CliRunner().invoke(main, ["train", *args], catch_exceptions=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "l1_alpha=abc"], "Error: --set l1_alpha=abc: l1_alpha: must be a number, got 'abc'"),
        (["--set", "l1_alpha=-1"], "Error: --set l1_alpha=-1: l1_alpha: must be >= 0, got -1.0"),
        (["--set", "batch_size=1.5"], "Error: --set batch_size=1.5: batch_size: must be an integer, got 1.5"),
        (["--set", "device=gpu"], "Error: --set device=gpu: device: must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        (["--set", "sae_variant=gated"], "Error: --set sae_variant=gated: sae_variant: must be one of standard, april2024, topk, batchtopk, jumprelu, got 'gated'"),
        (["--set", "l1_alpah=0.1"], "Error: --set l1_alpah=0.1: unknown key 'l1_alpah' (did you mean 'l1_alpha'?)"),
        (["--set", "l1_alpha"], "Error: --set l1_alpha: expected key=value"),
        (["--set", "data_source=files"], "Error: --set data_source=files: data_path: is required when data_source is files"),
        (["--set", "l1_alpha_schedule={100: 0.02}"],
         "Error: --set l1_alpha_schedule={100: 0.02}: l1_alpha_schedule: must map steps to values and include step 0, got {100: 0.02}"),
    ],
)
def test_bad_values_are_one_line_errors(args: list[str], message: str) -> None:
    result = run_cli(*args)
    assert result.exit_code == 2
    assert result.stderr.strip() == message


def test_bad_config_file_and_data_path(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("l1_alpha: 0.05\nresample_intervall: 15000\n")
    result = run_cli(str(cfg))
    assert (result.exit_code, result.stderr.strip()) == (
        2, f"Error: {cfg}: unknown key 'resample_intervall' (did you mean 'resample_interval'?)")
    cfg.write_text("total_steps: many\n")
    assert run_cli(str(cfg)).stderr.strip() == f"Error: {cfg}: total_steps: must be an integer, got 'many'"
    cfg.write_text("- a list\n")
    assert run_cli(str(cfg)).stderr.strip() == f"Error: {cfg}: must be a mapping of key: value, got list"
    assert run_cli(str(tmp_path / "nope.yaml")).stderr.strip() == f"Error: {tmp_path / 'nope.yaml'}: no such config file"
    bad = tmp_path / "acts.npy"
    np.save(bad, np.zeros(10, dtype=np.float32))
    result = run_cli("--set", "data_source=files", "--set", f"data_path={bad}", "--out", str(tmp_path / "runs"))
    assert (result.exit_code, result.stderr.strip()) == (
        2, f"Error: {bad}: expected a 2-D float array [n_tokens, d_in], got shape [10]")
    assert not (tmp_path / "runs").exists()  # nothing half-written


def _spawn(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "sae_report", "train", "-q", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _wait_for(pred, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while not pred():
        if proc.poll() is not None:
            raise AssertionError(f"training exited early: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.05)


def _metric_rows(run: Path) -> int:
    parts = list((run / "metrics").glob("part-*.csv"))
    return sum(p.read_bytes().count(b"\n") - 1 for p in parts) if parts else 0


def test_killed_run_reads_back_and_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    common = sets("total_steps=400", "checkpoint_every=40", "flush_every=5", "resample_interval=100", "dead_window=20")
    # the reference: uninterrupted, in-process
    assert run_cli(*common, "-q", "--out", str(tmp_path / "ref")).exit_code == 0
    (ref_dir,) = (tmp_path / "ref").iterdir()
    ref = read_run(ref_dir)

    run = tmp_path / "killed"
    proc = _spawn([*common, "--out", str(tmp_path / "k")])
    _wait_for(lambda: (tmp_path / "k").exists() and any((tmp_path / "k").iterdir()), proc)
    (run,) = (tmp_path / "k").iterdir()
    _wait_for(lambda: (run / "checkpoints" / "step_000000080").exists() and _metric_rows(run) >= 95, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = read_run(run)  # everything up to the last flush is there, nothing earlier is corrupted
    steps = killed.metrics["step"].to_list()
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 95
    assert not (run / "summary.json").exists()
    cols = [c for c in killed.metrics.columns if c != "elapsed_s"]
    assert killed.metrics.select(cols).equals(ref.metrics.select(cols).head(len(steps)))

    result = run_cli("--resume", str(run), "-q")
    assert result.exit_code == 0, result.output
    resumed = read_run(run)
    assert resumed.metrics["step"].to_list() == list(range(1, 401))  # no gaps, no duplicates
    assert resumed.metrics.select(cols).equals(ref.metrics.select(cols))  # bit for bit the same run
    (resume_ev,) = [e for e in resumed.events if e.kind == "resume"]
    assert resume_ev.step % 40 == 0 and resume_ev.step >= 80
    kinds = lambda d: [(e.step, e.kind, e.data.get("n")) for e in d.events if e.kind in ("resample", "checkpoint")]  # noqa: E731
    assert kinds(resumed) == kinds(ref)
    assert json.loads((run / "summary.json").read_text())["resumed_from_step"] == resume_ev.step


def test_ctrl_c_flushes_checkpoints_and_exits_cleanly(tmp_path: Path) -> None:
    proc = _spawn([*sets("total_steps=100000", "flush_every=5"), "--out", str(tmp_path)])
    _wait_for(lambda: any(tmp_path.iterdir()) and _metric_rows(next(tmp_path.iterdir())) >= 20, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert b"Traceback" not in err
    (run,) = tmp_path.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    data = read_run(run)
    assert data.metrics["step"].to_list() == list(range(1, summary["steps"] + 1))
    assert (run / "checkpoints" / "final" / "sae.safetensors").exists()
    assert [e.kind for e in data.events][-2:] == ["interrupt", "end"]
    assert f"resume with: sae-report train --resume {run}" in out.decode()
    # resuming with more steps continues the same log
    result = run_cli("--resume", str(run), "--set", f"total_steps={summary['steps'] + 10}", "-q")
    assert result.exit_code == 0, result.output
    data = read_run(run)
    assert data.metrics["step"].to_list() == list(range(1, summary["steps"] + 11))
    # config.yaml says what is in force now and keeps the history; the log records the change
    new_total = summary["steps"] + 10
    assert data.config["total_steps"] == new_total
    assert data.config["resumes"] == [{"step": summary["steps"], "checkpoint": f"checkpoints/step_{summary['steps']:09d}",
                                       "changes": {"total_steps": {"from": 100000, "to": new_total}}}]
    assert [e.data["changed"] for e in data.events if e.kind == "resume"] == [{"total_steps": new_total}]
    (change,) = [e for e in data.events if e.kind == "config_change"]
    assert (change.step, change.data) == (summary["steps"] + 1, {"key": "total_steps", "from": 100000, "to": new_total})


def test_nonfinite_loss_stops_and_keeps_everything(tmp_path: Path) -> None:
    acts = np.random.default_rng(0).normal(size=(4096, 16)).astype(np.float32)
    acts[700] = np.inf  # a corrupt token
    np.save(tmp_path / "acts.npy", acts)
    args = sets("d_in=null", "data_source=files", f"data_path={tmp_path / 'acts.npy'}", "normalize_input=false",
                "total_steps=200", "flush_every=7", "shuffle_buffer_tokens=4096", "shuffle_block_tokens=4096")
    result = run_cli(*args, "-q", "--out", str(tmp_path / "runs"))
    assert result.exit_code == 1
    (run,) = (tmp_path / "runs").iterdir()
    data = read_run(run)
    (ev,) = [e for e in data.events if e.kind == "nonfinite"]
    assert data.metrics["step"][-1] == ev.step and not np.isfinite(data.metrics["loss"][-1])
    assert np.isfinite(data.metrics["loss"][:-1].to_numpy()).all()
    assert json.loads((run / "summary.json").read_text())["status"] == "diverged"


def test_train_report_end_to_end(tmp_path: Path) -> None:
    result = run_cli(*sets("total_steps=60"), "-q", "--report", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    (run,) = tmp_path.iterdir()
    assert f"run directory: {run}" in result.stdout
    written = [Path(line.split("Wrote ", 1)[1].strip()) for line in result.stdout.splitlines() if line.startswith("Wrote ")]
    assert written and all(p.exists() for p in written), result.stdout
    assert {p.suffix for p in written} >= {".md", ".html", ".json"}


def test_importing_sae_report_and_the_train_command_does_not_import_torch() -> None:
    code = "import sys, sae_report, sae_report.cli, sae_report.commands.train; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_train_without_torch_says_how_to_install(tmp_path: Path) -> None:
    # a sitecustomize that hides torch, as on a machine without the [train] extra
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['torch'] = None\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "sae_report", "train"], capture_output=True, text=True, env=env)
    assert out.returncode == 1
    assert out.stderr.strip() == "Error: the trainer needs torch: pip install 'sae-report[train]'"


def test_init_from_errors_are_one_line(tmp_path: Path) -> None:
    assert run_cli(*sets("total_steps=20"), "-q", "--out", str(tmp_path / "a")).exit_code == 0
    (src,) = (tmp_path / "a").iterdir()
    result = run_cli(*sets("total_steps=5", "d_sae=32", f"init_from={src}"), "-q", "--out", str(tmp_path / "b"))
    assert (result.exit_code, result.stderr.strip()) == (
        2, f"Error: {src / 'checkpoints' / 'step_000000020'}: W_enc has shape [16, 64], this SAE needs [16, 32]")
    result = run_cli(*sets(f"init_from={tmp_path / 'none'}"), "-q", "--out", str(tmp_path / "b"))
    assert result.stderr.strip() == (f"Error: {tmp_path / 'none'}: no checkpoint "
                                     "(expected sae.safetensors or checkpoints/step_*/)")
    result = run_cli("--resume", str(tmp_path / "none"))
    assert (result.exit_code, result.stderr.strip()) == (2, f"Error: {tmp_path / 'none'}: no such run directory")


# ------------------------------------------------------------------------------------------------
# --print-config, --list-keys
# ------------------------------------------------------------------------------------------------


def test_print_config_prints_the_resolved_config_and_trains_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from trainer import TrainConfig

    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("l1_alpha: 0.02\nd_in: 32\n")
    result = run_cli(str(cfg), "--set", "expansion_factor=4", "--set", "lr=0.001", "--print-config")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"# sae-report train --print-config: {cfg} with --set applied, every key resolved"
    doc = yaml.safe_load(result.stdout)
    assert list(doc) == TrainConfig.keys()  # every key, in the documented order
    assert (doc["l1_alpha"], doc["learning_rate"], doc["d_in"], doc["d_sae"], doc["data_seed"], doc["synth_features"],
            doc["resample_interval"], doc["l1_schedule"]) == (0.02, 0.001, 32, 128, 0, 64, 1000, "constant")
    assert not list(tmp_path.glob("runs*"))  # nothing trained
    # what it prints trains as it says: read back, it is the same config
    out = tmp_path / "resolved.yaml"
    out.write_text(result.stdout)
    assert TrainConfig.from_yaml(out).to_dict() == doc

    # activation files: d_in from their header; a resumed run: its own config with --set
    acts = tmp_path / "acts.npy"
    np.save(acts, np.zeros((256, 24), dtype=np.float32))
    files = run_cli("--set", "data_source=files", "--set", f"data_path={acts}", "--print-config")
    assert (files.exit_code, yaml.safe_load(files.stdout)["d_in"], yaml.safe_load(files.stdout)["d_sae"]) == (0, 24, 192)
    assert run_cli(*sets("total_steps=30"), "-q", "--out", str(tmp_path / "runs")).exit_code == 0
    (run,) = (tmp_path / "runs").iterdir()
    resumed = run_cli("--resume", str(run), "--set", "total_steps=60", "--print-config")
    assert resumed.exit_code == 0, resumed.output
    assert (yaml.safe_load(resumed.stdout)["total_steps"], yaml.safe_load(resumed.stdout)["d_sae"]) == (60, 64)
    assert resumed.stdout.splitlines()[0].endswith(f"--resume {run} with --set applied, every key resolved")
    assert read_run(run).metrics["step"].max() == 30  # not trained further
    # errors are the training's own one-line errors
    bad = run_cli("--set", "data_source=files", "--set", f"data_path={tmp_path / 'none'}", "--print-config")
    assert (bad.exit_code, bad.stderr.strip()) == (2, f"Error: {tmp_path / 'none'}: no such file or directory")


@pytest.mark.parametrize("columns", [80, 200])
def test_list_keys_names_every_key_with_type_default_and_meaning(columns: int) -> None:
    import dataclasses

    from trainer import TrainConfig
    from trainer.docs_keys import field_docs

    result = CliRunner(env={"COLUMNS": str(columns)}).invoke(main, ["train", "--list-keys"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    heads = {line.split(":", 1)[0]: line for line in lines if line and not line.startswith(" ") and ": " in line
             and " = " in line}
    assert list(heads) == [f.name for f in dataclasses.fields(TrainConfig)]
    assert heads["l1_alpha"] == "l1_alpha: float | null = null"
    assert heads["resample_interval"] == "resample_interval: int | null = null"
    assert heads["sae_variant"] == "sae_variant: standard | april2024 | topk | batchtopk | jumprelu = standard"
    assert heads["l1_alpha_schedule"] == "l1_alpha_schedule: dict[int, float] | null = null"
    assert heads["normalize_input"] == "normalize_input: bool = true"
    text = " ".join(line.strip() for line in lines)
    for doc in field_docs().values():
        assert doc in text
    assert all(len(line) <= min(columns, 100) for line in lines)
