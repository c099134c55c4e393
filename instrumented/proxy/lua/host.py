"""The MySQL Proxy 0.8 scripting API on lupa's Lua 5.1 runtime, sandboxed.

One Lua state per process, like MySQL Proxy: each client connection runs the script once in its own
environment (``__index`` = the sandbox), so script globals are per connection and only
``proxy.global`` is shared. The proxy table's metatable points at the current connection's
``queries``/``connection``/``response`` while a hook runs. Python crosses into Lua once per hook call.
The sandbox and the API are built by ``bootstrap.lua``, next to this file.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
from collections.abc import Callable, Iterable
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from ..mysql.responses import ResponseTracker
from . import files
from .api import HOOKS, HookResult, Injection, ProxyResponse, ResultStats, proxy_constants

log = logging.getLogger("instrumented.proxy.lua")

#: Instructions a single hook call may run before it is aborted (a runaway loop must not hang the proxy).
INSTRUCTION_LIMIT = 50_000_000

#: The privileged bootstrap: builds the sandbox and the API, returns the host's entry points.
BOOTSTRAP = importlib.resources.files(__package__).joinpath("bootstrap.lua").read_bytes()


class LupaMissingError(RuntimeError):
    """lupa (the ``proxy`` extra) is not installed."""


#: ``--lua-runtime``: Lua 5.1 as LuaJIT 2.1 implements it (its interpreter, the compiler off: a compiled loop would
#: never reach the instruction limit's count hook) or as PUC Lua 5.1 (what MySQL Proxy 0.8.5 links); ``auto``: LuaJIT
#: when lupa has it (its interpreter runs query_log.lua's logging in about half the instructions: mysql_proxy_lua's
#: README, "Speed").
RUNTIMES = ("auto", "luajit", "lua51")


def _load_lupa(runtime: str = "auto") -> Any:
    """Import a lupa Lua 5.1 runtime (5.1 for setfenv and to match MySQL Proxy): LuaJIT 2.1's or PUC Lua 5.1's."""
    if runtime in ("auto", "luajit"):
        try:
            import lupa.luajit21 as luajit21
        except ImportError:
            if runtime == "luajit":
                raise LupaMissingError("this lupa build has no LuaJIT 2.1 runtime (lupa.luajit21)") from None
        else:
            return luajit21
    try:
        import lupa.lua51 as lua51
    except ImportError:
        try:
            import lupa  # noqa: F401
        except ImportError as exc:
            raise LupaMissingError(
                "instrumented-proxy needs lupa: pip install 'django-instrumented[proxy]' (or pip install lupa)"
            ) from exc
        raise LupaMissingError(
            "this lupa build has no Lua 5.1 runtime (lupa.lua51); install lupa >= 2.0 from a binary wheel"
        ) from None
    return lua51


class LuaHost:
    """One Lua state for the process: the sandbox, the compiled script (reloaded on change), the API."""

    def __init__(self, script: str | os.PathLike[str] | None, io_paths: Iterable[str] = (),
                 lua_path: Iterable[str] = (), report: Callable[..., None] | None = None,
                 workers: int = 1, worker: int = 1, runtime: str = "auto") -> None:  # fmt: skip
        """``report(key, message, *args)`` logs a failure (the server's: at most once a minute per key); ``workers``
        and ``worker`` are what scripts find in ``proxy.workers`` and ``proxy.worker`` (the host's extensions: how
        many processes run them, which one this is); ``runtime``: one of ``RUNTIMES``."""
        lua51 = _load_lupa(runtime)
        self.script = Path(script).resolve() if script else None
        self._io_paths = {os.path.abspath(p) for p in io_paths}
        self._report = report or (lambda _key, message, *args: log.error(message, *args))
        search: list[Traversable] = [Path(p) for p in lua_path]
        if self.script:
            search.append(self.script.parent)
        search.append(importlib.resources.files("mysql_proxy_lua"))  # the shipped scripts' lib/ (package data)
        self._search = list(dict.fromkeys(search))
        self._modules: dict[str, tuple[int, int]] = {}  # files ``require`` read: path -> (mtime, size) then
        self.runtime = lua51.LuaRuntime(
            encoding=None,
            register_eval=False,
            register_builtins=False,
            unpack_returned_tuples=True,
            attribute_filter=self._deny_attributes,
        )
        g = self.runtime.globals()
        g[b"python"] = None
        py = self.runtime.table_from(
            {
                b"constants": self.runtime.table_from(proxy_constants()),
                b"hooks": self.runtime.table_from([h.encode() for h in HOOKS]),
                b"io_allowed": self._io_allowed,
                b"open_file": self._open_file,
                b"close_fd": os.close,
                b"log_print": self._log_print,
                b"find_module": self._find_module,
                b"instruction_limit": INSTRUCTION_LIMIT,
                b"workers": workers,
                b"worker": worker,
            }
        )
        api = self.runtime.execute(BOOTSTRAP, py)
        self._compile: Callable[..., Any] = api[b"compile"]
        self._forget_modules: Callable[[], None] = api[b"forget_modules"]
        self._new_connection: Callable[..., Any] = api[b"new_connection"]
        self.call: Callable[..., Any] = api[b"call"]
        self.read_query: Callable[..., Any] = api[b"read_query"]
        self.pop: Callable[..., Any] = api[b"pop"]
        self.read_query_result: Callable[..., Any] = api[b"read_query_result"]
        self.streamed_result: Callable[..., Any] = api[b"streamed_result"]
        self.set: Callable[..., Any] = api[b"set"]
        self.set_address: Callable[..., Any] = api[b"set_address"]
        self.get_connection: Callable[..., Any] = api[b"get_connection"]
        self.response: Callable[..., Any] = api[b"response"]
        self.flush_files: Callable[[], None] = api[b"flush_files"]
        self._chunk: Any = None
        self._stamp: tuple[int, int] | None = None
        self.load_error: str | None = None
        if self.script:
            self._reload()

    @staticmethod
    def _deny_attributes(_obj: Any, _name: Any, _is_setting: bool) -> Any:
        """Scripts never get at Python objects' attributes."""
        raise AttributeError("access to Python attributes is not allowed from Lua")

    def _io_allowed(self, path: bytes) -> bool:
        """io.open is only for the configured log file(s)."""
        return os.path.abspath(os.fsdecode(path)) in self._io_paths

    def _open_file(self, path: bytes, mode: bytes) -> tuple[bytes | None, int | bytes]:
        """``io.open`` of an allowed file (see ``files``): the name Lua reopens it by and the descriptor to close
        then, or (None, the reason) as Lua's ``io.open`` gives it; a refusal is logged, with its reason."""
        name = os.fsdecode(path)
        try:
            reopen, fd = files.open_checked(name, mode.decode("ascii", "replace"))
        except files.RefusedFile as exc:
            reason = str(exc.strerror)
            self._report(f"io.open {name}: {reason}", "the script's file was not opened: %s", reason)
            return None, reason.encode()
        except (OSError, ValueError) as exc:
            return None, f"{name}: {getattr(exc, 'strerror', None) or exc}".encode()
        warning = files.shared_directory(name)
        if warning:
            self._report(f"io.open directory {name}", "%s", warning)
        return os.fsencode(reopen), fd

    @staticmethod
    def _log_print(text: bytes) -> None:
        """Lua ``print`` goes to logging, not stdout."""
        log.info("%s", text.decode("utf-8", "replace"))

    def _find_module(self, name: bytes) -> tuple[bytes | None, bytes | None]:
        """``require("a.b")`` looks for ``a/b.lua`` next to the script, then in the shipped scripts."""
        relative = os.fsdecode(name).replace(".", "/") + ".lua"
        if ".." in relative.split("/") or relative.startswith("/"):
            return None, None
        for base in self._search:
            candidate = base / relative
            if candidate.is_file():
                if isinstance(candidate, Path):  # stamped before it is read: a change meanwhile is seen next time
                    st = candidate.stat()
                    self._modules[str(candidate)] = (st.st_mtime_ns, st.st_size)
                return candidate.read_bytes(), os.fsencode(str(candidate))
        return None, None

    def _modules_changed(self) -> bool:
        """A file ``require`` read has changed (or gone) since."""
        for path, stamp in self._modules.items():
            try:
                st = os.stat(path)
            except OSError:
                return True
            if (st.st_mtime_ns, st.st_size) != stamp:
                return True
        return False

    def _reload(self) -> None:
        """(Re)compile the script if its mtime or size changed, as MySQL Proxy does for new connections; read the
        modules it requires again if one of them changed (MySQL Proxy keeps them: an upgraded script would
        run with the old ``lib/``)."""
        assert self.script is not None
        if self._modules and self._modules_changed():
            self._forget_modules()
            self._modules.clear()
            log.info("Lua modules changed: read again for new connections")
        try:
            st = self.script.stat()
        except OSError as exc:
            self.load_error = f"cannot read {self.script}: {exc.strerror}"
            self._chunk = None
            self._stamp = None
            log.error("Lua script %s", self.load_error)
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        chunk, err = self._compile(self.script.read_bytes(), os.fsencode(str(self.script)))
        if chunk is None:
            self._chunk = None
            self.load_error = (err or b"").decode("utf-8", "replace")
            log.error("Lua script failed to load: %s", self.load_error)
        else:
            if self._chunk is not None:
                log.info("Lua script %s reloaded", self.script)
            self._chunk = chunk
            self.load_error = None

    def new_connection(self) -> LuaConnection | None:
        """Per-connection environment with the script run in it; None when there is no script.

        Raises ``ScriptLoadError`` when the script does not compile or its top level fails.
        """
        if self.script is None:
            return None
        self._reload()
        if self._chunk is None:
            raise ScriptLoadError(self.load_error or "no script")
        conn, ok, hooks = self._new_connection(self._chunk)
        if not ok:
            raise ScriptLoadError(hooks.decode("utf-8", "replace") if isinstance(hooks, bytes) else str(hooks))
        return LuaConnection(self, conn, {h.decode() for h in hooks.values()})


class ScriptLoadError(RuntimeError):
    """The script failed to compile or to run its top level for a connection."""


#: The verdict "no decision, nothing queued" (most hook calls), made once: callers change only a failed call's verdict.
_NOTHING = HookResult(True, None)


def _hook_result(values: tuple[Any, ...], packet: bytes = b"") -> HookResult:
    """Unpack (ok, ret[, id[, packet, needed, remaining, close]]) from the Lua dispatcher; a packet of ``True`` is
    ``packet``, the one ``read_query`` got (the client's own, re-queued); an id alone is that packet, streamed, the
    only one queued."""
    if len(values) == 2:  # nothing queued, the connection stays open
        ok, ret = values
        if ok:
            return HookResult(True, int(ret)) if ret is not None else _NOTHING
        return HookResult(False, None, error=ret.decode("utf-8", "replace") if isinstance(ret, bytes) else str(ret))
    if len(values) == 3:  # the client's own packet re-queued, streamed, alone (the logging case)
        ok, ret, inj_id = values
        own = Injection(int(inj_id), packet, False, own=True)
        if ok:
            return HookResult(True, int(ret) if ret is not None else None, None, own)
        return HookResult(False, None, error=ret.decode("utf-8", "replace") if isinstance(ret, bytes) else str(ret),
                          injection=own)  # fmt: skip
    ok, ret, inj_id, queued, needed, remaining, close = values
    injection = None
    if inj_id is not None:
        injection = Injection(int(inj_id), packet if queued is True else queued, bool(needed), own=queued is True)
    if not ok:
        return HookResult(False, None, error=ret.decode("utf-8", "replace") if isinstance(ret, bytes) else str(ret),
                          injection=injection, remaining=int(remaining), close=bool(close))  # fmt: skip
    return HookResult(True, int(ret) if ret is not None else None, None, injection, int(remaining), bool(close))


class LuaConnection:
    """A connection's script environment: call hooks, read ``proxy.response``, set ``proxy.connection``."""

    __slots__ = ("_call", "_conn", "_host", "_inflight", "_packet", "_pop", "_read_query", "_read_query_result",
                 "_streamed_result", "hooks")  # fmt: skip

    def __init__(self, host: LuaHost, conn: Any, hooks: set[str]) -> None:
        self._host = host
        self._conn = conn
        self.hooks = hooks
        self._call = host.call
        self._read_query = host.read_query  # the per-statement entry points, looked up once
        self._read_query_result = host.read_query_result
        self._streamed_result = host.streamed_result
        self._pop = host.pop
        self._packet = b""  # what read_query got last: a queued packet of True is this one
        self._inflight: Injection | None = None  # the injection handed out last (Lua keeps its packet)

    def _result(self, values: tuple[Any, ...]) -> HookResult:
        """A hook's verdict; the injection it hands out is remembered as the one in flight."""
        res = _hook_result(values, self._packet)
        if res.injection is not None:
            self._inflight = res.injection
        return res

    def call(self, hook: str, arg: Any = None) -> HookResult:
        """Call a hook that takes no queue (connect_server, read_handshake, read_auth, ...)."""
        if isinstance(arg, dict):
            arg = self._host.runtime.table_from(arg)
        return self._result(self._call(self._conn, hook.encode(), arg))

    def read_query(self, packet: bytes) -> HookResult:
        """``read_query(packet)``: clears the queue and ``proxy.response`` first."""
        self._packet = packet
        res = _hook_result(self._read_query(self._conn, packet), packet)
        if res.injection is not None:
            self._inflight = res.injection
        return res

    def pop(self) -> Injection | None:
        """The next queued injection, if any."""
        return self._result(self._pop(self._conn)).injection

    def read_query_result(self, inj: Injection, stats: ResultStats) -> HookResult:
        """``read_query_result(inj)`` with the measured timings and result stats."""
        rt = self._host.runtime
        fields = rows = None
        if inj.resultset_is_needed:
            fields = rt.table_from([rt.table_from(f) for f in stats.fields or []])
            rows = rt.table_from([rt.table_from(r) for r in stats.rows or []])
        return self._result(
            self._read_query_result(
                self._conn,
                inj.id,
                None if inj is self._inflight else inj.packet,  # Lua has the one it handed out
                inj.resultset_is_needed,
                stats.query_time_us,
                stats.response_time_us,
                stats.row_count,
                stats.bytes,
                stats.status,
                stats.warnings,
                stats.affected_rows,
                stats.insert_id,
                stats.server_status,
                fields,
                rows,
                stats.raw,
                stats.binary,
                stats.error_code,
                stats.error_message,
            )
        )

    def streamed_result(self, inj: Injection, tracker: ResponseTracker, now: int) -> HookResult:
        """``read_query_result(inj)`` for a result that was relayed as it came (not ``resultset_is_needed``): what
        ``ResultStats.measured`` would hold, passed straight from the tracker (the per-statement path while
        logging)."""
        first = tracker.first_ns or now
        queued = inj.queued_ns
        err = tracker.err
        if err is None and inj is self._inflight and not tracker.binary:  # every logged statement: fewer arguments
            res = _hook_result(
                self._streamed_result(
                    self._conn,
                    inj.id,
                    max(0, (first - queued) // 1000),
                    max(0, (now - queued) // 1000),
                    tracker.row_count,
                    tracker.bytes,
                    tracker.query_status,
                    tracker.warnings,
                    tracker.affected_rows,
                    tracker.insert_id,
                    tracker.server_status,
                ),
                self._packet,
            )
            if res.injection is not None:
                self._inflight = res.injection
            return res
        res = _hook_result(
            self._read_query_result(
                self._conn,
                inj.id,
                None if inj is self._inflight else inj.packet,
                False,
                max(0, (first - queued) // 1000),
                max(0, (now - queued) // 1000),
                tracker.row_count,
                tracker.bytes,
                tracker.query_status,
                tracker.warnings,
                tracker.affected_rows,
                tracker.insert_id,
                tracker.server_status,
                None,
                None,
                None,
                tracker.binary,
                err[0] if err is not None else None,
                err[2] if err is not None else None,
            ),
            self._packet,
        )
        if res.injection is not None:
            self._inflight = res.injection
        return res

    def set(self, side: str, key: str, value: Any) -> None:
        """Set ``proxy.connection[.client|.server].key``."""
        self._host.set(self._conn, side.encode(), key.encode(), value)

    def update(self, side: str, **values: Any) -> None:
        """Set several fields of ``proxy.connection.client`` or ``.server``."""
        for key, value in values.items():
            self.set(side, key, value)

    def set_address(self, side: str, which: str, host: str, port: int) -> None:
        """Set an address object (``src``/``dst``) of the client or server socket."""
        name = f"{host}:{port}".encode()
        self._host.set_address(self._conn, side.encode(), which.encode(), name, host.encode(), port)

    def get_connection(self, key: str) -> Any:
        """Read ``proxy.connection.key`` (e.g. ``backend_ndx``)."""
        return self._host.get_connection(self._conn, key.encode())

    def response(self) -> ProxyResponse:
        """``proxy.response`` as the hook left it."""
        return ProxyResponse.from_lua(self._host.response(self._conn))
