"""The MySQL Proxy 0.8 scripting API on lupa's Lua 5.1 runtime, sandboxed.

One Lua state per process, like MySQL Proxy: each client connection runs the script once in its own
environment (``__index`` = the sandbox), so script globals are per connection and only
``proxy.global`` is shared. The proxy table's metatable points at the current connection's
``queries``/``connection``/``response`` while a hook runs. Python crosses into Lua once per hook call.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .packets import COMMAND_NAMES, MYSQL_TYPES

log = logging.getLogger("instrumented.proxy.lua")

PROXY_SEND_QUERY = 1
PROXY_SEND_RESULT = 2
PROXY_IGNORE_RESULT = 4
MYSQLD_PACKET_OK = 0
MYSQLD_PACKET_RAW = 0xFA
MYSQLD_PACKET_ERR = 0xFF
PROXY_VERSION = 0x00805

#: Instructions a single hook call may run before it is aborted (a runaway loop must not hang the proxy).
INSTRUCTION_LIMIT = 50_000_000

HOOKS = (
    "connect_server",
    "read_handshake",
    "read_auth",
    "read_auth_result",
    "read_query",
    "read_query_result",
    "disconnect_client",
)


class LupaMissingError(RuntimeError):
    """lupa (the ``proxy`` extra) is not installed."""


def _load_lupa() -> Any:
    """Import lupa's Lua 5.1 runtime (needed for setfenv and to match MySQL Proxy)."""
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


