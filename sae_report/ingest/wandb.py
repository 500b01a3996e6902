"""Weights & Biases: offline run directories and history exports.

- **Offline (or synced) run**: ``wandb/offline-run-<time>-<id>/run-<id>.wandb``. The ``.wandb`` file
  is W&B's transaction log: LevelDB-style framing (7-byte file header ``:W&B``, 32 KiB blocks,
  records ``crc32 u32, length u16, type u8`` split into FULL/FIRST/MIDDLE/LAST pieces) around
  ``wandb_internal_pb2.Record`` protobufs. The framing is read here (W&B removed its Python
  ``DataStore`` in 0.2x/0.3x versions); the records are decoded with the installed ``wandb``
  package's protobuf classes (the optional extra ``pip install 'sae-report[wandb]'``). Every
  ``history`` record is read: no sampling. Config comes from the run and config records, or from
  ``files/config.yaml`` (W&B's ``{key: {value: ...}}`` layout) when present.
- **History exports** (CSV/Parquet with ``_step``..., or the bucketed UI export): see
  ``wandb_export``. ``detect`` recognises them by their columns, before the generic table reader.

``PATH`` may be the ``.wandb`` file, its run directory, the ``wandb/`` directory (``--run ID`` picks
one of several runs; ``latest-run`` is not counted twice) or the project directory holding ``wandb/``.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import zlib
from pathlib import Path
from typing import Any


from ..runlog import RunData, RunLogError
from ..runlog.safeio import InputRefused, bound_config, load_config_file, read_regular
from .scalars import ScalarLog, build_run, pick_run, to_wide
from .wandb_export import export_run_ids, is_export, read_export

INSTALL_HINT = "pip install 'sae-report[wandb]'"
_BLOCK = 32768
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
_CRC = {t: zlib.crc32(bytes([t])) for t in range(5)}
_RUN_DIR = re.compile(r"^(offline-run|run)-\d{8}_\d{6}-(?P<id>[A-Za-z0-9]+)$")


def _wandb_files(path: Path) -> list[Path]:
    """``.wandb`` files at ``path`` (a file, a run dir, a ``wandb/`` dir or its parent)."""
    if path.is_file():
        return [path] if path.suffix == ".wandb" else []
    found: list[Path] = []
    for pattern in ("*.wandb", "*/*.wandb", "wandb/*/*.wandb"):
        found = sorted({p.resolve() for p in path.glob(pattern) if p.is_file()})
        if found:
            break
    return found


def detect(path: Path) -> bool:
    """True for a W&B run file/directory, or a CSV/Parquet export with W&B's columns."""
    path = Path(path)
    if path.is_file() and path.suffix != ".wandb":
        return is_export(path)
    return bool(_wandb_files(path)) if path.exists() else False


def read(path: Path, run: str | None = None, kind: str | None = None) -> RunData:
    """Read a W&B offline run or history export (see the module doc)."""
    path = Path(path)
    if not path.exists():
        raise RunLogError(f"{path}: no such file or directory")
    if path.is_file() and path.suffix != ".wandb":
        return read_export(path, run)
    run_id, file = pick_run(path, _runs(path), run, what="W&B run")
    return _read_run_file(path, file, run_id)


def _runs(path: Path) -> dict[str, Path]:
    files = _wandb_files(path)
    if not files:
        raise RunLogError(f"{path}: no W&B run here (looked for run-*.wandb, */run-*.wandb, wandb/*/run-*.wandb)")
    runs: dict[str, Path] = {}
    for f in files:
        m = _RUN_DIR.match(f.parent.name)
        rid = m.group("id") if m else f.stem.removeprefix("run-")
        runs[rid if rid not in runs else f.parent.name] = f
    return runs


def run_ids(path: Path) -> list[str]:
    """The runs ``--run`` can pick at ``path`` (W&B run ids, or run names of a UI export)."""
    path = Path(path)
    if not path.exists():
        raise RunLogError(f"{path}: no such file or directory")
    if path.is_file() and path.suffix != ".wandb":
        return export_run_ids(path)
    return list(_runs(path))


# --------------------------------------------------------------------------------------------
# The transaction log
# --------------------------------------------------------------------------------------------


def _records(file: Path, notes: list[str]) -> list[bytes]:
    """Reassembled record payloads; stops at a cut-short or corrupt record, with a note."""
    data = read_regular(file)
    if len(data) < _HEADER or data[:4] != b":W&B":
        raise RunLogError(f"{file}: not a W&B run file (no :W&B header)")
    out: list[bytes] = []
    pos, n, pending = _HEADER, len(data), None
    while pos < n:
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:
            pos += left  # block trailer padding
            continue
        if pos + _HEADER > n:
            notes.append(f"{file.name}: cut short after {len(out)} record(s) (the run was still writing or was killed)")
            break
        crc, length, rtype = struct.unpack_from("<IHB", data, pos)
        if rtype == 0 and length == 0 and crc == 0:
            break  # zero-filled tail (preallocated space)
        body = data[pos + _HEADER: pos + _HEADER + length]
        if len(body) < length:
            notes.append(f"{file.name}: cut short after {len(out)} record(s) (the run was still writing or was killed)")
            break
        if rtype not in _CRC or zlib.crc32(body, _CRC[rtype]) & 0xFFFFFFFF != crc:
            notes.append(f"{file.name}: corrupt record after {len(out)} record(s); read the ones before it")
            break
        pos += _HEADER + length
        if rtype == _FULL:
            out.append(body)
        elif rtype == _FIRST:
            pending = body
        elif rtype == _MIDDLE and pending is not None:
            pending += body
        elif rtype == _LAST and pending is not None:
            out.append(pending + body)
            pending = None
    return out


