"""Contiguous columns: the metrics read back with each column in one buffer of its own
(``ColumnBuffers``), filled from polars scans (``fill_from_scan``) and handed to a frame without a
copy (``zero_copy_series``). The run reader (``reader.py``) and the other tools' table readers
(``ingest/tables.py``) share them."""

from __future__ import annotations

import mmap
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import polars as pl

from .schema import METRIC_COLUMNS


#: Name of the row-number column added to scans (no real column is called this).
ROW_INDEX = "\x00row"
#: Suffix of the Boolean column ``split_nulls`` adds beside a column.
NULLS = "\x00null"
#: numpy dtype of each metric column.
NUMPY_DTYPES = {c: (np.int64 if c == "step" else np.float64) for c in METRIC_COLUMNS}


def _anonymous(n: int, dtype: Any) -> np.ndarray:
    """An array of ``n`` items in its own anonymous memory map. Pages cost memory only once
    written (a capacity may be an upper bound), read as zero until then, and go back to the
    system as soon as the last array using them is dropped: no allocator keeps them, and no
    transparent-huge-page compaction runs on first touch (which numpy's large allocations ask
    for, and which makes first touch several times slower on this kind of VM)."""
    dt = np.dtype(dtype)
    return np.frombuffer(mmap.mmap(-1, max(1, n * dt.itemsize)), dtype=dt, count=n)


def split_nulls(columns: Mapping[str, pl.Expr]) -> list[pl.Expr]:
    """Each column as its values with nulls filled (0) and a Boolean ``name + NULLS`` column:
    what ``ColumnBuffers.put`` copies with no polars call per batch (a scan computes both as it
    reads)."""
    out: list[pl.Expr] = []
    for name, expr in columns.items():
        out += [expr.fill_null(0).alias(name), expr.is_null().alias(name + NULLS)]
    return out


class ColumnBuffers:
    """Columns built batch by batch into one contiguous buffer each, handed to polars without a
    copy.

    polars readers return a column in many chunks (one per file, row group or batch), and
    ``rechunk`` copies every column while the chunks are still held (twice the data at the peak,
    and the allocator keeps the freed chunks for seconds); the analyzer turns columns into numpy
    arrays, which is free only for a single chunk. Here each batch is copied once into its place.
    Nulls are kept in a byte mask, only for columns that have one, and become the validity
    bitmap of the final column (through pyarrow, also without copying the values)."""

    def __init__(self, dtypes: Mapping[str, Any], capacity: int) -> None:
        self.dtypes = {name: np.dtype(dt) for name, dt in dtypes.items()}
        self.capacity = max(0, int(capacity))
        self.values: dict[str, np.ndarray] = {}
        self.nulls: dict[str, np.ndarray] = {}
        self.rows = 0
        """One past the last row written."""

    def _reserve(self, end: int) -> None:
        if end <= self.capacity:
            return
        cap = max(end, self.capacity + self.capacity // 2, 1024)  # only when a source outgrew its count
        for store in (self.values, self.nulls):
            for name, arr in list(store.items()):
                grown = _anonymous(cap, arr.dtype)
                grown[: self.rows] = arr[: self.rows]
                store[name] = grown
        self.capacity = cap

    def _mask(self, name: str) -> np.ndarray:
        mask = self.nulls.get(name)
        if mask is None:
            mask = self.nulls[name] = _anonymous(self.capacity, np.bool_)
        return mask

    def declare(self, names: Iterable[str]) -> None:
        """Make sure these columns exist (null in the rows written before they first appear)."""
        for name in names:
            if name in self.values:
                continue
            self.values[name] = _anonymous(self.capacity, self.dtypes[name])
            if self.rows:
                self._mask(name)[: self.rows] = True

    def put(self, frame: pl.DataFrame, at: int | np.ndarray) -> None:
        """Write ``frame``'s rows from row ``at`` on (or at one index per row). Its declared
        columns must already have their declared dtype; other columns are ignored; declared
        columns it lacks are null in these rows. A column may come split by ``split_nulls``
        (nulls filled, plus a Boolean ``name + NULLS`` column), which costs no polars call here."""
        n = frame.height
        if isinstance(at, np.ndarray):
            where: slice | np.ndarray = at
            end = int(at.max()) + 1 if n else 0
        else:
            where, end = slice(at, at + n), at + n
        if not n:
            return
        self._reserve(end)
        names = set(frame.columns)
        present = [c for c in frame.columns if c in self.dtypes]
        self.declare(present)
        for name in present:
            s = frame.get_column(name)
            if name + NULLS in names:
                self.values[name][where] = s.to_numpy()
                isnull = frame.get_column(name + NULLS).to_numpy()
                if isnull.any():
                    self._mask(name)[where] = isnull
                elif name in self.nulls:
                    self.nulls[name][where] = False
                continue
            nulls = s.null_count()
            if nulls < n:
                self.values[name][where] = (s.fill_null(0) if nulls else s).to_numpy()
            if nulls:
                self._mask(name)[where] = True if nulls == n else s.is_null().to_numpy()
            elif name in self.nulls:
                self.nulls[name][where] = False
        for name in self.values.keys() - set(present):
            self._mask(name)[where] = True
        self.rows = max(self.rows, end)

    def take(self, order: np.ndarray) -> None:
        """Keep only rows ``order`` (indices of rows written), in that order."""
        k = len(order)
        increasing = k < 2 or bool(np.all(order[1:] > order[:-1]))
        block = 1 << 20
        for store in (self.values, self.nulls):
            for name, arr in list(store.items()):
                if increasing:
                    # in place: row j comes from order[j] >= j, never from a row already overwritten
                    for a in range(0, k, block):
                        b = min(k, a + block)
                        arr[a:b] = arr[order[a:b]]
                else:
                    moved = _anonymous(self.capacity, arr.dtype)
                    moved[:k] = arr[order]
                    store[name] = moved
        self.rows = k

    def frame(self, names: Iterable[str]) -> pl.DataFrame:
        """The columns ``names`` (those that exist) as a frame of the rows written; the buffers
        then belong to the frame."""
        n = self.rows
        cols = [zero_copy_series(name, self.values[name][:n], self.nulls.get(name))
                for name in names if name in self.values]
        self.values, self.nulls = {}, {}
        return pl.DataFrame(cols) if cols else pl.DataFrame()


def zero_copy_series(name: str, values: np.ndarray, mask: np.ndarray | None) -> pl.Series:
    n = len(values)
    k = int(np.count_nonzero(mask[:n])) if mask is not None else 0
    if not k:
        return pl.Series(name, values)  # shares the buffer
    dtype = pl.Int64 if values.dtype.kind == "i" else pl.Float64
    if k == n:
        return pl.repeat(None, n, dtype=dtype, eager=True).alias(name)
    try:
        import pyarrow as pa
    except ImportError:  # pyarrow is a dependency; this only keeps a broken install working
        return pl.select(pl.when(pl.Series(mask[:n])).then(None).otherwise(pl.Series(values))).to_series().alias(name)
    validity = np.packbits(~mask[:n], bitorder="little")
    arr = pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), n, [pa.py_buffer(validity), pa.py_buffer(values)],
                                null_count=k)
    return pl.Series(name, arr)  # shares the values buffer; the validity bitmap is n/8 bytes


