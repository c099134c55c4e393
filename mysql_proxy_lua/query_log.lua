--[[
query_log.lua - time-boxed query logging for MySQL Proxy 0.8 (Lua 5.1) and django-instrumented's host.

Off by default. An admin turns it on for N seconds with a SQL statement sent through the proxy:

  PROXY LOG ON [seconds] [SLOW ms] [USER name] [DB name] [ERRORS] [SAMPLE fraction]
  PROXY LOG OFF   PROXY LOG STATUS   PROXY LOG TAIL [n]   PROXY LOG RESET
  PROXY LOG DIGEST [n] [ORDER BY sum|count|max|rows|errors]

While on, every COM_QUERY and COM_STMT_EXECUTE that passes the USER/DB/SAMPLE filters is re-queued with
proxy.queries:append so that read_query_result gets its timings (inj.query_time / inj.response_time,
microseconds). Each such statement is counted in a digest (per normalised statement, schema and user:
count, first/last seen, sum/min/max/avg and a coarse p95 of the time, rows sent and affected, errors,
warnings, the Django views that sent it); those that pass SLOW/ERRORS also go to the log file (JSON lines
or MySQL slow-log format, at most PROXY_LOG_MAX_FILE_MB) and a bounded ring of recent entries. All of that
lives in proxy.global, shared by every connection. There is no timer in MySQL Proxy: the deadline is
checked on every query. While off, queries are forwarded untouched (read_query returns nothing).

Who and where: the user name a client logs in with is only a claim (an anonymous account takes any name),
and a USE sent as a query changes the schema without MySQL Proxy seeing it. So before the first statement
a connection logs after each PROXY LOG ON, and after each USE it sends, the script asks the server
"SELECT CURRENT_USER(), DATABASE()" (an injected query, buffered and answered before the statement is
sent on; put off for a statement that reads what the previous one left, such as FOUND_ROWS() or SHOW
WARNINGS). The log names the authenticated account beside the claimed name.

The Django view: a sqlcommenter-style comment at the end of a statement
(/*view='shop%3Abook',route='books%2F%3Cint%3Abook_id%3E%2F'*/, URL-encoded values; "controller" is read
as the view too) is cut off before the statement is logged and normalised, and kept as its view/route; only
from the accounts in PROXY_LOG_VIEW_ACCOUNTS (default: any, so the view is what the client claims).

Security (README.md, "Who may switch logging"): a control statement is recognised from its first bytes
and answered before anything else is read: a user name that is not in PROXY_LOG_ADMINS is refused at
once, a statement longer than CONTROL_MAX bytes is refused unparsed, and the first control statement
of a claimed admin on a connection asks the server for CURRENT_USER() (the account MariaDB/MySQL
authenticated, not the name the client claimed) before it is run; the verdict is kept per connection.
Password literals are masked in the log file, the ring and the digest.

Environment: PROXY_LOG_FILE (query_log.jsonl, or query_log.slow.log for slowlog), PROXY_LOG_FORMAT (json |
slowlog), PROXY_LOG_ADMINS (root), PROXY_LOG_VIEW_ACCOUNTS (*), PROXY_LOG_MAX_SECONDS (3600),
PROXY_LOG_SLOW_US (0 = log everything), PROXY_LOG_RING (1000), PROXY_LOG_MAX_DIGESTS (1000),
PROXY_LOG_MAX_QUERY_LEN (8192), PROXY_LOG_MAX_FILE_MB (1024). See README.md.
]]

-- Globals are looked up through the script's environment on every use: the hot ones are made locals.
local proxy, io = proxy, io
local json = require("lib.json")
local normalize = require("lib.normalize")
local resultset = require("lib.resultset")
local slowlog = require("lib.slowlog")

local os_time, os_date, os_getenv = os.time, os.date, os.getenv
local string_byte, string_sub, string_lower, string_find, string_gmatch, string_match, string_gsub, string_char =
  string.byte, string.sub, string.lower, string.find, string.gmatch, string.match, string.gsub, string.char
local math_floor, math_min, math_max, math_log, math_random = math.floor, math.min, math.max, math.log, math.random
local tonumber, tostring, pcall, pairs, type = tonumber, tostring, pcall, pairs, type
local string_format, table_sort, table_concat = string.format, table.sort, table.concat
local valid_utf8 = json.valid_utf8
local math_huge = math.huge

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

-- Megabytes (fractions too): as given, and as bytes (0 = no limit).
local function env_megabytes(name, default)
  local v = tonumber(os_getenv(name) or "")
  if v == nil or v < 0 then v = default end
  if v == 0 then return v, math_huge end
  return v, math_floor(v * 1048576)
end

