"""Writing a report folder safely: only our own files, all or nothing, never through a link.

``publish(out_dir, files, replace_charts=...)`` writes the rendered report (everything is rendered
in memory before this module runs) in three steps:

1. **Check** (nothing is touched): the names it writes (``report.md``, ``report.html``,
   ``analysis.json``, ``charts/<chart>.svg|png`` and the manifest) must be absent or regular files,
   and ``charts`` a real folder. A symbolic link at any of them, or a ``charts`` that is not a
   folder, is refused with a one-line ``OutputRefused``: nothing is written through a link and no
   file of the user's is replaced or moved.
2. **Stage**: every file is written to a temp file beside its final name (``O_EXCL | O_NOFOLLOW``,
   fsynced). A failure here (disk full, read-only folder, Ctrl-C) removes the temp files and leaves
   the earlier report exactly as it was.
3. **Commit**: renames only (no new space needed), with Ctrl-C held back until they are done: the
   manifest listing old and new files first, then each file, then the stale chart images of the
   earlier report are removed, then the final manifest.

The manifest, ``.sae-report-manifest.json`` in the report folder, lists every file this tool wrote
there with its SHA-256. A file is removed only when the manifest lists it *and* it still holds the
bytes we wrote; everything else in the folder (a user's ``charts/architecture.png``, notes) is never
touched. Folders are opened once and used through their descriptors, so a folder swapped for a
link half-way cannot redirect a write.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import signal
import stat
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

CHARTS_DIR = "charts"
CHART_SUFFIXES = (".svg", ".png")
MANIFEST = ".sae-report-manifest.json"
REPORT_FILES = ("analysis.json", "report.md", "report.html")
_CHART_NAME = re.compile(r"[A-Za-z0-9_]+\.(?:svg|png)")
_SHA = re.compile(r"[0-9a-f]{64}")
_MAX_MANIFEST = 1 << 20
_MAX_HASHED = 256 << 20
_CHUNK = 1 << 20


class OutputRefused(Exception):
    """The folder holds something this tool will not replace (a link, a non-folder ``charts``); nothing was touched."""


class WriteFailed(Exception):
    """An ``OSError`` while writing; ``changed`` says whether any file of the earlier report was replaced."""

    def __init__(self, path: Path, error: OSError, changed: bool) -> None:
        super().__init__(f"{path}: {error.strerror or error}")
        self.path = path
        self.error = error
        self.changed = changed


class ReportInterrupted(KeyboardInterrupt):
    """Ctrl-C while writing: ``written`` False -> the earlier report is as it was; True -> the new one is complete."""

    def __init__(self, written: bool) -> None:
        super().__init__("report complete" if written else "earlier report kept")
        self.written = written


def _os_write(fd: int, data: memoryview) -> int:
    """The one low-level write (tests replace it to simulate a full disk)."""
    return os.write(fd, data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = _os_write(fd, view[:_CHUNK])
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        view = view[n:]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _lstat(name: str, dir_fd: int | None) -> os.stat_result | None:
    if dir_fd is None:
        return None
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _open_dir(name: str | Path, dir_fd: int | None = None, *, follow: bool = False) -> int:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    return os.open(name, flags, dir_fd=dir_fd)


def _read_regular(name: str, dir_fd: int, limit: int) -> bytes | None:
    """The bytes of a regular file (never a link, FIFO or device), or None when it is not one or too big."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        chunks = []
        while True:
            b = os.read(fd, _CHUNK)
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _valid_name(name: str) -> bool:
    if name in REPORT_FILES:
        return True
    head, _, tail = name.partition("/")
    return head == CHARTS_DIR and _CHART_NAME.fullmatch(tail) is not None


@dataclass
class Manifest:
    """What this tool wrote into a report folder: relative name -> SHA-256, and the folders it created."""

    files: dict[str, str] = field(default_factory=dict)
    dirs: list[str] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        doc = {"generator": "sae-report", "version": 1,
               "note": "files sae-report wrote here; it removes only these, and only while unchanged",
               "files": dict(sorted(self.files.items())), "dirs": sorted(set(self.dirs))}
        return (json.dumps(doc, indent=1) + "\n").encode("utf-8")