# The privileged bootstrap: builds the sandbox and the API, returns the host's entry points.
_BOOTSTRAP = r"""
local py = ...
local _G, pairs, ipairs, type, pcall, error, tostring, select = _G, pairs, ipairs, type, pcall, error, tostring, select
local setfenv, loadstring, setmetatable, rawget = setfenv, loadstring, setmetatable, rawget
local newproxy, getmetatable = newproxy, getmetatable
local tinsert, tremove, tconcat = table.insert, table.remove, table.concat
local sethook = debug.sethook
local real_open = io.open

local function copy(t) local c = {} for k, v in pairs(t) do c[k] = v end return c end

local sandbox = {}
for _, k in ipairs({"assert", "error", "ipairs", "next", "pairs", "pcall", "xpcall", "select", "tonumber",
                    "tostring", "type", "unpack", "rawequal", "rawget", "rawset", "setmetatable",
                    "getmetatable", "newproxy", "collectgarbage", "_VERSION"}) do
  sandbox[k] = _G[k]
end
sandbox.string = copy(string)
sandbox.table = copy(table)
sandbox.math = copy(math)
sandbox.coroutine = copy(coroutine)
-- Scripts read only their own PROXY_* settings from the environment, never e.g. database passwords.
local getenv = os.getenv
local function proxy_getenv(name)
  if type(name) == "string" and name:sub(1, 6) == "PROXY_" then return getenv(name) end
  return nil
end
sandbox.os = {time = os.time, date = os.date, getenv = proxy_getenv, clock = os.clock, difftime = os.difftime}
sandbox.io = {
  open = function(path, mode)
    if type(path) ~= "string" then error("bad argument #1 to 'open' (string expected)", 2) end
    if not py.io_allowed(path) then
      return nil, path .. ": not allowed by the proxy sandbox (io is only for the log file)"
    end
    mode = mode or "r"
    if type(mode) == "string" and mode:find("[wa]") then py.create_private(path) end
    return real_open(path, mode)
  end,
}
sandbox.print = function(...)
  local parts = {}
  for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
  py.log_print(tconcat(parts, "\t"))
end
sandbox._G = sandbox

local loaded = {}
sandbox.package = {loaded = loaded}
sandbox.require = function(name)
  if type(name) ~= "string" then error("bad argument #1 to 'require' (string expected)", 2) end
  local have = loaded[name]
  if have ~= nil then return have end
  local source, path = py.find_module(name)
  if not source then error("module '" .. name .. "' not found in the proxy's Lua path", 2) end
  local fn, err = loadstring(source, "@" .. path)
  if not fn then error(err, 2) end
  setfenv(fn, sandbox)
  local result = fn(name)
  if result == nil then result = true end
  loaded[name] = result
  return result
end

-- proxy: shared constants and proxy.global; per-connection fields through the metatable.
local proxy = {global = {config = {}}}
for k, v in pairs(py.constants) do proxy[k] = v end
local current = nil
setmetatable(proxy, {
  __index = function(_, k) local c = current if c then return c[k] end end,
  __newindex = function(_, k, v)
    if current then current[k] = v else error("proxy." .. tostring(k) .. " is read-only here", 2) end
  end,
})
sandbox.proxy = proxy

local renamed = {thread_id = "server.thread_id", default_db = "client.default_db",
                 mysqld_version = "server.mysqld_version", address = "client.src.name",
                 client_address = "client.src.name", server_address = "server.dst.name"}

local function new_connection_table()
  local conn = {client = {src = {}, dst = {}}, server = nil, backend_ndx = 0}
  return setmetatable(conn, {__index = function(_, k)
    local new = renamed[k]
    if new then error("proxy.connection." .. k .. " is gone, use proxy.connection." .. new, 2) end
  end})
end

local function new_queue()
  local items = {}
  local q = newproxy(true)
  local mt = getmetatable(q)
  local function entry(self, id, packet, opts)
    if self ~= q then error("use proxy.queries:append(id, packet [, opts]) with a colon", 3) end
    if type(id) ~= "number" then error("proxy.queries: id must be a number", 3) end
    if type(packet) ~= "string" then error("proxy.queries: packet must be a string", 3) end
    local needed = opts == true or (type(opts) == "table" and opts.resultset_is_needed == true)
    return {id, packet, needed}
  end
  mt.__index = {
    append = function(self, id, packet, opts) items[#items + 1] = entry(self, id, packet, opts) end,
    prepend = function(self, id, packet, opts) tinsert(items, 1, entry(self, id, packet, opts)) end,
    reset = function() for i = #items, 1, -1 do items[i] = nil end end,
  }
  mt.__len = function() return #items end
  mt.__tostring = function() return "proxy.queries" end
  return q, items
end

local host = {}

function host.compile(source, chunkname)
  local fn, err = loadstring(source, "@" .. chunkname)
  if not fn then return nil, err end
  return fn, nil
end

local function limit_hook() error("the Lua hook ran too long (instruction limit reached)", 2) end

-- Run the script for a new connection; returns ok, err, and the names of the hooks it defined.
function host.new_connection(chunk)
  local q, items = new_queue()
  local ctx = {queries = q, connection = new_connection_table(), response = {}}
  local env = setmetatable({}, {__index = sandbox})
  local conn = {ctx = ctx, env = env, items = items}
  current = ctx
  setfenv(chunk, env)
  sethook(limit_hook, "", py.instruction_limit)
  local ok, err = pcall(chunk)
  sethook()
  if not ok then return conn, false, tostring(err) end
  local hooks = {}
  for _, name in ipairs(py.hooks) do
    if type(env[name]) == "function" then hooks[#hooks + 1] = name end
  end
  return conn, true, hooks
end

local function pop(conn, ret, ok)
  local items = conn.items
  local it = items[1]
  local close = rawget(conn.ctx.connection, "connection_close") == true
  if it then
    tremove(items, 1)
    return ok, ret, it[1], it[2], it[3], #items, close
  end
  return ok, ret, nil, nil, nil, 0, close
end

local function call(conn, name, arg)
  local fn = conn.env[name]
  if type(fn) ~= "function" then return true, nil end
  current = conn.ctx
  sethook(limit_hook, "", py.instruction_limit)
  local ok, ret = pcall(fn, arg)
  sethook()
  if not ok then return false, tostring(ret) end
  if type(ret) ~= "number" then ret = nil end
  return true, ret
end

-- A hook without queue handling (connect_server, read_handshake, read_auth, read_auth_result, disconnect_client).
function host.call(conn, name, arg)
  conn.ctx.response = {}
  local ok, ret = call(conn, name, arg)
  return pop(conn, ret, ok)
end

function host.read_query(conn, packet)
  local items = conn.items
  for i = #items, 1, -1 do items[i] = nil end
  conn.ctx.response = {}
  local ok, ret = call(conn, "read_query", packet)
  return pop(conn, ret, ok)
end

-- The next queued injection (after a result came back and its hook ran, or without a hook).
function host.pop(conn)
  return pop(conn, nil, true)
end

local unavailable = " isn't available if 'resultset_is_needed ~= true'"

local streamed_mt = {__index = function(_, k)
  if k == "fields" or k == "rows" or k == "raw" then error("inj.resultset." .. k .. unavailable, 2) end
end}

local function make_resultset(base, needed, fields, rows, raw, binary)
  if not needed then return setmetatable(base, streamed_mt) end
  return setmetatable(base, {__index = function(_, k)
    if k == "fields" or k == "rows" or k == "raw" then
      if not needed then error("inj.resultset." .. k .. unavailable, 2) end
      if k == "fields" then return fields end
      if k == "raw" then return raw end
      if binary then error("inj.resultset.rows isn't available for binary (prepared statement) resultsets", 2) end
      local i = 0
      return function()
        i = i + 1
        return rows[i]
      end
    end
  end})
end

function host.read_query_result(conn, id, packet, needed, query_time, response_time, row_count, bytes, status,
                                warnings, affected_rows, insert_id, server_status, fields, rows, raw, binary,
                                error_code, error_message)
  local flags = {
    in_trans = server_status % 2 == 1,
    auto_commit = math.floor(server_status / 2) % 2 == 1,
    no_good_index_used = math.floor(server_status / 16) % 2 == 1,
    no_index_used = math.floor(server_status / 32) % 2 == 1,
  }
  local resultset = make_resultset({row_count = row_count, bytes = bytes, query_status = status,
    warning_count = warnings, affected_rows = affected_rows, insert_id = insert_id, flags = flags,
    error_code = error_code, error_message = error_message},
    needed, fields, rows, raw, binary)
  local inj = {id = id, type = id, query = packet, query_time = query_time, response_time = response_time,
               resultset = resultset}
  conn.ctx.response = {}
  local ok, ret = call(conn, "read_query_result", inj)
  return pop(conn, ret, ok)
end

function host.set(conn, side, key, value)
  local c = conn.ctx.connection
  if side == "connection" then c[key] = value return end
  local t = rawget(c, side)
  if t == nil then t = {src = {}, dst = {}} c[side] = t end
  t[key] = value
end

function host.set_address(conn, side, which, name, address, port)
  local c = conn.ctx.connection
  local t = rawget(c, side)
  if t == nil then t = {src = {}, dst = {}} c[side] = t end
  t[which] = {name = name, address = address, port = port, type = 2}
end

function host.get_connection(conn, key)
  return rawget(conn.ctx.connection, key)
end

function host.response(conn)
  return conn.ctx.response
end

function host.lua_table(list) return list end

return host
"""


