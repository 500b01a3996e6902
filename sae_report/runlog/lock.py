"""One writer at a time: an exclusive lock on a run directory (or a tune campaign folder).

Everything that writes a folder (``train``, ``train --resume``, ``import --force`` into it, ``tune
--out``) holds ``FOLDER/.sae-report.lock`` for as long as it writes. The lock is ``fcntl.flock`` on
that file, so the kernel releases it when the process dies (``kill -9`` included): a stale lock
never blocks. The file also holds a note (pid, command, since when, host) for the error the second
writer gets::

    runs/train_ab12cd34: in use by pid 4242 (sae-report train --resume runs/train_ab12cd34) since
    2026-03-01 12:00:03 UTC; try again when it has finished

The lock file is removed when the lock is released (after a crash it stays, holding only the note
of a dead process, and is taken over by the next writer). Readers (``analyze``) never take it.
Where ``flock`` is not supported (some network filesystems), the note alone decides: a lock whose
pid is no longer running on this host is stale.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import shlex
import socket
import sys
from pathlib import Path
from typing import Any

try:  # POSIX; on other systems only the note is used
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".sae-report.lock"
_NOTE_MAX = 4096


class LockHeldError(Exception):
    """Another process writes the folder. ``str()`` is one line naming that process."""

    def __init__(self, message: str, holder: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.holder = holder or {}


def _printable(text: str, limit: int = 200) -> str:
    clean = "".join(ch if ch.isprintable() else "?" for ch in text)
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def current_command() -> str:
    """This process's command line, short and printable (``sae-report train --resume RUN``)."""
    argv = list(sys.argv) or ["python"]
    head = Path(argv[0]).name
    if head == "__main__.py" and Path(argv[0]).parent.name == "sae_report":
        head = "sae-report"
    return _printable(shlex.join([head, *argv[1:]]))


def _read_note(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, _NOTE_MAX, 0)
        note = json.loads(raw.decode("utf-8", "replace") or "{}")
    except (OSError, ValueError):
        return {}
    return note if isinstance(note, dict) else {}


def _pid_alive(pid: Any) -> bool:
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def describe_holder(folder: Path, note: dict[str, Any]) -> str:
    """The one-line message for a folder held by the process in ``note``."""
    pid = note.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool):
        return f"{folder}: in use by another process (it is writing there); try again when it has finished"
    command = _printable(str(note.get("command") or "?"))
    since = _printable(str(note.get("since") or "?"), 40)
    host = note.get("host")
    where = f" on {_printable(str(host), 60)}" if host and host != socket.gethostname() else ""
    return f"{folder}: in use by pid {pid}{where} ({command}) since {since}; try again when it has finished"


class FolderLock:
    """A held lock; ``release()`` (or leaving the ``with`` block) gives it back. Safe to call twice."""

    def __init__(self, folder: Path, fd: int) -> None:
        self.folder = folder
        self.path = folder / LOCK_FILE
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # Remove the file only while it is still ours (a folder replaced by `import --force`
            # moved our file away; a new writer may already hold the one now at that path).
            mine = os.fstat(fd)
            try:
                there = os.stat(self.path)
                if (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino):
                    os.unlink(self.path)
            except OSError:
                pass
        finally:
            os.close(fd)  # releases the flock

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # pragma: no cover - a lock dropped without release()
        try:
            self.release()
        except Exception:
            pass


def lock_folder(folder: str | Path, *, command: str | None = None) -> FolderLock:
    """Take the exclusive lock on ``folder`` (which must exist) or raise ``LockHeldError``.

    Never waits: a second writer is told at once who holds the folder. A lock left by a process
    that has died is taken over (the kernel released its flock; its note names a dead pid).
    """
    folder = Path(folder)
    path = folder / LOCK_FILE
    note = {"pid": os.getpid(), "command": command or current_command(), "host": socket.gethostname(),
            "since": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
    for _ in range(20):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise LockHeldError(describe_holder(folder, _read_note(fd)), _read_note(fd)) from None
                except OSError as exc:
                    if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                        raise
                    _check_note_only(folder, fd)
            else:  # pragma: no cover
                _check_note_only(folder, fd)
            # The file we locked must still be the one at the path: a releasing holder unlinks it,
            # and a lock on an unlinked file excludes nobody.
            mine = os.fstat(fd)
            try:
                there = os.stat(path)
            except FileNotFoundError:
                os.close(fd)
                continue
            if (there.st_dev, there.st_ino) != (mine.st_dev, mine.st_ino):
                os.close(fd)
                continue
            data = json.dumps(note).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data + b"\n", 0)
            return FolderLock(folder, fd)
        except BaseException:
            try:
                os.close(fd)
            except OSError:
                pass
            raise
    raise LockHeldError(f"{folder}: could not take its lock ({LOCK_FILE} keeps changing); try again")


def _check_note_only(folder: Path, fd: int) -> None:
    """No flock here: the note decides (a live pid on this host holds the folder)."""
    held = _read_note(fd)
    if held.get("pid") != os.getpid() and _pid_alive(held.get("pid")) and held.get("host") in (None, socket.gethostname()):
        raise LockHeldError(describe_holder(folder, held), held)


__all__ = ["LOCK_FILE", "FolderLock", "LockHeldError", "current_command", "describe_holder", "lock_folder"]