local SLOWLOG = string_lower(env_string("PROXY_LOG_FORMAT", "json")) == "slowlog"
local LOG_FILE = env_string("PROXY_LOG_FILE", SLOWLOG and "query_log.slow.log" or "query_log.jsonl")
local MAX_SECONDS = math_max(1, env_number("PROXY_LOG_MAX_SECONDS", 3600))
local DEFAULT_SECONDS = math_min(300, MAX_SECONDS)
local DEFAULT_SLOW_US = env_number("PROXY_LOG_SLOW_US", 0)
local RING_SIZE = math_max(1, env_number("PROXY_LOG_RING", 1000))
local MAX_DIGESTS = math_max(1, env_number("PROXY_LOG_MAX_DIGESTS", 1000))
local MAX_QUERY = math_max(16, env_number("PROXY_LOG_MAX_QUERY_LEN", 8192))
local MAX_FILE_MB, MAX_FILE_BYTES = env_megabytes("PROXY_LOG_MAX_FILE_MB", 1024)
-- Bytes of a statement read: MAX_QUERY and room for the view comment at its end (cut off before MAX_QUERY counts).
local TAKE = MAX_QUERY + 1025
local DEFAULT_ROWS = 20
-- Longer statements are never parsed as control statements (the longest valid one is far shorter).
local CONTROL_MAX = 256
-- Views remembered per digest row (the busiest first); more are counted, not named.
local MAX_VIEWS = 16

-- A list of accounts (PROXY_LOG_ADMINS, PROXY_LOG_VIEW_ACCOUNTS): entries are "user" (that user at any host)
-- or "user@host" (exactly as CURRENT_USER() shows the account, e.g. dba@localhost or dba@%); "*" is any
-- account where any_allowed. names: the user parts, for a cheap first test of a claimed name.
local function account_list(text, any_allowed)
  local list = {names = {}, users = {}, accounts = {}, any = false}
  for entry in string_gmatch(text, "[^,%s]+") do
    if entry == "*" and any_allowed then
      list.any = true
    else
      local user = string_match(entry, "^(.*)@[^@]*$")
      if user then
        list.accounts[entry] = true
      else
        user = entry
        list.users[entry] = true
      end
      if user ~= "" then list.names[user] = true end
    end
  end
  return list
end

-- The authenticated account (CURRENT_USER(), "user@host") is in the list.
local function listed(list, account)
  if list.any or list.accounts[account] then return true end
  local user = string_match(account, "^(.*)@[^@]*$")
  return user ~= nil and user ~= "" and list.users[user] == true
end

local ADMINS = account_list(env_string("PROXY_LOG_ADMINS", "root"), false)
-- Unset: any account ("*"); set but empty: none.
local VIEW_ACCOUNTS = account_list(os_getenv("PROXY_LOG_VIEW_ACCOUNTS") or "*", true)

local T_STRING = proxy.MYSQL_TYPE_STRING
local T_NUMBER = proxy.MYSQL_TYPE_LONGLONG
local PACKET_ERR = proxy.MYSQLD_PACKET_ERR

-- Shared by all connections (script globals and locals are per connection). A state left by an older
-- version of the script (reloaded in a running proxy) is started afresh.
-- epoch counts PROXY LOG ONs: a connection asks again who and where it is when it changed.
local STATE_VERSION = 3
local state = proxy.global.query_log
if state == nil or state.version ~= STATE_VERSION then
  if state and state.file then pcall(state.file.close, state.file) end
  state = {version = STATE_VERSION, on = false, deadline = 0, epoch = 0, logged = 0, ring = {}, ring_next = 1,
           ring_count = 0, digests = {}, digest_count = 0, evicted = 0, seq = 0, file = nil, file_error = nil,
           opened_at = 0, buffered = 0, file_size = 0, full_at = nil, unwritten = 0, filter = nil}
  proxy.global.query_log = state
  math.randomseed(os_time()) -- for SAMPLE; once per process, not per connection
end

-- Per connection: prepared statement id -> statement text (ids are per connection in MySQL), cut like
-- logged statements so that big prepared texts are not kept whole.
local statements = {}
-- Per connection: the account the server authenticated (CURRENT_USER(), "user@host"; nil until asked, or
-- when asking failed), its user part, and what it may do. A new connection's views are trusted only when
-- any account's are.
local account, account_user, is_admin, views_trusted = nil, nil, false, VIEW_ACCOUNTS.any
-- Per connection: the schema in use (DATABASE()) when schema_known, else proxy.connection.client.default_db
-- (which follows COM_INIT_DB); the state.epoch it was asked in (nil: not yet; false: after a possible USE, to
-- be asked before the next logged statement whatever it is).
local schema, schema_known, asked_epoch = nil, false, nil
-- Per connection: the control statement or the statement waiting for the CURRENT_USER() answer.
local pending_control, held = nil, nil
-- Per connection: the JSON of thread_id, user, account, claimed user, db and client, and what it was made from.
local enc_thread, enc_user, enc_account, enc_claimed, enc_db, enc_src, enc_conn = nil, nil, nil, nil, nil, nil, nil

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

