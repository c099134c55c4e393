"""Sans-IO: the connection phase of one session (greeting, handshake response, auth rounds) and change-user.

Works on its ``Session``'s buffers and sends through its ``to_client``/``to_server``; no sockets here.
The greeting loses SSL and compression (the proxy relays neither); the scripts see the server's thread id
and version, the user, the database and the scramble, and may answer ``read_handshake``, ``read_auth``
and ``read_auth_result`` themselves. Auth switch and more-data rounds are relayed as they come.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Protocol

from .lua.api import PROXY_SEND_QUERY, PROXY_SEND_RESULT, HookResult
from .lua.host import LuaConnection
from .mysql import auth
from .mysql import constants as c
from .mysql import packets as p
from .phases import AUTH, CLIENT_AUTH, GREETING, IDLE, Phase

_HEADER = struct.Struct("<I")


class HandshakeSession(Protocol):
    """What the connection phase uses of its session (``session.Session``, which makes the ``Handshake``)."""

    lua: LuaConnection | None
    hooks: set[str]
    phase: Phase
    cbuf: bytearray
    client_caps: int
    deprecate_eof: bool
    to_client: Callable[[bytes], object]
    to_server: Callable[[bytes], object]

    def hook(self, name: str, arg: Any = None) -> HookResult:
        """Call a Lua hook (failures logged, "no decision")."""

    def send_response(self, seq: int) -> bool:
        """``proxy.response`` to the client."""

    def send_err(self, message: bytes, code: int, seq: int, sqlstate: bytes = b"07000") -> None:
        """An ERR packet to the client."""

    def fatal(self, message: bytes, code: int, sqlstate: bytes = b"07000") -> None:
        """An ERR instead of the greeting, then close."""

    def log_error(self, message: str) -> None:
        """One log line per connection error."""

    def close(self) -> None:
        """Close both sides."""

    def process_commands(self) -> None:
        """Handle the client's commands waiting in ``cbuf``."""


