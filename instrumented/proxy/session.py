"""Sans-IO: one client's session through the proxy, the command state machine between client, server and Lua.

Bytes and events come in (``client_data``, ``server_data``, ``client_lost``...; the connection phase
is ``handshake.py``); what to do comes out as calls: ``to_client`` / ``to_server`` (the transports'
``write`` once connected), ``wire.hold_client``, ``wire.close``. Calls, not returned action lists: no
allocation per event on the per-statement path. Lua hooks are computation, not I/O: called from here.

Each command goes through ``read_query``; the response is relayed as it arrives (the ``ResponseTracker``
finds its end) unless the script asked for it with ``resultset_is_needed``. Script failures never drop a
query: the original packet is forwarded.
"""

from __future__ import annotations

import logging
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from .handshake import Handshake
from .lua.api import (
    MYSQLD_PACKET_ERR,
    PROXY_IGNORE_RESULT,
    PROXY_SEND_QUERY,
    PROXY_SEND_RESULT,
    HookResult,
    Injection,
    LuaCall,
    ProxyResponse,
    ResultStats,
)
from .lua.host import LuaConnection
from .mysql import constants as c
from .mysql import packets as p
from .mysql.responses import KIND_RAW, ResponseTracker
from .phases import AUTH, CLIENT_AUTH, CLOSED, CONNECTING, GATHERING, GREETING, IDLE, RAW, RESPONSE, Phase
from .prepared import PreparedTexts

log = logging.getLogger("instrumented.proxy")

_HEADER = struct.Struct("<I")
_now = time.perf_counter_ns

#: Bytes of further commands accepted from a client while its current command runs (then reading pauses).
CLIENT_BACKLOG = 1 << 20
#: Commands whose forwarding changes what the session knows (checked in one set lookup).
_NOTED = frozenset((c.COM_INIT_DB, c.COM_CHANGE_USER, c.COM_STMT_CLOSE, c.COM_RESET_CONNECTION))


class Wire(Protocol):
    """What the session asks of its transports besides sending bytes."""

    def hold_client(self, held: bool) -> None:
        """Stop (True) or resume (False) reading the client: too many of its commands are waiting."""

    def close(self) -> None:
        """Close both sides (buffered bytes are flushed)."""

    def gather(self, response: ProxyResponse, seq: int) -> bool:
        """Have every worker carry out the control statement ``response`` answers (``response.relay``) and answer
        with their answers merged, later, through ``Session.gathered``; False when there are no other workers."""


def _unconnected(data: bytes) -> None:
    """``to_server`` before a backend is connected: the phases keep this from being called."""
    raise RuntimeError("no backend connection yet")


