--[[
query_log.lua - time-boxed query logging for MySQL Proxy 0.8 (Lua 5.1) and django-instrumented's host.

Off by default. An admin turns it on for N seconds with a SQL statement sent through the proxy:

  PROXY LOG ON [seconds]   PROXY LOG OFF   PROXY LOG STATUS   PROXY LOG TAIL [n]   PROXY LOG DIGEST [n]
  PROXY LOG RESET

While on, every COM_QUERY and COM_STMT_EXECUTE is re-queued with proxy.queries:append so that
read_query_result gets its timings (inj.query_time / inj.response_time, microseconds), and one JSON
line per statement goes to the log file, a bounded ring of recent entries and a digest
(normalised statement -> count, total/max time, rows). All of that lives in proxy.global, shared
by every connection. There is no timer in MySQL Proxy: the deadline is checked on every query.
While off, queries are forwarded untouched (read_query returns nothing).

Security (README.md, "Who may switch logging"): a control statement is recognised from its first bytes
and answered before anything else is read: a user name that is not in PROXY_LOG_ADMINS is refused at
once, a statement longer than CONTROL_MAX bytes is refused unparsed, and the first control statement
of a claimed admin on a connection asks the server for CURRENT_USER() (the account MariaDB/MySQL
authenticated, not the name the client claimed) before it is run; the verdict is kept per connection.
Password literals are masked in the log file, the ring and the digest.

Environment: PROXY_LOG_FILE (query_log.jsonl), PROXY_LOG_ADMINS (root), PROXY_LOG_MAX_SECONDS (3600),
PROXY_LOG_SLOW_US (0 = log everything), PROXY_LOG_RING (1000), PROXY_LOG_MAX_DIGESTS (1000),
PROXY_LOG_MAX_QUERY_LEN (8192). See README.md.
]]

local json = require("lib.json")
local normalize = require("lib.normalize")
local resultset = require("lib.resultset")

local os_time, os_date, os_getenv = os.time, os.date, os.getenv
local string_byte, string_sub, string_lower, string_find, string_gmatch, string_match = string.byte, string.sub,
  string.lower, string.find, string.gmatch, string.match
local math_floor, math_min, math_max = math.floor, math.min, math.max
local tonumber, tostring, pcall = tonumber, tostring, pcall
local string_format = string.format

local function env_number(name, default)
  local v = tonumber(os_getenv(name) or "")
  if v == nil or v < 0 then return default end
  return math_floor(v)
end

local function env_string(name, default)
  local v = os_getenv(name)
  if v == nil or v == "" then return default end
  return v
end

local LOG_FILE = env_string("PROXY_LOG_FILE", "query_log.jsonl")
local MAX_SECONDS = math_max(1, env_number("PROXY_LOG_MAX_SECONDS", 3600))
local DEFAULT_SECONDS = math_min(300, MAX_SECONDS)
local SLOW_US = env_number("PROXY_LOG_SLOW_US", 0)
local RING_SIZE = math_max(1, env_number("PROXY_LOG_RING", 1000))
local MAX_DIGESTS = math_max(1, env_number("PROXY_LOG_MAX_DIGESTS", 1000))
local MAX_QUERY = math_max(16, env_number("PROXY_LOG_MAX_QUERY_LEN", 8192))
local DEFAULT_ROWS = 20
-- Longer statements are never parsed as control statements (the longest valid one is far shorter).
local CONTROL_MAX = 256

-- PROXY_LOG_ADMINS entries are "user" (that user at any host) or "user@host" (exactly as CURRENT_USER()
-- shows the account, e.g. dba@localhost or dba@%). ADMIN_NAMES: the user parts, the cheap first test.
local ADMIN_NAMES, ADMIN_USERS, ADMIN_ACCOUNTS = {}, {}, {}
for entry in string_gmatch(env_string("PROXY_LOG_ADMINS", "root"), "[^,%s]+") do
  local user = string_match(entry, "^(.*)@[^@]*$")
  if user then
    ADMIN_ACCOUNTS[entry] = true
  else
    user = entry
    ADMIN_USERS[entry] = true
  end
  if user ~= "" then ADMIN_NAMES[user] = true end
end

-- The authenticated account (CURRENT_USER(), "user@host") is an admin.
local function admin_account(account)
  if ADMIN_ACCOUNTS[account] then return true end
  local user = string_match(account, "^(.*)@[^@]*$")
  return user ~= nil and user ~= "" and ADMIN_USERS[user] == true
end

local T_STRING = proxy.MYSQL_TYPE_STRING
local T_NUMBER = proxy.MYSQL_TYPE_LONGLONG

-- Shared by all connections (script globals and locals are per connection).
local state = proxy.global.query_log
if state == nil then
  state = {on = false, deadline = 0, logged = 0, ring = {}, ring_next = 1, ring_count = 0, digests = {},
           digest_count = 0, file = nil, file_error = nil}
  proxy.global.query_log = state
