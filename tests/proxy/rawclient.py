"""A tiny MySQL protocol client for what the Python drivers don't do: binary prepared statements, raw packets.

Written from the protocol documentation, independently of the host's own parser, so it can check it.
"""

from __future__ import annotations

import hashlib
import socket
import struct

CAPS = (0x1 | 0x4 | 0x8 | 0x200 | 0x2000 | 0x8000 | 0x10000 | 0x20000 | 0x40000 | 0x80000)  # fmt: skip
DEPRECATE_EOF = 0x1000000


def native_password(password: bytes, scramble: bytes) -> bytes:
    if not password:
        return b""
    h1 = hashlib.sha1(password).digest()
    h2 = hashlib.sha1(scramble + hashlib.sha1(h1).digest()).digest()
    return bytes(a ^ b for a, b in zip(h1, h2, strict=True))


class MySQLError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code


class RawClient:
    def __init__(self, port: int, user: bytes = b"root", password: bytes = b"", db: bytes = b"test",
                 deprecate_eof: bool = False, timeout: float = 10) -> None:  # fmt: skip
        self.sock = socket.create_connection(("127.0.0.1", port), timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pos = 0
        greeting, _ = self.read_packet()
        if greeting[0] == 0xFF:
            raise MySQLError(*self._err(greeting))
        pos = greeting.index(b"\x00", 1) + 1
        self.thread_id = struct.unpack_from("<I", greeting, pos)[0]
        scramble = greeting[pos + 4 : pos + 12]
        caps = struct.unpack_from("<H", greeting, pos + 13)[0] | struct.unpack_from("<H", greeting, pos + 18)[0] << 16
        self.server_caps = caps
        scramble += greeting[pos + 31 : pos + 31 + 12]
        want = CAPS | (DEPRECATE_EOF if deprecate_eof else 0)
        self.caps = want & caps | 0x200
        self.deprecate_eof = bool(self.caps & DEPRECATE_EOF)
        auth = native_password(password, scramble)
        payload = struct.pack("<IIB", self.caps, 1 << 24, 33) + b"\x00" * 23 + user + b"\x00"
        payload += bytes([len(auth)]) + auth + db + b"\x00" + b"mysql_native_password\x00"
        self.write_packet(payload, 1)
        while True:
            reply, seq = self.read_packet()
            if reply[0] == 0x00:
                break
            if reply[0] == 0xFF:
                raise MySQLError(*self._err(reply))
            if reply[0] == 0xFE:  # auth switch
                _plugin, _, data = reply[1:].partition(b"\x00")
                self.write_packet(native_password(password, data.rstrip(b"\x00")), seq + 1)
            else:
                raise MySQLError(0, f"unexpected auth packet {reply[:10]!r}")

    @staticmethod
    def _err(payload: bytes) -> tuple[int, str]:
        code = struct.unpack_from("<H", payload, 1)[0]
        msg = payload[9:] if payload[3:4] == b"#" else payload[3:]
        return code, msg.decode("utf-8", "replace")

    def _recv(self, n: int) -> bytes:
        while len(self.buf) - self.pos < n:
            if self.pos > 1 << 20:
                del self.buf[: self.pos]
                self.pos = 0
            chunk = self.sock.recv(1 << 18)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
        data = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return data

    def count_rows(self) -> int:
        """Read a text result set to its end without keeping the rows; the row count."""
        first, _ = self.read_packet()
        if first[:1] == b"\xff":
            raise MySQLError(*self._err(first))
        for _ in range(first[0]):
            self.read_packet()
        if not self.deprecate_eof:
            self.read_packet()
        rows = 0
        while True:
            payload, _ = self.read_packet()
            if payload[:1] == b"\xff":
                raise MySQLError(*self._err(payload))
            if self._is_eof(payload):
                return rows
            rows += 1

    def read_packet(self) -> tuple[bytes, int]:
        payload = b""
        while True:
            header = self._recv(4)
            length = int.from_bytes(header[:3], "little")
            payload += self._recv(length)
            if length < 0xFFFFFF:
                return payload, header[3]

    def write_packet(self, payload: bytes, seq: int = 0) -> None:
        out = b""
        while True:
            chunk, payload = payload[:0xFFFFFF], payload[0xFFFFFF:]
            out += len(chunk).to_bytes(3, "little") + bytes([seq & 0xFF]) + chunk
            seq += 1
            if len(chunk) < 0xFFFFFF:
                break
        self.sock.sendall(out)

    def _is_eof(self, payload: bytes) -> bool:
        return payload[:1] == b"\xfe" and len(payload) < 0xFFFFFF

    def _read_resultset(self, first: bytes) -> tuple[list[bytes], list[bytes], int]:
        """Column definitions and raw rows of one result set; returns (columns, rows, status)."""
        count = first[0]
        columns = [self.read_packet()[0] for _ in range(count)]
        if not self.deprecate_eof:
            self.read_packet()
        rows = []
        while True:
            payload, _ = self.read_packet()
            if payload[:1] == b"\xff":
                raise MySQLError(*self._err(payload))
            if self._is_eof(payload):
                if self.deprecate_eof:
                    pos = 1
                    for _ in range(2):  # affected rows, insert id (lenenc, small here)
                        pos += 1 if payload[pos] < 0xFB else {0xFC: 3, 0xFD: 4, 0xFE: 9}[payload[pos]]
                    status = struct.unpack_from("<H", payload, pos)[0]
                else:
                    status = struct.unpack_from("<H", payload, 3)[0]
                return columns, rows, status
            rows.append(payload)

    def query(self, sql: bytes) -> list[list[bytes]]:
        """COM_QUERY; the text rows of every result set (multi-results flattened into a list per set)."""
        self.write_packet(b"\x03" + sql)
        results = []
        while True:
            first, _ = self.read_packet()
            if first[0] == 0xFF:
                raise MySQLError(*self._err(first))
            if first[0] == 0x00:
                pos = 1
                for _ in range(2):
                    pos += 1 if first[pos] < 0xFB else {0xFC: 3, 0xFD: 4, 0xFE: 9}[first[pos]]
                status = struct.unpack_from("<H", first, pos)[0]
                results.append([])
            else:
                _, rows, status = self._read_resultset(first)
                results.append(rows)
            if not status & 0x8:
                return results

    def prepare(self, sql: bytes) -> tuple[int, int, int]:
        """COM_STMT_PREPARE: (statement id, columns, params)."""
        self.write_packet(b"\x16" + sql)
        first, _ = self.read_packet()
        if first[0] == 0xFF:
            raise MySQLError(*self._err(first))
        stmt_id, columns, params = struct.unpack_from("<IHH", first, 1)
        for count in (params, columns):
            for _ in range(count):
                self.read_packet()
            if count and not self.deprecate_eof:
                self.read_packet()
        return stmt_id, columns, params

    def execute(self, stmt_id: int, params: list[int]) -> list[bytes]:
        """COM_STMT_EXECUTE with LONGLONG parameters; the binary rows."""
        payload = b"\x17" + struct.pack("<IBI", stmt_id, 0, 1)
        if params:
            payload += b"\x00" * ((len(params) + 7) // 8) + b"\x01" + b"\x08\x00" * len(params)
            payload += b"".join(struct.pack("<q", v) for v in params)
        self.write_packet(payload)
        first, _ = self.read_packet()
        if first[0] == 0xFF:
            raise MySQLError(*self._err(first))
        if first[0] == 0x00:
            return []
        _, rows, _ = self._read_resultset(first)
        return rows

    def execute_cursor(self, stmt_id: int) -> int:
        """COM_STMT_EXECUTE opening a read-only cursor (no parameters); the server status after the columns."""
        self.write_packet(b"\x17" + struct.pack("<IBI", stmt_id, 1, 1))
        first, _ = self.read_packet()
        if first[0] == 0xFF:
            raise MySQLError(*self._err(first))
        for _ in range(first[0]):
            self.read_packet()
        eof, _ = self.read_packet()
        return struct.unpack_from("<H", eof, 3)[0]

    def fetch(self, stmt_id: int, count: int) -> tuple[list[bytes], int]:
        """COM_STMT_FETCH: (binary rows, server status of the closing EOF)."""
        self.write_packet(b"\x1c" + struct.pack("<II", stmt_id, count))
        rows = []
        while True:
            payload, _ = self.read_packet()
            if payload[:1] == b"\xff":
                raise MySQLError(*self._err(payload))
            if self._is_eof(payload):
                return rows, struct.unpack_from("<H", payload, 3)[0]
            rows.append(payload)

    def change_user(self, user: bytes, password: bytes, db: bytes) -> None:
        """COM_CHANGE_USER, answering an auth switch if the server asks for one."""
        payload = b"\x11" + user + b"\x00" + b"\x00" + db + b"\x00" + struct.pack("<H", 33)
        payload += b"mysql_native_password\x00"
        self.write_packet(payload)
        while True:
            reply, seq = self.read_packet()
            if reply[0] == 0x00:
                return
            if reply[0] == 0xFF:
                raise MySQLError(*self._err(reply))
            if reply[0] == 0xFE:
                _plugin, _, data = reply[1:].partition(b"\x00")
                self.write_packet(native_password(password, data.rstrip(b"\x00")), seq + 1)
            else:
                raise MySQLError(0, f"unexpected auth packet {reply[:10]!r}")

    def field_list(self, table: bytes) -> int:
        """COM_FIELD_LIST (what the mysql client's auto-rehash sends): the number of column definitions."""
        self.write_packet(b"\x04" + table + b"\x00")
        count = 0
        while True:
            payload, _ = self.read_packet()
            if payload[:1] == b"\xff":
                raise MySQLError(*self._err(payload))
            if self._is_eof(payload):
                return count
            count += 1

    def close_stmt(self, stmt_id: int) -> None:
        self.write_packet(b"\x19" + struct.pack("<I", stmt_id))

    def close(self) -> None:
        try:
            self.write_packet(b"\x01")
        except OSError:
            pass
        self.sock.close()