def read_manifest(out_fd: int | None) -> Manifest:
    """The folder's manifest; an absent, unreadable or malformed one lists nothing (so nothing is removed)."""
    if out_fd is None:
        return Manifest()
    raw = _read_regular(MANIFEST, out_fd, _MAX_MANIFEST)
    if raw is None:
        return Manifest()
    try:
        doc = json.loads(raw)
        files = doc.get("files") if isinstance(doc, dict) else None
        dirs = doc.get("dirs") if isinstance(doc, dict) else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return Manifest()
    m = Manifest()
    if isinstance(files, dict):
        m.files = {k: v for k, v in files.items()
                   if isinstance(k, str) and isinstance(v, str) and _valid_name(k) and _SHA.fullmatch(v)}
    if isinstance(dirs, list):
        m.dirs = [d for d in dirs if d == CHARTS_DIR]
    return m


@contextmanager
def _sigint_held() -> Iterator[list[bool]]:
    """Hold Ctrl-C back for the block (the renames of a commit); re-deliver it afterwards."""
    got: list[bool] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: got.append(True))
    except (ValueError, OSError):  # not allowed here: run unprotected
        yield got
        return
    try:
        yield got
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)  # None: not set from Python
        if got and previous is not signal.default_int_handler and previous != signal.SIG_DFL:
            if callable(previous):  # someone else's handler (the trainer's): give it the signal
                previous(signal.SIGINT, None)
            got.clear()  # SIG_IGN or handled: nothing to raise


@dataclass
class _Staged:
    dir_fd: int
    tmp: str
    final: str


def _refuse_link_or_special(st: os.stat_result | None, path: Path) -> None:
    if st is None:
        return
    if stat.S_ISLNK(st.st_mode):
        raise OutputRefused(f"{path}: is a symbolic link; sae-report does not write through links "
                            "(remove the link or choose another --out)")
    if not stat.S_ISREG(st.st_mode):
        raise OutputRefused(f"{path}: exists and is not a regular file; sae-report replaces only files it writes "
                            "(move it or choose another --out)")


