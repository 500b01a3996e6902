"""TensorBoard event files (``events.out.tfevents.*``): every scalar, without TensorFlow.

Reads a single event file, a run directory of them, or a log directory holding several runs (a run
is a directory with event files; ``--run`` picks one by its path relative to the log directory).
Unlike TensorBoard's ``EventAccumulator`` nothing is sampled: every point of every scalar tag is
kept, old-style ``simple_value`` and new-style one-element tensors (``plugin_name: scalars``) alike.
Hyperparameters come from the hparams plugin (``session_start_info``), including the subdirectory
``SummaryWriter.add_hparams`` creates. Restarts follow TensorBoard's rule: a point written after
points of the same tag at later steps supersedes them (a resumed run re-logging from its checkpoint).
A truncated file is read up to its last complete record, with a note.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from ..runlog import RunData, RunLogError
from ..runlog.safeio import bound_config
from . import tfevents
from .scalars import ScalarLog, build_run, pick_run, to_wide

_NAME = "tfevents"


def _is_event_file(p: Path) -> bool:
    return _NAME in p.name and p.is_file()


def _event_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(f"*{_NAME}*") if p.is_file())


def detect(path: Path) -> bool:
    """True for an event file or a directory holding event files (at any depth)."""
    path = Path(path)
    if path.is_file():
        return _is_event_file(path)
    if path.is_dir():
        return next((p for p in path.rglob(f"*{_NAME}*") if p.is_file()), None) is not None
    return False


def _order(p: Path) -> tuple[int, str]:
    """Write order of event files in one directory: the timestamp in the name, then the name."""
    m = re.search(r"tfevents\.(\d+)", p.name)
    return (int(m.group(1)) if m else 0, p.name)


@dataclass
class _FileRead:
    log: ScalarLog = field(default_factory=ScalarLog)
    walls: list[float] = field(default_factory=list)
    hparams: dict[str, object] = field(default_factory=dict)
    problem: str | None = None
    n_records: int = 0


def _read_file(path: Path) -> _FileRead:
    out = _FileRead()
    recs = tfevents.read_records(path)
    out.problem = recs.problem
    out.n_records = len(recs.records)
    plugins: dict[str, str | None] = {}
    for i, raw in enumerate(recs.records):
        try:
            ev = tfevents.parse_event(raw)
        except Exception:  # noqa: BLE001 - ValueError, IndexError, struct.error: any decode failure
            out.problem = f"record {i + 1} is not a readable event; read the {i} before it"
            break
        for v in ev.values:
            if v.plugin is not None:
                plugins.setdefault(v.tag, v.plugin)
            plugin = v.plugin if v.plugin is not None else plugins.get(v.tag)
            if plugin == "hparams":
                if v.tag.endswith("session_start_info"):
                    out.hparams.update(tfevents.parse_hparams(v.content))
                continue
            if v.scalar is not None and not v.non_scalar and plugin in (None, "", "scalars"):
                out.log.add(v.tag, ev.step, v.scalar)
                out.walls.append(ev.wall_time)
            else:
                out.log.skip(v.tag)
    return out


def _runs(root: Path) -> dict[str, list[Path]]:
    """Run id (directory relative to ``root``) -> its event files in write order."""
    if root.is_file():
        return {root.parent.name or str(root): [root]}
    groups: dict[Path, list[Path]] = {}
    for f in _event_files(root):
        groups.setdefault(f.parent, []).append(f)
    return {(str(d.relative_to(root)) if d != root else root.resolve().name): sorted(fs, key=_order)
            for d, fs in sorted(groups.items())}


def _hparams_children(root: Path, runs: dict[str, list[Path]]) -> dict[str, str]:
    """Sub-runs that only carry hparams (``add_hparams`` writes them) -> their parent run id."""
    if root.is_file():
        return {}
    dirs = {rid: fs[0].parent for rid, fs in runs.items()}
    out: dict[str, str] = {}
    for rid, d in dirs.items():
        parents = [(pid, pd) for pid, pd in dirs.items() if pid != rid and pd in d.parents]
        if not parents or sum(f.stat().st_size for f in runs[rid]) > 1_000_000:
            continue
        if any(_read_file(f).hparams for f in runs[rid]):
            out[rid] = max(parents, key=lambda t: len(t[1].parts))[0]
    return out


def _candidates(path: Path) -> tuple[dict[str, list[Path]], dict[str, list[Path]], dict[str, str]]:
    """(all runs, runs that can be picked, hparams-only sub-runs -> parent)."""
    if not path.exists():
        raise RunLogError(f"{path}: no such file or directory")
    runs = _runs(path)
    if not runs:
        raise RunLogError(f"{path}: no TensorBoard event files (events.out.tfevents.*) found")
    children = _hparams_children(path, runs) if len(runs) > 1 else {}
    return runs, {rid: fs for rid, fs in runs.items() if rid not in children}, children


def run_ids(path: Path) -> list[str]:
    """The runs ``--run`` can pick at ``path`` (folders relative to it)."""
    return list(_candidates(Path(path))[1])


def read(path: Path, run: str | None = None, kind: str | None = None) -> RunData:
    """Read the scalars and hparams of one TensorBoard run (see the module doc)."""
    path = Path(path)
    runs, candidates, children = _candidates(path)
    run_id, files = pick_run(path, candidates, run, what="TensorBoard run")
    notes: list[str] = []
    config: dict[str, object] = {}
    parts: list[pl.DataFrame] = []
    skipped_all: dict[str, int] = {}
    n_records = 0
    for f in files:
        got = _read_file(f)
        n_records += got.n_records
        config.update(got.hparams)
        if got.problem:
            notes.append(f"{f.name}: {got.problem}")
        for k, c in got.log.skipped.items():
            skipped_all[k] = skipped_all.get(k, 0) + c
        parts.append(pl.DataFrame(
            {"key": got.log.keys, "step": got.log.steps, "value": got.log.values, "wall": got.walls},
            schema={"key": pl.String, "step": pl.Int64, "value": pl.Float64, "wall": pl.Float64},
        ))
    for child, parent in children.items():
        if parent == run_id:
            for f in runs[child]:
                config.update(_read_file(f).hparams)
            notes.append(f"hyperparameters from {child}/ (written by add_hparams)")
    long = pl.concat(parts) if parts else pl.DataFrame()
    if long.height == 0:
        problem = next((n for n in notes if "cut short" in n or "bad record" in n or "not a readable" in n), None)
        if problem:
            raise RunLogError(f"{files[0] if len(files) == 1 else path}: no complete scalar event "
                              f"({problem.split(': ', 1)[1]})")
        raise RunLogError(f"{path}: no scalar summaries in {len(files)} event file(s) "
                          f"({n_records} record(s); only histograms, images, text or graphs)")
    long, superseded = _supersede(long)
    if superseded:
        notes.append(f"{superseded} point(s) superseded by a restart (a later write of the same "
                     "tag at an earlier step, as when a run resumes from a checkpoint)")
    # Wall time -> elapsed seconds per step (a raw "_runtime" column, unless a tag is named so).
    log = ScalarLog(keys=long.get_column("key").to_list(), steps=long.get_column("step").to_list(),
                    values=long.get_column("value").to_list())
    if "_runtime" not in set(log.keys):
        t0 = long.get_column("wall").min()
        per_step = long.group_by("step").agg(pl.col("wall").max())
        log.keys.extend(["_runtime"] * per_step.height)
        log.steps.extend(per_step.get_column("step").to_list())
        log.values.extend((per_step.get_column("wall") - t0).to_list())
    where = f"TensorBoard run {run_id}, {len(files)} event file(s), {n_records} record(s)"
    config = bound_config(config, path)  # hparams: the bounds of any config
    return build_run(path, to_wide(log), config, source="tensorboard", run_id=run_id, origin=where,
                     sampled=False, notes=notes, skipped=skipped_all or None)


def _supersede(long: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Drop points that a later write of the same tag at a smaller step supersedes."""
    long = long.with_row_index("_seq")
    later_min = (pl.col("step").reverse().cum_min().reverse().shift(-1)).over("key", order_by="_seq")
    kept = long.with_columns(later_min.alias("_later")).filter(
        pl.col("_later").is_null() | (pl.col("step") <= pl.col("_later")))
    return kept.drop(["_seq", "_later"]), long.height - kept.height