def _proto(file: Path):
    try:
        from wandb.proto import wandb_internal_pb2  # type: ignore[import-not-found]
    except ImportError:
        raise RunLogError(f"{file}: reading a W&B run file needs the wandb package: {INSTALL_HINT}") from None
    except Exception as exc:  # noqa: BLE001 - a broken install (protobuf version clash, ...)
        raise RunLogError(f"{file}: the installed wandb package cannot be imported ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:120] if str(exc) else ''}); reinstall with {INSTALL_HINT}") from None
    return wandb_internal_pb2


def _item_key(item: Any) -> str:
    return item.key or ".".join(item.nested_key)


def _number(text: str) -> float | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _read_run_file(path: Path, file: Path, run_id: str) -> RunData:
    notes: list[str] = []
    raw = _records(file, notes)
    pb = _proto(file)
    log = ScalarLog()
    config: dict[str, Any] = {}
    name = exit_code = None
    n_history = bad = 0
    for body in raw:
        rec = pb.Record()
        try:
            rec.ParseFromString(body)
        except Exception:  # noqa: BLE001 - protobuf DecodeError
            bad += 1
            continue
        rtype = rec.WhichOneof("record_type")
        if rtype == "history":
            n_history += 1
            _history(rec.history, log)
        elif rtype == "run":
            name = rec.run.display_name or name
            _config_update(config, rec.run.config)
        elif rtype == "config":
            _config_update(config, rec.config)
        elif rtype == "exit":
            exit_code = rec.exit.exit_code
    if bad:
        notes.append(f"{file.name}: {bad} record(s) this wandb version cannot decode were skipped")
    config = bound_config(config, file)
    yaml_cfg = file.parent / "files" / "config.yaml"
    if os.path.lexists(yaml_cfg):  # older W&B versions write it; the records win where both have a key
        from_yaml = _config_yaml(yaml_cfg)
        if set(from_yaml) - set(config):
            notes.append("config from files/config.yaml" + (" and the run's config records" if config else ""))
        config = {**from_yaml, **config}
    config.pop("_wandb", None)
    if exit_code is None:
        notes.append("no exit record: the run was still running, or was killed before W&B closed it")
    elif exit_code != 0:
        notes.append(f"the run exited with code {exit_code} (it failed or was interrupted)")
    if not raw or n_history == 0:
        cut = next((n for n in notes if "cut short" in n or "corrupt" in n), None)
        raise RunLogError(f"{file}: no history records" + (f" ({cut.split(': ', 1)[1]})" if cut else " (nothing was logged)"))
    origin = f"W&B run {run_id}" + (f" ({name})" if name else "") + f", {n_history} history record(s) from {file.name}"
    return build_run(path, to_wide(log), config, source="wandb", run_id=run_id, origin=origin,
                     notes=notes, skipped=log.skipped or None)


def _history(history: Any, log: ScalarLog) -> None:
    step = history.step.num
    values: list[tuple[str, str]] = []
    for item in history.item:
        key = _item_key(item)
        if key == "_step":
            v = _number(item.value_json)
            if v is not None and math.isfinite(v):
                step = int(v)
        elif key not in ("_timestamp",) and not key.startswith("_wandb"):
            values.append((key, item.value_json))
    for key, text in values:
        v = _number(text)
        if v is None:
            log.skip(key)
        else:
            log.add(key, step, v)


def _config_update(config: dict[str, Any], record: Any) -> None:
    for item in record.update:
        try:
            value = json.loads(item.value_json)
        except (ValueError, RecursionError):
            value = item.value_json
        keys = list(item.nested_key) or [item.key]
        target = config
        for k in keys[:-1]:
            target = target.setdefault(k, {}) if isinstance(target.get(k, {}), dict) else target
        target[keys[-1]] = value
    for item in record.remove:
        config.pop(_item_key(item), None)


def _config_yaml(path: Path) -> dict[str, Any]:
    try:
        data = load_config_file(path, as_json=False) or {}
    except InputRefused:
        raise  # a FIFO, an oversized file or a YAML bomb: refused, not ignored
    except (OSError, RunLogError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: (v["value"] if isinstance(v, dict) and "value" in v else v) for k, v in data.items()
            if k not in ("wandb_version", "_wandb")}