-- Lines are buffered (a write per statement costs more than the rest of the logging), whole lines per
-- write so that a reader never sees half a line. The file is closed and opened again at most once a
-- second while statements come (so a rotated file - moved away or truncated - is followed within a
-- second), on every PROXY LOG statement and when logging stops; the instrumented-proxy host also flushes
-- it every second when traffic stops. C stdio gives a file a buffer of the file system's block size,
-- whatever setvbuf asks (glibc), so the script assumes 4 KB: flushed before a line would not fit, and
-- at once after a longer line.
-- The file never grows past MAX_FILE_BYTES: a line that would not fit is not written (counted in
-- state.unwritten, said by STATUS), and the file is looked at again a second later (rotated: written again).
local BUFFER = 4096

local function write_line(line, now)
  if state.file and now ~= state.opened_at then close_file() end
  if not state.file then
    if state.file_error or state.full_at == now then
      state.unwritten = state.unwritten + 1
      return
    end
    local f, err = io.open(LOG_FILE, "a")
    if not f then
      state.file_error = tostring(err)
      state.unwritten = state.unwritten + 1
      return
    end
    if f.setvbuf then f:setvbuf("full", BUFFER) end
    state.opened_at = now
    state.file = f
    state.buffered = 0
    state.file_size = f:seek("end") or 0
    state.full_at = nil
  end
  local size = #line
  local total = state.file_size + size
  if total > MAX_FILE_BYTES then
    state.full_at = now
    state.unwritten = state.unwritten + 1
    close_file()
    return
  end
  state.file_size = total
  local f = state.file
  local buffered = state.buffered + size
  if buffered > BUFFER then
    f:flush()
    buffered = size
  end
  local ok, err = f:write(line)
  if ok and buffered >= BUFFER then
    ok, err = f:flush()
    buffered = 0
  end
  state.buffered = buffered
  if not ok then
    state.file_error = tostring(err)
    close_file()
  end
end

-- The parts that depend on the connection and on the view are encoded once and reused (see record()).
local LINE_FORMAT = '{"ts":"%s",%s,%s,"command":"%s","query":%s,"query_time_us":%s,"response_time_us":%d,'
  .. '"rows":%d,"affected_rows":%s,"warnings":%d,"status":"%s","error_code":%s,"error_message":%s}\n'
local NO_VIEW = '"view":null,"route":null'

local ts_time, ts_text = nil, nil

local function timestamp(now)
  if now ~= ts_time then
    ts_time, ts_text = now, os_date("!%Y-%m-%dT%H:%M:%SZ", now)
  end
  return ts_text
end

-- The sqlcommenter comment at the end of a statement: "key='url-encoded value'" pairs.
local function unescape(s)
  if not string_find(s, "%", 1, true) then return s end
  return (string_gsub(s, "%%(%x%x)", function(h) return string_char(tonumber(h, 16)) end))
end

local comment_cache, comment_cached = {}, 0

-- query -> query without the comment, view, route (nil when there is none) and both as JSON members.
local function split_comment(query)
  local len = #query
  local last = len
  local b = string_byte(query, last)
  while b == 32 or b == 59 or b == 10 or b == 13 or b == 9 do
    last = last - 1
    b = string_byte(query, last)
  end
  if b ~= 47 or string_byte(query, last - 1) ~= 42 then return query end -- no "*/" at the end
  local start, pos = nil, math_max(1, last - 2048)
  while true do
    local s = string_find(query, "/*", pos, true)
    if not s or s >= last - 1 then break end
    start, pos = s, s + 2
  end
  if not start then return query end
  local comment = string_sub(query, start + 2, last - 2)
  local parsed = comment_cache[comment]
  if parsed == nil then
    local kv = {}
    for k, v in string_gmatch(comment, "(%w+)%s*=%s*'([^']*)'") do kv[k] = unescape(v) end
    local view, route = kv.view or kv.controller, kv.route
    parsed = {view or false, route or false, '"view":' .. json.value(view) .. ',"route":' .. json.value(route)}
    if comment_cached >= 1000 then comment_cache, comment_cached = {}, 0 end
    comment_cache[comment] = parsed
    comment_cached = comment_cached + 1
  end
  if not parsed[1] and not parsed[2] then return query, nil, nil, nil end
  local cut = start - 1
  b = string_byte(query, cut)
  while b == 32 or b == 10 or b == 9 or b == 13 do
    cut = cut - 1
    b = string_byte(query, cut)
  end
  return string_sub(query, 1, cut), parsed[1] or nil, parsed[2] or nil, parsed[3]
end

-- Coarse log buckets for the p95: four per doubling (about +-10 %).
local LOG_STEP = math_log(2) / 4
local function bucket(us)
  if us < 1 then return 0 end
  return math_floor(math_log(us) / LOG_STEP) + 1
end
local function bucket_top(b)
  if b == 0 then return 0 end
  return math_floor(math.exp(b * LOG_STEP))
end

