"""MySQL client/server protocol framing and the few packet layouts the proxy has to read or build.

Only what a relaying proxy needs: packet headers, cutting commands off the client's stream,
length-encoded values, OK/ERR/EOF parsing, buffered result sets for ``inj.resultset``, and building OK,
ERR and text result sets for answers that come from Lua (``proxy.response``). The connection-phase
packets are in ``auth.py``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .constants import (
    BINARY_FLAG,
    CHARSET_BINARY,
    CHARSET_UTF8,
    MAX_PAYLOAD,
    MYSQL_TYPE_STRING,
    NUMERIC_TYPES,
    PRI_KEY_FLAG,
    SERVER_STATUS_AUTOCOMMIT,
)

_HEADER = struct.Struct("<I")


def frame(payload: bytes, seq: int) -> tuple[bytes, int]:
    """Wrap ``payload`` in one or more packets starting at ``seq``; return the bytes and the next seq."""
    out = bytearray()
    view = memoryview(payload)
    pos = 0
    while True:
        chunk = view[pos : pos + MAX_PAYLOAD]
        out += _HEADER.pack(len(chunk) | ((seq & 0xFF) << 24))
        out += chunk
        seq = (seq + 1) & 0xFF
        pos += MAX_PAYLOAD
        if len(chunk) < MAX_PAYLOAD:
            return bytes(out), seq


def frame_all(payloads: Iterable[bytes], seq: int) -> tuple[bytes, int]:
    """Frame several payloads back to back (a result set, a RAW response)."""
    out = bytearray()
    for payload in payloads:
        data, seq = frame(payload, seq)
        out += data
    return bytes(out), seq


def lenenc_int(value: int) -> bytes:
    """Encode a length-encoded integer."""
    if value < 251:
        return bytes((value,))
    if value < 1 << 16:
        return b"\xfc" + value.to_bytes(2, "little")
    if value < 1 << 24:
        return b"\xfd" + value.to_bytes(3, "little")
    return b"\xfe" + value.to_bytes(8, "little")


def lenenc_str(value: bytes) -> bytes:
    """Encode a length-encoded string."""
    return lenenc_int(len(value)) + value


def read_lenenc_int(data: bytes | bytearray | memoryview, pos: int) -> tuple[int | None, int]:
    """Decode a length-encoded integer at ``pos``: (value or None for SQL NULL 0xfb, new position)."""
    first = data[pos]
    if first < 0xFB:
        return first, pos + 1
    if first == 0xFB:
        return None, pos + 1
    if first == 0xFC:
        return int.from_bytes(data[pos + 1 : pos + 3], "little"), pos + 3
    if first == 0xFD:
        return int.from_bytes(data[pos + 1 : pos + 4], "little"), pos + 4
    return int.from_bytes(data[pos + 1 : pos + 9], "little"), pos + 9


def read_lenenc_str(data: bytes | bytearray | memoryview, pos: int) -> tuple[bytes | None, int]:
    """Decode a length-encoded string at ``pos`` (None for SQL NULL)."""
    length, pos = read_lenenc_int(data, pos)
    if length is None:
        return None, pos
    return bytes(data[pos : pos + length]), pos + length


def iter_packets(data: bytes) -> Iterator[bytes]:
    """Split complete framed packets into logical payloads (continuations joined)."""
    pos = 0
    current = bytearray()
    while pos + 4 <= len(data):
        length = _HEADER.unpack_from(data, pos)[0] & 0xFFFFFF
        current += data[pos + 4 : pos + 4 + length]
        pos += 4 + length
        if length < MAX_PAYLOAD:
            yield bytes(current)
            current = bytearray()


def take_command(buf: bytearray) -> tuple[bytes, bytes, int] | None:
    """Cut one whole command off ``buf``: (payload, the packets as received, last seq), or None if incomplete."""
    size = len(buf)
    pos = 0
    parts: list[tuple[int, int]] = []
    while True:  # 16 MB packets continue in the next one
        if pos + 4 > size:
            return None
        plen = _HEADER.unpack_from(buf, pos)[0] & 0xFFFFFF
        if pos + 4 + plen > size:
            return None
        parts.append((pos + 4, pos + 4 + plen))
        seq = buf[pos + 3]
        pos += 4 + plen
        if plen < MAX_PAYLOAD:
            break
    payload = bytes(buf[4:pos]) if len(parts) == 1 else b"".join(buf[a:b] for a, b in parts)
    raw = bytes(buf[:pos])
    del buf[:pos]
    return payload, raw, seq


def ok_packet(
    affected_rows: int = 0, insert_id: int = 0, status: int = SERVER_STATUS_AUTOCOMMIT, warnings: int = 0
) -> bytes:
    """OK payload (protocol 4.1)."""
    return b"\x00" + lenenc_int(affected_rows) + lenenc_int(insert_id) + struct.pack("<HH", status, warnings)


def err_packet(message: str | bytes, code: int = 1105, sqlstate: str | bytes = "07000") -> bytes:
    """ERR payload (protocol 4.1, with SQL state)."""
    if isinstance(message, str):
        message = message.encode("utf-8", "replace")
    if isinstance(sqlstate, str):
        sqlstate = sqlstate.encode("ascii", "replace")
    sqlstate = (sqlstate + b"00000")[:5]
    return b"\xff" + struct.pack("<H", code & 0xFFFF) + b"#" + sqlstate + message


def eof_packet(status: int = SERVER_STATUS_AUTOCOMMIT, warnings: int = 0) -> bytes:
    """EOF payload (before CLIENT_DEPRECATE_EOF)."""
    return b"\xfe" + struct.pack("<HH", warnings, status)


def column_definition(name: bytes, type_: int = MYSQL_TYPE_STRING) -> bytes:
    """A column definition (protocol 4.1) for a result set built by the proxy."""
    numeric = type_ in NUMERIC_TYPES
    charset = CHARSET_BINARY if numeric else CHARSET_UTF8
    flags = PRI_KEY_FLAG | (BINARY_FLAG if numeric else 0)
    return (
        lenenc_str(b"def")
        + lenenc_str(b"")
        + lenenc_str(b"")
        + lenenc_str(b"")
        + lenenc_str(name)
        + lenenc_str(name)
        + b"\x0c"
        + struct.pack("<HIBHB", charset, 32, type_ & 0xFF, flags, 0)
        + b"\x00\x00"
    )


def text_resultset(
    fields: Sequence[tuple[bytes, int]], rows: Iterable[Sequence[bytes | None]], deprecate_eof: bool
) -> list[bytes]:
    """Payloads of a text-protocol result set; ``None`` cells are SQL NULL."""
    payloads = [lenenc_int(len(fields))]
    payloads.extend(column_definition(name, type_) for name, type_ in fields)
    if not deprecate_eof:
        payloads.append(eof_packet())
    for row in rows:
        payloads.append(b"".join(b"\xfb" if cell is None else lenenc_str(cell) for cell in row))
    if deprecate_eof:
        payloads.append(b"\xfe" + ok_packet()[1:])
    else:
        payloads.append(eof_packet())
    return payloads


@dataclass
class OkInfo:
    """What an OK (or OK-style EOF) packet says."""

    affected_rows: int = 0
    insert_id: int = 0
    status: int = 0
    warnings: int = 0


def parse_ok(payload: bytes | bytearray | memoryview) -> OkInfo:
    """Parse an OK packet (header 0x00, or 0xfe when it ends a result set under CLIENT_DEPRECATE_EOF)."""
    affected, pos = read_lenenc_int(payload, 1)
    insert_id, pos = read_lenenc_int(payload, pos)
    status = warnings = 0
    if pos + 2 <= len(payload):
        status = payload[pos] | payload[pos + 1] << 8
    if pos + 4 <= len(payload):
        warnings = payload[pos + 2] | payload[pos + 3] << 8
    return OkInfo(affected or 0, insert_id or 0, status, warnings)


def parse_eof(payload: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(warnings, status) of a classic EOF packet."""
    if len(payload) >= 5:
        return payload[1] | payload[2] << 8, payload[3] | payload[4] << 8
    return 0, 0


