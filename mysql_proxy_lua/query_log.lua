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
or MySQL slow-log format) and a bounded ring of recent entries. All of that lives in proxy.global, shared
by every connection. There is no timer in MySQL Proxy: the deadline is checked on every query.
While off, queries are forwarded untouched (read_query returns nothing).

The Django view: a sqlcommenter-style comment at the end of a statement
(/*view='shop%3Abook',route='books%2F%3Cint%3Abook_id%3E%2F'*/, URL-encoded values; "controller" is read
as the view too) is cut off before the statement is logged and normalised, and kept as its view/route.

Security (README.md, "Who may switch logging"): a control statement is recognised from its first bytes
and answered before anything else is read: a user name that is not in PROXY_LOG_ADMINS is refused at
once, a statement longer than CONTROL_MAX bytes is refused unparsed, and the first control statement
of a claimed admin on a connection asks the server for CURRENT_USER() (the account MariaDB/MySQL
authenticated, not the name the client claimed) before it is run; the verdict is kept per connection.
Password literals are masked in the log file, the ring and the digest.

Environment: PROXY_LOG_FILE (query_log.jsonl, or query_log.slow.log for slowlog), PROXY_LOG_FORMAT (json |
slowlog), PROXY_LOG_ADMINS (root), PROXY_LOG_MAX_SECONDS (3600), PROXY_LOG_SLOW_US (0 = log everything),
PROXY_LOG_RING (1000), PROXY_LOG_MAX_DIGESTS (1000), PROXY_LOG_MAX_QUERY_LEN (8192). See README.md.
]]

-- Globals are looked up through the script's environment on every use: the hot ones are made locals.
local proxy, io = proxy, io
local json = require("lib.json")
local normalize = require("lib.normalize")
local resultset = require("lib.resultset")

local os_time, os_date, os_getenv = os.time, os.date, os.getenv
local string_byte, string_sub, string_lower, string_find, string_gmatch, string_match, string_gsub, string_char =
  string.byte, string.sub, string.lower, string.find, string.gmatch, string.match, string.gsub, string.char
local math_floor, math_min, math_max, math_log, math_random = math.floor, math.min, math.max, math.log, math.random
local tonumber, tostring, pcall, pairs, type = tonumber, tostring, pcall, pairs, type
local string_format, table_sort, table_concat = string.format, table.sort, table.concat
local valid_utf8 = json.valid_utf8

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

local SLOWLOG = string_lower(env_string("PROXY_LOG_FORMAT", "json")) == "slowlog"
local LOG_FILE = env_string("PROXY_LOG_FILE", SLOWLOG and "query_log.slow.log" or "query_log.jsonl")
local MAX_SECONDS = math_max(1, env_number("PROXY_LOG_MAX_SECONDS", 3600))
local DEFAULT_SECONDS = math_min(300, MAX_SECONDS)
local DEFAULT_SLOW_US = env_number("PROXY_LOG_SLOW_US", 0)
local RING_SIZE = math_max(1, env_number("PROXY_LOG_RING", 1000))
local MAX_DIGESTS = math_max(1, env_number("PROXY_LOG_MAX_DIGESTS", 1000))
local MAX_QUERY = math_max(16, env_number("PROXY_LOG_MAX_QUERY_LEN", 8192))
-- Bytes of a statement read: MAX_QUERY and room for the view comment at its end (cut off before MAX_QUERY counts).
local TAKE = MAX_QUERY + 1025
local DEFAULT_ROWS = 20
-- Longer statements are never parsed as control statements (the longest valid one is far shorter).
local CONTROL_MAX = 256
-- Views remembered per digest row (the busiest first); more are counted, not named.
local MAX_VIEWS = 16

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
local PACKET_ERR = proxy.MYSQLD_PACKET_ERR

-- Shared by all connections (script globals and locals are per connection). A state left by an older
-- version of the script (reloaded in a running proxy) is started afresh.
local STATE_VERSION = 2
local state = proxy.global.query_log
if state == nil or state.version ~= STATE_VERSION then
  if state and state.file then pcall(state.file.close, state.file) end
  state = {version = STATE_VERSION, on = false, deadline = 0, logged = 0, ring = {}, ring_next = 1,
           ring_count = 0, digests = {}, digest_count = 0, evicted = 0, seq = 0, file = nil, file_error = nil,
           opened_at = 0, buffered = 0, filter = nil}
  proxy.global.query_log = state
  math.randomseed(os_time()) -- for SAMPLE; once per process, not per connection