@dataclass(slots=True)
class Injection:
    """A queued packet: what ``proxy.queries:append`` recorded."""

    id: int
    packet: bytes
    resultset_is_needed: bool
    queued_ns: int = 0


@dataclass(slots=True)
class HookResult:
    """What a hook call decided, plus the next queued injection (if the hook left one)."""

    ok: bool
    ret: int | None
    error: str | None = None
    injection: Injection | None = None
    remaining: int = 0
    close: bool = False


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


@dataclass(slots=True)
class ResultStats:
    """Everything the host measured about a result, handed to ``read_query_result``."""

    query_time_us: int
    response_time_us: int
    row_count: int
    bytes: int
    status: int | None
    warnings: int
    affected_rows: int | None
    insert_id: int | None
    server_status: int
    fields: list[dict[bytes, Any]] | None = None
    rows: list[list[bytes | None]] | None = None
    raw: bytes | None = None
    binary: bool = False
    error_code: int | None = None  # host extension: MySQL Proxy 0.8 only exposes these through a buffered raw
    error_message: bytes | None = None


def _to_bytes(value: Any) -> bytes | None:
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


class LuaHost:
    """One Lua state for the process: the sandbox, the compiled script (reloaded on change), the API."""

    def __init__(self, script: str | os.PathLike[str] | None, io_paths: Iterable[str] = (),
                 lua_path: Iterable[str] = ()) -> None:  # fmt: skip
        lua51 = _load_lupa()
        self.script = Path(script).resolve() if script else None
        self._io_paths = {os.path.abspath(p) for p in io_paths}
        search = [Path(p) for p in lua_path]
        if self.script:
            search.append(self.script.parent)
        search.append(Path(__file__).resolve().parent.parent.parent / "mysql_proxy_lua")
        self._search = list(dict.fromkeys(search))
        self.runtime = lua51.LuaRuntime(
            encoding=None,
            register_eval=False,
            register_builtins=False,
            unpack_returned_tuples=True,
            attribute_filter=self._deny_attributes,
        )
        g = self.runtime.globals()
        g[b"python"] = None
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
        py = self.runtime.table_from(
            {
                b"constants": self.runtime.table_from(constants),
                b"hooks": self.runtime.table_from([h.encode() for h in HOOKS]),
                b"io_allowed": self._io_allowed,
                b"create_private": self._create_private,
                b"log_print": self._log_print,
                b"find_module": self._find_module,
                b"instruction_limit": INSTRUCTION_LIMIT,
            }
        )
        self._api = self.runtime.execute(_BOOTSTRAP, py)
        for name in ("compile", "new_connection", "call", "read_query", "pop", "read_query_result", "set",
                     "set_address", "get_connection", "response"):  # fmt: skip
            setattr(self, "_" + name, self._api[name.encode()])
        self._chunk: Any = None
        self._stamp: tuple[int, int] | None = None
        self.load_error: str | None = None
        self.backends: list[Any] = []
        if self.script:
            self._reload()

    @staticmethod
    def _deny_attributes(obj: Any, name: Any, is_setting: bool) -> Any:
        """Scripts never get at Python objects' attributes."""
        raise AttributeError("access to Python attributes is not allowed from Lua")

    def _io_allowed(self, path: bytes) -> bool:
        """io.open is only for the configured log file(s)."""
        return os.path.abspath(os.fsdecode(path)) in self._io_paths

    @staticmethod
    def _create_private(path: bytes) -> None:
        """A log file the script is about to create is made 0600 first: it holds every statement's literals."""
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        except OSError:
            pass  # io.open reports the reason to the script

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
                return candidate.read_bytes(), os.fsencode(str(candidate))
        return None, None

    def _reload(self) -> None:
        """(Re)compile the script if its mtime or size changed, as MySQL Proxy does for new connections."""
        assert self.script is not None
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

    def lua_list(self, items: Iterable[Any]) -> Any:
        """A Lua array from Python values (None → nil)."""
        return self.runtime.table_from(list(items))


