"""Text made safe to show: control and bidirectional characters written as visible escapes, for
the terminal (one line stays one line) and for report files (their own newlines kept)."""

from __future__ import annotations

import re
from typing import Iterable

#: Bidirectional-text controls: they reorder the text around them (U+202E shows "abc" as "cba").
BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_CONTROL_CLASS = "\x00-\x08\x0b-\x1f\x7f-\x9f" + BIDI_CONTROLS
#: What ``printable`` escapes for a terminal: every C0/C1 control but tab (newlines too: one line stays one line).
TERMINAL_UNSAFE = re.compile(f"[\n{_CONTROL_CLASS}]")
#: What ``printable(text, keep_newlines=True)`` escapes (report files: their own newlines and tabs are kept).
DOCUMENT_UNSAFE = re.compile(f"[{_CONTROL_CLASS}]")


_NAMED = {"\n": "\\n", "\r": "\\r"}


def _escape_char(m: re.Match[str]) -> str:
    if m.group(0) in _NAMED:
        return _NAMED[m.group(0)]
    c = ord(m.group(0))
    return f"\\x{c:02x}" if c <= 0xFF else f"\\u{c:04x}"


def printable(text: object, *, keep_newlines: bool = False) -> str:
    """``text`` with control and bidi characters written as visible escapes (``\\x1b``, ``\\u202e``)."""
    s = str(text)
    return (DOCUMENT_UNSAFE if keep_newlines else TERMINAL_UNSAFE).sub(_escape_char, s)


def unsafe_characters(texts: Iterable[str], *, keep_newlines: bool = True) -> set[str]:
    """The control and bidi characters that ``printable`` would escape in ``texts``."""
    pattern = DOCUMENT_UNSAFE if keep_newlines else TERMINAL_UNSAFE
    found: set[str] = set()
    for t in texts:
        found.update(pattern.findall(t))
    return found


__all__ = ["BIDI_CONTROLS", "DOCUMENT_UNSAFE", "TERMINAL_UNSAFE", "printable", "unsafe_characters"]
