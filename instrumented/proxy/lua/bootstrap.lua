-- The privileged bootstrap of the proxy host (instrumented/proxy/lua/host.py), run once per Lua state.
-- Builds the sandbox and the MySQL Proxy 0.8 API; returns the entry points the host calls.
-- `py` carries what Python lends: constants, hook names, io/print/require callbacks, the instruction limit.
local py = ...
-- Under LuaJIT, its interpreter only: a compiled trace does not run count hooks, so a runaway loop would never reach
-- the instruction limit (and the scripts' hooks are short: the interpreter is where LuaJIT's gain on them is).
if jit then jit.off() end
local _G, pairs, ipairs, type, pcall, error, tostring, select, next = _G, pairs, ipairs, type, pcall, error, tostring,
  select, next
local setfenv, loadstring, setmetatable, rawget, rawset = setfenv, loadstring, setmetatable, rawget, rawset
local newproxy, getmetatable = newproxy, getmetatable
local tinsert, tremove, tconcat = table.insert, table.remove, table.concat
local sethook = debug.sethook
local real_open, io_type = io.open, io.type
-- Files scripts opened for writing (weak: a file the script dropped is collected): the host flushes them
-- every second, so a buffered last line reaches the disk even when traffic stops.
local written = setmetatable({}, {__mode = "k"})

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
-- A file opened for appending ("a"): what each write call gets goes to the file whole, in one write(2), never
-- split at a stdio buffer's edge; with O_APPEND, the lines of several processes appending to one file (--workers)
-- never mix. The writes are gathered here (a flush, 4 KB or a seek writes them) on an unbuffered C file.
local APPEND_BATCH = 4096
local function whole_writes(f)
  f:setvbuf("no")
  local parts, n, size = {}, 0, 0
  local w = {}
  local function flush()
    if n > 0 then
      local data = tconcat(parts, "", 1, n)
      for i = 1, n do parts[i] = nil end
      n, size = 0, 0
      local ok, err = f:write(data)
      if not ok then return nil, err end
    end
    return true
  end
  local function write_all(self, ...)
    for i = 1, select("#", ...) do
      local s = select(i, ...)
      if type(s) == "number" then s = tostring(s) end
      if type(s) ~= "string" then error("bad argument #" .. i .. " to 'write' (string expected)", 2) end
      n = n + 1
      parts[n] = s
      size = size + #s
    end
    if size >= APPEND_BATCH then
      local ok, err = flush()
      if not ok then return nil, err end
    end
    return self
  end
  function w.write(self, s, ...)
    if type(s) == "string" and select("#", ...) == 0 then -- one string (every log line): no loop over arguments
      n = n + 1
      parts[n] = s
      size = size + #s
      if size >= APPEND_BATCH then
        local ok, err = flush()
        if not ok then return nil, err end
      end
      return self
    end
    return write_all(self, s, ...) -- a tail call: an error names the script's line
  end
  function w.flush()
    local ok, err = flush()
    if not ok then return nil, err end
    return f:flush()
  end
  function w.close()
    local ok, err = flush()
    w.closed = true
    local closed, cerr = f:close()
    if not ok then return nil, err end
    return closed, cerr
  end
  function w.seek(_, whence, offset)
    local ok, err = flush()
    if not ok then return nil, err end
    return f:seek(whence, offset)
  end
  function w.setvbuf() return true end -- whole writes whatever is asked
  function w.lines() error("the file is open for appending", 2) end
  w.read = w.lines
  return setmetatable(w, {__tostring = function() return tostring(f) end})
end

