"""The listening proxy: backends, the shared Lua host, the set of live connections, shutdown."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterable, Iterator

from .backends import Backend
from .connection import ProxyConnection
from .lua.host import LuaHost
from .workers import WorkerInfo, Workers

log = logging.getLogger("instrumented.proxy")

#: How often the files scripts write are flushed (their last line reaches the disk when traffic stops).
FLUSH_SECONDS = 1.0


def parse_address(value: str, default_host: str = "0.0.0.0", default_port: int = 4040) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT``, ``HOST`` or ``[v6]:PORT`` to (host, port), like MySQL Proxy's flags."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.lstrip(":")
        return host or default_host, int(port) if port else default_port
    host, sep, port = value.rpartition(":")
    if not sep:
        return value or default_host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port in address {value!r}")
    return host or default_host, int(port)


class ProxyServer:
    """Accepts clients and gives each a ``ProxyConnection`` sharing one Lua host."""

    def __init__(self, listen: tuple[str, int], backends: Iterable[tuple[str, int]], script: str | None = None,
                 io_paths: Iterable[str] = (), connect_timeout: float = 5.0, sock: socket.socket | None = None,
                 worker: WorkerInfo | None = None, runtime: str = "auto") -> None:  # fmt: skip
        """``sock``: a socket bound and listening already (the workers' shared one); ``worker``: which of
        ``--workers N`` this process is."""
        self.listen = listen
        self.backends = [Backend(i + 1, host, port) for i, (host, port) in enumerate(backends)]
        self._last_logged: dict[str, float] = {}
        count, index = (worker.count, worker.index) if worker else (1, 1)
        self.lua = (LuaHost(script, io_paths=io_paths, report=self.rate_limited_log, workers=count, worker=index,
                            runtime=runtime) if script else None)  # fmt: skip
        self.connect_timeout = connect_timeout
        self.connections: set[ProxyConnection] = set()
        self.workers = Workers(worker, self.lua, self.rate_limited_log) if worker and worker.count > 1 else None
        self.tasks: set[asyncio.Task[None]] = set()
        self._sock = sock
        self._server: asyncio.Server | None = None
        self._flusher: asyncio.TimerHandle | None = None

    async def start(self) -> asyncio.Server:
        """Bind (or take the shared socket) and start accepting."""
        loop = asyncio.get_running_loop()
        host, port = self.listen
        if self.workers is not None:
            await self.workers.start()
        if self._sock is not None:
            self._server = await loop.create_server(lambda: ProxyConnection(self), sock=self._sock)
        else:
            self._server = await loop.create_server(
                lambda: ProxyConnection(self), host or None, port, reuse_address=True
            )
        if self.lua is not None:
            self._flusher = loop.call_later(FLUSH_SECONDS, self._flush_files)
        return self._server

    def _flush_files(self) -> None:
        """Flush the scripts' buffered files, then again in a second (there is no timer in the scripting API)."""
        assert self.lua is not None
        try:
            self.lua.flush_files()
        except Exception as exc:  # noqa: BLE001 - a failed flush must not stop the proxy
            self.rate_limited_log("flush", "flushing the script's files failed: %s", exc)
        self._flusher = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self._flush_files)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def pick_backends(self, ndx: int) -> Iterator[Backend]:
        """The script's choice first (1-based ``backend_ndx``), else live backends by fewest clients."""
        if 0 < ndx <= len(self.backends):
            yield self.backends[ndx - 1]
            return
        live = sorted((b for b in self.backends if not b.is_down), key=lambda b: b.connected_clients)
        down = [b for b in self.backends if b.is_down]
        yield from live or down

    def rate_limited_log(self, key: str, message: str, *args: object) -> None:
        """Log a failure at most once a minute per kind (ARCHITECTURE §8)."""
        now = time.monotonic()
        if now - self._last_logged.get(key, -1e9) >= 60:
            if len(self._last_logged) > 1000:
                self._last_logged.clear()
            self._last_logged[key] = now
            log.error(message, *args)

    async def close(self, grace: float = 2.0) -> None:
        """Stop accepting, give running commands a moment, then close every connection."""
        if self._server is not None:
            self._server.close()
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        for task in list(self.tasks):  # answers being gathered from the other workers: their clients are going
            task.cancel()
        deadline = time.monotonic() + grace
        while any(c.busy for c in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.shutdown()
        if self.lua is not None:
            self.lua.flush_files()
        if self.workers is not None:
            await self.workers.close()
        if self._server is not None:
            await self._server.wait_closed()
