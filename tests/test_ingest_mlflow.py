"""MLflow stores read without mlflow: committed file store and SQLite store, stores written here
by mlflow itself, run choice, NaN/inf encoding, empty and unusable stores."""

from __future__ import annotations

import math
import shutil
import sqlite3

import pytest
from ingest_support import INGEST, assert_matches, cli, digest, mk

from sae_report.ingest import load_run
from sae_report.ingest import mlflow as ml
from sae_report.runlog import RunLogError, read_run

DB = INGEST / "mlflow.db"
MLRUNS = INGEST / "mlruns"


@pytest.mark.parametrize("store", [MLRUNS, DB, INGEST / "mlruns" / next(p.name for p in MLRUNS.iterdir() if p.name != "0")])
def test_committed_stores(store):
    data = load_run(store)
    assert (data.source, data.sampled) == ("mlflow", False)
    assert_matches(data, mk.truth(**mk.FIXTURE))  # NaN at step 1250 stays NaN
    assert math.isnan(data.metrics.filter(data.metrics["step"] == mk.NAN_STEP)["loss"][0])
    assert data.config["d_sae"] == 64 and data.config["l1_alpha"] == 5.0 and data.config["learning_rate"] == 3e-4
    assert data.config["model_name"] == "tiny-stories-1M"
    assert "(saelens-style), 333 metric point(s); 41 rows, steps 0-2000, 10 of 10 logged metric(s) used" in data.notes[0]


def _db_copy(tmp_path):
    db = tmp_path / "mlflow.db"
    shutil.copy2(DB, db)
    return db


def test_empty_store(tmp_path):
    db = _db_copy(tmp_path)
    with sqlite3.connect(db) as con:
        con.execute("delete from metrics")
        con.execute("delete from params")
        con.execute("delete from runs")
    res = cli("import", db, "--out", tmp_path / "out")
    assert (res.exit_code, res.stderr) == (2, f"Error: {db}: empty MLflow store (no runs)\n")


def test_run_without_metrics_and_unknown_keys(tmp_path):
    db = _db_copy(tmp_path)
    with sqlite3.connect(db) as con:
        con.execute("update metrics set key = 'eval/' || replace(key, '/', '_')")
    with pytest.raises(RunLogError) as err:
        load_run(db)
    assert str(err.value) == (f"{db}: no known metric (found: eval/losses_overall_loss, eval/losses_mse_loss, "
                              "eval/losses_l1_loss, eval/metrics_explained_variance, eval/metrics_l0, "
                              "eval/details_current_learning_rate, ...); map a name with --map NAME=COLUMN (e.g. --map loss/total=loss)")
    with sqlite3.connect(db) as con:
        con.execute("delete from metrics")
    (run_id,) = sqlite3.connect(db).execute("select run_uuid from runs").fetchone()
    res = cli("import", db, "--out", tmp_path / "out")
    assert (res.exit_code, res.stderr) == (2, f"Error: {db}: MLflow run {run_id} has no metrics\n")


def test_nan_inf_encoding_and_deleted_runs(tmp_path):
    db = _db_copy(tmp_path)
    (run_id,) = sqlite3.connect(db).execute("select run_uuid from runs").fetchone()
    with sqlite3.connect(db) as con:
        con.execute("insert into metrics values ('metrics/l0', 1.7976931348623157e308, 5, ?, 2001, 0)", (run_id,))
    data = load_run(db)
    assert data.metrics.filter(data.metrics["step"] == 2001)["l0"][0] == math.inf
    assert "1 NaN and 1 infinite value(s) restored from MLflow's encoding" in data.notes
    with sqlite3.connect(db) as con:
        con.execute("update runs set lifecycle_stage = 'deleted'")
    with pytest.raises(RunLogError, match=r"every run in this MLflow store is deleted; pick one with --run$"):
        load_run(db)
    assert load_run(db, run=run_id[:8]).run_id == run_id  # asked for by id prefix: still readable


def test_not_an_mlflow_database(tmp_path):
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as con:
        con.execute("create table t (x)")
    assert not ml.detect(db)
    res = cli("import", db, "--source", "mlflow", "--out", tmp_path / "out")
    assert (res.exit_code, res.stderr) == (
        2, f"Error: {db}: not an MLflow store (no SQLite database with metrics and runs tables)\n")


def test_file_store_cut_line(tmp_path):
    store = tmp_path / "mlruns"
    shutil.copytree(MLRUNS, store)
    (f,) = store.glob("*/*/metrics/metrics/l0")
    f.write_bytes(f.read_bytes() + b"1795320000000 99.0 20")  # a write cut before its newline
    data = load_run(store)
    assert "metrics/metrics/l0: dropped a last line cut short by an interrupted write" in data.notes
    assert data.metrics["step"].max() == 2000


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Two runs (different cadences and l1) logged by mlflow itself to a file store and a SQLite store."""
    pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("mlflow")
    a = mk.truth(total=200, every=10, dead_every=100, rare_every=200)
    b = mk.truth(total=100, every=20, dead_every=100, rare_every=100)
    runs = [("l1-5", {**mk.CONFIG}, a), ("l1-10", {**mk.CONFIG, "l1_coefficient": 10.0}, b)]
    stores = {"file": root / "mlruns"}
    try:
        import alembic  # noqa: F401 - mlflow's SQLite store needs sqlalchemy + alembic
        import sqlalchemy  # noqa: F401
        stores["sqlite"] = root / "mlflow.db"
    except ImportError:
        pass
    uris = {k: (f"file://{p}" if k == "file" else f"sqlite:///{p}") for k, p in stores.items()}
    ids = mk.write_mlflow(list(uris.values()), runs)
    return {k: (stores[k], ids[uris[k]]) for k in stores}, runs


@pytest.mark.parametrize("kind", ["file", "sqlite"])
def test_stores_written_by_mlflow(written, kind, tmp_path):
    stores, runs = written
    if kind not in stores:
        pytest.skip("mlflow's SQLite store needs sqlalchemy and alembic")
    target, ids = stores[kind]
    before = digest(target)
    res = cli("import", target, "--out", tmp_path / "o")
    assert res.exit_code == 2
    assert res.stderr.startswith(f"Error: {target}: holds 2 MLflow runs; pick one with --run (")
    for run_id, (name, _, _) in zip(ids, runs):
        assert f"{run_id} ({name})" in res.stderr
    first = load_run(target, run="l1-5")  # by name
    assert first.run_id == ids[0]
    assert_matches(first, runs[0][2])
    second = load_run(target, run=ids[1][:10])  # by id prefix
    assert second.run_id == ids[1] and second.config["l1_alpha"] == 10.0
    assert_matches(second, runs[1][2])
    res = cli("import", target, "--all", "--out", tmp_path / "sweep")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["l1-10", "l1-5"]  # run names
    swept = read_run(tmp_path / "sweep" / "l1-10")
    assert swept.run_id == "l1-10" and swept.config["imported_from"]["run_id"] == ids[1]
    assert digest(target) == before  # read-only