-- io.open: the host opens and checks the file (no link, the proxy's own regular file, created 0600; see
-- files.py), and C's fopen gets exactly that file through /proc/self/fd/N, close-on-exec ("e").
sandbox.io = {
  open = function(path, mode)
    if type(path) ~= "string" then error("bad argument #1 to 'open' (string expected)", 2) end
    mode = mode or "r"
    if type(mode) ~= "string" or not mode:find("^[rwa][+b]*$") then
      error("bad argument #2 to 'open' (invalid mode)", 2)
    end
    if not py.io_allowed(path) then
      return nil, path .. ": not allowed by the proxy sandbox (io is only for the log file)"
    end
    local name, fd = py.open_file(path, mode)
    if not name then return nil, fd end
    local f, err = real_open(name, mode .. "e")
    py.close_fd(fd)
    if not f then return nil, path .. tostring(err):sub(#name + 1) end -- "name: reason" as io.open says it
    if mode:sub(1, 1) == "a" then f = whole_writes(f) end
    if mode:find("[wa+]") then written[f] = true end
    return f
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

-- Every module is read again by the next require (the host saw a module's file change).
local function forget_modules()
  for name in pairs(loaded) do loaded[name] = nil end
end

-- proxy: shared constants and proxy.global; per-connection fields through the metatable.
local proxy = {global = {config = {}}}
for k, v in pairs(py.constants) do proxy[k] = v end
proxy.workers = py.workers -- the host's extension: processes running the script (--workers); nil in mysql-proxy
proxy.worker = py.worker -- the host's extension: which of them this one is (1..proxy.workers); nil in mysql-proxy
-- While a hook runs, its connection's context table is both __index and __newindex (tables, not functions: reading
-- proxy.queries or proxy.connection is a table look-up, not a Lua call); before the first one, nothing is writable.
local proxy_mt = {__index = {}, __newindex = function(_, k)
  error("proxy." .. tostring(k) .. " is read-only here", 2)
end}
setmetatable(proxy, proxy_mt)
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

local host = {forget_modules = forget_modules}

function host.compile(source, chunkname)
  local fn, err = loadstring(source, "@" .. chunkname)
  if not fn then return nil, err end
  return fn, nil
end

-- The instruction limit: a count hook installed once (installing and removing it around every call were two C calls
-- a call, a tenth of a logged statement's cost), which fires every py.instruction_limit instructions. `serial`
-- numbers the calls the host makes: the hook stops the one running when it fired during it already (a call that ran
-- between one and two limits' worth of instructions); it never stops the bootstrap's own code (`running` is false).
local serial, fired, running = 0, -1, false
local function limit_hook()
  if running and fired == serial then error("the Lua hook ran too long (instruction limit reached)", 2) end
  fired = serial
end
sethook(limit_hook, "", py.instruction_limit)

-- Run the script for a new connection; returns ok, err, and the names of the hooks it defined.
function host.new_connection(chunk)
  local q, items = new_queue()
  local ctx = {queries = q, connection = new_connection_table(), response = {}}
  local env = setmetatable({}, {__index = sandbox})
  local conn = {ctx = ctx, env = env, items = items}
  proxy_mt.__index, proxy_mt.__newindex = ctx, ctx
  setfenv(chunk, env)
  serial, running = serial + 1, true
  local ok, err = pcall(chunk)
  running = false
  if not ok then return conn, false, tostring(err) end
  local hooks = {}
  for _, name in ipairs(py.hooks) do
    if type(env[name]) == "function" then hooks[#hooks + 1] = name end
  end
  return conn, true, hooks
end

-- The hook's verdict and the next queued injection: ok, ret, id, packet, needed, remaining, close; just ok, ret
-- when nothing is queued and the connection stays open (the usual case: two values to convert, not seven), and
-- ok, ret, id when the one injection queued is the client's own packet, streamed (the logging case). The
-- packet is `true` when it is the very string read_query got (the client's own packet, re-queued to be timed:
-- Python has it already, so it does not cross back). The injection stays as conn.inflight: read_query_result
-- reads its packet from there rather than getting it from Python again.
local function pop(conn, ret, ok)
  local items = conn.items
  local it = items[1]
  local close = rawget(conn.ctx.connection, "connection_close") == true
  if it then
    tremove(items, 1)
    conn.inflight = it
    local packet = it[2]
    if packet == conn.packet then
      if not it[3] and not close and items[1] == nil then return ok, ret, it[1] end
      packet = true
    end
    return ok, ret, it[1], packet, it[3], #items, close
  end
  if close then return ok, ret, nil, nil, nil, 0, true end
  return ok, ret
end

-- A fresh proxy.response for a hook; the previous one is kept when the hook left it empty (most do).
local function fresh_response(ctx)
  if next(ctx.response) ~= nil then ctx.response = {} end
end

local function call(conn, name, arg)
  local fn = conn.env[name]
  if type(fn) ~= "function" then return true, nil end
  local ctx = conn.ctx
  proxy_mt.__index, proxy_mt.__newindex = ctx, ctx
  serial, running = serial + 1, true
  local ok, ret = pcall(fn, arg)
  running = false
  if not ok then return false, tostring(ret) end
  if type(ret) ~= "number" then ret = nil end
  return true, ret
end

-- A hook without queue handling (connect_server, read_handshake, read_auth, read_auth_result, disconnect_client).
function host.call(conn, name, arg)
  fresh_response(conn.ctx)
  local ok, ret = call(conn, name, arg)
  return pop(conn, ret, ok)
end

function host.read_query(conn, packet)
  local items = conn.items
  for i = #items, 1, -1 do items[i] = nil end
  conn.packet = packet
  fresh_response(conn.ctx)
  local ok, ret = call(conn, "read_query", packet)
  return pop(conn, ret, ok)
end

-- The next queued injection (after a result came back and its hook ran, or without a hook).
function host.pop(conn)
  return pop(conn, nil, true)
end

local unavailable = " isn't available if 'resultset_is_needed ~= true'"
local floor = math.floor

-- resultset.flags from the server status, made when a script first reads it (most never do).
local function status_flags(t)
  local status = rawget(t, "server_status") or 0
  local flags = {
    in_trans = status % 2 == 1,
    auto_commit = floor(status / 2) % 2 == 1,
    no_good_index_used = floor(status / 16) % 2 == 1,
    no_index_used = floor(status / 32) % 2 == 1,
  }
  rawset(t, "flags", flags)
  return flags
end

local streamed_mt = {__index = function(t, k)
  if k == "flags" then return status_flags(t) end
  if k == "fields" or k == "rows" or k == "raw" then error("inj.resultset." .. k .. unavailable, 2) end
end}

local function make_resultset(base, needed, fields, rows, raw, binary)
  if not needed then return setmetatable(base, streamed_mt) end
  return setmetatable(base, {__index = function(t, k)
    if k == "flags" then return status_flags(t) end
    if k == "fields" then return fields end
    if k == "raw" then return raw end
    if k == "rows" then
      if binary then error("inj.resultset.rows isn't available for binary (prepared statement) resultsets", 2) end
      local i = 0
      return function()
        i = i + 1
        return rows[i]
      end
    end
  end})
end

-- A streamed result of the injection in flight (conn.inflight), not binary, not an error (every logged statement):
-- what read_query_result takes, without the arguments that are nil or false then (each one a conversion).
function host.streamed_result(conn, id, query_time, response_time, row_count, bytes, status, warnings, affected_rows,
                              insert_id, server_status)
  return host.read_query_result(conn, id, nil, false, query_time, response_time, row_count, bytes, status, warnings,
    affected_rows, insert_id, server_status)
end

-- packet nil: the injection's own (conn.inflight's), which Python need not send back.
function host.read_query_result(conn, id, packet, needed, query_time, response_time, row_count, bytes, status,
                                warnings, affected_rows, insert_id, server_status, fields, rows, raw, binary,
                                error_code, error_message)
  if packet == nil then
    local it = conn.inflight
    packet = it and it[2] or ""
  end
  local resultset, inj
  if needed then
    resultset = make_resultset({row_count = row_count, bytes = bytes, query_status = status,
      warning_count = warnings, affected_rows = affected_rows, insert_id = insert_id, server_status = server_status,
      error_code = error_code, error_message = error_message},
      needed, fields, rows, raw, binary)
    inj = {id = id, type = id, query = packet, query_time = query_time, response_time = response_time,
           resultset = resultset}
  else
    -- A streamed result (every logged statement): the connection's inj and resultset tables are filled again rather
    -- than made (no garbage per statement). They are valid while the hook runs, as MySQL Proxy's injection is.
    inj = conn.inj
    if inj == nil then
      inj = {resultset = setmetatable({}, streamed_mt)}
      conn.inj = inj
    end
    resultset = inj.resultset
    resultset.row_count, resultset.bytes, resultset.query_status, resultset.warning_count = row_count, bytes, status,
      warnings
    resultset.affected_rows, resultset.insert_id, resultset.server_status = affected_rows, insert_id, server_status
    resultset.error_code, resultset.error_message, resultset.flags = error_code, error_message, nil
    inj.id, inj.type, inj.query, inj.query_time, inj.response_time = id, id, packet, query_time, response_time
    inj.resultset = resultset
  end
  fresh_response(conn.ctx)
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

function host.flush_files()
  for f in pairs(written) do
    if io_type(f) == "file" or (type(f) == "table" and not f.closed) then pcall(f.flush, f) else written[f] = nil end
  end
end

function host.response(conn)
  return conn.ctx.response
end

return host
