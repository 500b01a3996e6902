"""Reading files that may be hostile: only regular files, a size bound on files read whole, and
configs whose aliases, nesting and size are bounded before anything copies them.

Every reader (the run directory's and the other tools' in ``sae_report.ingest``) opens its inputs
through here, so a FIFO never blocks a read, ``/dev/zero`` or ``/dev/urandom`` behind a symlink is
never read, and a 500-byte YAML "billion laughs" is refused while it is still a graph of a few
hundred nodes. Each refusal is an ``InputRefused`` (a ``RunLogError``): one line naming the file.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import math
import os
import shutil
import stat
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from .schema import RunLogError

MiB = 1 << 20

#: Files read whole, and the most each may be. A larger file is refused with a one-line error (or
#: skipped with a note where the file is optional).
MAX_CONFIG_BYTES = 16 * MiB
"""``config.yaml`` / ``config.json`` / W&B ``config.yaml`` / MLflow ``meta.yaml``."""
MAX_SUMMARY_BYTES = 16 * MiB
"""``summary.json``."""
MAX_EVENTS_BYTES = 256 * MiB
"""``events.ndjson`` of a run directory."""
MAX_STATS_BYTES = 128 * MiB
"""Each file of ``stats/`` (``feature_freq.npy``, ``input_sample.npy``, ``input_dims.csv``)."""
MAX_STATS_VALUES = 32 * MiB
"""Values a ``stats/*.npy`` array may hold (the analysis works on float64 copies of them); the
trainer's ``input_sample.npy`` is ``stats_sample`` (1024) x ``d_in``."""
MAX_PARAM_BYTES = 1 * MiB
"""One MLflow ``params/<key>`` or ``tags/<key>`` file."""

#: A config value, after its YAML aliases (and merge keys) are expanded, may hold at most this
#: many values (every mapping, list, key and scalar counts one), this many characters of text in
#: all, and nest this deep. A resolved trainer config is a few hundred values, 3 levels deep.
MAX_CONFIG_VALUES = 100_000
MAX_CONFIG_TEXT = 16 * MiB
MAX_CONFIG_DEPTH = 64


class InputRefused(RunLogError):
    """A file refused before (or instead of) being read: not a regular file, larger than its
    bound, or a config past the expansion bounds. The message is one line naming the file."""


def _size(n: int) -> str:
    if n >= MiB:
        return f"{n / MiB:,.1f} MiB".replace(".0 MiB", " MiB")
    if n >= 1024:
        return f"{n / 1024:,.1f} KiB".replace(".0 KiB", " KiB")
    return f"{n} bytes"


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _not_regular(path: Path, mode: int) -> InputRefused:
    return InputRefused(f"{path}: not a regular file ({file_kind(mode)}); only regular files are read")


def _os_error(path: Path, exc: OSError) -> RunLogError:
    if exc.errno == errno.ELOOP:
        return InputRefused(f"{path}: a symbolic link loop")
    if exc.errno == errno.ENOENT and os.path.islink(path):
        return InputRefused(f"{path}: a broken symbolic link (to {os.readlink(path)})")
    return RunLogError(f"{path}: cannot read ({exc.strerror or exc})")


def check_regular(path: str | os.PathLike[str]) -> os.stat_result:
    """``stat`` of ``path`` (symlinks followed), which must be a regular file; never opens it, so a
    FIFO cannot block. ``FileNotFoundError`` passes through for a name that does not exist (a live
    writer may have renamed it); other failures are a ``RunLogError``."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        if os.path.islink(path):
            raise _os_error(path, exc) from None
        raise
    except OSError as exc:
        raise _os_error(path, exc) from None
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)
    return st


def is_regular(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is (a symlink to) a regular file; never opens it."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """``path`` opened for binary reading, after checking on the open descriptor that it is a
    regular file (opened non-blocking, so a FIFO or a device is refused, never waited on)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as exc:
        if os.path.islink(path):
            raise _os_error(path, exc) from None
        raise
    except OSError as exc:
        raise _os_error(path, exc) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike[str], limit: int | None = None, what: str = "file") -> bytes:
    """The bytes of a regular file, refused (``InputRefused``) when it is not one or holds more
    than ``limit`` bytes (checked before reading, and again on what was read: a file may grow)."""
    path = Path(path)
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if limit is not None and size > limit:
            raise too_large(path, size, limit, what)
        try:
            data = fh.read() if limit is None else fh.read(limit + 1)
        except OSError as exc:
            raise _os_error(path, exc) from None
    if limit is not None and len(data) > limit:
        raise too_large(path, len(data), limit, what)
    return data


def too_large(path: Path, size: int, limit: int, what: str) -> InputRefused:
    article = "an" if what[:1].lower() in "aeiou" else "a"
    return InputRefused(f"{path}: {_size(size)}, more than the {_size(limit)} {article} {what} may be "
                        "(files read whole are bounded)")


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------


class _Expansion(Exception):
    """A config past a bound (message: what)."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_graph(root: yaml.Node) -> None:
    """Bound the composed YAML graph as if every alias were expanded (memoised per node, so a
    graph of a few hundred nodes standing for 10^9 values costs a few hundred steps)."""
    memo: dict[int, tuple[int, int, int]] = {}  # id -> (values, depth, characters), expanded
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            values, depth, chars = 1, 0, 0
            for child in _children(node):
                v, d, c = memo[id(child)]
                values, depth, chars = values + v, max(depth, d), chars + c
            if isinstance(node, yaml.ScalarNode):
                chars = len(node.value)
            depth += 1
            if values > MAX_CONFIG_VALUES:
                raise _Expansion(f"expands to more than {MAX_CONFIG_VALUES:,} values (YAML aliases/merge keys "
                                 "resolved); refused")
            if chars > MAX_CONFIG_TEXT:
                raise _Expansion(f"expands to more than {_size(MAX_CONFIG_TEXT)} of text (YAML aliases resolved); refused")
            if depth > MAX_CONFIG_DEPTH:
                raise _Expansion(f"nested more than {MAX_CONFIG_DEPTH} levels deep; refused")
            memo[key] = (values, depth, chars)
            continue
        if key in memo:
            continue
        if key in on_path:
            raise _Expansion("a YAML alias refers to a node that contains it (a recursive structure); refused")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in memo)


def clean_text(text: str) -> str:
    """``text`` that UTF-8 can encode: a surrogate pair escaped as two ``\\uXXXX`` halves (JSON and
    YAML escapes) becomes its character, a lone surrogate U+FFFD (a report must be writable)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _plain(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON-like data: str keys; dates as ISO text; sets as lists; bytes as text; text
    UTF-8 can encode (``clean_text``)."""
    if depth > MAX_CONFIG_DEPTH:
        raise _Expansion(f"nested more than {MAX_CONFIG_DEPTH} levels deep; refused")
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(k if isinstance(k, str) else _key_text(k)): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        return [_plain(v, depth + 1) for v in sorted(value, key=repr)]
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return value


def _key_text(key: Any) -> str:
    if isinstance(key, float) and not math.isfinite(key):
        return str(key)
    if isinstance(key, (_dt.datetime, _dt.date)):
        return key.isoformat()
    return str(key) if key is not None else "null"


def _check_values(data: Any) -> None:
    """The bounds of ``_check_graph`` on parsed JSON (no aliases: a plain walk)."""
    values = chars = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        values += 1
        if depth > MAX_CONFIG_DEPTH:
            raise _Expansion(f"nested more than {MAX_CONFIG_DEPTH} levels deep; refused")
        if values > MAX_CONFIG_VALUES:
            raise _Expansion(f"holds more than {MAX_CONFIG_VALUES:,} values; refused")
        if isinstance(value, dict):
            values += len(value)
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, str):
            chars += len(value)
            if chars > MAX_CONFIG_TEXT:
                raise _Expansion(f"holds more than {_size(MAX_CONFIG_TEXT)} of text; refused")


def _bad_config(path: Path, exc: BaseException, what: str = "config") -> RunLogError:
    text = str(exc).strip().splitlines()
    return RunLogError(f"{path}: not a readable {what} ({text[0][:200] if text else type(exc).__name__})")


def parse_config_text(text: str, path: Path, *, as_json: bool = False, what: str = "config") -> Any:
    """Parse a YAML (or JSON) document with the bounds above; returns plain JSON-like data.

    Raises ``InputRefused`` past a bound (aliases, nesting, size) and ``RunLogError`` for text that
    does not parse."""
    path = Path(path)
    try:
        if as_json:
            data = json.loads(text.removeprefix("\ufeff"))
            _check_values(data)
        else:
            loader = yaml.SafeLoader(text)
            try:
                node = loader.get_single_node()
                if node is None:
                    return None
                _check_graph(node)
                data = loader.construct_document(node)
            finally:
                loader.dispose()
        return _plain(data)
    except _Expansion as exc:
        raise InputRefused(f"{path}: {what} {exc}") from None
    except RecursionError:
        raise InputRefused(f"{path}: {what} nested more than {MAX_CONFIG_DEPTH} levels deep; refused") from None
    except (ValueError, yaml.YAMLError, TypeError) as exc:  # TypeError: an unhashable key ({[1]: 2})
        raise _bad_config(path, exc, what) from None


def load_config_file(path: str | os.PathLike[str], *, as_json: bool | None = None, what: str = "config") -> Any:
    """Read and parse a config file (regular, at most ``MAX_CONFIG_BYTES``, UTF-8) with the bounds of
    ``parse_config_text``. ``as_json`` None: JSON for a ``.json`` suffix, YAML otherwise."""
    path = Path(path)
    raw = read_regular(path, MAX_CONFIG_BYTES, what)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad_config(path, exc, what) from None
    return parse_config_text(text, path, as_json=path.suffix.lower() == ".json" if as_json is None else as_json,
                             what=what)


def bound_config(data: Any, path: str | os.PathLike[str]) -> Any:
    """Config data built some other way (W&B config records, MLflow params) checked against the
    bounds of ``parse_config_text`` and returned as plain JSON-like data (``InputRefused`` past a
    bound)."""
    try:
        _check_values(data)
        return _plain(data)
    except _Expansion as exc:
        raise InputRefused(f"{path}: config {exc}") from None
    except RecursionError:
        raise InputRefused(f"{path}: config nested more than {MAX_CONFIG_DEPTH} levels deep; refused") from None


def remove_entry(path: Path) -> bool:
    """Remove a leftover file or folder (a link is removed, never followed); True when it is gone,
    False when it could not be removed (the caller leaves it for next time)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except OSError:
        return False
    return True


def first_line(exc: BaseException) -> str:
    """An exception's first line of text (at most 200 characters), or its type's name."""
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
