"""Text datasets for harvesting activations: local text, JSONL or Parquet files, or a folder of them.

A dataset is a sequence of documents, read in a fixed order (files in sorted path order, records in
file order), so the token stream built on it is a pure function of the files:

- ``.txt`` / ``.text`` / ``.md``: one document per paragraph (lines up to a blank line);
- ``.jsonl`` / ``.ndjson``: one JSON object per line, the document is its ``text_column`` field;
- ``.parquet``: the ``text_column`` column, read a record batch at a time (never the whole file);
- a folder: every such file below it (hidden files and folders left out), in sorted path order;
- ``builtin:pydoc``: Python's own documentation (the stdlib's ``pydoc_data.topics``, about 1 MB,
  offline): its topics in sorted order, cut into paragraphs of at least 80 characters.

Every document has an index (its place in the dataset, counting empty ones), so a reader can start
at any document without reading the text before it in the Parquet case and without keeping it in
the others. Errors are ``DataError``, one line naming the file (and line).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

from .data import DataError

TEXT_SUFFIXES = (".txt", ".text", ".md")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
DATASET_SUFFIXES = TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES
BUILTIN_PYDOC = "builtin:pydoc"


def pydoc_paragraphs(min_chars: int = 80) -> list[str]:
    """The pydoc corpus cut into paragraphs (blank-line separated, whitespace collapsed), in sorted
    topic order."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some stripped-down Pythons omit pydoc_data
        raise DataError(f"dataset: {BUILTIN_PYDOC}: pydoc_data.topics is missing from this Python") from None
    out: list[str] = []
    for key in sorted(topics):
        out += [" ".join(p.split()) for p in topics[key].split("\n\n") if len(p.strip()) >= min_chars]
    return out


