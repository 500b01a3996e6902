"""Reading speed of the ingest readers on SAELens-sized logs, side by side with the reference tool.

TensorBoard: our pure-Python reader (every point) against tensorboard's EventAccumulator with
``size_guidance={"scalars": 0}`` (every point too; it needs the tensorboard package). MLflow: our
SQLite reader on a store with the same points. Each figure is the median of ``--repeats`` runs.

    python benchmarks/ingest_readers.py --quick      # 2,000 steps x 10 tags (~20k points)
    python benchmarks/ingest_readers.py              # 100,000 steps x 10 tags (1M points, SAELens
                                                     # logging every step of a 100k-step run)
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TAGS = ["losses/overall_loss", "losses/mse_loss", "losses/l1_loss", "metrics/explained_variance", "metrics/l0",
        "details/current_learning_rate", "details/l1_coefficient", "details/n_training_tokens",
        "sparsity/dead_features", "sparsity/mean_passes_since_fired"]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def write_tb(path: Path, steps: int) -> int:
    """One event per (step, tag) with simple_value, as SummaryWriter.add_scalar writes (both CRCs
    correct: TensorBoard checks the data CRC; writing 1M points takes a while in pure Python)."""
    from sae_report.ingest.tfevents import masked_crc32c

    def ld(num: int, payload: bytes) -> bytes:
        return _varint(num << 3 | 2) + _varint(len(payload)) + payload

    tag_bytes = [ld(1, t.encode()) for t in TAGS]
    chunks = []
    for s in range(steps):
        for i, tb in enumerate(tag_bytes):
            val = tb + b"\x15" + struct.pack("<f", 1.0 / (1 + s + i))
            ev = b"\x09" + struct.pack("<d", 1e9 + s) + b"\x10" + _varint(s) + ld(5, ld(1, val))
            head = struct.pack("<Q", len(ev))
            chunks.append(head + struct.pack("<I", masked_crc32c(head)) + ev + struct.pack("<I", masked_crc32c(ev)))
    path.write_bytes(b"".join(chunks))
    return steps * len(TAGS)


def write_mlflow_db(path: Path, steps: int) -> int:
    shutil.copy2(ROOT / "tests" / "fixtures" / "ingest" / "mlflow.db", path)
    con = sqlite3.connect(path)
    (run,) = con.execute("select run_uuid from runs").fetchone()
    con.execute("delete from metrics")
    con.executemany("insert into metrics values (?, ?, ?, ?, ?, 0)",
                    ((t, 1.0 / (1 + s + i), 1_700_000_000_000 + s, run, s)
                     for s in range(steps) for i, t in enumerate(TAGS)))
    con.commit()
    con.close()
    return steps * len(TAGS)


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2,000 steps instead of 100,000")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    args = p.parse_args()
    steps = args.steps or (2_000 if args.quick else 100_000)
    repeats = args.repeats or (3 if args.quick else 3)

    from sae_report.ingest import mlflow, tensorboard

    tmp = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    try:
        tb_dir = tmp / "tb"
        tb_dir.mkdir()
        n = write_tb(tb_dir / "events.out.tfevents.1.bench", steps)
        size = (tb_dir / "events.out.tfevents.1.bench").stat().st_size
        ours = timed(lambda: tensorboard.read(tb_dir), repeats)
        rows = tensorboard.read(tb_dir).metrics.height
        print(f"TensorBoard, {steps:,} steps x {len(TAGS)} tags = {n:,} points ({size / 1e6:.1f} MB), {rows:,} rows out")
        print(f"  sae-report reader        {ours:8.2f} s  {n / ours:12,.0f} points/s")
        try:
            from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        except ImportError:
            print("  EventAccumulator         (tensorboard not installed)")
        else:
            def accumulate():
                acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
                acc.Reload()
                return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}

            ref = timed(accumulate, repeats)
            got = sum(len(v) for v in accumulate().values())
            print(f"  EventAccumulator(all)    {ref:8.2f} s  {n / ref:12,.0f} points/s  ({got:,} points)")
            print(f"  ratio ours / reference   {ours / ref:8.2f}")
        db = tmp / "mlflow.db"
        n = write_mlflow_db(db, steps)
        ml = timed(lambda: mlflow.read(db), repeats)
        print(f"MLflow SQLite, {n:,} points: sae-report reader {ml:.2f} s  ({n / ml:,.0f} points/s)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
