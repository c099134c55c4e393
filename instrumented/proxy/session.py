"""One client connection through the proxy: the protocol state machine between client, backend and Lua.

Phases: connect a backend → relay the greeting (SSL/compression stripped) → relay the auth exchange →
commands. Each command goes through ``read_query``; the response is relayed as it arrives (the
``ResponseTracker`` finds its end) unless the script asked for it with ``resultset_is_needed``.
Script failures never drop a query: the original packet is forwarded.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from .lua.host import (
    MYSQLD_PACKET_ERR,
    MYSQLD_PACKET_RAW,
    PROXY_IGNORE_RESULT,
    PROXY_SEND_QUERY,
    PROXY_SEND_RESULT,
    HookResult,
    Injection,
    LuaConnection,
    ProxyResponse,
    ResultStats,
    ScriptLoadError,
)
from .mysql import packets as p
from .mysql.responses import KIND_RAW, ResponseTracker

if TYPE_CHECKING:
    from .server import Backend, ProxyServer

log = logging.getLogger("instrumented.proxy")

_HEADER = struct.Struct("<I")
_now = time.perf_counter_ns

# Phases.
CONNECTING = 0
GREETING = 1
CLIENT_AUTH = 2
AUTH = 3
IDLE = 4
RESPONSE = 5
RAW = 6
CLOSED = 7

ERR_BACKEND_DOWN = 2003
#: Bytes of further commands accepted from a client while its current command runs (then reading pauses).
CLIENT_BACKLOG = 1 << 20
ERR_UNKNOWN = 1105


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY: without it Nagle delays the last packet of multi-packet results by ~40 ms."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class BackendProtocol(asyncio.Protocol):
    """The socket to MySQL; hands everything to its ``ProxyConnection``."""

    __slots__ = ("conn", "transport")

    def __init__(self, conn: ProxyConnection) -> None:
        self.conn = conn
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Remember the transport; the greeting comes next."""
        self.transport = transport  # type: ignore[assignment]
        set_nodelay(transport)

    def data_received(self, data: bytes) -> None:
        """Server bytes go to the connection's state machine."""
        self.conn.server_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        """The backend went away (or we closed it)."""
        self.conn.server_lost(exc)

    def pause_writing(self) -> None:
        """MySQL is not reading: stop reading the client."""
        self.conn.pause_client()

    def resume_writing(self) -> None:
        """MySQL reads again."""
        self.conn.resume_client()