end

-- Per connection: prepared statement id -> statement text (ids are per connection in MySQL), cut like
-- logged statements so that big prepared texts are not kept whole.
local statements = {}
-- Per connection: the claimed user name whose account was checked, the verdict, and the control statement
-- waiting for the CURRENT_USER() answer.
local checked_user, checked_admin, pending_control = nil, false, nil
-- Per connection: the JSON of thread_id, user, db and client, and the values it was made from.
local enc_thread, enc_user, enc_db, enc_src, enc_conn = nil, nil, nil, nil, nil

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
local BUFFER = 4096

local function write_line(line, now)
  if state.file and now ~= state.opened_at then close_file() end
  if not state.file and not state.file_error then
    local f, err = io.open(LOG_FILE, "a")
    if f then
      if f.setvbuf then f:setvbuf("full", BUFFER) end
      state.opened_at = now
      state.file = f
      state.buffered = 0
    else
      state.file_error = tostring(err)
    end
  end
  local f = state.file
  if f then
    local size = #line
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

-- The slow-log line of the values in a field: what pt-query-digest splits on (blanks) cannot be in it.
local function slow_word(v)
  if v == nil or v == "" then return "" end
  return (string_gsub(valid_utf8(tostring(v)), "[%s%c%[%]]", "_"))
end

-- MySQL slow-log format (as MariaDB writes it, plus Percona's Rows_affected/Last_errno and a View line that
-- pt-query-digest reads as attributes: --group-by View).
local function slowlog_entry(now, user, client, thread_id, db, error_code, failed, response_time, rows, affected,
                             view, route, query)
  client = client or ""
  local host = slow_word(string_match(client, "^(.*):%d+$") or client)
  -- A line of the statement that starts with "#" would read as a header: indent it.
  local text = string_gsub(valid_utf8(query), "\n#", "\n #")
  if string_byte(text, -1) ~= 59 then text = text .. ";" end
  local view_line = ""
  if view or route then
    view_line = "# View: " .. slow_word(view or "-") .. "  Route: " .. slow_word(route or "-") .. "\n"
  end
  user = slow_word(user)
  return string_format("# Time: %s\n# User@Host: %s[%s] @ %s [%s]\n# Thread_id: %s  Schema: %s  Last_errno: %d"
    .. "  Killed: 0\n# Query_time: %.6f  Lock_time: 0.000000  Rows_sent: %d  Rows_examined: 0  Rows_affected: %d\n"
    .. "%sSET timestamp=%d;\n%s\n",
    os_date("!%Y-%m-%dT%H:%M:%S.000000Z", now), user, user, host, host, tostring(thread_id or 0), slow_word(db),
    error_code or (failed and 1 or 0), response_time / 1e6, rows, affected or 0, view_line, now, text)
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
  local query_text, view, route, view_json = split_comment(query)
  -- Callers pass at most TAKE bytes; the comment off, cut first, mask what is left (a cut literal is masked to the end).
  local cut = #query_text > MAX_QUERY
  if cut then query_text = string_sub(query_text, 1, MAX_QUERY) end
  query_text = normalize.mask_secrets(query_text)
  if cut then query_text = query_text .. "..." end
  local user, db = client.username, client.default_db

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
                                 status, error_code, query_text}
  state.ring_next = state.ring_next % RING_SIZE + 1
  if state.ring_count < RING_SIZE then state.ring_count = state.ring_count + 1 end
  state.logged = state.logged + 1
  if SLOWLOG then
    write_line(slowlog_entry(now, user, src, thread_id, db, error_code, failed, response_time, rows, affected, view,
      route, query_text), now)
    return
  end
  if thread_id ~= enc_thread or user ~= enc_user or db ~= enc_db or src ~= enc_src then
    enc_thread, enc_user, enc_db, enc_src = thread_id, user, db, src
    local v = json.value
    enc_conn = '"thread_id":' .. v(thread_id) .. ',"user":' .. v(user) .. ',"db":' .. v(db) .. ',"client":' .. v(src)
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
  if state.file_error then file = file .. " (cannot write: " .. state.file_error .. ")" end
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
    rows[#rows + 1] = {e[1], e[2], text(e[3]), text(e[4]), text(e[5]), e[6], e[7], e[8], e[9], e[10], e[11], e[12],
                       text(e[13])}
  end
  return resultset.send({{"ts", T_STRING}, {"thread_id", T_NUMBER}, {"user", T_STRING}, {"db", T_STRING},
    {"view", T_STRING}, {"query_time_us", T_NUMBER}, {"response_time_us", T_NUMBER}, {"rows", T_NUMBER},
    {"affected_rows", T_NUMBER}, {"warnings", T_NUMBER}, {"status", T_STRING}, {"error_code", T_NUMBER},
    {"query", T_STRING}}, rows)
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
      if word == "slow" then
        local ms = tonumber(arg)
        if not string_find(arg, "^%d+%.?%d*$") or ms == nil then
          return usage_error("SLOW takes milliseconds >= 0")
        end
        f.slow_us = math_floor(ms * 1000 + 0.5)
      elseif word == "sample" then
        local fraction = tonumber(arg)
        if not string_find(arg, "^[%d.]+$") or fraction == nil or fraction <= 0 or fraction > 1 then
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
  if not state.on then state.logged = 0 end -- counted per switch-on (again while on: a new deadline only)
  state.on = true
  state.deadline = now + math_min(seconds or DEFAULT_SECONDS, MAX_SECONDS)
  state.file_error = nil
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

