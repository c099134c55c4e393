"""asyncio glue for one client connection: Protocol callbacks, transports, TCP_NODELAY, flow control.

No protocol decisions here: bytes and events go to the connection's ``Session`` (Sans-IO), which sends
through the transports' ``write`` and asks this class to hold the client or close both sides. Built on
``Protocol`` callbacks, not streams (streams cost 10-25 µs more per query; ARCHITECTURE §6).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Protocol, cast

from .backends import Backend
from .lua.api import LuaCall, ProxyResponse
from .lua.host import LuaHost, ScriptLoadError
from .mysql import constants as c
from .phases import CLOSED, RESPONSE
from .session import Session
from .workers import Workers


class Server(Protocol):
    """What a connection uses of the server that accepted it (``server.ProxyServer``, which makes it)."""

    lua: LuaHost | None
    connect_timeout: float
    connections: set[ProxyConnection]
    workers: Workers | None  # the other workers (--workers N), None when this is the only one
    tasks: set[asyncio.Task[None]]

    def pick_backends(self, ndx: int) -> Iterator[Backend]:
        """The backends to try, in order."""

    def rate_limited_log(self, key: str, message: str, *args: object) -> None:
        """Log a failure at most once a minute per kind."""


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY: without it Nagle delays the last packet of multi-packet results by ~40 ms."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class BackendProtocol(asyncio.Protocol):
    """The socket to MySQL; hands everything to its connection's session."""

    __slots__ = ("conn", "session", "transport")

    def __init__(self, conn: ProxyConnection) -> None:
        self.conn = conn
        self.session = conn.session
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Remember the transport; the greeting comes next."""
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses
        set_nodelay(transport)

    def data_received(self, data: bytes) -> None:
        """Server bytes go to the session."""
        self.session.server_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        """The backend went away (or we closed it)."""
        self.session.server_lost(exc, self.conn.backend_name)

    def pause_writing(self) -> None:
        """MySQL is not reading (a huge upload): stop reading the client."""
        self.conn.backend_full = True
        self.conn.client_reading()

    def resume_writing(self) -> None:
        """MySQL reads again."""
        self.conn.backend_full = False
        self.conn.client_reading()


class ProxyConnection(asyncio.Protocol):
    """The client side: connects a backend for the session and carries out what it asks (the ``Wire``)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.client: asyncio.Transport | None = None
        self.backend: asyncio.Transport | None = None
        self.backend_info: Backend | None = None
        self.session = Session(self, server.rate_limited_log)
        self.client_held = False
        self.backend_full = False

    @property
    def busy(self) -> bool:
        """A command's response is on its way (shutdown waits a moment for these)."""
        return self.session.phase is RESPONSE

    @property
    def backend_name(self) -> str:
        """``host:port`` of the connected backend, for log lines."""
        return self.backend_info.name if self.backend_info else "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """A client connected: set up Lua, let the session run ``connect_server``, connect a backend."""
        transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses
        self.client = transport
        set_nodelay(transport)
        peer = transport.get_extra_info("peername")
        session = self.session
        session.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "?")
        session.to_client = transport.write
        self.server.connections.add(self)
        try:
            lua = self.server.lua.new_connection() if self.server.lua else None
        except ScriptLoadError as exc:
            self.server.rate_limited_log(f"script load: {exc}", "Lua script failed to load: %s", exc)
            session.fatal(b"MySQL Proxy Lua script failed to load. Check the error log.", c.ER_UNKNOWN_ERROR)
            return
        ndx = session.handshake.start(lua, peer, transport.get_extra_info("sockname"))
        if ndx is None:
            return
        transport.pause_reading()
        asyncio.get_running_loop().create_task(self._connect_backend(ndx))

    async def _connect_backend(self, ndx: int) -> None:
        """Connect the chosen (or least-loaded live) backend; all down means a clean MySQL error."""
        loop = asyncio.get_running_loop()
        session = self.session
        errors: list[str] = []
        for backend in self.server.pick_backends(ndx):
            if session.phase is CLOSED:
                return
            try:
                transport, _ = await asyncio.wait_for(
                    loop.create_connection(lambda: BackendProtocol(self), backend.host, backend.port),
                    self.server.connect_timeout,
                )
            except (OSError, TimeoutError) as exc:
                backend.mark_down()
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "timeout"
                errors.append(f"{backend.name}: {reason}")
                continue
            if session.phase is CLOSED:
                transport.close()
                return
            backend.mark_up()
            backend.connected_clients += 1
            self.backend_info = backend
            self.backend = transport
            session.to_server = transport.write
            src = transport.get_extra_info("sockname")
            session.handshake.backend_connected(backend.index, backend.host, backend.port, src)
            if self.client is not None:
                self.client.resume_reading()
            return
        detail = "; ".join(errors) if errors else "no backend configured"
        session.log_error(f"all backends are down ({detail})")
        session.fatal(f"(proxy) all backends are down: {detail}".encode(), c.CR_CONN_HOST_ERROR, b"HY000")

    def data_received(self, data: bytes) -> None:
        """Client bytes go to the session."""
        self.session.client_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        """The client left."""
        self.session.client_lost(exc)

    def pause_writing(self) -> None:
        """The client is slow: stop reading the backend, so results are never piled up in memory."""
        if self.backend is not None:
            self.backend.pause_reading()

    def resume_writing(self) -> None:
        """The client caught up."""
        if self.backend is not None and not self.backend.is_closing():
            self.backend.resume_reading()

    # ---------------------------------------------------------------- the session's Wire

    def hold_client(self, held: bool) -> None:
        """The session has enough of the client's commands waiting (or no longer)."""
        self.client_held = held
        self.client_reading()

    def client_reading(self) -> None:
        """Read the client unless MySQL is not keeping up or the session holds it."""
        if self.client is None or self.client.is_closing():
            return
        if self.backend_full or self.client_held:
            self.client.pause_reading()
        else:
            self.client.resume_reading()

    def close(self) -> None:
        """Close both sides (the session ran ``disconnect_client``); buffered bytes are flushed."""
        self.server.connections.discard(self)
        if self.backend_info is not None:
            self.backend_info.connected_clients -= 1
            self.backend_info = None
        if self.backend is not None:
            self.backend.close()
        if self.client is not None:
            self.client.close()

    def gather(self, response: ProxyResponse, seq: int) -> bool:
        """Ask the other workers too (``Workers.gather``); the merged answer goes to the session when they answered."""
        workers = self.server.workers
        if workers is None:
            return False
        task = asyncio.get_running_loop().create_task(self._gather(workers, response, seq))
        self.server.tasks.add(task)  # kept until done: the loop holds tasks weakly
        task.add_done_callback(self.server.tasks.discard)
        return True

    async def _gather(self, workers: Workers, response: ProxyResponse, seq: int) -> None:
        """The merged answer, or this worker's own when gathering failed (fail open: the client gets an answer)."""
        try:
            merged: ProxyResponse | LuaCall = await workers.gather(response)
        except Exception as exc:  # noqa: BLE001
            self.server.rate_limited_log("gather", "gathering the workers' answers failed: %s", exc)
            merged = response
        self.session.gathered(merged, seq)

    def shutdown(self) -> None:
        """Server shutdown: the session closes (``disconnect_client`` runs), then both sides."""
        self.session.close()
