"""A minimal reader for TensorBoard event files: TFRecord framing and the few protobuf messages
that carry scalars and hparams, decoded by hand (no TensorFlow, no tensorboard package).

Framing (TFRecord): ``uint64 length, uint32 masked_crc32c(length), data, uint32 masked_crc32c(data)``.
The length CRC is checked on the first record and wherever a length looks wrong (zero, or past the
end of the file), which tells a cut file from a zero-filled or corrupt one; the data CRC is not
checked (pure-Python CRC32C over every byte would dominate the read time); a record that does not
decode ends the read with a note instead.

Messages decoded (field numbers from tensorflow/core/util/event.proto, summary.proto,
tensor.proto and tensorboard/plugins/hparams/plugin_data.proto):

- ``Event``: wall_time 1 (double), step 2 (int64), summary 5.
- ``Summary``: value 1 (repeated) -> ``Value``: tag 1, simple_value 2 (float), tensor 8, metadata 9;
  old-style histo 5 / image 4 / audio 6 are counted as non-scalar.
- ``SummaryMetadata``: plugin_data 1 -> (plugin_name 1, content 2).
- ``TensorProto``: dtype 1, tensor_shape 2, tensor_content 4, float_val 5, double_val 6, int_val 7,
  int64_val 10, bool_val 11, half_val 13, uint32_val 16, uint64_val 17.
- ``HParamsPluginData``: session_start_info 3 -> hparams 1 (map<string, google.protobuf.Value>).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..runlog.safeio import read_regular

# --------------------------------------------------------------------------------------------
# CRC32C (Castagnoli), table-driven; used on the 8-byte length headers only.
# --------------------------------------------------------------------------------------------


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC32C of ``data``."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@dataclass(frozen=True)
class Records:
    """The complete records of one event file."""

    records: list[bytes]
    """Record payloads (serialized ``Event`` messages) in file order."""
    problem: str | None
    """Why reading stopped before the end of the file (cut short, bad length CRC), or None."""


def read_records(path: Path) -> Records:
    """Split an event file into records; stop at the first incomplete or corrupt one."""
    data = read_regular(path)  # a regular file only: never a FIFO or a device
    out: list[bytes] = []
    pos, n = 0, len(data)
    problem = None
    while pos < n:
        if pos + 12 > n:
            problem = f"cut short after {len(out)} complete record(s) (an interrupted write)"
            break
        length, len_crc = struct.unpack_from("<QI", data, pos)
        end = pos + 12 + length + 4
        # The length CRC is checked on the first record and wherever the length looks wrong
        # (zero, or past the end): enough to tell a cut file from a corrupt one, and cheap.
        if (not out or length == 0 or end > n) and masked_crc32c(data[pos:pos + 8]) != len_crc:
            problem = f"bad record header after {len(out)} complete record(s) (corrupt or not an event file)"
            break
        if end > n:
            problem = f"cut short after {len(out)} complete record(s) (an interrupted write)"
            break
        out.append(data[pos + 12:pos + 12 + length])
        pos = end
    return Records(records=out, problem=problem)


# --------------------------------------------------------------------------------------------
# Protobuf wire format
# --------------------------------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    """Yield ``(field_number, wire_type, value)``: int for varints, bytes otherwise."""
    pos, n = 0, len(buf)
    while pos < n:
        key, pos = _varint(buf, pos)
        wire = key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            ln, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + ln], pos + ln
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > n:
            raise ValueError("message cut short")
        yield key >> 3, wire, value


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


# TensorProto dtype -> struct format of one element (little-endian).
_DTYPE_FMT = {1: "<f", 2: "<d", 3: "<i", 4: "<B", 5: "<h", 6: "<b", 9: "<q", 10: "<?",
              17: "<H", 19: "<e", 22: "<I", 23: "<Q"}
_BFLOAT16 = 14


@dataclass(slots=True)
class Value:
    """One ``Summary.Value`` reduced to what the reader needs."""

    tag: str = ""
    scalar: float | None = None
    """The number, for a simple_value or a one-element numeric tensor."""
    plugin: str | None = None
    """``plugin_data.plugin_name`` when the metadata is present."""
    content: bytes = b""
    """``plugin_data.content``."""
    non_scalar: bool = False
    """True for histograms, images, audio, strings and multi-element tensors."""


@dataclass(slots=True)
class Event:
    """One ``Event`` reduced to its step, wall time and summary values."""

    step: int = 0
    wall_time: float = 0.0
    values: list[Value] = field(default_factory=list)


_F32 = struct.Struct("<f").unpack_from
_F64 = struct.Struct("<d").unpack_from
_TAG_CACHE: dict[bytes, str] = {}


def _length(buf: bytes, pos: int) -> tuple[int, int]:
    b = buf[pos]
    return (b, pos + 1) if b < 0x80 else _varint(buf, pos)


def _skip(buf: bytes, pos: int) -> int:
    """Position after the field starting at ``pos``."""
    key, pos = _varint(buf, pos)
    wire = key & 7
    if wire == 0:
        return _varint(buf, pos)[1]
    if wire == 1:
        return pos + 8
    if wire == 2:
        ln, pos = _length(buf, pos)
        return pos + ln
    if wire == 5:
        return pos + 4
    raise ValueError(f"unsupported wire type {wire}")


def parse_event(buf: bytes) -> Event:
    """Decode one serialized ``Event`` (single-byte keys inline: this loop runs once per point)."""
    ev = Event()
    pos, n = 0, len(buf)
    while pos < n:
        key = buf[pos]
        if key == 0x09:  # wall_time, double
            ev.wall_time = _F64(buf, pos + 1)[0]
            pos += 9
        elif key == 0x10:  # step, int64
            v, pos = _length(buf, pos + 1)
            ev.step = _signed64(v)
        elif key == 0x2A:  # summary
            ln, pos = _length(buf, pos + 1)
            end = pos + ln
            if end > n:
                raise ValueError("summary cut short")
            while pos < end:
                if buf[pos] == 0x0A:  # Summary.value
                    vl, pos = _length(buf, pos + 1)
                    ev.values.append(_parse_value(buf[pos:pos + vl]))
                    pos += vl
                else:
                    pos = _skip(buf, pos)
        else:
            pos = _skip(buf, pos)
    if pos > n:
        raise ValueError("event cut short")
    return ev


def _parse_value(buf: bytes) -> Value:
    val = Value()
    tensor = None
    pos, n = 0, len(buf)
    while pos < n:
        key = buf[pos]
        if key == 0x0A:  # tag
            ln, pos = _length(buf, pos + 1)
            raw = buf[pos:pos + ln]
            tag = _TAG_CACHE.get(raw)
            if tag is None:
                tag = _TAG_CACHE.setdefault(raw, raw.decode("utf-8", "replace"))
            val.tag = tag
            pos += ln
        elif key == 0x15:  # simple_value, float
            val.scalar = _F32(buf, pos + 1)[0]
            pos += 5
        elif key == 0x42:  # tensor
            ln, pos = _length(buf, pos + 1)
            tensor = buf[pos:pos + ln]
            pos += ln
        elif key == 0x4A:  # metadata
            ln, pos = _length(buf, pos + 1)
            for mnum, mwire, mv in fields(buf[pos:pos + ln]):
                if mnum == 1 and mwire == 2:
                    for pnum, pwire, pv in fields(mv):
                        if pnum == 1 and pwire == 2:
                            val.plugin = pv.decode("utf-8", "replace")
                        elif pnum == 2 and pwire == 2:
                            val.content = pv
            pos += ln
        else:
            if key in (0x1A, 0x22, 0x2A, 0x32):  # old histogram, image, histo, audio
                val.non_scalar = True
            pos = _skip(buf, pos)
    if pos > n:
        raise ValueError("value cut short")
    if tensor is not None and val.scalar is None:
        val.scalar = tensor_scalar(tensor)
        if val.scalar is None:
            val.non_scalar = True
    return val


def tensor_scalar(buf: bytes) -> float | None:
    """The value of a one-element numeric ``TensorProto``, else None."""
    dtype = 0
    count = 1
    content = b""
    items: list[float] = []
    for num, wire, v in fields(buf):
        if num == 1 and wire == 0:
            dtype = v
        elif num == 2 and wire == 2:
            for dnum, dwire, dv in fields(v):
                if dnum == 2 and dwire == 2:
                    for znum, zwire, zv in fields(dv):
                        if znum == 1 and zwire == 0:
                            count *= _signed64(zv)
        elif num == 4 and wire == 2:
            content = v
        elif num in (5, 6, 7, 10, 11, 13, 16, 17):
            items.extend(_typed_values(num, wire, v, dtype))
    if count != 1:
        return None
    if content:
        if dtype == _BFLOAT16 and len(content) >= 2:
            return struct.unpack("<f", b"\x00\x00" + content[:2])[0]
        fmt = _DTYPE_FMT.get(dtype)
        if fmt is None or len(content) < struct.calcsize(fmt):
            return None
        return float(struct.unpack_from(fmt, content)[0])
    return float(items[0]) if items else None


def _typed_values(num: int, wire: int, v: object, dtype: int) -> list[float]:
    if num == 5:  # float_val
        return list(struct.unpack(f"<{len(v) // 4}f", v)) if wire == 2 else [struct.unpack("<f", v)[0]]
    if num == 6:  # double_val
        return list(struct.unpack(f"<{len(v) // 8}d", v)) if wire == 2 else [struct.unpack("<d", v)[0]]
    ints: list[int] = []
    if wire == 0:
        ints = [v]
    elif wire == 2:
        pos = 0
        while pos < len(v):
            x, pos = _varint(v, pos)
            ints.append(x)
    if num == 13:  # half_val holds float16 / bfloat16 bits
        if dtype == _BFLOAT16:
            return [struct.unpack("<f", struct.pack("<I", (x & 0xFFFF) << 16))[0] for x in ints]
        return [struct.unpack("<e", struct.pack("<H", x & 0xFFFF))[0] for x in ints]
    if num in (7, 10):
        return [float(_signed64(x)) for x in ints]
    return [float(x) for x in ints]


def parse_hparams(content: bytes) -> dict[str, object]:
    """The hparams of a ``session_start_info`` (HParamsPluginData content), or {}."""
    out: dict[str, object] = {}
    for num, wire, v in fields(content):
        if num != 3 or wire != 2:
            continue
        for snum, swire, sv in fields(v):
            if snum != 1 or swire != 2:
                continue
            key, value = "", None
            for enum_, ewire, ev in fields(sv):
                if enum_ == 1 and ewire == 2:
                    key = ev.decode("utf-8", "replace")
                elif enum_ == 2 and ewire == 2:
                    value = _pb_value(ev)
            if key:
                out[key] = value
    return out


def _pb_value(buf: bytes) -> object:
    """A ``google.protobuf.Value`` (number, string or bool; others -> None)."""
    for num, wire, v in fields(buf):
        if num == 2 and wire == 1:
            f = struct.unpack("<d", v)[0]
            return int(f) if f.is_integer() and abs(f) < 2**53 else f
        if num == 3 and wire == 2:
            return v.decode("utf-8", "replace")
        if num == 4 and wire == 0:
            return bool(v)
    return None