class ScriptLoadError(RuntimeError):
    """The script failed to compile or to run its top level for a connection."""


def _hook_result(values: tuple[Any, ...]) -> HookResult:
    """Unpack (ok, ret, id, packet, needed, remaining, close) from the Lua dispatcher."""
    ok, ret, inj_id, packet, needed, remaining, close = values
    injection = None
    if inj_id is not None:
        injection = Injection(int(inj_id), packet, bool(needed))
    if not ok:
        return HookResult(False, None, error=ret.decode("utf-8", "replace") if isinstance(ret, bytes) else str(ret),
                          injection=injection, remaining=int(remaining), close=bool(close))  # fmt: skip
    return HookResult(True, int(ret) if ret is not None else None, None, injection, int(remaining), bool(close))


class LuaConnection:
    """A connection's script environment: call hooks, read ``proxy.response``, set ``proxy.connection``."""

    __slots__ = ("_call", "_conn", "_host", "_pop", "_read_query", "_read_query_result", "hooks")

    def __init__(self, host: LuaHost, conn: Any, hooks: set[str]) -> None:
        self._host = host
        self._conn = conn
        self.hooks = hooks
        self._call: Callable[..., Any] = host._call  # type: ignore[attr-defined]
        self._read_query: Callable[..., Any] = host._read_query  # type: ignore[attr-defined]
        self._read_query_result: Callable[..., Any] = host._read_query_result  # type: ignore[attr-defined]
        self._pop: Callable[..., Any] = host._pop  # type: ignore[attr-defined]

    def call(self, hook: str, arg: Any = None) -> HookResult:
        """Call a hook that takes no queue (connect_server, read_handshake, read_auth, ...)."""
        if isinstance(arg, dict):
            arg = self._host.runtime.table_from(arg)
        return _hook_result(self._call(self._conn, hook.encode(), arg))

    def read_query(self, packet: bytes) -> HookResult:
        """``read_query(packet)``: clears the queue and ``proxy.response`` first."""
        return _hook_result(self._read_query(self._conn, packet))

    def pop(self) -> Injection | None:
        """The next queued injection, if any."""
        return _hook_result(self._pop(self._conn)).injection

    def read_query_result(self, inj: Injection, stats: ResultStats) -> HookResult:
        """``read_query_result(inj)`` with the measured timings and result stats."""
        rt = self._host.runtime
        fields = rows = None
        if inj.resultset_is_needed:
            fields = rt.table_from([rt.table_from(f) for f in stats.fields or []])
            rows = rt.table_from([rt.table_from(r) for r in stats.rows or []])
        return _hook_result(
            self._read_query_result(
                self._conn,
                inj.id,
                inj.packet,
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

    def set(self, side: str, key: str, value: Any) -> None:
        """Set ``proxy.connection[.client|.server].key``."""
        self._host._set(self._conn, side.encode(), key.encode(), value)  # type: ignore[attr-defined]

    def set_address(self, side: str, which: str, host: str, port: int) -> None:
        """Set an address object (``src``/``dst``) of the client or server socket."""
        name = f"{host}:{port}".encode()
        self._host._set_address(self._conn, side.encode(), which.encode(), name, host.encode(), port)  # type: ignore[attr-defined]

    def get_connection(self, key: str) -> Any:
        """Read ``proxy.connection.key`` (e.g. ``backend_ndx``)."""
        return self._host._get_connection(self._conn, key.encode())  # type: ignore[attr-defined]

    def response(self) -> ProxyResponse:
        """Translate ``proxy.response``; a missing/invalid type yields an ERR like MySQL Proxy's."""
        resp = self._host._response(self._conn)  # type: ignore[attr-defined]
        type_ = resp[b"type"]
        known = (MYSQLD_PACKET_OK, MYSQLD_PACKET_ERR, MYSQLD_PACKET_RAW)
        if not isinstance(type_, int | float) or int(type_) not in known:
            return ProxyResponse(MYSQLD_PACKET_ERR, errmsg=b"(lua) handling proxy.response failed, check error-log")
        type_ = int(type_)
        if type_ == MYSQLD_PACKET_ERR:
            errmsg = resp[b"errmsg"]
            return ProxyResponse(
                type_,
                errmsg=_to_bytes(errmsg) if errmsg is not None else b"(lua) proxy.response.errmsg is nil",
                errcode=int(resp[b"errcode"] or 1105),
                sqlstate=_to_bytes(resp[b"sqlstate"]) or b"07000",
            )
        if type_ == MYSQLD_PACKET_RAW:
            packets = resp[b"packets"]
            out = [] if packets is None else [_to_bytes(packets[i]) or b"" for i in range(1, len(packets) + 1)]
            return ProxyResponse(type_, packets=out)
        resultset = resp[b"resultset"]
        if resultset is None:
            affected, insert_id = int(resp[b"affected_rows"] or 0), int(resp[b"insert_id"] or 0)
            return ProxyResponse(type_, affected_rows=affected, insert_id=insert_id)
        fields_t = resultset[b"fields"]
        fields: list[tuple[bytes, int]] = []
        if fields_t is not None:
            for i in range(1, len(fields_t) + 1):
                f = fields_t[i]
                fields.append((_to_bytes(f[b"name"]) or b"", int(f[b"type"] or 254)))
        rows: list[list[bytes | None]] = []
        rows_t = resultset[b"rows"]
        if rows_t is not None:
            for i in range(1, len(rows_t) + 1):
                row = rows_t[i]
                rows.append([_to_bytes(row[j]) for j in range(1, len(fields) + 1)])
        return ProxyResponse(type_, fields=fields, rows=rows)