-- The least recently seen quarter of the digest goes when it is full (one sort per MAX_DIGESTS / 4 new rows).
local function evict()
  local list, n = {}, 0
  for key, d in pairs(state.digests) do
    n = n + 1
    list[n] = {key, d.seen}
  end
  table_sort(list, function(a, b) return a[2] < b[2] end)
  local drop = math_max(1, math_floor(n / 4))
  for i = 1, drop do state.digests[list[i][1]] = nil end
  state.digest_count = n - drop
  state.evicted = state.evicted + drop
end

local function count_view(d, view)
  local views = d.views
  if views == nil then
    views = {}
    d.views = views
    d.view_count = 0
  end
  local c = views[view]
  if c then
    views[view] = c + 1
  elseif d.view_count < MAX_VIEWS then
    views[view] = 1
    d.view_count = d.view_count + 1
  else
    d.other_views = (d.other_views or 0) + 1
  end
end

local function record(now, command, query, inj)
  local res = inj.resultset
  local failed = res.query_status == PACKET_ERR
  local error_code, error_message
  if failed then
    -- MySQL Proxy 0.8 has no error code without buffering; the host adds resultset.error_code/_message.
    local ok, code = pcall(function() return res.error_code end)
    if ok then error_code = code end
    ok, code = pcall(function() return res.error_message end)
    if ok then error_message = code end
  end
  local response_time = inj.response_time or 0
  local rows = res.row_count or 0
  local affected = nil
  if not failed then affected = res.affected_rows end
  local warnings = res.warning_count or 0
  local conn = proxy.connection
  local client = conn.client
  local query_text, view, route, view_json = query, nil, nil, nil
  if views_trusted then query_text, view, route, view_json = split_comment(query) end
  -- Callers pass at most TAKE bytes; the (trusted) comment off, cut first, mask what is left (a cut literal is
  -- masked to the end).
  local cut = #query_text > MAX_QUERY
  if cut then query_text = string_sub(query_text, 1, MAX_QUERY) end
  query_text = normalize.mask_secrets(query_text)
  if cut then query_text = query_text .. "..." end
  -- The digest's and TAIL's user: the authenticated one, else (not known yet) the claimed name, marked.
  local claimed = client.username
  local user = account_user
  if user == nil then user = (claimed or "") .. " (claimed)" end
  local db = schema -- the schema the connection is in
  if not schema_known then db = client.default_db end

  -- Digest: every statement that passed the USER/DB/SAMPLE filters (SLOW and ERRORS only filter the log).
  local key = normalize.normalize(query_text)
  local full_key = key .. "\0" .. (db or "") .. "\0" .. (user or "")
  local digests = state.digests
  local d = digests[full_key]
  state.seq = state.seq + 1
  if d == nil then
    if state.digest_count >= MAX_DIGESTS then evict() end
    d = {text = key, db = db, user = user, count = 0, sum_us = 0, min_us = response_time, max_us = 0, rows = 0,
         affected = 0, errors = 0, warnings = 0, first_seen = now, buckets = {}}
    digests[full_key] = d
    state.digest_count = state.digest_count + 1
  end
  d.seen = state.seq
  d.last_seen = now
  d.count = d.count + 1
  d.sum_us = d.sum_us + response_time
  if response_time > d.max_us then d.max_us = response_time end
  if response_time < d.min_us then d.min_us = response_time end
  d.rows = d.rows + rows
  if affected then d.affected = d.affected + affected end
  if failed then d.errors = d.errors + 1 end
  d.warnings = d.warnings + warnings
  local b = bucket(response_time)
  d.buckets[b] = (d.buckets[b] or 0) + 1
  if view then count_view(d, view) end

  local f = state.filter
  if f ~= nil and ((f.errors and not failed) or (f.slow_us and response_time < f.slow_us)) then return end

  local thread_id = conn.server and conn.server.thread_id or nil
  local src = client.src and client.src.name or nil
  local ts = timestamp(now)
  local status = failed and "error" or "ok"
  -- The ring keeps TAIL's columns (an array: cheaper than a table with named fields).
  state.ring[state.ring_next] = {ts, thread_id, user, db, view, inj.query_time, response_time, rows, affected, warnings,
                                 status, error_code, query_text, account, claimed}
  state.ring_next = state.ring_next % RING_SIZE + 1
  if state.ring_count < RING_SIZE then state.ring_count = state.ring_count + 1 end
  state.logged = state.logged + 1
  if SLOWLOG then
    local host = src or ""
    write_line(slowlog.entry({time = now, user = account_user, claimed_user = claimed,
      host = string_match(host, "^(.*):%d+$") or host, thread_id = thread_id, db = db,
      errno = error_code or (failed and 1 or 0), seconds = response_time / 1e6, rows = rows, affected = affected,
      view = view, route = route, query = query_text}), now)
    return
  end
  if thread_id ~= enc_thread or user ~= enc_user or account ~= enc_account or claimed ~= enc_claimed or db ~= enc_db
     or src ~= enc_src then
    enc_thread, enc_user, enc_account, enc_claimed, enc_db, enc_src = thread_id, user, account, claimed, db, src
    local v = json.value
    enc_conn = '"thread_id":' .. v(thread_id) .. ',"user":' .. v(account_user) .. ',"account":' .. v(account)
      .. ',"claimed_user":' .. v(claimed) .. ',"db":' .. v(db) .. ',"client":' .. v(src)
  end
  local v = json.value
  write_line(string_format(LINE_FORMAT, ts, enc_conn, view_json or NO_VIEW, command, v(query_text),
    v(inj.query_time), response_time, rows, v(affected), warnings, status, v(error_code), v(error_message)), now)