def publish(out_dir: Path, files: Mapping[str, bytes], *, replace_charts: bool) -> list[Path]:
    """Write ``files`` (``report.md``, ``charts/l0.svg``, ... -> bytes) into ``out_dir``, all or nothing.

    ``replace_charts``: the chart images of the earlier report that this tool wrote and that are not
    in ``files`` are removed (a Markdown report was written); False leaves ``charts/`` alone.
    Raises ``OutputRefused`` (nothing touched), ``WriteFailed`` (an ``OSError``) or
    ``ReportInterrupted`` (Ctrl-C). Returns the paths written, in the order of ``files``.
    """
    out_dir = Path(out_dir)
    bad = [n for n in files if not _valid_name(n)]
    if bad:
        raise ValueError(f"not a report file name: {bad[0]!r}")
    top = [n for n in files if "/" not in n]
    charts = [n.split("/", 1)[1] for n in files if "/" in n]
    charts_path = out_dir / CHARTS_DIR

    # 1. Check: read only.
    try:
        st = os.stat(out_dir)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise WriteFailed(out_dir, exc, changed=False) from None
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise OutputRefused(f"{out_dir}: exists and is not a folder")
    out_fd: int | None = None
    charts_fd: int | None = None
    created: list[Path] = []
    staged: list[_Staged] = []
    manifests: list[_Staged] = []
    try:
        if st is not None:
            out_fd = _open_dir(out_dir, follow=True)  # the folder given may itself be a link: the user chose it
        for name in top + [MANIFEST]:
            _refuse_link_or_special(_lstat(name, out_fd), out_dir / name)
        old = read_manifest(out_fd)
        old.files = {k: v for k, v in old.files.items() if "/" in k or _lstat(k, out_fd) is not None}
        cst = _lstat(CHARTS_DIR, out_fd)
        charts_is_dir = cst is not None and stat.S_ISDIR(cst.st_mode)
        if charts and cst is not None and not charts_is_dir:
            if stat.S_ISLNK(cst.st_mode):
                raise OutputRefused(f"{charts_path}: is a symbolic link; sae-report writes chart images only into a "
                                    "real charts folder (remove the link or choose another --out)")
            raise OutputRefused(f"{charts_path}: exists and is not a folder; sae-report does not replace it "
                                "(move it or choose another --out)")
        if charts_is_dir:
            charts_fd = _open_dir(CHARTS_DIR, out_fd)
        for name in charts:
            _refuse_link_or_special(_lstat(name, charts_fd), charts_path / name)
        stale: list[str] = []
        for name, digest in list(old.files.items()):
            if not name.startswith(CHARTS_DIR + "/"):
                continue
            base = name.split("/", 1)[1]
            if charts_fd is None or _lstat(base, charts_fd) is None:
                del old.files[name]  # gone already
            elif replace_charts and base not in charts:
                raw = _read_regular(base, charts_fd, _MAX_HASHED)
                if raw is not None and _sha(raw) == digest:
                    stale.append(base)
                else:
                    del old.files[name]  # changed since we wrote it: the user's now, never removed
        remove_charts_dir = False
        if replace_charts and charts_fd is not None and not charts and CHARTS_DIR in old.dirs:
            remove_charts_dir = sorted(os.listdir(charts_fd)) == sorted(stale)

        # 2. Stage: temp files only; any failure removes them and leaves the folder as it was.
        if out_fd is None:
            probe = out_dir
            while not probe.exists() and probe != probe.parent:
                created.append(probe)
                probe = probe.parent
            os.makedirs(out_dir, exist_ok=True)
            out_fd = _open_dir(out_dir, follow=True)
        dirs = list(old.dirs)
        if charts and charts_fd is None:
            os.mkdir(CHARTS_DIR, dir_fd=out_fd)
            created.insert(0, charts_path)
            dirs.append(CHARTS_DIR)
            charts_fd = _open_dir(CHARTS_DIR, out_fd)
        new_files = {n: _sha(b) for n, b in files.items()}
        gone = {f"{CHARTS_DIR}/{base}" for base in stale}
        kept = {k: v for k, v in old.files.items() if k not in gone}
        final = Manifest({**kept, **new_files}, [d for d in dirs if not (d == CHARTS_DIR and remove_charts_dir)])
        intent = Manifest({**old.files, **new_files}, dirs)
        for name, data in files.items():
            fd_dir = charts_fd if "/" in name else out_fd
            staged.append(_stage(fd_dir, name.split("/")[-1], data))
        manifests.append(_stage(out_fd, MANIFEST, intent.to_bytes()))
        manifests.append(_stage(out_fd, MANIFEST, final.to_bytes()))
    except KeyboardInterrupt:
        _discard(staged + manifests, created, out_fd, charts_fd)
        raise ReportInterrupted(written=False) from None
    except OSError as exc:
        _discard(staged + manifests, created, out_fd, charts_fd)
        raise WriteFailed(out_dir, exc, changed=False) from None
    except BaseException:
        _discard(staged + manifests, created, out_fd, charts_fd)
        raise
    m_intent, m_final = manifests

    # 3. Commit: renames and removals only, Ctrl-C held back until the folder is consistent.
    assert out_fd is not None
    changed = False
    try:
        with _sigint_held() as interrupted:
            try:
                os.replace(m_intent.tmp, MANIFEST, src_dir_fd=out_fd, dst_dir_fd=out_fd)
                for s in staged:
                    os.replace(s.tmp, s.final, src_dir_fd=s.dir_fd, dst_dir_fd=s.dir_fd)
                    changed = True
                for base in stale:
                    try:
                        os.unlink(base, dir_fd=charts_fd)
                    except FileNotFoundError:
                        pass
                if remove_charts_dir:
                    try:
                        os.rmdir(CHARTS_DIR, dir_fd=out_fd)
                    except OSError:
                        pass
                os.replace(m_final.tmp, MANIFEST, src_dir_fd=out_fd, dst_dir_fd=out_fd)
                try:
                    os.fsync(out_fd)
                except OSError:
                    pass
            except OSError as exc:
                _discard(staged + [m_intent, m_final], [], out_fd, charts_fd, close=False)
                raise WriteFailed(out_dir, exc, changed=changed) from None
        if interrupted:
            raise ReportInterrupted(written=True)
    finally:
        for fd in (charts_fd, out_fd):
            if fd is not None:
                os.close(fd)
    return [out_dir / n for n in files]


def _stage(dir_fd: int, final: str, data: bytes) -> _Staged:
    tmp = f".{final}.{secrets.token_hex(6)}.tmp"
    flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    fd = os.open(tmp, flags, 0o666, dir_fd=dir_fd)  # the umask applies: a report is meant to be shared
    staged = _Staged(dir_fd, tmp, final)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quiet(tmp, dir_fd)
        raise
    os.close(fd)
    return staged


def _unlink_quiet(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def _discard(staged: list[_Staged], created: list[Path], out_fd: int | None, charts_fd: int | None,
             close: bool = True) -> None:
    """Remove our temp files and the folders this call created (when still empty)."""
    for s in staged:
        _unlink_quiet(s.tmp, s.dir_fd)
    if close:
        for fd in (charts_fd, out_fd):
            if fd is not None:
                os.close(fd)
    for d in created:  # innermost first
        try:
            os.rmdir(d)
        except OSError:
            break
