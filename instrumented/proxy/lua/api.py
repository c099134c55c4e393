"""The Python side of the MySQL Proxy 0.8 API: the ``proxy.*`` constants and the values hooks exchange.

Plain data, no Lua runtime: what ``proxy.queries:append`` queued (``Injection``), what a hook decided
(``HookResult``), what the host measured for ``read_query_result`` (``ResultStats``) and
``proxy.response`` translated into Python (``ProxyResponse``) and then into packets.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from typing import Any

from ..mysql import packets as p
from ..mysql.constants import COMMAND_NAMES, MYSQL_TYPES
from ..mysql.responses import ResponseTracker

PROXY_SEND_QUERY = 1
PROXY_SEND_RESULT = 2
PROXY_IGNORE_RESULT = 4
MYSQLD_PACKET_OK = 0
MYSQLD_PACKET_RAW = 0xFA
MYSQLD_PACKET_ERR = 0xFF
PROXY_VERSION = 0x00805

HOOKS = (
    "connect_server",
    "read_handshake",
    "read_auth",
    "read_auth_result",
    "read_query",
    "read_query_result",
    "disconnect_client",
)


def proxy_constants() -> dict[bytes, int]:
    """The constants a script finds in the ``proxy`` table (``proxy.COM_QUERY``, ``proxy.MYSQL_TYPE_LONG``...)."""
    constants: dict[bytes, int] = {
        b"PROXY_SEND_QUERY": PROXY_SEND_QUERY,
        b"PROXY_SEND_RESULT": PROXY_SEND_RESULT,
        b"PROXY_IGNORE_RESULT": PROXY_IGNORE_RESULT,
        b"MYSQLD_PACKET_OK": MYSQLD_PACKET_OK,
        b"MYSQLD_PACKET_RAW": MYSQLD_PACKET_RAW,
        b"MYSQLD_PACKET_ERR": MYSQLD_PACKET_ERR,
        b"PROXY_VERSION": PROXY_VERSION,
        b"BACKEND_STATE_UNKNOWN": 0,
        b"BACKEND_STATE_UP": 1,
        b"BACKEND_STATE_DOWN": 2,
        b"BACKEND_TYPE_UNKNOWN": 0,
        b"BACKEND_TYPE_RW": 1,
        b"BACKEND_TYPE_RO": 2,
    }
    constants.update({b"COM_" + k.encode(): v for k, v in COMMAND_NAMES.items()})
    constants.update({b"MYSQL_TYPE_" + k.encode(): v for k, v in MYSQL_TYPES.items()})
    return constants


@dataclass(slots=True)
class Injection:
    """A queued packet: what ``proxy.queries:append`` recorded."""

    id: int
    packet: bytes
    resultset_is_needed: bool
    queued_ns: int = 0
    own: bool = False  # the client's own command packet, re-queued as it came (sent as the client framed it)


@dataclass(slots=True)
class HookResult:
    """What a hook call decided, plus the next queued injection (if the hook left one)."""

    ok: bool
    ret: int | None
    error: str | None = None
    injection: Injection | None = None
    remaining: int = 0
    close: bool = False


@dataclass(slots=True)
class ResultStats:
    """Everything the host measured about a result, handed to ``read_query_result``."""

    query_time_us: int
    response_time_us: int
    row_count: int
    bytes: int  # the name MySQL Proxy gives it (inj.resultset.bytes); hence builtins.bytes below
    status: int | None
    warnings: int
    affected_rows: int | None
    insert_id: int | None
    server_status: int
    fields: list[dict[builtins.bytes, Any]] | None = None
    rows: list[list[builtins.bytes | None]] | None = None
    raw: builtins.bytes | None = None
    binary: bool = False
    error_code: int | None = None  # host extension: MySQL Proxy 0.8 only exposes these through a buffered raw
    error_message: builtins.bytes | None = None

    @classmethod
    def measured(cls, tracker: ResponseTracker, queued_ns: int, now: int) -> ResultStats:
        """What the tracker saw of a finished response; times from when the injection was queued."""
        first = tracker.first_ns or now
        stats = cls(
            query_time_us=max(0, (first - queued_ns) // 1000),
            response_time_us=max(0, (now - queued_ns) // 1000),
            row_count=tracker.row_count,
            bytes=tracker.bytes,
            status=tracker.query_status,
            warnings=tracker.warnings,
            affected_rows=tracker.affected_rows,
            insert_id=tracker.insert_id,
            server_status=tracker.server_status,
            binary=tracker.binary,
        )
        if tracker.err is not None:
            stats.error_code, stats.error_message = tracker.err[0], tracker.err[2]
        return stats


@dataclass(frozen=True)
class LuaCall:
    """A script function to call on a connection, with its argument (a table of ``arg``): what the other workers'
    answers to a control statement call for instead of an answer (``--workers``: PROXY LOG EXPLAIN)."""

    name: str
    arg: dict[bytes, Any]


@dataclass
class ProxyResponse:
    """``proxy.response`` translated into Python."""

    type: int | None
    errmsg: bytes | None = None
    errcode: int = 1105
    sqlstate: bytes = b"07000"
    affected_rows: int = 0
    insert_id: int = 0
    fields: list[tuple[bytes, int]] | None = None
    rows: list[list[bytes | None]] = field(default_factory=list)
    packets: list[bytes] = field(default_factory=list)
    relay: bytes | None = None  # host extension: the control statement every worker should carry out (--workers)

    @classmethod
    def from_lua(cls, resp: Any) -> ProxyResponse:
        """Translate the Lua table; a missing/invalid type yields an ERR like MySQL Proxy's."""
        type_ = resp[b"type"]
        known = (MYSQLD_PACKET_OK, MYSQLD_PACKET_ERR, MYSQLD_PACKET_RAW)
        if not isinstance(type_, int | float) or int(type_) not in known:
            return cls(MYSQLD_PACKET_ERR, errmsg=b"(lua) handling proxy.response failed, check error-log")
        type_ = int(type_)
        if type_ == MYSQLD_PACKET_ERR:
            errmsg = resp[b"errmsg"]
            return cls(
                type_,
                errmsg=to_bytes(errmsg) if errmsg is not None else b"(lua) proxy.response.errmsg is nil",
                errcode=int(resp[b"errcode"] or 1105),
                sqlstate=to_bytes(resp[b"sqlstate"]) or b"07000",
            )
        if type_ == MYSQLD_PACKET_RAW:
            packets = resp[b"packets"]
            out = [] if packets is None else [to_bytes(packets[i]) or b"" for i in range(1, len(packets) + 1)]
            return cls(type_, packets=out)
        resultset = resp[b"resultset"]
        if resultset is None:
            return cls(type_, affected_rows=int(resp[b"affected_rows"] or 0), insert_id=int(resp[b"insert_id"] or 0))
        relay = resp[b"relay"]
        fields_t = resultset[b"fields"]
        fields: list[tuple[bytes, int]] = []
        if fields_t is not None:
            for i in range(1, len(fields_t) + 1):
                f = fields_t[i]
                fields.append((to_bytes(f[b"name"]) or b"", int(f[b"type"] or 254)))
        rows: list[list[bytes | None]] = []
        rows_t = resultset[b"rows"]
        if rows_t is not None:
            for i in range(1, len(rows_t) + 1):
                row = rows_t[i]
                rows.append([to_bytes(row[j]) for j in range(1, len(fields) + 1)])
        return cls(type_, fields=fields, rows=rows, relay=relay if isinstance(relay, bytes) else None)

    def payloads(self, deprecate_eof: bool) -> list[bytes]:
        """The packet payloads the client gets for this response."""
        if self.type == MYSQLD_PACKET_ERR:
            return [p.err_packet(self.errmsg or b"", self.errcode, self.sqlstate)]
        if self.type == MYSQLD_PACKET_RAW:
            return self.packets
        if self.fields:
            return p.text_resultset(self.fields, self.rows, deprecate_eof)
        return [p.ok_packet(self.affected_rows, self.insert_id)]


def to_bytes(value: Any) -> bytes | None:
    """Lua ``tostring`` of a cell: numbers and booleans as text, strings as is, nil as None."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value)).encode()
    return str(value).encode()