end

-- Per connection: prepared statement id -> statement text (ids are per connection in MySQL), cut like
-- logged statements so that big prepared texts are not kept whole.
local statements = {}
-- Per connection: the claimed user name whose account was checked, the verdict, and the control statement
-- waiting for the CURRENT_USER() answer.
local checked_user, checked_admin, pending_control = nil, false, nil

local function flush_file(now)
  if state.file then
    pcall(state.file.flush, state.file)
    state.flushed_at = now
  end
end

local function close_file()
  if state.file then
    pcall(state.file.close, state.file)
    state.file = nil
  end
end

local function turn_off()
  state.on = false
  state.deadline = 0
  close_file()
end

local function logging_on(now)
  if state.on and now > state.deadline then turn_off() end
  return state.on
end

-- Lines are buffered (a write per statement costs more than the rest of the logging) and flushed at least
-- once a second while statements come, on every PROXY LOG statement, and when logging stops.
local function write_line(line, now)
  if not state.file and not state.file_error then
    local f, err = io.open(LOG_FILE, "a")
    if f then
      if f.setvbuf then f:setvbuf("full", 65536) end
      state.flushed_at = now
      state.file = f
    else
      state.file_error = tostring(err)
    end
  end
  if state.file then
    local ok, err = state.file:write(line, "\n")
    if not ok then
      state.file_error = tostring(err)
      close_file()
    elseif now ~= state.flushed_at then
      flush_file(now)
    end
  end
end

local LINE_FORMAT = '{"ts":"%s","thread_id":%s,"user":%s,"db":%s,"client":%s,"command":"%s","query":%s,'
  .. '"query_time_us":%s,"response_time_us":%s,"rows":%s,"affected_rows":%s,"status":"%s","error_code":%s,'
  .. '"error_message":%s}'

local ts_time, ts_text = nil, nil

local function timestamp(now)
  if now ~= ts_time then
    ts_time, ts_text = now, os_date("!%Y-%m-%dT%H:%M:%SZ", now)
  end
  return ts_text
end

local function record(now, command, query, inj)
  local res = inj.resultset
  local status = res.query_status
  local error_code, error_message
  if status == proxy.MYSQLD_PACKET_ERR then
    -- MySQL Proxy 0.8 has no error code without buffering; the host adds resultset.error_code/_message.
    local ok, code = pcall(function() return res.error_code end)
    if ok then error_code = code end
    ok, code = pcall(function() return res.error_message end)
    if ok then error_message = code end
  end
  local response_time = inj.response_time or 0
  local rows = res.row_count or 0
  local conn = proxy.connection
  local client = conn.client
  -- Callers pass at most MAX_QUERY + 1 bytes; cut first, mask what is left (a cut literal is masked to the end).
  local cut = #query > MAX_QUERY
  if cut then query = string_sub(query, 1, MAX_QUERY) end
  query = normalize.mask_secrets(query)
  if cut then query = query .. "..." end

  -- Digest: every statement while logging is on (the slow threshold only filters the log lines).
  local key = normalize.normalize(query)
  local digests = state.digests
  local d = digests[key]
  if d == nil then
    if state.digest_count >= MAX_DIGESTS then
      key = "(other)"
      d = digests[key]
    end
    if d == nil then
      d = {count = 0, total_us = 0, max_us = 0, rows = 0}
      digests[key] = d
      state.digest_count = state.digest_count + 1
    end
  end
  d.count = d.count + 1
  d.total_us = d.total_us + response_time
  if response_time > d.max_us then d.max_us = response_time end
  d.rows = d.rows + rows

  if SLOW_US > 0 and response_time < SLOW_US then return end

  local entry = {
    ts = timestamp(now),
    thread_id = conn.server and conn.server.thread_id or nil,
    user = client.username,
    db = client.default_db,
    client = client.src and client.src.name or nil,
    command = command,
    query = query,
    query_time_us = inj.query_time,
    response_time_us = response_time,
    rows = rows,
    affected_rows = res.affected_rows,
    status = status == proxy.MYSQLD_PACKET_ERR and "error" or "ok",
    error_code = error_code,
    error_message = error_message,
  }
  state.ring[state.ring_next] = entry
  state.ring_next = state.ring_next % RING_SIZE + 1
  if state.ring_count < RING_SIZE then state.ring_count = state.ring_count + 1 end
  state.logged = state.logged + 1
  -- Same bytes as json.object(ENTRY_KEYS, entry), a third cheaper: ts, command and status are plain ASCII.
  local v = json.value
  write_line(string_format(LINE_FORMAT, entry.ts, v(entry.thread_id), v(entry.user), v(entry.db), v(entry.client),
    command, v(query), v(entry.query_time_us), v(response_time), v(rows), v(entry.affected_rows), entry.status,
    v(error_code), v(error_message)), now)