local COM_QUERY, COM_STMT_PREPARE, COM_STMT_EXECUTE, COM_STMT_CLOSE, COM_CHANGE_USER =
  proxy.COM_QUERY, proxy.COM_STMT_PREPARE, proxy.COM_STMT_EXECUTE, proxy.COM_STMT_CLOSE, proxy.COM_CHANGE_USER
-- MySQL Proxy 0.8.5 predates COM_RESET_CONNECTION (MySQL 5.7): its number then.
local COM_RESET_CONNECTION = proxy.COM_RESET_CONNECTION or 31
local ID_QUERY, ID_PREPARE, ID_EXECUTE, ID_WHOAMI = 1, 2, 3, 4
local WHOAMI = string_char(COM_QUERY) .. "SELECT CURRENT_USER()"
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

-- Who is asking comes first, then the length, and only then is the statement read: a stranger's
-- statement, of any size, costs a table look-up.
local function control_statement(packet)
  local user = proxy.connection.client.username or ""
  if not ADMIN_NAMES[user] then return denied() end
  if #packet - 1 > CONTROL_MAX then
    return usage_error("PROXY LOG statements are at most " .. CONTROL_MAX .. " bytes")
  end
  if checked_user == user then
    if not checked_admin then return denied(" (the account the server authenticated is not one)") end
    return control(string_sub(packet, 2))
  end
  -- The name is only what the client claimed: ask the server which account it authenticated.
  pending_control = string_sub(packet, 2)
  proxy.queries:append(ID_WHOAMI, WHOAMI, BUFFERED)
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

-- Logging is on and this connection's statements pass the USER/DB/SAMPLE filters.
local function wanted()
  local f = state.filter
  if f == nil then return true end
  if f.user or f.db then
    local client = proxy.connection.client
    if f.user and client.username ~= f.user then return false end
    if f.db and client.default_db ~= f.db then return false end
  end
  return f.sample == nil or math_random() < f.sample
end

function read_query(packet)
  local command = string_byte(packet, 1)
  if command == COM_QUERY then
    if is_control(packet) then return control_statement(packet) end
    if state.on and logging_on(os_time()) and wanted() then
      proxy.queries:append(ID_QUERY, packet, STREAMED)
      return proxy.PROXY_SEND_QUERY
    end
  elseif command == COM_STMT_EXECUTE then
    if state.on and logging_on(os_time()) and wanted() then
      proxy.queries:append(ID_EXECUTE, packet, STREAMED)
      return proxy.PROXY_SEND_QUERY
    end
  elseif command == COM_STMT_PREPARE then
    -- Buffered (small: the statement id and definitions) to learn the id; the text is logged on execute.
    proxy.queries:append(ID_PREPARE, packet, BUFFERED)
    return proxy.PROXY_SEND_QUERY
  elseif command == COM_STMT_CLOSE then
    statements[resultset.stmt_id(packet)] = nil
  elseif command == COM_CHANGE_USER then
    checked_user, checked_admin = nil, false -- another account from now on: check again
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
  if id == ID_WHOAMI then return checked(inj) end
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
