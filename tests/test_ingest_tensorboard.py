"""TensorBoard event files: committed fixture (no library needed), files written here by torch's
SummaryWriter and by the tensorboard package, truncation, restarts, run choice, bad input."""

from __future__ import annotations

import math
import shutil
import struct
from pathlib import Path

import pytest
from ingest_support import INGEST, assert_matches, cli, mk

from sae_report.ingest import load_run, tensorboard
from sae_report.ingest.tfevents import masked_crc32c, read_records
from sae_report.runlog import RunLogError

TB = INGEST / "tensorboard"
F32 = 1e-6  # simple_value is a float32


def _main_file(logdir: Path) -> Path:
    return max(logdir.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_size)


def test_committed_fixture_every_point_and_hparams():
    data = load_run(TB)
    assert data.source == "tensorboard" and data.sampled is False
    assert data.run_id == "saelens-style"
    assert_matches(data, mk.truth(**mk.FIXTURE), rel=F32)
    # hparams come from the add_hparams subdirectory and map onto our names
    assert data.config["d_sae"] == 64 and data.config["l1_alpha"] == 5 and data.config["learning_rate"] == pytest.approx(3e-4)
    assert data.notes[0].startswith("source: TensorBoard run saelens-style, 1 event file(s), ")
    assert "41 rows, steps 0-2000" in data.notes[0] and "full history, not sampled" in data.notes[0]
    assert "hyperparameters from saelens-style/hparams/ (written by add_hparams)" in data.notes
    # new-style tensor summaries (sparsity/*) are read: dead is logged every 1000 steps only
    dead = data.metrics.filter(data.metrics["dead"].is_not_null())
    assert dead["step"].to_list() == [0, 1000, 2000] and dead["dead"].to_list() == [0.0, 7.0, 14.0]


def test_crc32c_matches_known_vector():
    # RFC 3720 test vector: CRC32C("123456789") = 0xE3069283; masked as TFRecord does
    crc = 0xE3069283
    assert masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_torch_summarywriter_run(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("tensorboard")  # torch.utils.tensorboard needs it
    points = mk.truth(total=200, every=10, dead_every=100, rare_every=200)
    mk.write_tensorboard(tmp_path / "run", points)
    data = load_run(tmp_path / "run")
    assert data.run_id == "run" and data.config["d_sae"] == 64
    assert_matches(data, points, rel=F32)


def test_no_point_cap(tmp_path):
    # one tag with 12,000 points beside a tag logged every 1000 steps; EventAccumulator keeps 10,000
    events = [(s, "details/grad_norm", float(s)) for s in range(12_000)]
    events += [(s, "sparsity/dead_features", float(s // 1000)) for s in range(0, 12_000, 1000)]
    _write_events(tmp_path / "events.out.tfevents.1.host", events)
    data = load_run(tmp_path)
    assert data.metrics.height == 12_000
    assert data.metrics["grad_norm"].to_list() == [float(s) for s in range(12_000)]
    assert data.metrics["dead"].null_count() == 12_000 - 12


def test_tensorboard_package_tensor_dtypes(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    w = EventFileWriter(str(tmp_path))
    meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    tensors = {
        "metrics/l0": tensor_pb2.TensorProto(dtype=types_pb2.DT_DOUBLE, double_val=[12.5]),
        "losses/mse_loss": tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=struct.pack("<f", 0.25)),
        "sparsity/dead_features": tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64, int64_val=[-3]),
        "losses/l1_loss": tensor_pb2.TensorProto(dtype=types_pb2.DT_HALF, half_val=[struct.unpack("<H", struct.pack("<e", 1.5))[0]]),
    }
    for step in (0, 5):
        values = [summary_pb2.Summary.Value(tag=t, tensor=v, metadata=meta if step == 0 else None) for t, v in tensors.items()]
        w.add_event(event_pb2.Event(step=step, wall_time=1.0 + step, summary=summary_pb2.Summary(value=values)))
    # a histogram-like 2-element tensor and an image are not scalars
    hist = tensor_pb2.TensorProto(dtype=types_pb2.DT_DOUBLE, double_val=[1.0, 2.0],
                                  tensor_shape={"dim": [{"size": 2}]})
    w.add_event(event_pb2.Event(step=5, summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="h", tensor=hist)])))
    w.close()
    data = load_run(tmp_path)
    row = data.metrics.filter(data.metrics["step"] == 5).row(0, named=True)
    assert (row["l0"], row["mse"], row["dead"], row["l1"]) == (12.5, 0.25, -3.0, 1.5)
    assert row["elapsed_s"] == 5.0
    assert any(n.startswith("non-scalar values not read") and n.endswith(": h") for n in data.notes)