end

-- Control statements ------------------------------------------------------------------------------

local USAGE = "PROXY LOG ON [seconds] | OFF | STATUS | TAIL [n] | DIGEST [n] | RESET"

local function status_result(now)
  local left = 0
  if logging_on(now) then left = math_max(0, state.deadline - now) end
  local file = LOG_FILE
  if state.file_error then file = file .. " (cannot write: " .. state.file_error .. ")" end
  return resultset.send(
    {{"logging", T_STRING}, {"seconds_left", T_NUMBER}, {"logged", T_NUMBER}, {"log_file", T_STRING}},
    {{state.on and "on" or "off", left, state.logged, file}})
end

local function tail_result(n)
  local rows = {}
  local count = math_min(n, state.ring_count)
  for i = count, 1, -1 do
    local idx = (state.ring_next - i - 1) % RING_SIZE + 1
    local e = state.ring[idx]
    rows[#rows + 1] = {e.ts, e.thread_id, e.user, e.db, e.query_time_us, e.response_time_us, e.rows, e.status, e.query}
  end
  return resultset.send({{"ts", T_STRING}, {"thread_id", T_NUMBER}, {"user", T_STRING}, {"db", T_STRING},
    {"query_time_us", T_NUMBER}, {"response_time_us", T_NUMBER}, {"rows", T_NUMBER}, {"status", T_STRING},
    {"query", T_STRING}}, rows)
end

local function digest_result(n)
  local list = {}
  for key, d in pairs(state.digests) do list[#list + 1] = {key, d} end
  table.sort(list, function(a, b)
    if a[2].total_us ~= b[2].total_us then return a[2].total_us > b[2].total_us end
    return a[1] < b[1]
  end)
  local rows = {}
  for i = 1, math_min(n, #list) do
    local d = list[i][2]
    rows[i] = {list[i][1], d.count, d.total_us, d.max_us, d.rows}
  end
  return resultset.send({{"digest", T_STRING}, {"count", T_NUMBER}, {"total_us", T_NUMBER}, {"max_us", T_NUMBER},
    {"rows", T_NUMBER}}, rows)
end

local function positive_int(word)
  if word == nil then return nil end
  if not string_find(word, "^%d+$") then return false end
  local v = tonumber(word)
  if v == nil or v < 1 then return false end
  return v
end

local function denied(why)
  return resultset.error("Access denied; PROXY LOG is only for the users in PROXY_LOG_ADMINS" .. (why or ""),
    1227, "42000")
end

-- A control statement of a verified admin (at most CONTROL_MAX bytes: the caller checked).
local function control(query)
  local words = {}
  for w in string_gmatch(string_lower(query), "[^%s;]+") do words[#words + 1] = w end
  if string_find(query, ";", 1, true) and not string_find(query, "^[^;]*;[%s;]*$") then
    return resultset.error("PROXY LOG takes one statement; usage: " .. USAGE, 1064, "42000")
  end
  local verb, arg, extra = words[3], words[4], words[5]
  local now = os_time()
  flush_file(now)
  if extra ~= nil then return resultset.error("too many arguments; usage: " .. USAGE, 1064, "42000") end
  if verb == "on" then
    local seconds = positive_int(arg)
    if seconds == false then
      return resultset.error("PROXY LOG ON takes a number of seconds >= 1 (at most " .. MAX_SECONDS .. ")", 1064, "42000")
    end
    seconds = math_min(seconds or DEFAULT_SECONDS, MAX_SECONDS)
    state.on = true
    state.deadline = now + seconds
    state.file_error = nil
    return status_result(now)
  end
  if verb == "tail" or verb == "digest" then
    local n = positive_int(arg)
    if n == false then
      return resultset.error("PROXY LOG " .. string.upper(verb) .. " takes a row count >= 1", 1064, "42000")
    end
    n = math_min(n or DEFAULT_ROWS, verb == "tail" and RING_SIZE or MAX_DIGESTS + 1)
    logging_on(now)
    if verb == "tail" then return tail_result(n) end
    return digest_result(n)
  end
  if arg ~= nil then return resultset.error("PROXY LOG " .. tostring(verb) .. " takes no argument; usage: " .. USAGE,
    1064, "42000") end
  if verb == "off" then
    turn_off()
    return status_result(now)
  end
  if verb == "status" then return status_result(now) end
  if verb == "reset" then
    state.ring = {}
    state.ring_next = 1
    state.ring_count = 0
    state.digests = {}
    state.digest_count = 0
    return status_result(now)
  end
  return resultset.error("unknown PROXY LOG command; usage: " .. USAGE, 1064, "42000")
end

-- Hooks -------------------------------------------------------------------------------------------

local COM_QUERY, COM_STMT_PREPARE, COM_STMT_EXECUTE, COM_STMT_CLOSE, COM_CHANGE_USER =
  proxy.COM_QUERY, proxy.COM_STMT_PREPARE, proxy.COM_STMT_EXECUTE, proxy.COM_STMT_CLOSE, proxy.COM_CHANGE_USER
local ID_QUERY, ID_PREPARE, ID_EXECUTE, ID_WHOAMI = 1, 2, 3, 4
local WHOAMI = string.char(COM_QUERY) .. "SELECT CURRENT_USER()"

-- "PROXY LOG" followed by a blank, ";" or the end, within the first CONTROL_MAX bytes of a COM_QUERY packet.
local function is_control(packet)
  local b = string_byte(packet, 2)
  if b ~= 80 and b ~= 112 and not (b and b <= 32) then return false end -- P, p, or a blank first
  local head = string_sub(packet, 2, CONTROL_MAX + 2)
  local _, e = string_find(head, "^%s*[Pp][Rr][Oo][Xx][Yy]%s+[Ll][Oo][Gg]")
  if not e then return false end
  local c = string_byte(head, e + 1)
  return c == nil or c == 59 or c <= 32
end

-- Who is asking comes first, then the length, and only then is the statement read: a stranger's
-- statement, of any size, costs a table look-up.
local function control_statement(packet)
  local user = proxy.connection.client.username or ""
  if not ADMIN_NAMES[user] then return denied() end
  if #packet - 1 > CONTROL_MAX then
    return resultset.error("PROXY LOG statements are at most " .. CONTROL_MAX .. " bytes; usage: " .. USAGE,
      1064, "42000")
  end
  if checked_user == user then
    if not checked_admin then return denied(" (the account the server authenticated is not one)") end
    return control(string_sub(packet, 2))
  end
  -- The name is only what the client claimed: ask the server which account it authenticated.
  pending_control = string_sub(packet, 2)
  proxy.queries:append(ID_WHOAMI, WHOAMI, {resultset_is_needed = true})
  return proxy.PROXY_SEND_QUERY
end

-- The CURRENT_USER() answer: keep the verdict for this connection and answer the waiting control statement.
local function checked(inj)
  local query = pending_control
  pending_control = nil
  local res = inj.resultset
  local account
  if res.query_status == proxy.MYSQLD_PACKET_OK then
    for row in res.rows do
      if account == nil then account = row[1] end
    end
  end
  if type(account) ~= "string" then
    return denied(" (cannot check the account: SELECT CURRENT_USER() failed)")
  end
  checked_user = proxy.connection.client.username or ""
  checked_admin = admin_account(account)
  if not checked_admin or query == nil then
    return denied(" (the account the server authenticated is not one)")
  end
  return control(query)
end

function read_query(packet)
  local command = string_byte(packet, 1)
  if command == COM_QUERY then
    if is_control(packet) then return control_statement(packet) end
    if logging_on(os_time()) then
      proxy.queries:append(ID_QUERY, packet, {resultset_is_needed = false})
      return proxy.PROXY_SEND_QUERY
    end
  elseif command == COM_STMT_EXECUTE then
    if logging_on(os_time()) then
      proxy.queries:append(ID_EXECUTE, packet, {resultset_is_needed = false})
      return proxy.PROXY_SEND_QUERY
    end
  elseif command == COM_STMT_PREPARE then
    -- Buffered (small: the statement id and definitions) to learn the id; the text is logged on execute.
    proxy.queries:append(ID_PREPARE, packet, {resultset_is_needed = true})
    return proxy.PROXY_SEND_QUERY
  elseif command == COM_STMT_CLOSE then
    statements[resultset.stmt_id(packet)] = nil
  elseif command == COM_CHANGE_USER then
    checked_user, checked_admin = nil, false -- another account from now on: check again
  end
end

function read_query_result(inj)
  if inj.id == ID_WHOAMI then return checked(inj) end
  if inj.id == ID_PREPARE then
    local res = inj.resultset
    if res.query_status == proxy.MYSQLD_PACKET_OK then
      local raw = res.raw
      if raw and string_byte(raw, 1) == 0 then
        statements[resultset.stmt_id(raw)] = string_sub(inj.query, 2, MAX_QUERY + 2)
      end
    end
    return
  end
  local now = os_time()
  if not logging_on(now) then return end
  if inj.id == ID_QUERY then
    record(now, "query", string_sub(inj.query, 2, MAX_QUERY + 2), inj)
  elseif inj.id == ID_EXECUTE then
    local id = resultset.stmt_id(inj.query)
    record(now, "execute", statements[id] or ("(prepared statement " .. id .. ")"), inj)
  end
end
