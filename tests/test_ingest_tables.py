"""Reading metrics tables (CSV, NDJSON, Parquet) and the names other trainers log."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest

from sae_report.ingest import load_run
from sae_report.runlog.aliases import canonical_config, canonicalize
from sae_report.ingest.tables import detect, read
from sae_report.runlog import RunLogError


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_csv_unsorted_duplicates_truncated_nonfinite(tmp_path: Path) -> None:
    f = _write(tmp_path / "metrics.csv",
               "step,l0_pct,dead_features,loss\n3,5,10,0.1\n1,50,0,nan\n2,10,inf,0.5\n2,9,5,-Infinity\n4,4.5,")
    _write(tmp_path / "config.yaml", "d_sae: 100\ntarget_l0: 0.05\n")
    data = read(f)
    m = data.metrics
    assert m["step"].to_list() == [1, 2, 3]
    assert m["l0_frac"].to_list() == [0.5, 0.09, 0.05]  # percent -> fraction; the later write of step 2 wins
    assert m["l0"].to_list() == [50.0, 9.0, 5.0]  # count from d_sae
    assert m["dead"].to_list() == [0.0, 5.0, 10.0] and m["dead_frac"].to_list() == [0.0, 0.05, 0.1]
    loss = m["loss"].to_list()
    assert math.isnan(loss[0]) and loss[1] == -math.inf  # kept: non-finite values are signals
    assert "metrics.csv: dropped a last line cut short by an interrupted write" in data.notes
    assert data.run_id == tmp_path.name and data.source == "csv" and data.config["d_sae"] == 100


def test_csv_complete_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    data = read(_write(tmp_path / "m.csv", "step,loss\n1,0.5\n2,0.25"))
    assert data.metrics["step"].to_list() == [1, 2]
    assert not any("cut short" in n for n in data.notes)


def test_different_cadences_are_joined_on_step_never_forward_filled(tmp_path: Path) -> None:
    f = _write(tmp_path / "m.csv", "step,loss,dead_features\n10,1.0,\n20,0.9,\n30,0.8,7\n40,0.7,\n")
    m = read(f).metrics
    assert m["dead"].to_list() == [None, None, 7.0, None]


def test_ndjson_python_tokens_late_keys_split_rows_bad_lines(tmp_path: Path) -> None:
    lines = ['{"step": 1, "loss": NaN}', '{"step": 2, "loss": Infinity, "l0": 3}', '{"step": 2, "metrics/l0": 4}',
             'not json', '[1, 2]'] + [f'{{"step": {s}, "loss": 0.1}}' for s in range(3, 1200)] + [
             '{"step": 1200, "late/only": 1, "sparsity/dead_features": 7}', '{"step": 1201, "lo']
    f = _write(tmp_path / "log.ndjson", "\n".join(lines))
    _write(tmp_path / "config.json", '{"d_sae": 100}')
    data = read(f)
    m = data.metrics
    assert m.height == 1200
    row = {k: m[k].to_list() for k in ("step", "loss", "l0", "dead")}
    assert math.isnan(row["loss"][0]) and row["loss"][1] == math.inf
    assert row["l0"][1] == 4.0  # the later write of step 2 wins, the earlier loss stays
    assert row["dead"][-1] == 7.0  # a key first seen after 1000 lines is kept
    assert "log.ndjson: skipped 2 unreadable line(s)" in data.notes
    assert "log.ndjson: dropped a last line cut short by an interrupted write" in data.notes


def test_parquet_and_directory_of_tables(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    pl.DataFrame({"_step": [2, 1], "losses/overall_loss": [0.5, 0.6], "metrics/l0": [30.0, 40.0]}).write_parquet(
        tmp_path / "run" / "history.parquet")
    assert detect(tmp_path / "run") and detect(tmp_path / "run" / "history.parquet")
    data = load_run(tmp_path / "run")
    assert data.source == "parquet" and data.metrics["step"].to_list() == [1, 2]
    assert data.metrics["loss"].to_list() == [0.6, 0.5] and data.metrics["l0"].to_list() == [40.0, 30.0]


def test_several_tables_need_a_choice(tmp_path: Path) -> None:
    _write(tmp_path / "a.csv", "step,loss\n1,1\n")
    _write(tmp_path / "b.csv", "step,loss\n1,1\n")
    with pytest.raises(RunLogError) as err:
        read(tmp_path)
    assert str(err.value) == f"{tmp_path}: several metrics files (a.csv, b.csv); pick one with --run NAME or pass the file"
    assert read(tmp_path, run="b").run_id == "b"


@pytest.mark.parametrize("name,content,message", [
    ("empty.csv", "", "empty file"),
    ("header.csv", "step,loss\n", "only a header line, no rows"),
    ("nostep.csv", "loss,l0\n1,2\n", "no step column (looked for step, _step, global_step, ...) among 2 column(s)"),
    ("unknown.csv", "step,foo,bar\n1,2,3\n", "no known metric column (found: step, foo, bar); map a name with --map NAME=COLUMN (e.g. --map loss/total=loss)"),
    ("empty.ndjson", "\n\n", "empty file"),
    ("junk.ndjson", "hello\nworld\n", "no JSON objects in the file"),
    ("bad.parquet", "PAR1 not really", "not a readable Parquet file"),
])
def test_unusable_tables_give_one_line_naming_the_file(tmp_path: Path, name: str, content: str, message: str) -> None:
    f = _write(tmp_path / name, content)
    with pytest.raises(RunLogError) as err:
        read(f)
    text = str(err.value)
    assert text.startswith(f"{f}: {message}") and "\n" not in text


def test_saelens_sparsify_dictionary_learning_names() -> None:
    saelens = pl.DataFrame({"step": [0, 10], "losses/overall_loss": [1.0, 0.5], "losses/mse_loss": [0.9, 0.4],
                            "metrics/l0": [2048.0, 40.0], "sparsity/dead_features": [0.0, 12.0],
                            "details/current_learning_rate": [1e-4, 1e-4], "details/current_l1_coefficient": [5.0, 5.0],
                            "details/n_training_tokens": [0.0, 40960.0], "metrics/explained_variance": [0.1, 0.8]})
    c = canonicalize(saelens, {"sae": {"d_sae": 4096}, "lr": 1e-4})
    assert c.d_sae == 4096
    assert set(c.frame.columns) == {"step", "tokens", "loss", "mse", "l1_alpha", "lr", "l0", "l0_frac", "dead",
                                    "dead_frac", "explained_variance"}
    assert c.frame["l0_frac"].to_list() == [0.5, 40 / 4096]
    sparsify = pl.DataFrame({"step": [1, 2], "fvu/layers.6": [0.5, 0.2], "fvu/layers.7": [0.9, 0.9],
                             "dead_pct/layers.6": [0.0, 0.25]})
    c = canonicalize(sparsify, {"num_latents": 100})
    assert c.frame["explained_variance"].to_list() == [0.5, 0.8]
    assert c.frame["dead_frac"].to_list() == [0.0, 0.25] and c.frame["dead"].to_list() == [0.0, 25.0]
    assert any("fvu/layers.7" in n for n in c.notes)
    dl = pl.DataFrame({"step": [1, 2], "l0": [30.0, 20.0], "frac_variance_explained": [0.7, 0.8],
                       "mse_loss": [0.2, 0.1], "sparsity_loss": [3.0, 2.0]})
    c = canonicalize(dl, {"dict_size": 1000})
    assert c.frame["l0_frac"].to_list() == [0.03, 0.02] and c.frame["l1"].to_list() == [3.0, 2.0]


def test_d_sae_inferred_from_a_count_beside_its_fraction() -> None:
    c = canonicalize(pl.DataFrame({"step": [1, 2], "dead": [10.0, 20.0], "dead_frac": [0.1, 0.2], "l0": [5.0, 4.0]}), {})
    assert c.d_sae == 100 and c.frame["l0_frac"].to_list() == [0.05, 0.04]


def test_canonical_config_maps_other_trainers_keys() -> None:
    cfg = canonical_config({"l1_coefficient": 5, "lr": 3e-4, "d_in": 512, "expansion_factor": 8,
                            "training_tokens": 4096 * 1000, "train_batch_size_tokens": 4096,
                            "wandb_thing": {"value": 1, "desc": None}})
    assert (cfg["l1_alpha"], cfg["learning_rate"], cfg["d_sae"], cfg["total_steps"]) == (5, 3e-4, 4096, 1000)
    assert cfg["wandb_thing"] == 1
    assert canonical_config({"target_l0": 205, "d_sae": 4096})["target_l0"] == pytest.approx(0.05, rel=1e-3)


def test_saelens_style_csv_at_two_cadences_is_analyzed_end_to_end(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sae_report.cli import main
    from sae_report.fixtures import generate

    g = generate("writeup", steps=50_000, seed=2, rows=1000)
    c = g.columns
    every10 = (c["step"] // 50) % 10 == 0
    frame = pl.DataFrame({
        "global_step": c["step"], "metrics/l0": c["l0"], "losses/overall_loss": c["loss"],
        "sparsity/dead_features": pl.Series([float(v) if keep else None for v, keep in zip(c["dead"], every10)]),
        "details/current_l1_coefficient": c["l1_alpha"],
    })
    frame.write_csv(tmp_path / "metrics.csv")
    (tmp_path / "config.yaml").write_text("sae:\n  d_sae: 8192\nl1_coefficient: 0.065\ntarget_l0: 0.05\n")
    res = CliRunner().invoke(main, ["analyze", str(tmp_path / "metrics.csv"), "--json", "--no-siblings"])
    assert res.exit_code == 0, res.output
    import json

    doc = json.loads(res.stdout)
    kinds = {(f["kind"], f["metric"]) for f in doc["findings"]}
    assert {("collapse", "l0_frac"), ("recovery", "l0_frac"), ("oscillation", "l0_frac")} <= kinds
    assert doc["run"]["d_sae"] == 8192 and doc["run"]["config"]["l1_alpha"] == 0.065
    assert doc["summary"]["dead_frac"]["final"] == pytest.approx(c["dead"][-1] / 8192)
