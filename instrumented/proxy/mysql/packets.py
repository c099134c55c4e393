"""MySQL client/server protocol framing and the few packet layouts the proxy has to read or build.

Only what a relaying proxy needs: packet headers, length-encoded values, the server greeting and the
client's handshake response (to learn and strip capabilities), OK/ERR/EOF parsing, and building OK,
ERR and text result sets for answers that come from Lua (``proxy.response``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

MAX_PAYLOAD = 0xFFFFFF  # a payload of exactly this size is continued in the next packet

# Capability flags (protocol::CapabilityFlags).
CLIENT_MYSQL = 1  # MariaDB: server is MySQL-compatible; when unset, 4 bytes of extended caps follow
CLIENT_CONNECT_WITH_DB = 0x8
CLIENT_COMPRESS = 0x20
CLIENT_PROTOCOL_41 = 0x200
CLIENT_SSL = 0x800
CLIENT_SECURE_CONNECTION = 0x8000
CLIENT_MULTI_RESULTS = 0x20000
CLIENT_PLUGIN_AUTH = 0x80000
CLIENT_CONNECT_ATTRS = 0x100000
CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 0x200000
CLIENT_SESSION_TRACK = 0x800000
CLIENT_DEPRECATE_EOF = 0x1000000

# MariaDB extended capabilities (the 4 bytes at the end of the greeting filler).
MARIADB_CLIENT_PROGRESS = 1 << 0
MARIADB_CLIENT_STMT_BULK_OPERATIONS = 1 << 2
MARIADB_CLIENT_EXTENDED_METADATA = 1 << 3
MARIADB_CLIENT_CACHE_METADATA = 1 << 4
#: Extended capabilities the proxy hides from clients because they change the result framing (progress
#: packets inside results, bulk execution, column definitions with extra data, skipped metadata).
STRIPPED_MARIADB_CAPS = (
    MARIADB_CLIENT_PROGRESS
    | MARIADB_CLIENT_STMT_BULK_OPERATIONS
    | MARIADB_CLIENT_EXTENDED_METADATA
    | MARIADB_CLIENT_CACHE_METADATA
)
#: Capabilities MySQL Proxy removed from the greeting: it cannot relay TLS or compressed traffic.
STRIPPED_CAPS = CLIENT_SSL | CLIENT_COMPRESS

# Server status flags.
SERVER_STATUS_IN_TRANS = 0x1
SERVER_STATUS_AUTOCOMMIT = 0x2
SERVER_MORE_RESULTS_EXISTS = 0x8
SERVER_QUERY_NO_GOOD_INDEX_USED = 0x10
SERVER_QUERY_NO_INDEX_USED = 0x20
SERVER_STATUS_CURSOR_EXISTS = 0x40

# Commands.
COM_QUIT = 1
COM_INIT_DB = 2
COM_QUERY = 3
COM_FIELD_LIST = 4
COM_PROCESS_INFO = 10
COM_CHANGE_USER = 17
COM_BINLOG_DUMP = 18
COM_STMT_PREPARE = 22
COM_STMT_EXECUTE = 23
COM_STMT_SEND_LONG_DATA = 24
COM_STMT_CLOSE = 25
COM_STMT_FETCH = 28
COM_BINLOG_DUMP_GTID = 30
COM_STMT_BULK_EXECUTE = 250

COMMAND_NAMES: dict[str, int] = {
    "SLEEP": 0, "QUIT": 1, "INIT_DB": 2, "QUERY": 3, "FIELD_LIST": 4, "CREATE_DB": 5, "DROP_DB": 6, "REFRESH": 7,
    "SHUTDOWN": 8, "STATISTICS": 9, "PROCESS_INFO": 10, "CONNECT": 11, "PROCESS_KILL": 12, "DEBUG": 13, "PING": 14,
    "TIME": 15, "DELAYED_INSERT": 16, "CHANGE_USER": 17, "BINLOG_DUMP": 18, "TABLE_DUMP": 19, "CONNECT_OUT": 20,
    "REGISTER_SLAVE": 21, "STMT_PREPARE": 22, "STMT_EXECUTE": 23, "STMT_SEND_LONG_DATA": 24, "STMT_CLOSE": 25,
    "STMT_RESET": 26, "SET_OPTION": 27, "STMT_FETCH": 28, "DAEMON": 29,
}  # fmt: skip

MYSQL_TYPES: dict[str, int] = {
    "DECIMAL": 0, "TINY": 1, "SHORT": 2, "LONG": 3, "FLOAT": 4, "DOUBLE": 5, "NULL": 6, "TIMESTAMP": 7,
    "LONGLONG": 8, "INT24": 9, "DATE": 10, "TIME": 11, "DATETIME": 12, "YEAR": 13, "NEWDATE": 14, "BIT": 16,
    "NEWDECIMAL": 246, "ENUM": 247, "SET": 248, "TINY_BLOB": 249, "MEDIUM_BLOB": 250, "LONG_BLOB": 251,
    "BLOB": 252, "VAR_STRING": 253, "STRING": 254, "GEOMETRY": 255,
}  # fmt: skip
MYSQL_TYPE_STRING = 254
_NUMERIC_TYPES = {0, 1, 2, 3, 4, 5, 8, 9, 13, 246}

CHARSET_UTF8 = 33  # utf8_general_ci
CHARSET_BINARY = 63
PRI_KEY_FLAG = 0x2
BINARY_FLAG = 0x80

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
    numeric = type_ in _NUMERIC_TYPES
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
class Greeting:
    """The server's initial handshake (protocol v10), with the offsets needed to patch capabilities."""

    protocol: int
    server_version: bytes
    thread_id: int
    scramble: bytes
    capabilities: int
    charset: int
    status: int
    auth_plugin: bytes
    mariadb_caps: int
    mysqld_version: int = 0
    _caps_low_pos: int = field(default=0, repr=False)
    _caps_high_pos: int = field(default=0, repr=False)
    _ext_pos: int = field(default=-1, repr=False)