#: Sources up to this many rows are collected at once; longer ones batch by batch (less in flight).
EAGER_ROWS = 1_000_000


def fill_from_scan(buffers: ColumnBuffers, frame: pl.LazyFrame, at: int, rows: int,
                   convert: Callable[[pl.DataFrame], pl.DataFrame] | None = None) -> int:
    """Run ``frame`` (a scan with its ``ROW_INDEX`` column, numbered by the scan itself) into
    ``buffers`` from row ``at``; returns the rows written.

    Up to ``EAGER_ROWS`` rows (about ``rows``) it is collected at once and each row lands where
    its row number says, whatever order an engine delivers them in. Longer sources go batch by
    batch (``collect_batches(maintain_order=True)``, which keeps the source's order), without
    the row numbers, which would make the streaming engine hold far more in flight. ``convert``
    is applied to each batch."""
    if rows > EAGER_ROWS:
        written = 0
        for batch in frame.drop(ROW_INDEX).collect_batches(maintain_order=True):
            if batch.height:
                buffers.put(convert(batch) if convert is not None else batch, at + written)
                written += batch.height
        return written
    batch = frame.collect()
    if not batch.height:
        return 0
    if convert is not None:
        batch = convert(batch)
    index = batch.get_column(ROW_INDEX).to_numpy()
    first = int(index[0])
    if index[-1] - first == len(index) - 1 and (len(index) < 3 or bool(np.all(np.diff(index) == 1))):
        buffers.put(batch, at + first)
    else:
        buffers.put(batch, index.astype(np.int64) + at)
    return batch.height


def dtype_words(dtype: Any) -> str:
    """A polars dtype in plain lowercase words (``Float64`` -> ``float64``, ``Datetime(...)`` -> ``datetime``)."""
    return str(dtype).split("(", 1)[0].split("[", 1)[0].lower()
