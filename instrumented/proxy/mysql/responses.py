"""Walks the server's packets for one command's response without buffering them.

The tracker only looks at packet headers and the first byte of each packet, parsing the few small
packets that carry status (OK, ERR, EOF, column counts). It tells the connection where the response
ends (also across multi-result sets, LOCAL INFILE and 16 MB continuation packets) and collects the
statistics a script reads from ``inj.resultset``.
"""

from __future__ import annotations

import struct

from . import constants as c
from . import packets as p

_HEADER = struct.Struct("<I")

# What kind of response a command gets.
KIND_NONE = 0  # no response at all (COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA, COM_QUIT)
KIND_SINGLE = 1  # exactly one packet (OK/ERR/EOF, or COM_STATISTICS' string)
KIND_RESULT = 2  # OK | ERR | LOCAL INFILE | result set(s)
KIND_PREPARE = 3  # COM_STMT_PREPARE: OK + parameter and column definitions
KIND_ROWS = 4  # COM_STMT_FETCH: rows until EOF
KIND_FIELD_LIST = 5  # COM_FIELD_LIST: column definitions until EOF
KIND_AUTH = 6  # COM_CHANGE_USER: auth exchange until OK/ERR
KIND_RAW = 7  # binlog streaming and the like: relay forever

_KINDS: dict[int, int] = {
    c.COM_QUIT: KIND_NONE,
    c.COM_STMT_CLOSE: KIND_NONE,
    c.COM_STMT_SEND_LONG_DATA: KIND_NONE,
    c.COM_QUERY: KIND_RESULT,
    c.COM_STMT_EXECUTE: KIND_RESULT,
    c.COM_STMT_BULK_EXECUTE: KIND_RESULT,
    c.COM_PROCESS_INFO: KIND_RESULT,
    c.COM_STMT_PREPARE: KIND_PREPARE,
    c.COM_STMT_FETCH: KIND_ROWS,
    c.COM_FIELD_LIST: KIND_FIELD_LIST,
    c.COM_CHANGE_USER: KIND_AUTH,
    c.COM_BINLOG_DUMP: KIND_RAW,
    c.COM_BINLOG_DUMP_GTID: KIND_RAW,
}

# Tracker states.
_FIRST = 0
_COLDEFS = 1
_COLEOF = 2
_ROWS = 3
_COUNTDOWN = 4
_INFILE = 5
_AUTH = 6
_SINGLE = 7
_FIELDS = 8
_DONE = 9


_INITIAL_STATE = {
    KIND_NONE: _DONE,
    KIND_SINGLE: _SINGLE,
    KIND_RESULT: _FIRST,
    KIND_PREPARE: _FIRST,
    KIND_ROWS: _ROWS,
    KIND_FIELD_LIST: _FIELDS,
    KIND_AUTH: _AUTH,
    KIND_RAW: _DONE,
}


def response_kind(command: int) -> int:
    """The response kind of a command byte (unknown commands get one packet, e.g. an ERR)."""
    return _KINDS.get(command, KIND_SINGLE)