def parse_err(payload: bytes | bytearray | memoryview) -> tuple[int, bytes, bytes]:
    """(code, sqlstate, message) of an ERR packet."""
    code = payload[1] | payload[2] << 8 if len(payload) >= 3 else 0
    if len(payload) >= 9 and payload[3] == 0x23:  # '#'
        return code, bytes(payload[4:9]), bytes(payload[9:])
    return code, b"HY000", bytes(payload[3:])


@dataclass
class ColumnInfo:
    """The parts of a column definition a script can read (``inj.resultset.fields``)."""

    name: bytes
    type: int
    org_name: bytes
    table: bytes
    org_table: bytes


def parse_column_definition(payload: bytes) -> ColumnInfo:
    """Parse a protocol 4.1 column definition."""
    pos = 0
    values: list[bytes] = []
    for _ in range(6):  # catalog, schema, table, org_table, name, org_name
        value, pos = read_lenenc_str(payload, pos)
        values.append(value or b"")
    _, pos = read_lenenc_int(payload, pos)
    type_ = payload[pos + 6] if pos + 6 < len(payload) else MYSQL_TYPE_STRING
    return ColumnInfo(values[4], type_, values[5], values[2], values[3])


def parse_text_row(payload: bytes, columns: int) -> list[bytes | None]:
    """Cells of a text-protocol row."""
    pos = 0
    row: list[bytes | None] = []
    for _ in range(columns):
        value, pos = read_lenenc_str(payload, pos)
        row.append(value)
    return row


@dataclass
class BufferedResult:
    """A buffered response's first result set, as ``inj.resultset`` shows it (``raw``, ``fields``, ``rows``)."""

    raw: bytes
    fields: list[dict[bytes, Any]]
    rows: list[list[bytes | None]]


def parse_resultset(data: bytes, binary: bool, deprecate_eof: bool) -> BufferedResult:
    """Parse a buffered response (framed packets): the first packet, column definitions, text rows."""
    payloads = iter_packets(data)
    first = next(payloads, b"")
    if not first or first[0] in (0x00, 0xFF, 0xFB):
        return BufferedResult(first, [], [])
    count, _ = read_lenenc_int(first, 0)
    fields: list[dict[bytes, Any]] = []
    for _ in range(count or 0):
        col = parse_column_definition(next(payloads, b""))
        fields.append({b"name": col.name, b"type": col.type, b"org_name": col.org_name, b"table": col.table,
                       b"org_table": col.org_table})  # fmt: skip
    rows: list[list[bytes | None]] = []
    if not binary:
        for payload in payloads:
            if payload[:1] == b"\xfe" and len(payload) < MAX_PAYLOAD and not rows and not deprecate_eof:
                continue  # the EOF after the column definitions
            if payload[:1] in (b"\xfe", b"\xff") and len(payload) < MAX_PAYLOAD:
                break
            rows.append(parse_text_row(payload, len(fields)))
    return BufferedResult(first, fields, rows)