def test_truncated_file_reads_complete_records(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(TB / "saelens-style", run)
    f = _main_file(run)
    raw = f.read_bytes()
    f.write_bytes(raw[: len(raw) - 30])  # the last record cut
    data = load_run(run)
    assert data.metrics["step"].max() == 2000
    assert any(n.startswith(f"{f.name}: cut short after ") and n.endswith("(an interrupted write)") for n in data.notes)


def test_truncated_to_nothing_is_one_line_error(tmp_path):
    f = tmp_path / "events.out.tfevents.1.host"
    f.write_bytes(_main_file(TB / "saelens-style").read_bytes()[:9])
    res = cli("import", f, "--out", tmp_path / "out")
    assert res.exit_code == 2
    assert res.stderr == (f"Error: {f}: no complete scalar event (cut short after 0 complete record(s) "
                          "(an interrupted write))\n")
    assert not (tmp_path / "out").exists()


def test_garbage_event_file_is_one_line_error(tmp_path):
    f = tmp_path / "events.out.tfevents.2.host"
    f.write_bytes(b"this is not a TFRecord file at all\n" * 3)
    with pytest.raises(RunLogError) as err:
        load_run(f)
    assert str(err.value) == (f"{f}: no complete scalar event (bad record header after 0 complete "
                              "record(s) (corrupt or not an event file))")


def _write_events(path: Path, events: list[tuple[int, str, float]]) -> None:
    """Hand-framed TFRecord events with simple_value (for restart cases); framing checked by read_records."""
    def varint(n: int) -> bytes:
        out = b""
        while True:
            b = n & 0x7F
            n >>= 7
            out += bytes([b | (0x80 if n else 0)])
            if not n:
                return out

    def ld(num: int, payload: bytes) -> bytes:
        return varint(num << 3 | 2) + varint(len(payload)) + payload

    blob = b""
    for step, tag, value in events:
        val = ld(1, tag.encode()) + varint(2 << 3 | 5) + struct.pack("<f", value)
        ev = varint(1 << 3 | 1) + struct.pack("<d", 100.0 + step) + varint(2 << 3) + varint(step) + ld(5, ld(1, val))
        head = struct.pack("<Q", len(ev))
        blob += head + struct.pack("<I", masked_crc32c(head)) + ev + struct.pack("<I", 0)
    path.write_bytes(blob)
    assert len(read_records(path).records) == len(events)


def test_restart_supersedes_later_steps(tmp_path):
    # first file logs 0..90; the resumed run (second file) restarts at 50 with other values
    _write_events(tmp_path / "events.out.tfevents.100.host", [(s, "loss", 1.0) for s in range(0, 100, 10)])
    _write_events(tmp_path / "events.out.tfevents.200.host", [(s, "loss", 2.0) for s in range(50, 80, 10)])
    data = load_run(tmp_path)
    assert dict(zip(data.metrics["step"], data.metrics["loss"])) == {0: 1.0, 10: 1.0, 20: 1.0, 30: 1.0, 40: 1.0,
                                                                    50: 2.0, 60: 2.0, 70: 2.0}
    assert "4 point(s) superseded by a restart" in " ".join(data.notes)  # 60-90; 50 is re-logged


def test_several_runs_need_run_flag(tmp_path):
    for name in ("l1_5", "l1_10"):
        (tmp_path / name).mkdir()
        _write_events(tmp_path / name / "events.out.tfevents.1.host", [(0, "loss", 1.0), (10, "metrics/l0", 3.0)])
    res = cli("import", tmp_path, "--out", tmp_path.parent / "o1")
    assert res.exit_code == 2
    assert res.stderr == f"Error: {tmp_path}: holds 2 TensorBoard runs; pick one with --run (l1_10, l1_5)\n"
    data = tensorboard.read(tmp_path, run="l1_5")
    assert data.run_id == "l1_5" and data.metrics.height == 2
    with pytest.raises(RunLogError, match=r": no TensorBoard run 'nope' here \(l1_10, l1_5\)$"):
        tensorboard.read(tmp_path, run="nope")


def test_unknown_tags_only_is_one_line_error(tmp_path):
    _write_events(tmp_path / "events.out.tfevents.1.host", [(0, "accuracy/top1", 0.5), (1, "my_thing", 2.0)])
    res = cli("import", tmp_path, "--out", tmp_path.parent / "o2")
    assert res.exit_code == 2
    assert res.stderr == f"Error: {tmp_path}: no known metric (found: accuracy/top1, my_thing); map a name with --map NAME=COLUMN (e.g. --map loss/total=loss)\n"


def test_detect():
    assert tensorboard.detect(TB) and tensorboard.detect(_main_file(TB / "saelens-style"))
    assert not tensorboard.detect(INGEST / "mlruns") and not tensorboard.detect(INGEST / "wandb_history_export.csv")
    assert math.isfinite(load_run(TB, source="tensorboard").metrics["loss"][0])