class Session:
    """One client connection's protocol state; ``report`` is the server's rate-limited error log."""

    def __init__(self, wire: Wire, report: Callable[..., None], peer: str = "?") -> None:
        self.wire = wire
        self.report = report
        self.peer = peer
        self.to_client: Callable[[bytes], object] = _unconnected
        self.to_server: Callable[[bytes], object] = _unconnected
        self.lua: LuaConnection | None = None
        self.hooks: set[str] = set()
        self.phase: Phase = CONNECTING
        self.handshake = Handshake(self)
        self.cbuf = bytearray()  # client bytes not yet handled (commands wait while a response is in flight)
        self.deprecate_eof = False
        self.client_caps = 0
        self.tracker: ResponseTracker | None = None
        self.command = 0
        self.client_seq = 0  # seq of the client's last command packet; our answers continue after it
        self.inj: Injection | None = None
        self.stamps: deque[int] = deque()
        self.rbuf: bytearray | None = None  # a buffered result (resultset_is_needed)
        self.dropping = False
        self.result_sent = False
        self.noted = 0  # a forwarded command whose success updates the script's view (COM_INIT_DB, change-user)
        self.pending_db = b""
        self.prepared = PreparedTexts()
        self.error_logged = False
        self.close_after = False
        self.client_held = False
        self.raw = b""  # the client's current command as received

    # ---------------------------------------------------------------- lifecycle

    def client_lost(self, exc: Exception | None) -> None:
        """The client left: run ``disconnect_client`` and close the backend."""
        if exc is not None and self.phase not in (CLOSED, IDLE):
            self.log_error(f"client connection lost: {exc}")
        elif self.phase is RESPONSE:
            self.log_error("client disconnected mid-result")
        self.close()

    def server_lost(self, exc: Exception | None, backend: str) -> None:
        """The backend closed; whatever was relayed stays relayed, then the client is closed too."""
        if self.phase is CLOSED:
            return
        if self.phase in (RESPONSE, GREETING, AUTH):
            self.log_error(f"backend {backend} closed the connection{': ' + str(exc) if exc else ''}")
        self.close()

    def close(self) -> None:
        """Close both sides once; ``disconnect_client`` runs exactly once."""
        if self.phase is CLOSED:
            return
        self.phase = CLOSED
        if "disconnect_client" in self.hooks:
            self.hook("disconnect_client")
        self.wire.close()

    def log_error(self, message: str) -> None:
        """One log line per connection error."""
        if not self.error_logged:
            self.error_logged = True
            log.warning("connection from %s: %s", self.peer, message)

    def fatal(self, message: bytes, code: int, sqlstate: bytes = b"07000") -> None:
        """Send an ERR as the first packet (instead of a greeting) and close."""
        if self.phase is not CLOSED:
            self.to_client(p.frame(p.err_packet(message, code, sqlstate), 0)[0])
        self.close()

    # ---------------------------------------------------------------- Lua

    def hook(self, name: str, arg: Any = None) -> HookResult:
        """Call a hook; a Lua error is logged (rate-limited) and means "no decision"."""
        assert self.lua is not None
        try:
            res = self.lua.call(name, arg)
        except Exception as exc:  # noqa: BLE001 - a bug in the host/lupa glue must not drop the query either
            res = HookResult(False, None, error=f"{type(exc).__name__}: {exc}")
        if not res.ok:
            self.report(f"{name}: {res.error}", "Lua error in %s: %s", name, res.error)
            res.ret = None
        return res

    def _stamp_queue(self, res: HookResult) -> None:
        """Start stamps for injections: taken when the hook that queued them returned."""
        stamps = self.stamps
        if not res.remaining and not stamps and res.injection is not None:  # one injection (the logging case)
            res.injection.queued_ns = _now()
            return
        length = res.remaining + (1 if res.injection is not None else 0)
        now = _now()
        while len(stamps) > length:
            stamps.pop()
        while len(stamps) < length:
            stamps.append(now)
        if res.injection is not None:
            res.injection.queued_ns = stamps.popleft()

    # ---------------------------------------------------------------- client → proxy

    def client_data(self, data: bytes) -> None:
        """Client bytes: commands while idle; relayed as is during auth, LOCAL INFILE and raw mode."""
        phase = self.phase
        if phase is IDLE and not self.cbuf:
            n = len(data)
            if n >= 4:
                plen = _HEADER.unpack_from(data, 0)[0] & 0xFFFFFF
                if plen + 4 == n and plen < c.MAX_PAYLOAD:  # the usual case: exactly one command
                    self._command(data[4:], data, data[3])
                    return
            self.cbuf += data
            self.process_commands()
            return
        if phase is RESPONSE and self.tracker is not None and self.tracker.relays_client and not self.cbuf:
            self.to_server(data)
            self.tracker.client_data(data)
            return
        if phase is AUTH or phase is RAW:
            self.to_server(data)
            return
        if phase is CLOSED:
            return
        self.cbuf += data
        if phase is CLIENT_AUTH:
            self.handshake.client_auth()
        elif phase is IDLE:
            self.process_commands()
        elif (phase is RESPONSE or phase is GATHERING) and len(self.cbuf) > CLIENT_BACKLOG and not self.client_held:
            # A client that keeps sending while its previous command runs: stop reading it for now.
            self.client_held = True
            self.wire.hold_client(True)

    def process_commands(self) -> None:
        """Handle complete commands in ``cbuf`` one at a time (the protocol allows one in flight)."""
        while self.phase is IDLE:
            command = p.take_command(self.cbuf)
            if command is None:
                return
            self._command(*command)

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
                self.report(
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
                if self.send_response((seq + 1) & 0xFF):
                    return  # the other workers' answers come first (gathered() goes on)
                if self.close_after:
                    self.close()
                return  # further pipelined commands: the caller's loop goes on
            elif res.injection is not None:
                self.report(
                    "discarded queue",
                    "read_query queued packets but did not return PROXY_SEND_QUERY; they were discarded",
                )
            self.stamps.clear()
        self.inj = None
        command = payload[0] if payload else 0
        if command in _NOTED:
            self._note(command, payload)
        self._forward(command, raw)

    def _note(self, command: int, payload: bytes) -> None:
        """Forwarding a command that changes the database, the user or the prepared statements."""
        self.prepared.command_sent(command, payload)
        if command == c.COM_INIT_DB:
            self.pending_db = payload[1:]
            self.noted = command
        elif command == c.COM_CHANGE_USER:
            self.handshake.change_user_sent(payload)
            self.noted = command

    def _forward(self, command: int, raw: bytes) -> None:
        """Send the client's bytes as they came and track the response."""
        tracker = ResponseTracker(command, self.deprecate_eof)
        self.command = command
        self.tracker = tracker
        self.dropping = False
        self.rbuf = None
        self.to_server(raw)
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
        if inj.own and raw[3] == 0 and len(raw) == len(inj.packet) + 4:
            data = raw  # the client's own packet re-queued (the usual logging case): no re-framing, no comparing
        elif len(raw) == len(inj.packet) + 4 and raw[3] == 0 and memoryview(raw)[4:] == inj.packet:
            data = raw
        else:
            data = p.frame(inj.packet, 0)[0]
        self.to_server(data)
        if tracker.kind == KIND_RAW:
            self.phase = RAW
        elif tracker.done:
            self._injection_done()
        else:
            self.phase = RESPONSE

    # ---------------------------------------------------------------- server → proxy

    def server_data(self, data: bytes) -> None:
        """Server bytes: relayed at once while streaming; parsed whole only during greeting/auth."""
        if self.phase is RESPONSE:
            tracker = self.tracker
            assert tracker is not None
            if not tracker.first_ns:
                tracker.first_ns = _now()
            used = tracker.feed(data)
            chunk = data if used == len(data) else data[:used]
            if self.rbuf is not None:
                self.rbuf += chunk
            elif not self.dropping:
                self.to_client(chunk)
            if tracker.done:
                self._response_done()
                if used < len(data):
                    self.server_data(data[used:])
            elif tracker.waiting_for_client and self.cbuf:
                pending, self.cbuf = bytes(self.cbuf), bytearray()
                self.to_server(pending)
                tracker.client_data(pending)
            return
        if self.phase is RAW or self.phase is IDLE or self.phase is GATHERING:
            # Unsolicited (e.g. an ERR before the server closes an idle connection): pass it on.
            self.to_client(data)
            return
        if self.phase is not CLOSED:
            self.handshake.server_data(data)

    def _response_done(self) -> None:
        """The response to the current command (or injection) is complete."""
        if self.noted:
            ok = self.tracker is not None and self.tracker.query_status == 0
            if self.noted == c.COM_CHANGE_USER:
                self.handshake.change_user_done(ok)
            elif ok and self.lua is not None and self.inj is None:
                self.lua.set("client", "default_db", self.pending_db)
            self.noted = 0
        if self.inj is None:
            self._idle()
            return
        self._injection_done()

    def _injection_done(self) -> None:  # noqa: C901 - per-statement path while logging: one dispatch on the script's decision, kept inline
        """Run ``read_query_result`` for the finished injection and act on its decision."""
        inj = self.inj
        tracker = self.tracker
        assert inj is not None and tracker is not None and self.lua is not None
        buffered = self.rbuf
        if "read_query_result" in self.hooks:
            shown = inj
            if self.command == c.COM_STMT_PREPARE:  # what the script may keep of the text is capped
                shown = self.prepared.shown(inj, tracker.stmt_id if tracker.query_status == 0 else None)
            try:
                if inj.resultset_is_needed and buffered is not None:
                    stats = ResultStats.measured(tracker, inj.queued_ns, _now())
                    result = p.parse_resultset(bytes(buffered), stats.binary, self.deprecate_eof)
                    stats.raw, stats.fields, stats.rows = result.raw, result.fields, result.rows
                    res = self.lua.read_query_result(shown, stats)
                else:  # streamed (the logging case): no stats object, the tracker's figures go straight to Lua
                    res = self.lua.streamed_result(shown, tracker, _now())
            except Exception as exc:  # noqa: BLE001 - fail open: the result still reaches the client
                res = HookResult(False, None, error=f"{type(exc).__name__}: {exc}", injection=self.lua.pop())
            if not res.ok:
                self.report(f"read_query_result: {res.error}", "Lua error in read_query_result: %s", res.error)
                res.ret = None
        else:
            injection = self.lua.pop()
            res = HookResult(True, None, injection=injection, remaining=len(self.stamps) - (injection is not None))
        if res.close:
            self.close_after = True
        if inj.resultset_is_needed and buffered is not None:
            if res.ret == PROXY_SEND_RESULT:
                if not self.result_sent:
                    self.send_response((self.client_seq + 1) & 0xFF)
                    self.result_sent = True
            elif res.ret != PROXY_IGNORE_RESULT:
                if not self.result_sent:
                    self.to_client(bytes(buffered))
                    self.result_sent = True
                else:
                    self.report(
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
            self.send_err(b"(proxy) the script ignored every result of this query", c.ER_UNKNOWN_ERROR,
                          (self.client_seq + 1) & 0xFF)  # fmt: skip
        self._idle()

    def _idle(self) -> None:
        """Back to waiting for the client's next command (once the other workers answered, when they were asked)."""
        self.tracker = None
        if self.phase is GATHERING:
            return
        self.phase = IDLE
        if self.close_after:
            self.close()
            return
        if self.client_held:
            self.client_held = False
            self.wire.hold_client(False)
        if self.cbuf:
            self.process_commands()

    def send_err(self, message: bytes, code: int, seq: int, sqlstate: bytes = b"07000") -> None:
        """An ERR packet to the client."""
        self.to_client(p.frame(p.err_packet(message, code, sqlstate), seq)[0])

    def send_response(self, seq: int) -> bool:
        """``proxy.response`` as the hook left it, as packets to the client; True when it is a control statement for
        every worker (``--workers``): the answer then goes once they all answered (``gathered``)."""
        assert self.lua is not None
        response = self.lua.response()
        if response.relay is not None and self.wire.gather(response, seq):
            self.phase = GATHERING
            return True
        self.to_client(p.frame_all(response.payloads(self.deprecate_eof), seq)[0])
        return False

    def gathered(self, response: ProxyResponse | LuaCall, seq: int) -> None:
        """Every worker's answer to a control statement, merged: to the client, then the next command; or the script
        function to call with what the workers answered (EXPLAIN), which may queue statements of its own."""
        if self.phase is not GATHERING:
            return  # closed meanwhile
        if isinstance(response, LuaCall):
            res = self.hook(response.name, response.arg)
            self.phase = RESPONSE
            self.result_sent = False
            if res.ret == PROXY_SEND_QUERY and res.injection is not None:
                self._stamp_queue(res)
                self._send_injection(res.injection)
                return
            self.stamps.clear()
            if res.ret == PROXY_SEND_RESULT:
                assert self.lua is not None
                response = self.lua.response()
            else:
                response = ProxyResponse(MYSQLD_PACKET_ERR, errmsg=f"(proxy) {response.name} gave no answer".encode())
        self.to_client(p.frame_all(response.payloads(self.deprecate_eof), seq)[0])
        self.phase = IDLE
        self._idle()