class Handshake:
    """The greeting and authentication of one session, then the user a COM_CHANGE_USER switches to."""

    __slots__ = ("pending_user", "s", "sbuf", "server_caps")

    def __init__(self, session: HandshakeSession) -> None:
        self.s = session
        self.sbuf = b""  # server bytes during greeting/auth, where whole packets are parsed
        self.server_caps = 0
        self.pending_user: tuple[bytes, bytes] | None = None  # COM_CHANGE_USER sent: (user, db) if it works

    def start(self, lua: LuaConnection | None, peer: Any, sock: Any) -> int | None:
        """The client connected: run ``connect_server``; the backend index to use, or None (answered, closed)."""
        s = self.s
        s.lua = lua
        if lua is None:
            return 0
        s.hooks = lua.hooks
        if isinstance(peer, tuple):
            lua.set_address("client", "src", str(peer[0]), int(peer[1]))
        if isinstance(sock, tuple):
            lua.set_address("client", "dst", str(sock[0]), int(sock[1]))
        if "connect_server" not in s.hooks:
            return 0
        if s.hook("connect_server").ret == PROXY_SEND_RESULT:
            s.send_response(0)
            s.close()
            return None
        value = lua.get_connection("backend_ndx")
        return int(value) if isinstance(value, int | float) else 0

    def backend_connected(self, index: int, host: str, port: int, src: Any) -> None:
        """The backend is connected (``to_server`` is set): the greeting may already be waiting."""
        s = self.s
        s.phase = GREETING
        if self.sbuf:
            self.greeting()
        if s.lua is not None:
            s.lua.set("connection", "backend_ndx", index)
            s.lua.set_address("server", "dst", host, port)
            if isinstance(src, tuple):
                s.lua.set_address("server", "src", str(src[0]), int(src[1]))

    def server_data(self, data: bytes) -> None:
        """Server bytes before the command phase (also those that arrive before the backend is set up)."""
        self.sbuf += data
        if self.s.phase is GREETING:
            self.greeting()
        elif self.s.phase is AUTH:
            self.server_auth()

    def _take_server_packet(self) -> tuple[bytes, int] | None:
        """A whole logical packet from ``sbuf``, or None if incomplete."""
        buf = self.sbuf
        pos = 0
        payload = b""
        while pos + 4 <= len(buf):
            hdr = _HEADER.unpack_from(buf, pos)[0]
            plen = hdr & 0xFFFFFF
            if pos + 4 + plen > len(buf):
                return None
            payload += buf[pos + 4 : pos + 4 + plen]
            pos += 4 + plen
            if plen < c.MAX_PAYLOAD:
                self.sbuf = buf[pos:]
                return payload, hdr >> 24
        return None

    def greeting(self) -> None:
        """The server's handshake: strip SSL/compression, expose it to Lua, run ``read_handshake``."""
        s = self.s
        got = self._take_server_packet()
        if got is None:
            return
        payload, seq = got
        if payload[:1] == b"\xff":
            self._relay_err_and_close("backend refused the connection", payload, seq)
            return
        try:
            greeting = auth.parse_greeting(payload)
        except (ValueError, IndexError, struct.error) as exc:
            s.log_error(f"bad greeting from backend: {exc}")
            s.fatal(b"(proxy) the backend sent an unknown handshake", c.ER_UNKNOWN_ERROR)
            return
        self.server_caps = greeting.capabilities & ~c.STRIPPED_CAPS
        if s.lua is not None:
            s.lua.update("server", thread_id=greeting.thread_id, mysqld_version=greeting.mysqld_version,
                         scramble_buffer=greeting.scramble, server_version=greeting.server_version)  # fmt: skip
            if "read_handshake" in s.hooks:
                res = s.hook("read_handshake")
                if res.ret in (PROXY_SEND_RESULT, PROXY_SEND_QUERY):
                    s.send_response(0)
                    s.close()
                    return
        s.to_client(p.frame(auth.strip_greeting(payload, greeting), seq)[0])
        s.phase = CLIENT_AUTH
        if s.cbuf:
            self.client_auth()

    def client_auth(self) -> None:
        """The client's handshake response: learn user/db, run ``read_auth``, forward."""
        s = self.s
        buf = s.cbuf
        if len(buf) < 4:
            return
        hdr = _HEADER.unpack_from(buf, 0)[0]
        plen = hdr & 0xFFFFFF
        if len(buf) < 4 + plen:
            return
        payload = bytes(buf[4 : 4 + plen])
        seq = hdr >> 24
        raw = bytes(buf[: 4 + plen])
        del buf[: 4 + plen]
        try:
            response = auth.parse_auth_response(payload)
        except (ValueError, IndexError, struct.error) as exc:
            s.log_error(f"bad handshake response from client: {exc}")
            s.send_err(b"(proxy) malformed handshake response", c.ER_UNKNOWN_ERROR, (seq + 1) & 0xFF, b"08S01")
            s.close()
            return
        if response.is_ssl_request:
            s.log_error("client asked for SSL, which the proxy does not relay")
            s.send_err(
                b"(proxy) SSL is not supported through this proxy", c.ER_UNKNOWN_ERROR, (seq + 1) & 0xFF, b"08S01"
            )
            s.close()
            return
        s.client_caps = response.capabilities
        s.deprecate_eof = bool(response.capabilities & self.server_caps & c.CLIENT_DEPRECATE_EOF)
        if s.lua is not None:
            s.lua.update("client", username=response.username, scrambled_password=response.auth_response,
                         default_db=response.database, auth_plugin_name=response.auth_plugin)  # fmt: skip
            if "read_auth" in s.hooks:
                res = s.hook("read_auth")
                if res.ret == PROXY_SEND_RESULT:
                    s.send_response((seq + 1) & 0xFF)
                    s.close()
                    return
                if res.ret == PROXY_SEND_QUERY and res.injection is not None:
                    raw = p.frame(res.injection.packet, seq)[0]
        s.to_server(raw)
        s.phase = AUTH
        if s.cbuf:
            pending, s.cbuf = bytes(s.cbuf), bytearray()
            s.to_server(pending)

    def server_auth(self) -> None:
        """Auth rounds (switch, more data) are relayed; OK/ERR ends them via ``read_auth_result``."""
        s = self.s
        while s.phase is AUTH:
            got = self._take_server_packet()
            if got is None:
                return
            payload, seq = got
            first = payload[0] if payload else -1
            if first not in (0x00, 0xFF):
                s.to_client(p.frame(payload, seq)[0])
                continue
            if s.lua is not None and "read_auth_result" in s.hooks:
                res = s.hook("read_auth_result", {b"packet": payload})
                if res.ret == PROXY_SEND_RESULT:
                    s.send_response(seq)
                    if first == 0xFF:
                        s.close()
                    else:
                        s.phase = IDLE
                    return
            if first == 0xFF:
                self._relay_err_and_close("authentication failed", payload, seq)
                return
            s.to_client(p.frame(payload, seq)[0])
            s.phase = IDLE
            if self.sbuf:
                s.to_client(self.sbuf)
                self.sbuf = b""
            if s.cbuf:
                s.process_commands()

    def _relay_err_and_close(self, what: str, payload: bytes, seq: int) -> None:
        """The server said no (to the connection or the login): the client gets its ERR, both sides close."""
        code, _, msg = p.parse_err(payload)
        self.s.log_error(f"{what}: {code} {msg.decode('utf-8', 'replace')}")
        self.s.to_client(p.frame(payload, seq)[0])
        self.s.close()

    def change_user_sent(self, payload: bytes) -> None:
        """COM_CHANGE_USER went to the server: remember who it will be if the server agrees."""
        try:
            self.pending_user = auth.parse_change_user(payload, self.s.client_caps)
        except (ValueError, IndexError):
            self.pending_user = None

    def change_user_done(self, ok: bool) -> None:
        """The change-user exchange ended: scripts (and query_log.lua's admin check) see the new user."""
        user = self.pending_user
        self.pending_user = None
        if ok and user is not None and self.s.lua is not None:
            self.s.lua.update("client", username=user[0], default_db=user[1])