class TextDataset:
    """The documents of ``path`` (see the module docstring); ``documents(start)`` streams them."""

    def __init__(self, path: str | Path, text_column: str = "text") -> None:
        self.text_column = text_column
        self.spec = str(path)
        if self.spec == BUILTIN_PYDOC:
            self.root = None
            self.files: list[Path] = []
            self._builtin = pydoc_paragraphs()
            return
        self._builtin = None
        root = Path(path).expanduser()
        if not root.exists():
            raise DataError(f"dataset: {root}: no such file or directory")
        if root.is_dir():
            files = sorted((p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in DATASET_SUFFIXES
                            and not any(part.startswith(".") for part in p.relative_to(root).parts)),
                           key=lambda p: p.relative_to(root).as_posix())
            if not files:
                raise DataError(f"dataset: {root}: no text, JSONL or Parquet files ({', '.join(DATASET_SUFFIXES)})")
        elif root.suffix.lower() in DATASET_SUFFIXES:
            files = [root]
        else:
            raise DataError(f"dataset: {root}: not a text, JSONL or Parquet file ({', '.join(DATASET_SUFFIXES)}) "
                            "or a folder of them")
        self.root = root
        self.files = files
        for f in files:  # a wrong column name is found now, not after an hour of harvesting
            self._check(f)

    # ------------------------------------------------------------------------------------------
    def _check(self, path: Path) -> None:
        suffix = path.suffix.lower()
        if suffix in PARQUET_SUFFIXES:
            names = _parquet_file(path).schema_arrow.names
            if self.text_column not in names:
                raise DataError(f"dataset: {path}: no column '{self.text_column}' (columns: {', '.join(names[:12])}); "
                                "set text_column")
        elif suffix in JSONL_SUFFIXES:
            for lineno, line in _lines(path):
                if line.strip():
                    self._jsonl_text(path, lineno, line)
                    break

    def _jsonl_text(self, path: Path, lineno: int, line: str) -> str:
        try:
            obj = json.loads(line)
        except ValueError:
            raise DataError(f"dataset: {path} line {lineno}: not valid JSON") from None
        if not isinstance(obj, dict):
            raise DataError(f"dataset: {path} line {lineno}: expected a JSON object, got {type(obj).__name__}")
        if self.text_column not in obj:
            fields = ", ".join(list(obj)[:12]) or "none"
            raise DataError(f"dataset: {path} line {lineno}: no '{self.text_column}' field (fields: {fields}); "
                            "set text_column")
        text = obj[self.text_column]
        if text is None:
            return ""
        if not isinstance(text, str):
            raise DataError(f"dataset: {path} line {lineno}: '{self.text_column}' is a {type(text).__name__}, "
                            "not text")
        return text

    def documents(self, start: int = 0) -> Iterator[tuple[int, str]]:
        """``(index, text)`` for every document from index ``start`` on, in dataset order."""
        if self._builtin is not None:
            for i in range(start, len(self._builtin)):
                yield i, self._builtin[i]
            return
        index = 0
        for path in self.files:
            suffix = path.suffix.lower()
            if suffix in PARQUET_SUFFIXES:
                pf = _parquet_file(path)
                groups, skipped = [], 0
                for g in range(pf.num_row_groups):
                    n = pf.metadata.row_group(g).num_rows
                    if index + skipped + n <= start:
                        skipped += n  # a whole row group before the start: not read
                    else:
                        groups.append(g)
                index += skipped
                if not groups:
                    continue
                try:
                    for batch in pf.iter_batches(batch_size=1024, columns=[self.text_column], row_groups=groups):
                        for text in batch.column(0).to_pylist():
                            if index >= start:
                                yield index, text if isinstance(text, str) else ""
                            index += 1
                except OSError as exc:
                    raise DataError(f"dataset: {path}: cannot read ({_first_line(exc)})") from None
            elif suffix in JSONL_SUFFIXES:
                for lineno, line in _lines(path):
                    if not line.strip():
                        continue
                    if index >= start:
                        yield index, self._jsonl_text(path, lineno, line)
                    index += 1
            else:
                para: list[str] = []
                for _, line in _lines(path):
                    if line.strip():
                        para.append(line.rstrip("\r\n"))
                        continue
                    if para:
                        if index >= start:
                            yield index, "\n".join(para)
                        index += 1
                        para = []
                if para:
                    if index >= start:
                        yield index, "\n".join(para)
                    index += 1

    def describe(self) -> dict[str, Any]:
        """What the run records: the files (names and sizes), their total size and a fingerprint."""
        if self._builtin is not None:
            text = "\n\n".join(self._builtin).encode("utf-8")
            return {"dataset": BUILTIN_PYDOC, "documents": len(self._builtin),
                    "fingerprint": hashlib.sha256(text).hexdigest()[:16]}
        assert self.root is not None
        entries = [(f.relative_to(self.root).as_posix() if self.root.is_dir() else f.name, f.stat().st_size)
                   for f in self.files]
        digest = hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]
        return {"dataset": str(self.root), "text_column": self.text_column, "files": [e[0] for e in entries][:50],
                "n_files": len(entries), "bytes": sum(e[1] for e in entries), "fingerprint": digest}


def _parquet_file(path: Path) -> Any:
    try:
        import pyarrow.parquet as pq

        return pq.ParquetFile(str(path))
    except (OSError, ValueError) as exc:
        raise DataError(f"dataset: {path}: cannot read as Parquet ({_first_line(exc)})") from None


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
            for lineno, line in enumerate(fh, 1):
                yield lineno, line
    except OSError as exc:
        raise DataError(f"dataset: {path}: cannot read ({exc.strerror or _first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def write_pydoc_text(path: str | Path) -> Path:
    """Write the built-in corpus's paragraphs to a text file (one paragraph, a blank line, ...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n\n".join(pydoc_paragraphs()) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


__all__ = ["TextDataset", "DATASET_SUFFIXES", "BUILTIN_PYDOC", "pydoc_paragraphs", "write_pydoc_text"]