class ResponseTracker:
    """Incremental parser of one command's response; ``feed`` returns how many bytes belong to it."""

    __slots__ = (
        "affected_rows",
        "binary",
        "bytes",
        "client_skip",
        "client_tail",
        "columns",
        "continuing",
        "deprecate_eof",
        "done",
        "err",
        "first_ns",
        "insert_id",
        "kind",
        "packets_left",
        "query_status",
        "row_count",
        "server_status",
        "skip",
        "state",
        "stmt_id",
        "tail",
        "waiting_for_client",
        "warnings",
    )  # fmt: skip

    def __init__(self, command: int, deprecate_eof: bool) -> None:
        self.kind = response_kind(command)
        self.deprecate_eof = deprecate_eof
        self.binary = command in (c.COM_STMT_EXECUTE, c.COM_STMT_FETCH, c.COM_STMT_BULK_EXECUTE)
        self.state = _INITIAL_STATE[self.kind]
        self.done = self.state == _DONE
        self.tail = b""
        self.skip = 0
        self.continuing = False
        self.columns = 0
        self.packets_left = 0
        self.row_count = 0
        self.bytes = 0
        self.query_status: int | None = None
        self.warnings = 0
        self.affected_rows: int | None = None
        self.insert_id: int | None = None
        self.server_status = 0
        self.err: tuple[int, bytes, bytes] | None = None
        self.first_ns = 0
        self.waiting_for_client = False
        self.stmt_id = 0  # COM_STMT_PREPARE: the id the server gave the statement

    def feed(self, data: bytes) -> int:  # noqa: C901 - measured hot loop (benchmarks/proxy.py): one pass over every result packet, kept inline
        """Consume ``data``; return the number of its bytes that belong to this response."""
        n = len(data)
        start = 0
        if self.skip:
            if self.skip >= n:
                self.skip -= n
                self.bytes += n
                return n
            start = self.skip
            self.skip = 0
        if self.tail:
            buf = self.tail + data[start:]
            shift = len(self.tail) - start  # buf index - shift = data index
            self.tail = b""
            i = 0
        else:
            buf = data
            shift = 0
            i = start
        size = len(buf)
        unpack = _HEADER.unpack_from
        while i + 4 <= size:
            if self.state == _ROWS and not self.continuing:
                # Bulk rows: a tight loop over whole row packets; anything unusual goes to the general path.
                rows = 0
                while i + 5 <= size:
                    plen = unpack(buf, i)[0] & 0xFFFFFF
                    if buf[i + 4] >= 0xFE or plen == c.MAX_PAYLOAD:
                        break
                    nxt = i + 4 + plen
                    if nxt > size:
                        break
                    rows += 1
                    i = nxt
                self.row_count += rows
                if i + 4 > size:
                    break
            plen = unpack(buf, i)[0] & 0xFFFFFF
            end = i + 4 + plen
            if self.continuing:
                self.continuing = plen == c.MAX_PAYLOAD
                if end > size:
                    self.skip = end - size
                    i = size
                    break
                i = end
                continue
            if plen == 0:
                first = -1
            elif i + 4 >= size:
                break
            else:
                first = buf[i + 4]
            state = self.state
            if state == _ROWS:
                # The hot path: rows pass by, only a terminator needs its body.
                if (first == 0xFE and plen < c.MAX_PAYLOAD) or first == 0xFF:
                    if end > size:
                        break
                    self._terminator(first, buf[i + 4 : end])
                else:
                    self.row_count += 1
                    if plen == c.MAX_PAYLOAD:
                        self.continuing = True
                    if end > size:
                        self.skip = end - size
                        i = size
                        break
                i = end
                if self.done:
                    break
                continue
            needs_body = state in (_FIRST, _COLEOF)
            if needs_body and end > size:
                break
            if plen == c.MAX_PAYLOAD:
                self.continuing = True
            self._packet(first, buf[i + 4 : end] if needs_body else b"")
            if end > size:
                self.skip = end - size
                i = size
                break
            i = end
            if self.done or self.waiting_for_client:
                break
        if self.done or self.waiting_for_client:
            used = i - shift
            self.bytes += used
            return used
        if i < size and not self.skip:
            self.tail = bytes(buf[i:])
        self.bytes += n
        return n

    def _packet(self, first: int, body: bytes) -> None:  # noqa: C901 - measured hot loop (benchmarks/proxy.py): per-packet dispatch, kept inline
        """One logical packet outside the row stream."""
        state = self.state
        if state == _FIRST:
            if first == 0x00:
                ok = p.parse_ok(body)
                self.query_status = 0
                if self.kind == KIND_PREPARE:
                    self.stmt_id = int.from_bytes(body[1:5], "little")
                    columns = body[5] | body[6] << 8 if len(body) >= 9 else 0
                    params = body[7] | body[8] << 8 if len(body) >= 9 else 0
                    left = params + columns
                    if not self.deprecate_eof:
                        left += (params > 0) + (columns > 0)
                    self.packets_left = left
                    self.state = _COUNTDOWN if left else _DONE
                    self.done = not left
                    return
                self.affected_rows = (self.affected_rows or 0) + ok.affected_rows
                self.insert_id = ok.insert_id
                self.warnings += ok.warnings
                self._end_result(ok.status)
            elif first == 0xFF:
                self._error(body)
            elif first == 0xFB:
                self.state = _INFILE
                self.waiting_for_client = True
                self.client_skip = 0  # set here, not in __init__: LOCAL INFILE is rare, trackers are not
                self.client_tail = b""
            else:
                count, _ = p.read_lenenc_int(body, 0)
                self.columns = count or 0
                self.affected_rows = None
                self.insert_id = None
                self.query_status = 0
                self.packets_left = self.columns
                self.state = _COLDEFS if self.columns else (_ROWS if self.deprecate_eof else _COLEOF)
        elif state == _COLDEFS:
            self.packets_left -= 1
            if self.packets_left <= 0:
                self.state = _ROWS if self.deprecate_eof else _COLEOF
        elif state == _COLEOF:
            if first == 0xFF:
                self._error(body)
                return
            _, status = p.parse_eof(body)
            self.server_status = status
            if self.binary and status & c.SERVER_STATUS_CURSOR_EXISTS:
                self.state = _DONE
                self.done = True
            else:
                self.state = _ROWS
        elif state == _COUNTDOWN:
            self.packets_left -= 1
            if self.packets_left <= 0:
                self.state = _DONE
                self.done = True
        elif state == _SINGLE:
            self.query_status = 0xFF if first == 0xFF else 0
            self.state = _DONE
            self.done = True
        elif state == _FIELDS:
            if first == 0xFF or first == 0xFE:
                self.query_status = 0xFF if first == 0xFF else 0
                self.state = _DONE
                self.done = True
        elif state == _AUTH:
            # Auth switch (0xfe) and more-data (0x01) rounds go on; the client's answers are relayed as they come.
            if first in (0x00, 0xFF):
                self.query_status = first
                self.state = _DONE
                self.done = True

    def _terminator(self, first: int, body: bytes) -> None:
        """EOF/OK ending a row stream, or an ERR in the middle of one."""
        if first == 0xFF:
            self._error(body)
            return
        if self.deprecate_eof:
            ok = p.parse_ok(body)
            status, warnings = ok.status, ok.warnings
        else:
            warnings, status = p.parse_eof(body)
        self.warnings += warnings
        self._end_result(status)

    def _end_result(self, status: int) -> None:
        """A result ended: another follows if the server says so."""
        self.server_status = status
        if status & c.SERVER_MORE_RESULTS_EXISTS and self.kind == KIND_RESULT:
            self.state = _FIRST
        else:
            self.state = _DONE
            self.done = True

    def _error(self, body: bytes) -> None:
        """An ERR ends the whole response (also the rest of a multi-result)."""
        self.query_status = 0xFF
        self.err = p.parse_err(body)
        self.state = _DONE
        self.done = True

    @property
    def relays_client(self) -> bool:
        """Whether client packets belong to this exchange (LOCAL INFILE data, auth rounds)."""
        return self.state in (_INFILE, _AUTH)

    def client_data(self, data: bytes) -> None:
        """Client bytes of this exchange (already relayed): an empty LOCAL INFILE packet ends the file."""
        if not self.waiting_for_client:
            return
        buf = self.client_tail + data if self.client_tail else data
        self.client_tail = b""
        pos = 0
        if self.client_skip:
            if self.client_skip >= len(buf):
                self.client_skip -= len(buf)
                return
            pos = self.client_skip
            self.client_skip = 0
        while pos + 4 <= len(buf):
            plen = _HEADER.unpack_from(buf, pos)[0] & 0xFFFFFF
            pos += 4 + plen
            if self.state == _INFILE and plen == 0:
                self.state = _FIRST
                self.waiting_for_client = False
                return
        if pos > len(buf):
            self.client_skip = pos - len(buf)
        else:
            self.client_tail = bytes(buf[pos:])