class ProxyConnection(asyncio.Protocol):
    """The client side protocol and the per-connection state machine."""

    def __init__(self, server: ProxyServer) -> None:
        self.server = server
        self.client: asyncio.Transport | None = None
        self.backend: asyncio.Transport | None = None
        self.backend_info: Backend | None = None
        self.lua: LuaConnection | None = None
        self.hooks: set[str] = set()
        self.phase = CONNECTING
        self.cbuf = bytearray()  # client bytes not yet handled (commands wait while a response is in flight)
        self.sbuf = b""  # server bytes during greeting/auth, where whole packets are parsed
        self.deprecate_eof = False
        self.server_caps = 0
        self.tracker: ResponseTracker | None = None
        self.command = 0
        self.client_seq = 0  # seq of the client's last command packet; our answers continue after it
        self.inj: Injection | None = None
        self.stamps: deque[int] = deque()
        self.rbuf: bytearray | None = None  # a buffered result (resultset_is_needed)
        self.dropping = False
        self.result_sent = False
        self.pending_db: bytes | None = None
        self.pending_user: tuple[bytes, bytes] | None = None
        self.client_caps = 0
        self.cskip = 0  # bytes left of a client packet being relayed during LOCAL INFILE
        self.ctail = b""
        self.peer = "?"
        self.error_logged = False
        self.close_after = False
        self.client_paused = False
        self.backend_full = False
        self.raw = b""  # the client's current command as received

    # ---------------------------------------------------------------- lifecycle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """A client connected: set up Lua, run ``connect_server``, connect a backend."""
        self.client = transport  # type: ignore[assignment]
        set_nodelay(transport)
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "?")
        self.server.connections.add(self)
        try:
            self.lua = self.server.lua.new_connection() if self.server.lua else None
        except ScriptLoadError as exc:
            self.server.rate_limited_log(f"script load: {exc}", "Lua script failed to load: %s", exc)
            self._fatal_to_client(b"MySQL Proxy Lua script failed to load. Check the error log.", ERR_UNKNOWN)
            return
        if self.lua is not None:
            self.hooks = self.lua.hooks
            if isinstance(peer, tuple):
                self.lua.set_address("client", "src", str(peer[0]), int(peer[1]))
            if isinstance(sock, tuple):
                self.lua.set_address("client", "dst", str(sock[0]), int(sock[1]))
        ndx = 0
        if "connect_server" in self.hooks:
            res = self._hook("connect_server")
            if res.ret == PROXY_SEND_RESULT:
                self._send_response(self.lua.response(), 0)  # type: ignore[union-attr]
                self._close()
                return
            value = self.lua.get_connection("backend_ndx")  # type: ignore[union-attr]
            if isinstance(value, int | float):
                ndx = int(value)
        self.client.pause_reading()
        asyncio.get_running_loop().create_task(self._connect_backend(ndx))

    async def _connect_backend(self, ndx: int) -> None:
        """Connect the chosen (or least-loaded live) backend; all down means a clean MySQL error."""
        loop = asyncio.get_running_loop()
        errors: list[str] = []
        for backend in self.server.pick_backends(ndx):
            if self.phase == CLOSED:
                return
            try:
                _, proto = await asyncio.wait_for(
                    loop.create_connection(lambda: BackendProtocol(self), backend.host, backend.port),
                    self.server.connect_timeout,
                )
            except (OSError, TimeoutError) as exc:
                backend.mark_down()
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "timeout"
                errors.append(f"{backend.name}: {reason}")
                continue
            if self.phase == CLOSED:
                proto.transport.close()  # type: ignore[union-attr]
                return
            backend.mark_up()
            backend.connected_clients += 1
            self.backend_info = backend
            self.backend = proto.transport  # type: ignore[assignment]
            self.phase = GREETING
            if self.sbuf:  # the greeting can arrive before this coroutine resumes
                self._greeting()
            if self.lua is not None:
                self.lua.set("connection", "backend_ndx", backend.index)
                self.lua.set_address("server", "dst", backend.host, backend.port)
                src = self.backend.get_extra_info("sockname")  # type: ignore[union-attr]
                if isinstance(src, tuple):
                    self.lua.set_address("server", "src", str(src[0]), int(src[1]))
            self.client.resume_reading()  # type: ignore[union-attr]
            return
        detail = "; ".join(errors) if errors else "no backend configured"
        self._log_error(f"all backends are down ({detail})")
        self._fatal_to_client(f"(proxy) all backends are down: {detail}".encode(), ERR_BACKEND_DOWN, b"HY000")

    def connection_lost(self, exc: Exception | None) -> None:
        """The client left: run ``disconnect_client`` and close the backend."""
        if exc is not None and self.phase not in (CLOSED, IDLE):
            self._log_error(f"client connection lost: {exc}")
        elif self.phase == RESPONSE:
            self._log_error("client disconnected mid-result")
        self._close()

    def server_lost(self, exc: Exception | None) -> None:
        """The backend closed; whatever was relayed stays relayed, then the client is closed too."""
        if self.phase == CLOSED:
            return
        if self.phase in (RESPONSE, GREETING, AUTH):
            self._log_error(f"backend {self._backend_name()} closed the connection{': ' + str(exc) if exc else ''}")
        self._close()

    def _close(self) -> None:
        """Close both sides once; ``disconnect_client`` runs exactly once."""
        if self.phase == CLOSED:
            return
        self.phase = CLOSED
        self.server.connections.discard(self)
        if "disconnect_client" in self.hooks:
            self._hook("disconnect_client")
        if self.backend_info is not None:
            self.backend_info.connected_clients -= 1
            self.backend_info = None
        if self.backend is not None:
            self.backend.close()
        if self.client is not None:
            self.client.close()

    def shutdown(self) -> None:
        """Server shutdown: close both sides (buffered bytes are flushed by the transports)."""
        self._close()

    def _backend_name(self) -> str:
        return self.backend_info.name if self.backend_info else "?"

    def _log_error(self, message: str) -> None:
        """One log line per connection error."""
        if not self.error_logged:
            self.error_logged = True
            log.warning("connection from %s: %s", self.peer, message)

    def _fatal_to_client(self, message: bytes, code: int, sqlstate: bytes = b"07000") -> None:
        """Send an ERR as the first packet (instead of a greeting) and close."""
        if self.client is not None and not self.client.is_closing():
            data, _ = p.frame(p.err_packet(message, code, sqlstate), 0)
            self.client.write(data)
        self._close()

    # ---------------------------------------------------------------- flow control

    def pause_writing(self) -> None:
        """The client is slow: stop reading the backend, so results are never piled up in memory."""
        if self.backend is not None:
            self.backend.pause_reading()

    def resume_writing(self) -> None:
        """The client caught up."""
        if self.backend is not None and not self.backend.is_closing():
            self.backend.resume_reading()

    def pause_client(self) -> None:
        """MySQL is slow to read (a huge upload)."""
        self.backend_full = True
        self._client_reading()

    def resume_client(self) -> None:
        """MySQL reads again."""
        self.backend_full = False
        self._client_reading()

    def _client_reading(self) -> None:
        """Read the client unless MySQL is not keeping up or too many of its commands are waiting."""
        if self.client is None or self.client.is_closing():
            return
        if self.backend_full or self.client_paused:
            self.client.pause_reading()
        else:
            self.client.resume_reading()

    # ---------------------------------------------------------------- Lua

    def _hook(self, name: str, arg: Any = None) -> HookResult:
        """Call a hook; a Lua error is logged (rate-limited) and means "no decision"."""
        assert self.lua is not None
        try:
            res = self.lua.call(name, arg)
        except Exception as exc:  # noqa: BLE001 - a bug in the host/lupa glue must not drop the query either
            res = HookResult(False, None, error=f"{type(exc).__name__}: {exc}")
        if not res.ok:
            self.server.rate_limited_log(f"{name}: {res.error}", "Lua error in %s: %s", name, res.error)
            res.ret = None
        return res

    def _stamp_queue(self, res: HookResult) -> None:
        """Start stamps for injections: taken when the hook that queued them returned."""
        length = res.remaining + (1 if res.injection is not None else 0)
        stamps = self.stamps
        now = _now()
        while len(stamps) > length:
            stamps.pop()
        while len(stamps) < length:
            stamps.append(now)
        if res.injection is not None:
            res.injection.queued_ns = stamps.popleft()

    # ---------------------------------------------------------------- client → proxy

    def data_received(self, data: bytes) -> None:
        """Client bytes: commands while idle; relayed as is during auth, LOCAL INFILE and raw mode."""
        phase = self.phase
        if phase == IDLE and not self.cbuf:
            n = len(data)
            if n >= 4:
                plen = _HEADER.unpack_from(data, 0)[0] & 0xFFFFFF
                if plen + 4 == n and plen < p.MAX_PAYLOAD:  # the usual case: exactly one command
                    self._command(data[4:], data, data[3])
                    return
            self.cbuf += data
            self._process_commands()
            return
        if phase == RESPONSE and self.tracker is not None and self.tracker.relays_client and not self.cbuf:
            self._relay_client_exchange(data)
            return
        if phase == AUTH or phase == RAW:
            self.backend.write(data)  # type: ignore[union-attr]
            return
        if phase == CLOSED:
            return
        self.cbuf += data
        if phase == CLIENT_AUTH:
            self._client_auth()
        elif phase == IDLE:
            self._process_commands()
        elif phase == RESPONSE and len(self.cbuf) > CLIENT_BACKLOG and not self.client_paused:
            # A client that keeps sending while its previous command runs: stop reading it for now.
            self.client_paused = True
            self._client_reading()

    def _process_commands(self) -> None:
        """Handle complete commands in ``cbuf`` one at a time (the protocol allows one in flight)."""
        while self.phase == IDLE and len(self.cbuf) >= 4:
            buf = self.cbuf
            size = len(buf)
            pos = 0
            parts: list[tuple[int, int]] = []
            while True:  # find the end of one command (16 MB packets continue in the next one)
                if pos + 4 > size:
                    return
                plen = _HEADER.unpack_from(buf, pos)[0] & 0xFFFFFF
                if pos + 4 + plen > size:
                    return
                parts.append((pos + 4, pos + 4 + plen))
                seq = buf[pos + 3]
                pos += 4 + plen
                if plen < p.MAX_PAYLOAD:
                    break
            if len(parts) == 1:
                payload = bytes(buf[4:pos])
            else:
                payload = b"".join(buf[a:b] for a, b in parts)
            raw = bytes(buf[:pos])
            del buf[:pos]
            self._command(payload, raw, seq)

    def _command(self, payload: bytes, raw: bytes, seq: int) -> None:
        """One client command: ask ``read_query``, then forward, inject or answer from Lua."""
        self.raw = raw
        self.client_seq = seq
        self.result_sent = False
        if self.lua is not None and "read_query" in self.hooks and payload:
            try:
                res = self.lua.read_query(payload)
            except Exception as exc:  # noqa: BLE001 - fail open: the query is forwarded unchanged
                res = HookResult(False, None, error=f"{type(exc).__name__}: {exc}")
            if not res.ok:
                self.server.rate_limited_log(
                    f"read_query: {res.error}", "Lua error in read_query (query forwarded unchanged): %s", res.error
                )
            elif res.ret == PROXY_SEND_QUERY:
                if res.injection is not None:
                    self._stamp_queue(res)
                    self.close_after = res.close
                    self._send_injection(res.injection)
                    return
                log.warning("read_query returned PROXY_SEND_QUERY with an empty proxy.queries; forwarding the query")
            elif res.ret == PROXY_SEND_RESULT:
                self.close_after = res.close
                self._send_response(self.lua.response(), (seq + 1) & 0xFF)
                if self.close_after:
                    self._close()
                return  # further pipelined commands: the caller's loop goes on
            elif res.injection is not None:
                self.server.rate_limited_log(
                    "discarded queue",
                    "read_query queued packets but did not return PROXY_SEND_QUERY; they were discarded",
                )
            self.stamps.clear()
        self.inj = None
        self._forward(payload[0] if payload else 0, raw)
        if payload and payload[0] == p.COM_INIT_DB:
            self.pending_db = payload[1:]
        elif payload and payload[0] == p.COM_CHANGE_USER:
            try:
                self.pending_user = p.parse_change_user(payload, self.client_caps)
            except (ValueError, IndexError):
                self.pending_user = None

    def _forward(self, command: int, raw: bytes) -> None:
        """Send the client's bytes as they came and track the response."""
        tracker = ResponseTracker(command, self.deprecate_eof)
        self.command = command
        self.tracker = tracker
        self.dropping = False
        self.rbuf = None
        self.backend.write(raw)  # type: ignore[union-attr]
        if tracker.kind == KIND_RAW:
            self.phase = RAW
        elif tracker.done:
            self.phase = IDLE
        else:
            self.phase = RESPONSE

    def _send_injection(self, inj: Injection) -> None:
        """Send a queued packet; its result is streamed, buffered (needed) or dropped (a result was sent)."""
        self.inj = inj
        command = inj.packet[0] if inj.packet else 0
        tracker = ResponseTracker(command, self.deprecate_eof)
        self.command = command
        self.tracker = tracker
        self.rbuf = bytearray() if inj.resultset_is_needed else None
        self.dropping = not inj.resultset_is_needed and self.result_sent
        if not inj.resultset_is_needed:
            self.result_sent = True
        raw = self.raw
        if len(raw) == len(inj.packet) + 4 and raw[3] == 0 and memoryview(raw)[4:] == inj.packet:
            data = raw  # the client's own packet re-queued (the usual logging case): no re-framing
        else:
            data = p.frame(inj.packet, 0)[0]
        self.backend.write(data)  # type: ignore[union-attr]
        if tracker.kind == KIND_RAW:
            self.phase = RAW
        elif tracker.done:
            self._injection_done()
        else:
            self.phase = RESPONSE

    def _relay_client_exchange(self, data: bytes) -> None:
        """LOCAL INFILE data and auth rounds go straight to MySQL; an empty packet ends the file."""
        self.backend.write(data)  # type: ignore[union-attr]
        tracker = self.tracker
        assert tracker is not None
        if not tracker.waiting_for_client:
            return
        buf = self.ctail + data if self.ctail else data
        self.ctail = b""
        pos = 0
        if self.cskip:
            if self.cskip >= len(buf):
                self.cskip -= len(buf)
                return
            pos = self.cskip
            self.cskip = 0
        while pos + 4 <= len(buf):
            plen = _HEADER.unpack_from(buf, pos)[0] & 0xFFFFFF
            tracker.client_sent(plen)
            pos += 4 + plen
            if not tracker.waiting_for_client:
                return
        if pos > len(buf):
            self.cskip = pos - len(buf)
        else:
            self.ctail = bytes(buf[pos:])

    # ---------------------------------------------------------------- server → proxy

    def server_data(self, data: bytes) -> None:
        """Server bytes: relayed at once while streaming; parsed whole only during greeting/auth."""
        if self.phase == RESPONSE:
            tracker = self.tracker
            assert tracker is not None
            if not tracker.first_ns:
                tracker.first_ns = _now()
            used = tracker.feed(data)
            chunk = data if used == len(data) else data[:used]
            if self.rbuf is not None:
                self.rbuf += chunk
            elif not self.dropping:
                self.client.write(chunk)  # type: ignore[union-attr]
            if tracker.done:
                self._response_done()
                if used < len(data):
                    self.server_data(data[used:])
            elif tracker.waiting_for_client and self.cbuf:
                pending, self.cbuf = bytes(self.cbuf), bytearray()
                self._relay_client_exchange(pending)
            return
        if self.phase == RAW or self.phase == IDLE:
            # Unsolicited (e.g. an ERR before the server closes an idle connection): pass it on.
            self.client.write(data)  # type: ignore[union-attr]
            return
        if self.phase == CLOSED:
            return
        self.sbuf += data
        if self.phase == GREETING:
            self._greeting()
        elif self.phase == AUTH:
            self._server_auth()

    def _take_server_packet(self) -> tuple[bytes, int] | None:
        """A whole logical packet from ``sbuf`` (greeting/auth phase), or None if incomplete."""
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
            if plen < p.MAX_PAYLOAD:
                self.sbuf = buf[pos:]
                return payload, hdr >> 24
        return None

    def _greeting(self) -> None:
        """The server's handshake: strip SSL/compression, expose it to Lua, run ``read_handshake``."""
        got = self._take_server_packet()
        if got is None:
            return
        payload, seq = got
        if payload[:1] == b"\xff":
            code, _, msg = p.parse_err(payload)
            self._log_error(f"backend refused the connection: {code} {msg.decode('utf-8', 'replace')}")
            self.client.write(p.frame(payload, seq)[0])  # type: ignore[union-attr]
            self._close()
            return
        try:
            greeting = p.parse_greeting(payload)
        except (ValueError, IndexError, struct.error) as exc:
            self._log_error(f"bad greeting from backend: {exc}")
            self._fatal_to_client(b"(proxy) the backend sent an unknown handshake", ERR_UNKNOWN)
            return
        self.server_caps = greeting.capabilities & ~p.STRIPPED_CAPS
        if self.lua is not None:
            lua = self.lua
            lua.set("server", "thread_id", greeting.thread_id)
            lua.set("server", "mysqld_version", greeting.mysqld_version)
            lua.set("server", "scramble_buffer", greeting.scramble)
            lua.set("server", "server_version", greeting.server_version)
            if "read_handshake" in self.hooks:
                res = self._hook("read_handshake")
                if res.ret in (PROXY_SEND_RESULT, PROXY_SEND_QUERY):
                    self._send_response(lua.response(), 0)
                    self._close()
                    return
        self.client.write(p.frame(p.strip_greeting(payload, greeting), seq)[0])  # type: ignore[union-attr]
        self.phase = CLIENT_AUTH
        if self.cbuf:
            self._client_auth()

    def _client_auth(self) -> None:
        """The client's handshake response: learn user/db, run ``read_auth``, forward."""
        buf = self.cbuf
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
            auth = p.parse_auth_response(payload)
        except (ValueError, IndexError, struct.error) as exc:
            self._log_error(f"bad handshake response from client: {exc}")
            self._send_err(b"(proxy) malformed handshake response", ERR_UNKNOWN, (seq + 1) & 0xFF, b"08S01")
            self._close()
            return
        if auth.is_ssl_request:
            self._log_error("client asked for SSL, which the proxy does not relay")
            self._send_err(b"(proxy) SSL is not supported through this proxy", ERR_UNKNOWN, (seq + 1) & 0xFF, b"08S01")
            self._close()
            return
        self.client_caps = auth.capabilities
        self.deprecate_eof = bool(auth.capabilities & self.server_caps & p.CLIENT_DEPRECATE_EOF)
        if self.lua is not None:
            lua = self.lua
            lua.set("client", "username", auth.username)
            lua.set("client", "scrambled_password", auth.auth_response)
            lua.set("client", "default_db", auth.database)
            lua.set("client", "auth_plugin_name", auth.auth_plugin)
            if "read_auth" in self.hooks:
                res = self._hook("read_auth")
                if res.ret == PROXY_SEND_RESULT:
                    self._send_response(lua.response(), (seq + 1) & 0xFF)
                    self._close()
                    return
                if res.ret == PROXY_SEND_QUERY and res.injection is not None:
                    raw = p.frame(res.injection.packet, seq)[0]
        self.backend.write(raw)  # type: ignore[union-attr]
        self.phase = AUTH
        if self.cbuf:
            pending, self.cbuf = bytes(self.cbuf), bytearray()
            self.backend.write(pending)  # type: ignore[union-attr]

    def _server_auth(self) -> None:
        """Auth rounds (switch, more data) are relayed; OK/ERR ends them via ``read_auth_result``."""
        while self.phase == AUTH:
            got = self._take_server_packet()
            if got is None:
                return
            payload, seq = got
            first = payload[0] if payload else -1
            if first not in (0x00, 0xFF):
                self.client.write(p.frame(payload, seq)[0])  # type: ignore[union-attr]
                continue
            if self.lua is not None and "read_auth_result" in self.hooks:
                res = self._hook("read_auth_result", {b"packet": payload})
                if res.ret == PROXY_SEND_RESULT:
                    self._send_response(self.lua.response(), seq)
                    if first == 0xFF:
                        self._close()
                    else:
                        self.phase = IDLE
                    return
            self.client.write(p.frame(payload, seq)[0])  # type: ignore[union-attr]
            if first == 0xFF:
                code, _, msg = p.parse_err(payload)
                self._log_error(f"authentication failed: {code} {msg.decode('utf-8', 'replace')}")
                self._close()
                return
            self.phase = IDLE
            if self.sbuf:
                self.client.write(self.sbuf)  # type: ignore[union-attr]
                self.sbuf = b""
            if self.cbuf:
                self._process_commands()

    # ---------------------------------------------------------------- results

    def _response_done(self) -> None:
        """The response to the current command (or injection) is complete."""
        if self.pending_user is not None:
            # COM_CHANGE_USER: scripts (and the admin check of query_log.lua) must see the new user.
            if self.tracker is not None and self.tracker.query_status == 0 and self.lua is not None:
                self.lua.set("client", "username", self.pending_user[0])
                self.lua.set("client", "default_db", self.pending_user[1])
            self.pending_user = None
        if self.inj is None:
            if self.pending_db is not None:
                if self.tracker is not None and self.tracker.query_status == 0 and self.lua is not None:
                    self.lua.set("client", "default_db", self.pending_db)
                self.pending_db = None
            self._idle()
            return
        self._injection_done()

    def _injection_done(self) -> None:
        """Run ``read_query_result`` for the finished injection and act on its decision."""
        inj = self.inj
        tracker = self.tracker
        assert inj is not None and tracker is not None and self.lua is not None
        now = _now()
        first = tracker.first_ns or now
        stats = ResultStats(
            query_time_us=max(0, (first - inj.queued_ns) // 1000),
            response_time_us=max(0, (now - inj.queued_ns) // 1000),
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
        buffered = self.rbuf
        if inj.resultset_is_needed and buffered is not None:
            self._fill_resultset(stats, bytes(buffered))
        if "read_query_result" in self.hooks:
            try:
                res = self.lua.read_query_result(inj, stats)
            except Exception as exc:  # noqa: BLE001 - fail open: the result still reaches the client
                res = HookResult(False, None, error=f"{type(exc).__name__}: {exc}", injection=self.lua.pop())
            if not res.ok:
                self.server.rate_limited_log(
                    f"read_query_result: {res.error}", "Lua error in read_query_result: %s", res.error
                )
                res.ret = None
        else:
            injection = self.lua.pop()
            res = HookResult(True, None, injection=injection, remaining=len(self.stamps) - (injection is not None))
        if res.close:
            self.close_after = True
        if inj.resultset_is_needed and buffered is not None:
            if res.ret == PROXY_SEND_RESULT:
                if not self.result_sent:
                    self._send_response(self.lua.response(), (self.client_seq + 1) & 0xFF)
                    self.result_sent = True
            elif res.ret != PROXY_IGNORE_RESULT:
                if not self.result_sent:
                    self.client.write(bytes(buffered))  # type: ignore[union-attr]
                    self.result_sent = True
                else:
                    self.server.rate_limited_log(
                        "second result", "a second result for one client command was dropped (only the first is sent)"
                    )
        self.rbuf = None
        self.inj = None
        if res.injection is not None:
            self._stamp_queue(res)
            self._send_injection(res.injection)
            return
        self.stamps.clear()
        if not self.result_sent:
            self._send_err(b"(proxy) the script ignored every result of this query", ERR_UNKNOWN,
                           (self.client_seq + 1) & 0xFF)  # fmt: skip
        self._idle()

    def _fill_resultset(self, stats: ResultStats, data: bytes) -> None:
        """Parse a buffered result for ``inj.resultset.fields/rows/raw`` (first result set only)."""
        payloads = p.iter_packets(data)
        first = next(payloads, b"")
        stats.raw = first
        if not first or first[0] in (0x00, 0xFF, 0xFB):
            stats.fields = []
            stats.rows = []
            return
        count, _ = p.read_lenenc_int(first, 0)
        fields: list[dict[bytes, Any]] = []
        for _ in range(count or 0):
            col = p.parse_column_definition(next(payloads, b""))
            fields.append({b"name": col.name, b"type": col.type, b"org_name": col.org_name, b"table": col.table,
                           b"org_table": col.org_table})  # fmt: skip
        rows: list[list[bytes | None]] = []
        if not stats.binary:
            for payload in payloads:
                if payload[:1] == b"\xfe" and len(payload) < p.MAX_PAYLOAD and not rows and not self.deprecate_eof:
                    continue  # the EOF after the column definitions
                if payload[:1] in (b"\xfe", b"\xff") and len(payload) < p.MAX_PAYLOAD:
                    break
                rows.append(p.parse_text_row(payload, len(fields)))
        stats.fields = fields
        stats.rows = rows

    def _idle(self) -> None:
        """Back to waiting for the client's next command."""
        self.tracker = None
        self.phase = IDLE
        if self.close_after:
            self._close()
            return
        if self.client_paused:
            self.client_paused = False
            self._client_reading()
        if self.cbuf:
            self._process_commands()

    def _send_err(self, message: bytes, code: int, seq: int, sqlstate: bytes = b"07000") -> None:
        """An ERR packet to the client."""
        self.client.write(p.frame(p.err_packet(message, code, sqlstate), seq)[0])  # type: ignore[union-attr]

    def _send_response(self, resp: ProxyResponse, seq: int) -> None:
        """Turn ``proxy.response`` into packets for the client."""
        if resp.type == MYSQLD_PACKET_ERR:
            payloads = [p.err_packet(resp.errmsg or b"", resp.errcode, resp.sqlstate)]
        elif resp.type == MYSQLD_PACKET_RAW:
            payloads = resp.packets
        elif resp.fields:
            payloads = p.text_resultset(resp.fields, resp.rows, self.deprecate_eof)
        else:
            payloads = [p.ok_packet(resp.affected_rows, resp.insert_id)]
        self.client.write(p.frame_all(payloads, seq)[0])  # type: ignore[union-attr]