def parse_greeting(payload: bytes) -> Greeting:
    """Parse a v10 handshake; raises ValueError on anything else (an ERR greeting is handled by the caller)."""
    if not payload or payload[0] != 10:
        raise ValueError("not a protocol 10 handshake")
    end = payload.index(b"\x00", 1)
    version = payload[1:end]
    pos = end + 1
    thread_id = struct.unpack_from("<I", payload, pos)[0]
    pos += 4
    scramble = payload[pos : pos + 8]
    pos += 9
    caps_low_pos = pos
    caps = struct.unpack_from("<H", payload, pos)[0]
    pos += 2
    charset = status = 0
    caps_high_pos = -1
    auth_plugin = b""
    mariadb_caps = 0
    ext_pos = -1
    if pos < len(payload):
        charset = payload[pos]
        status = struct.unpack_from("<H", payload, pos + 1)[0]
        caps_high_pos = pos + 3
        caps |= struct.unpack_from("<H", payload, caps_high_pos)[0] << 16
        auth_len = payload[pos + 5]
        pos += 6 + 6  # charset, status, caps high, auth data len, 6 filler bytes
        if not caps & CLIENT_MYSQL:
            ext_pos = pos
            mariadb_caps = struct.unpack_from("<I", payload, pos)[0]
        pos += 4
        if caps & CLIENT_SECURE_CONNECTION:
            part2 = max(13, auth_len - 8)
            scramble += payload[pos : pos + part2].rstrip(b"\x00")
            pos += part2
        if caps & CLIENT_PLUGIN_AUTH:
            auth_plugin = payload[pos:].split(b"\x00", 1)[0]
    digits = version.split(b"-", 1)[0].split(b".")
    mysqld_version = 0
    try:
        major, minor, patch = (int(d) for d in digits[:3])
        mysqld_version = major * 10000 + minor * 100 + patch
    except ValueError:
        pass
    return Greeting(
        10, version, thread_id, scramble, caps, charset, status, auth_plugin, mariadb_caps, mysqld_version,
        caps_low_pos, caps_high_pos, ext_pos,
    )  # fmt: skip


def strip_greeting(payload: bytes, greeting: Greeting) -> bytes:
    """The greeting with SSL/compression (and the MariaDB framing extensions) removed from its capabilities."""
    data = bytearray(payload)
    caps = greeting.capabilities & ~STRIPPED_CAPS
    struct.pack_into("<H", data, greeting._caps_low_pos, caps & 0xFFFF)
    if greeting._caps_high_pos >= 0:
        struct.pack_into("<H", data, greeting._caps_high_pos, caps >> 16)
    if greeting._ext_pos >= 0:
        struct.pack_into("<I", data, greeting._ext_pos, greeting.mariadb_caps & ~STRIPPED_MARIADB_CAPS)
    return bytes(data)


@dataclass
class AuthResponse:
    """What the client's handshake response says (protocol 4.1)."""

    capabilities: int
    username: bytes
    auth_response: bytes
    database: bytes
    auth_plugin: bytes
    is_ssl_request: bool = False


def parse_auth_response(payload: bytes) -> AuthResponse:
    """Parse a HandshakeResponse41; an SSL request (32 bytes, CLIENT_SSL) is flagged, not parsed."""
    caps = struct.unpack_from("<I", payload, 0)[0]
    if not caps & CLIENT_PROTOCOL_41:
        raise ValueError("pre-4.1 clients are not supported")
    if len(payload) <= 32:
        return AuthResponse(caps, b"", b"", b"", b"", is_ssl_request=bool(caps & CLIENT_SSL))
    pos = 32
    end = payload.index(b"\x00", pos)
    username = payload[pos:end]
    pos = end + 1
    if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        auth, pos = read_lenenc_str(payload, pos)
        auth = auth or b""
    elif caps & CLIENT_SECURE_CONNECTION:
        length = payload[pos]
        auth = payload[pos + 1 : pos + 1 + length]
        pos += 1 + length
    else:
        end = payload.index(b"\x00", pos)
        auth = payload[pos:end]
        pos = end + 1
    database = b""
    if caps & CLIENT_CONNECT_WITH_DB and pos < len(payload):
        end = payload.find(b"\x00", pos)
        end = len(payload) if end < 0 else end
        database = payload[pos:end]
        pos = end + 1
    plugin = b""
    if caps & CLIENT_PLUGIN_AUTH and pos < len(payload):
        end = payload.find(b"\x00", pos)
        plugin = payload[pos : len(payload) if end < 0 else end]
    return AuthResponse(caps, username, auth, database, plugin)


def parse_change_user(payload: bytes, capabilities: int) -> tuple[bytes, bytes]:
    """(username, database) of a COM_CHANGE_USER packet."""
    end = payload.index(b"\x00", 1)
    username = payload[1:end]
    pos = end + 1
    if capabilities & CLIENT_SECURE_CONNECTION:
        pos += 1 + payload[pos]
    else:
        pos = payload.index(b"\x00", pos) + 1
    end = payload.find(b"\x00", pos)
    database = payload[pos : len(payload) if end < 0 else end]
    return username, database


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