end

-- Control statements ------------------------------------------------------------------------------

local USAGE = "PROXY LOG ON [seconds] [SLOW ms] [USER name] [DB name] [ERRORS] [SAMPLE fraction] | OFF | STATUS"
  .. " | TAIL [n] | DIGEST [n] [ORDER BY sum|count|max|rows|errors] | RESET"

-- Result cells are valid UTF-8 whatever the statements held (invalid bytes become U+FFFD).
local function text(v)
  if v == nil then return nil end
  return valid_utf8(tostring(v))
end

local function filter_text()
  local f = state.filter
  local parts = {}
  if f then
    if f.slow_us then parts[#parts + 1] = "slow " .. string_format("%g", f.slow_us / 1000) .. " ms" end
    if f.user then parts[#parts + 1] = "user " .. f.user end
    if f.db then parts[#parts + 1] = "db " .. f.db end
    if f.errors then parts[#parts + 1] = "errors" end
    if f.sample then parts[#parts + 1] = "sample " .. string_format("%g", f.sample) end
  end
  return table_concat(parts, ", ")
end

local function status_result(now)
  local left = 0
  if logging_on(now) then left = math_max(0, state.deadline - now) end
  local file = LOG_FILE
  if state.file_error then
    file = file .. " (cannot write: " .. state.file_error .. ")"
  elseif state.full_at then
    file = file .. string_format(" (full: PROXY_LOG_MAX_FILE_MB = %g reached; written again once it is rotated)",
      MAX_FILE_MB)
  end
  local unwritten = state.unwritten
  if unwritten > 0 then
    file = file .. "; " .. unwritten .. (unwritten == 1 and " entry" or " entries") .. " not written"
  end
  return resultset.send(
    {{"logging", T_STRING}, {"seconds_left", T_NUMBER}, {"logged", T_NUMBER}, {"log_file", T_STRING},
     {"filters", T_STRING}, {"digests", T_NUMBER}, {"evicted", T_NUMBER}},
    {{state.on and "on" or "off", left, state.logged, text(file), text(filter_text()), state.digest_count,
      state.evicted}})
end

local function tail_result(n)
  local rows = {}
  local count = math_min(n, state.ring_count)
  for i = count, 1, -1 do
    local idx = (state.ring_next - i - 1) % RING_SIZE + 1
    local e = state.ring[idx]
    rows[#rows + 1] = {e[1], e[2], text(e[3]), text(e[14]), text(e[15]), text(e[4]), text(e[5]), e[6], e[7], e[8],
                       e[9], e[10], e[11], e[12], text(e[13])}
  end
  return resultset.send({{"ts", T_STRING}, {"thread_id", T_NUMBER}, {"user", T_STRING}, {"account", T_STRING},
    {"claimed_user", T_STRING}, {"db", T_STRING}, {"view", T_STRING}, {"query_time_us", T_NUMBER},
    {"response_time_us", T_NUMBER}, {"rows", T_NUMBER}, {"affected_rows", T_NUMBER}, {"warnings", T_NUMBER},
    {"status", T_STRING}, {"error_code", T_NUMBER}, {"query", T_STRING}}, rows)
end

local function p95(d)
  local list = {}
  for b, c in pairs(d.buckets) do list[#list + 1] = {b, c} end
  table_sort(list, function(x, y) return x[1] < y[1] end)
  local need, seen = d.count * 0.95, 0
  for i = 1, #list do
    seen = seen + list[i][2]
    if seen >= need then return math_min(d.max_us, math_max(d.min_us, bucket_top(list[i][1]))) end
  end
  return d.max_us
end

local function views_text(d)
  if d.views == nil then return nil end
  local list = {}
  for name, c in pairs(d.views) do list[#list + 1] = {name, c} end
  table_sort(list, function(x, y)
    if x[2] ~= y[2] then return x[2] > y[2] end
    return x[1] < y[1]
  end)
  local names = {}
  for i = 1, #list do names[i] = list[i][1] end
  if d.other_views then names[#names + 1] = "..." end
  return text(table_concat(names, ", "))
end

local ORDERS = {sum = "sum_us", count = "count", max = "max_us", rows = "rows", errors = "errors"}

local function digest_result(n, order)
  local field = ORDERS[order or "sum"]
  local list = {}
  for key, d in pairs(state.digests) do list[#list + 1] = {key, d} end
  table_sort(list, function(a, b)
    local x, y = a[2][field], b[2][field]
    if x ~= y then return x > y end
    return a[1] < b[1]
  end)
  local rows = {}
  for i = 1, math_min(n, #list) do
    local d = list[i][2]
    rows[i] = {text(d.text), text(d.db), text(d.user), d.count, timestamp(d.first_seen), timestamp(d.last_seen),
               d.sum_us, d.min_us, d.max_us, math_floor(d.sum_us / d.count + 0.5), p95(d), d.rows, d.affected,
               d.errors, d.warnings, views_text(d)}
  end
  return resultset.send({{"digest", T_STRING}, {"db", T_STRING}, {"user", T_STRING}, {"count", T_NUMBER},
    {"first_seen", T_STRING}, {"last_seen", T_STRING}, {"sum_us", T_NUMBER}, {"min_us", T_NUMBER},
    {"max_us", T_NUMBER}, {"avg_us", T_NUMBER}, {"p95_us", T_NUMBER}, {"rows_sent", T_NUMBER},
    {"rows_affected", T_NUMBER}, {"errors", T_NUMBER}, {"warnings", T_NUMBER}, {"views", T_STRING}}, rows)
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

local function usage_error(message)
  return resultset.error(message .. "; usage: " .. USAGE, 1064, "42000")
end

-- PROXY LOG ON's arguments (words[4..], as typed): seconds, then filters in any order.
local function switch_on(words, now)
  local i, seconds = 4, nil
  if words[i] and string_find(words[i], "^[%d%-]") then
    seconds = positive_int(words[i])
    if not seconds then
      return usage_error("PROXY LOG ON takes a number of seconds >= 1 (at most " .. MAX_SECONDS .. ")")
    end
    i = i + 1
  end
  local f = {}
  while words[i] do
    local word, arg = string_lower(words[i]), words[i + 1]
    if word == "errors" then
      f.errors = true
      i = i + 1
    elseif word == "slow" or word == "sample" or word == "user" or word == "db" then
      if arg == nil then return usage_error("PROXY LOG ON ... " .. string.upper(word) .. " needs a value") end
      -- Plain decimals (0.5, .5, 10): no signs, exponents or hex.
      local decimal = (string_find(arg, "^%d*%.?%d*$") and string_find(arg, "%d")) and tonumber(arg) or nil
      if word == "slow" then
        if decimal == nil then return usage_error("SLOW takes milliseconds >= 0") end
        f.slow_us = math_floor(decimal * 1000 + 0.5)
      elseif word == "sample" then
        local fraction = decimal
        if fraction == nil or fraction <= 0 or fraction > 1 then
          return usage_error("SAMPLE takes a fraction > 0 and <= 1")
        end
        if fraction < 1 then f.sample = fraction end
      else
        f[word] = string_match(arg, "^`(.*)`$") or string_match(arg, "^'(.*)'$") or arg
      end
      i = i + 2
    else
      return usage_error("unknown PROXY LOG ON filter " .. words[i])
    end
  end
  if f.slow_us == nil and DEFAULT_SLOW_US > 0 then f.slow_us = DEFAULT_SLOW_US end
  if f.slow_us == 0 then f.slow_us = nil end
  if next(f) == nil then f = nil end
  state.filter = f
  if not logging_on(now) then -- counted per switch-on (again while on: a new deadline only)
    state.logged = 0
    state.unwritten = 0
  end
  state.on = true
  state.deadline = now + math_min(seconds or DEFAULT_SECONDS, MAX_SECONDS)
  state.epoch = state.epoch + 1 -- connections not followed meanwhile (off, filtered out) ask who and where again
  state.file_error = nil
  state.full_at = nil
  return status_result(now)
end

-- A control statement of a verified admin (at most CONTROL_MAX bytes: the caller checked).
local function control(query)
  local words = {}
  for w in string_gmatch(query, "[^%s;]+") do words[#words + 1] = w end
  if string_find(query, ";", 1, true) and not string_find(query, "^[^;]*;[%s;]*$") then
    return usage_error("PROXY LOG takes one statement")
  end
  local verb, arg = string_lower(words[3] or ""), words[4]
  local now = os_time()
  close_file() -- flushed; opened again by the next line (so a rotated file is followed)
  if verb == "on" then return switch_on(words, now) end
  if verb == "tail" or verb == "digest" then
    local n = positive_int(arg)
    local order
    if verb == "digest" and arg and not string_find(arg, "^%d") then n = nil end
    local rest = n and 5 or 4
    if verb == "digest" and words[rest] then
      if string_lower(words[rest]) ~= "order" or string_lower(words[rest + 1] or "") ~= "by"
         or not ORDERS[string_lower(words[rest + 2] or "")] then
        return usage_error("PROXY LOG DIGEST [n] ORDER BY takes sum, count, max, rows or errors")
      end
      order = string_lower(words[rest + 2])
      rest = rest + 3
    end
    if n == false then return usage_error("PROXY LOG " .. string.upper(verb) .. " takes a row count >= 1") end
    if words[rest] then return usage_error("too many arguments") end
    n = math_min(n or DEFAULT_ROWS, verb == "tail" and RING_SIZE or MAX_DIGESTS)
    logging_on(now)
    if verb == "tail" then return tail_result(n) end
    return digest_result(n, order)
  end
  if arg ~= nil then return usage_error("PROXY LOG " .. string.upper(verb) .. " takes no argument") end
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
    state.evicted = 0
    state.logged = 0
    return status_result(now)
  end
  return usage_error("unknown PROXY LOG command")
end

-- Hooks -------------------------------------------------------------------------------------------

local COM_QUERY, COM_INIT_DB, COM_STMT_PREPARE, COM_STMT_EXECUTE, COM_STMT_CLOSE, COM_CHANGE_USER = proxy.COM_QUERY,
  proxy.COM_INIT_DB, proxy.COM_STMT_PREPARE, proxy.COM_STMT_EXECUTE, proxy.COM_STMT_CLOSE, proxy.COM_CHANGE_USER
-- MySQL Proxy 0.8.5 predates COM_RESET_CONNECTION (MySQL 5.7): its number then.
local COM_RESET_CONNECTION = proxy.COM_RESET_CONNECTION or 31
local ID_QUERY, ID_PREPARE, ID_EXECUTE, ID_WHOAMI, ID_HELD = 1, 2, 3, 4, 5
local WHOAMI = string_char(COM_QUERY) .. "SELECT CURRENT_USER(), DATABASE()"
local STREAMED, BUFFERED = {resultset_is_needed = false}, {resultset_is_needed = true}

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

-- Statements that read what the previous statement left, which a query injected before them would change:
-- FOUND_ROWS(), ROW_COUNT(), GET DIAGNOSTICS, and (in MySQL) SHOW WARNINGS / ERRORS and their counts.
local DIAGNOSTICS = {"found_rows", "row_count", "diagnostics", "warning", "error"}

local function reads_diagnostics(text)
  local lower = string_lower(text)
  for i = 1, #DIAGNOSTICS do
    if string_find(lower, DIAGNOSTICS[i], 1, true) then return true end
  end
  return false
end

-- Does a statement start at i of the lower-cased COM_QUERY packet with USE (blanks and comments skipped;
-- an executable comment's inside is code)?
local function use_at(lower, i)
  while true do
    local _, e = string_find(lower, "^%s+", i)
    if e then i = e + 1 end
    local c, nxt = string_byte(lower, i, i + 1)
    if c == 47 and nxt == 42 then -- "/*"
      local third, fourth = string_byte(lower, i + 2, i + 3)
      if third == 33 or (third == 109 and fourth == 33) then -- "/*!", "/*M!", then a version
        _, e = string_find(lower, "^!%d*", i + (third == 33 and 2 or 3))
        i = e + 1
      else
        _, e = string_find(lower, "*/", i + 2, true)
        if not e then return false end
        i = e + 1
      end
    elseif c == 35 or (c == 45 and nxt == 45) then -- "#", "--": to the end of the line
      e = string_find(lower, "\n", i, true)
      if not e then return false end
      i = e + 1
    else
      return string_find(lower, "^use%f[^%w_$]", i) ~= nil
    end
  end
end

-- Could this COM_QUERY change the schema with USE (as its first statement or after a ";")? Over-eager on
-- purpose (a ";" in a literal counts): a false alarm costs one question to the server, a missed USE would
-- file statements under the wrong schema, past a DB filter. The caller rules out most statements first: a
-- first byte that is a letter other than U or a digit, and no ";".
local function may_use(packet)
  local lower = string_lower(packet)
  if not string_find(lower, "use", 2, true) then return false end
  local i = 2
  while i do
    if use_at(lower, i) then return true end
    local semi = string_find(lower, ";", i, true)
    i = semi and semi + 1
  end
  return false
end

-- Ask the server who and where this connection is (an injected query; learned() reads the answer).
local function ask()
  proxy.queries:append(ID_WHOAMI, WHOAMI, BUFFERED)
  return proxy.PROXY_SEND_QUERY
end

-- A statement while logging is on: queued to be logged (PROXY_SEND_QUERY), or let pass (nil). USER filters by
-- the claimed name, before anything is asked; a connection not asked since the last PROXY LOG ON (or its last
-- USE) asks the server first and comes back here with the answer (learned()). Only the first statements
-- after a PROXY LOG ON that read what the previous one left go on unasked (the next statement asks): they
-- are logged with what is known and pass the DB filter (logged rather than missed), so that no statement
-- can evade the filter by looking like one of them.
local function logged(packet, command)
  local f = state.filter
  if f and f.user and proxy.connection.client.username ~= f.user then return nil end
  local unasked = false
  if asked_epoch ~= state.epoch then
    local text = packet
    if command == COM_STMT_EXECUTE then text = statements[resultset.stmt_id(packet)] or "" end
    if asked_epoch == false or not reads_diagnostics(text) then
      held = packet
      return ask()
    end
    unasked = true
  end
  if command == COM_QUERY then
    local b = string_byte(packet, 2) or 0
    if (b == 85 or b == 117 or b <= 47 or string_find(packet, ";", 3, true)) and may_use(packet) then
      asked_epoch = false -- asked before the next statement, whatever it is
    end
  end
  if f ~= nil then
    if f.db and not unasked then
      local db = schema
      if not schema_known then db = proxy.connection.client.default_db end
      if db ~= f.db then return nil end
    end
    if f.sample and math_random() >= f.sample then return nil end
  end
  if command == COM_QUERY then
    proxy.queries:append(ID_QUERY, packet, STREAMED)
  else
    proxy.queries:append(ID_EXECUTE, packet, STREAMED)
  end
  return proxy.PROXY_SEND_QUERY
end

-- Who is asking comes first, then the length, and only then is the statement read: a stranger's
-- statement, of any size, costs a table look-up.
local function control_statement(packet)
  local user = proxy.connection.client.username or ""
  if not ADMINS.names[user] then return denied() end
  if #packet - 1 > CONTROL_MAX then
    return usage_error("PROXY LOG statements are at most " .. CONTROL_MAX .. " bytes")
  end
  if account ~= nil then
    if not is_admin then return denied(" (the account the server authenticated is not one)") end
    return control(string_sub(packet, 2))
  end
  -- The name is only what the client claimed: ask the server which account it authenticated.
  pending_control = string_sub(packet, 2)
  return ask()
end

-- The answer to ask(): the account and the schema, kept for this connection; then the control statement or
-- the statement that waited for it goes on (the answer itself never reaches the client).
local function learned(inj)
  local res = inj.resultset
  local who, db = nil, nil
  if res.query_status == proxy.MYSQLD_PACKET_OK then
    for row in res.rows do
      if who == nil then who, db = row[1], row[2] end
    end
  end
  asked_epoch = state.epoch -- not again before the next PROXY LOG ON or USE, even when asking failed
  if type(who) == "string" then
    account, account_user = who, string_match(who, "^(.*)@[^@]*$") or who
    is_admin, views_trusted = listed(ADMINS, who), listed(VIEW_ACCOUNTS, who)
    schema, schema_known = db, true
  end
  local query, packet = pending_control, held
  pending_control, held = nil, nil
  if query then
    if type(who) ~= "string" then return denied(" (cannot check the account: SELECT CURRENT_USER() failed)") end
    if not is_admin then return denied(" (the account the server authenticated is not one)") end
    return control(query)
  end
  if packet and logged(packet, string_byte(packet, 1)) == nil then
    proxy.queries:append(ID_HELD, packet, STREAMED)
  end
  return proxy.PROXY_IGNORE_RESULT
end

-- Forget who and where (COM_CHANGE_USER: another account and schema from now on; check again).
local function forget_account()
  account, account_user, is_admin, views_trusted = nil, nil, false, VIEW_ACCOUNTS.any
  schema, schema_known, asked_epoch = nil, false, nil
end

function read_query(packet)
  local command = string_byte(packet, 1)
  if command == COM_QUERY then
    if is_control(packet) then return control_statement(packet) end
    if state.on and logging_on(os_time()) then return logged(packet, command) end
  elseif command == COM_STMT_EXECUTE then
    if state.on and logging_on(os_time()) then return logged(packet, command) end
  elseif command == COM_STMT_PREPARE then
    -- Buffered (small: the statement id and definitions) to learn the id; the text is logged on execute.
    proxy.queries:append(ID_PREPARE, packet, BUFFERED)
    return proxy.PROXY_SEND_QUERY
  elseif command == COM_STMT_CLOSE then
    statements[resultset.stmt_id(packet)] = nil
  elseif command == COM_INIT_DB then
    -- client.default_db follows it (set by the host, and MySQL Proxy, when the server says OK); after a
    -- USE it is asked again too (a failed COM_INIT_DB leaves the USE's schema).
    if schema_known then asked_epoch = false end
    schema_known = false
  elseif command == COM_CHANGE_USER then
    forget_account()
    statements = {} -- and the server forgets every prepared statement
  elseif command == COM_RESET_CONNECTION then
    statements = {}
  end
end

function read_query_result(inj)
  local id = inj.id
  if id == ID_QUERY then
    local now = os_time()
    if logging_on(now) then record(now, "query", string_sub(inj.query, 2, TAKE), inj) end
    return
  end
  if id == ID_WHOAMI then return learned(inj) end
  if id == ID_PREPARE then
    local res = inj.resultset
    if res.query_status == proxy.MYSQLD_PACKET_OK then
      local raw = res.raw
      if raw and string_byte(raw, 1) == 0 then
        statements[resultset.stmt_id(raw)] = string_sub(inj.query, 2, TAKE)
      end
    end
    return
  end
  if id == ID_EXECUTE then
    local now = os_time()
    if not logging_on(now) then return end
    local stmt = resultset.stmt_id(inj.query)
    record(now, "execute", statements[stmt] or ("(prepared statement " .. stmt .. ")"), inj)
  end
end
