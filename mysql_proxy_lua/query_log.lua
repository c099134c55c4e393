--[[
query_log.lua - time-boxed query logging for MySQL Proxy 0.8 (Lua 5.1) and django-instrumented's host.

Off by default. An admin turns it on for N seconds with a SQL statement sent through the proxy:

  PROXY LOG ON [seconds] [SLOW ms] [USER name] [DB name] [ERRORS] [SAMPLE fraction]
  PROXY LOG OFF   PROXY LOG STATUS   PROXY LOG TAIL [n]   PROXY LOG RESET
  PROXY LOG DIGEST [n] [ORDER BY sum|count|max|rows|errors] [HOST client-host]
  PROXY LOG EXPLAIN [n | ID id]

While on, every COM_QUERY and COM_STMT_EXECUTE that passes the USER/DB/SAMPLE filters is re-queued with
proxy.queries:append so that read_query_result gets its timings (inj.query_time / inj.response_time,
microseconds). Each such statement is counted in a digest (per normalised statement, schema, user and client
host: count, first/last seen, sum/min/max/avg, coarse p50/p95/p99 and the distribution of the time, load and
share of the total, rows sent and affected, errors, warnings, the Django views that sent it); those that pass SLOW/ERRORS also go to the log file (JSON lines
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
once, a statement longer than 256 bytes (control.MAX_BYTES) is refused unparsed, and the first control statement
of a claimed admin on a connection asks the server for CURRENT_USER() (the account MariaDB/MySQL
authenticated, not the name the client claimed) before it is run; the verdict is kept per connection.
Password literals are masked in the log file, the ring and the digest.

PROXY LOG EXPLAIN: the digest keeps each row's slowest statement as it ran (in memory only; none holding a
password literal, cut, or prepared); EXPLAIN [n] (or ID id) checks that it is one plain SELECT (lib/explain.lua),
then runs EXPLAIN FORMAT=JSON of it on the admin's own connection, with the admin's privileges: injected
statements ask the connection's schema (SELECT DATABASE(), VERSION()), USE the sample's schema, explain (under
MariaDB's max_statement_time, PROXY_LOG_EXPLAIN_SECONDS), USE the connection's schema again, and answer with
the plan in place of the control statement.

Environment: PROXY_LOG_FILE (query_log.jsonl, or query_log.slow.log for slowlog), PROXY_LOG_FORMAT (json |
slowlog), PROXY_LOG_ADMINS (root), PROXY_LOG_VIEW_ACCOUNTS (*), PROXY_LOG_MAX_SECONDS (3600),
PROXY_LOG_SLOW_US (0 = log everything), PROXY_LOG_RING (1000), PROXY_LOG_MAX_DIGESTS (1000),
PROXY_LOG_MAX_QUERY_LEN (8192), PROXY_LOG_MAX_FILE_MB (1024), PROXY_LOG_EXPLAIN_SECONDS (2). See README.md.

This file holds the hooks, the per-connection who and where, the ring and the carrying out of control
statements; the rest is in lib/ (found with --lua-path=".../mysql_proxy_lua/?.lua;;" under mysql-proxy 0.8.5):
settings.lua and accounts.lua (the environment), control.lua (the control statements' text), statements.lua
(a possible USE, a read of diagnostics), sqlcomment.lua (the view comment), normalize.lua (fingerprints, masked
passwords), digest.lua, explain.lua (which samples EXPLAIN may run), logfile.lua, json.lua and slowlog.lua (the
two line formats), resultset.lua (answers).
A module is loaded once per process and shared by every connection: per-connection state stays here.
]]

-- Globals are looked up through the script's environment on every use: the hot ones are made locals.
local proxy = proxy
local accounts = require("lib.accounts")
local control = require("lib.control")
local digest = require("lib.digest")
local explain = require("lib.explain")
local json = require("lib.json")
local logfile = require("lib.logfile")
local resultset = require("lib.resultset")
local slowlog = require("lib.slowlog")
local mask_secrets = require("lib.normalize").mask_secrets
local split_comment = require("lib.sqlcomment").split
local may_use = require("lib.statements").may_use
local reads_diagnostics = require("lib.statements").reads_diagnostics

local os_time = os.time
local string_byte, string_sub, string_find, string_match, string_char, string_format =
  string.byte, string.sub, string.find, string.match, string.char, string.format
local math_min, math_max, math_random = math.min, math.max, math.random
local pcall, type = pcall, type
local json_value, timestamp, text = json.value, json.timestamp, resultset.text
local is_control, usage_error, denied = control.is, control.usage_error, control.denied
local digest_add = digest.add

-- Read for every connection (README.md, "Environment variables"); the hot ones as locals.
local settings = require("lib.settings").read()
local SLOWLOG, LOG_FILE, RING_SIZE, MAX_QUERY = settings.slowlog, settings.log_file, settings.ring_size,
  settings.max_query
local ADMINS, VIEW_ACCOUNTS = settings.admins, settings.view_accounts
-- Bytes of a statement read: MAX_QUERY and room for the view comment at its end (cut off before MAX_QUERY counts).
local TAKE = MAX_QUERY + 1025

local T_STRING = proxy.MYSQL_TYPE_STRING
local T_NUMBER = proxy.MYSQL_TYPE_LONGLONG
local PACKET_ERR = proxy.MYSQLD_PACKET_ERR

-- Shared by all connections (script globals and locals are per connection): the switch and its filter, the
-- ring of recent entries, the digest (lib/digest.lua) and the log file (lib/logfile.lua). A state left by an
-- older version of the script (reloaded in a running proxy) is started afresh.
-- epoch counts PROXY LOG ONs: a connection asks again who and where it is when it changed.
local STATE_VERSION = 4
local state = proxy.global.query_log
if state == nil or state.version ~= STATE_VERSION then
  local old_file = state and (state.file or (state.log and state.log.file))
  if old_file then pcall(old_file.close, old_file) end
  state = {version = STATE_VERSION, on = false, deadline = 0, epoch = 0, logged = 0, ring = {}, ring_next = 1,
           ring_count = 0, digest = digest.new(settings.max_digests, proxy.worker, proxy.workers), log = logfile.new(),
           filter = nil}
  proxy.global.query_log = state
  math.randomseed(os_time()) -- for SAMPLE; once per process, not per connection
end
local digests, log = state.digest, state.log
local write_line = logfile.writer(log, LOG_FILE, settings.max_file_bytes)

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
-- Per connection: the PROXY LOG EXPLAIN being carried out (its sample, schemas and plan), nil between them.
local explaining = nil
-- Per connection: the client's host (its address without the port) and the address it was cut from.
local client_host, client_src = nil, nil
-- Per connection: the JSON of thread_id, user, account, claimed user, db and client, and what it was made from.
local enc_thread, enc_user, enc_account, enc_claimed, enc_db, enc_src, enc_conn = nil, nil, nil, nil, nil, nil, nil

local function turn_off()
  state.on = false
  state.deadline = 0
  logfile.close(log)
end

local function logging_on(now)
  if state.on and now > state.deadline then turn_off() end
  return state.on
end

-- The parts that depend on the connection and on the view are encoded once and reused (see record()).
local LINE_FORMAT = '{"ts":"%s",%s,%s,"command":"%s","query":%s,"query_time_us":%s,"response_time_us":%d,'
  .. '"rows":%d,"affected_rows":%s,"warnings":%d,"status":"%s","error_code":%s,"error_message":%s}\n'
local NO_VIEW = '"view":null,"route":null'
-- The usual line (a statement that worked, whole-number timings) is one concatenation: the constant members
-- written out, the statement quoted as it is when the digest found it plain JSON text (lib/normalize.lua), the
-- numbers' text remembered (a number's text is a C sprintf each time; timings and counts repeat).
local OK_TAIL = ',"status":"ok","error_code":null,"error_message":null}\n'
local number_texts, number_count = {}, 0
local function number_text(n) -- called when number_texts has none
  local t
  if number_count >= 8192 then number_texts, number_count = {}, 0 end
  t = string_format("%d", n)
  number_texts[n] = t
  number_count = number_count + 1
  return t
end

-- A logged statement's result: counted in the digest, and (past the SLOW/ERRORS filter) kept in the ring and
-- written to the file.
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
  local as_sent = query_text
  query_text = mask_secrets(query_text)
  -- The digest may keep it for EXPLAIN when it is whole, holds no secret and has its values (not a template).
  local sample = nil
  if not cut and query_text == as_sent and command == "query" then sample = as_sent end
  if cut then query_text = query_text .. "..." end
  -- The digest's and TAIL's user: the authenticated one, else (not known yet) the claimed name, marked.
  local claimed = client.username
  local user = account_user
  if user == nil then user = (claimed or "") .. " (claimed)" end
  local db = schema -- the schema the connection is in
  if not schema_known then db = client.default_db end

  local src = client.src
  src = src and src.name or nil
  if src ~= client_src then
    client_src = src
    client_host = src and (string_match(src, "^(.*):%d+$") or src) or nil
  end

  -- Digest: every statement that passed the USER/DB/SAMPLE filters (SLOW and ERRORS only filter the log).
  local digest_id, plain = digest_add(digests, query_text, db, user, now, response_time, rows, affected, failed,
    warnings, view, client_host, sample)

  local f = state.filter
  if f ~= nil and ((f.errors and not failed) or (f.slow_us and response_time < f.slow_us)) then return end

  local server = conn.server
  local thread_id = server and server.thread_id or nil
  local ts = timestamp(now)
  local status = failed and "error" or "ok"
  -- The ring keeps TAIL's columns (an array: cheaper than a table with named fields); once full, the oldest
  -- entry's table is filled again (no garbage per statement).
  local slot, ring_count = state.ring_next, state.ring_count
  local ring = state.ring
  local e = ring[slot]
  if e == nil then
    e = {}
    ring[slot] = e
  end
  e[1], e[2], e[3], e[4], e[5], e[6], e[7], e[8] = ts, thread_id, user, db, view, inj.query_time, response_time, rows
  e[9], e[10], e[11], e[12], e[13], e[14], e[15] = affected, warnings, status, error_code, query_text, account, claimed
  e[16], e[17] = digest_id, client_host
  state.ring_next = slot % RING_SIZE + 1
  if ring_count < RING_SIZE then state.ring_count = ring_count + 1 end
  state.logged = state.logged + 1
  if SLOWLOG then
    write_line(slowlog.entry({time = now, user = account_user, claimed_user = claimed, host = client_host or "",
      thread_id = thread_id, db = db, errno = error_code or (failed and 1 or 0), seconds = response_time / 1e6,
      rows = rows, affected = affected, bytes = res.bytes, view = view, route = route, query = query_text}), now)
    return
  end
  if thread_id ~= enc_thread or user ~= enc_user or account ~= enc_account or claimed ~= enc_claimed or db ~= enc_db
     or src ~= enc_src then
    enc_thread, enc_user, enc_account, enc_claimed, enc_db, enc_src = thread_id, user, account, claimed, db, src
    local v = json_value
    enc_conn = '"thread_id":' .. v(thread_id) .. ',"user":' .. v(account_user) .. ',"account":' .. v(account)
      .. ',"claimed_user":' .. v(claimed) .. ',"db":' .. v(db) .. ',"client":' .. v(src)
  end
  local v = json_value
  local query_time = inj.query_time
  if not failed and type(query_time) == "number" and query_time % 1 == 0 and response_time % 1 == 0
     and rows % 1 == 0 and warnings % 1 == 0 and (affected == nil or (affected % 1 == 0 and affected < 1e14)) then
    local quote, quoted = '"', query_text
    if not plain then quote, quoted = "", v(query_text) end
    local texts = number_texts -- a number's text, else number_text() makes it
    local affected_text = "null"
    if affected then affected_text = texts[affected] or number_text(affected) end
    write_line('{"ts":"' .. ts .. '",' .. enc_conn .. "," .. (view_json or NO_VIEW) .. ',"command":"' .. command
      .. '","query":' .. quote .. quoted .. quote .. ',"query_time_us":'
      .. (texts[query_time] or number_text(query_time)) .. ',"response_time_us":'
      .. (texts[response_time] or number_text(response_time)) .. ',"rows":'
      .. (texts[rows] or number_text(rows)) .. ',"affected_rows":' .. affected_text .. ',"warnings":'
      .. (texts[warnings] or number_text(warnings)) .. OK_TAIL, now)
    return
  end
  write_line(string_format(LINE_FORMAT, ts, enc_conn, view_json or NO_VIEW, command, v(query_text),
    v(query_time), response_time, rows, v(affected), warnings, status, v(error_code), v(error_message)), now)
end

-- Control statements (parsed by lib/control.lua) --------------------------------------------------

local function status_result(now)
  local left = 0
  if logging_on(now) then left = math_max(0, state.deadline - now) end
  local total_us, span, load = digest.totals(digests)
  return resultset.send(
    {{"logging", T_STRING}, {"seconds_left", T_NUMBER}, {"logged", T_NUMBER}, {"log_file", T_STRING},
     {"filters", T_STRING}, {"digests", T_NUMBER}, {"evicted", T_NUMBER}, {"total_us", T_NUMBER},
     {"span_seconds", T_NUMBER}, {"load", proxy.MYSQL_TYPE_DOUBLE}},
    {{state.on and "on" or "off", left, state.logged, text(logfile.describe(log, LOG_FILE, settings.max_file_mb)),
      text(control.filter_text(state.filter)), digests.count, digests.evicted, total_us, span, load}})
end

local function tail_result(n)
  local rows = {}
  local count = math_min(n, state.ring_count)
  for i = count, 1, -1 do
    local idx = (state.ring_next - i - 1) % RING_SIZE + 1
    local e = state.ring[idx]
    rows[#rows + 1] = {e[1], e[2], text(e[3]), text(e[14]), text(e[15]), text(e[4]), text(e[5]), e[6], e[7], e[8],
                       e[9], e[10], e[11], e[12], text(e[17]), e[16], text(e[13])}
  end
  return resultset.send({{"ts", T_STRING}, {"thread_id", T_NUMBER}, {"user", T_STRING}, {"account", T_STRING},
    {"claimed_user", T_STRING}, {"db", T_STRING}, {"view", T_STRING}, {"query_time_us", T_NUMBER},
    {"response_time_us", T_NUMBER}, {"rows", T_NUMBER}, {"affected_rows", T_NUMBER}, {"warnings", T_NUMBER},
    {"status", T_STRING}, {"error_code", T_NUMBER}, {"client", T_STRING}, {"digest_id", T_NUMBER},
    {"query", T_STRING}}, rows)
end

-- PROXY LOG EXPLAIN (lib/explain.lua) -------------------------------------------------------------

local WORKERS = proxy.workers or 1

-- Injections of an EXPLAIN, in the order they go: the connection's schema and the server, USE the sample's
-- schema, the EXPLAIN, USE the connection's schema again. All buffered: only the last answers the client.
local ID_EXPLAIN_WHERE, ID_EXPLAIN_USE, ID_EXPLAIN, ID_EXPLAIN_BACK = 6, 7, 8, 9
local NEEDED = {resultset_is_needed = true}
local WHERE = string_char(proxy.COM_QUERY) .. "SELECT DATABASE(), VERSION()"
local EXPLAIN_SECONDS = settings.explain_seconds

local function explain_error(message)
  return resultset.error("PROXY LOG EXPLAIN: " .. message, 1105, "HY000")
end

-- A digest line's sample checked, and the first injection queued (PROXY_SEND_QUERY); or the refusal.
local function explain_line(line, rank)
  if line.sample == nil then
    return explain_error("no statement of this digest row can be explained: it keeps none that was cut"
      .. " (PROXY_LOG_MAX_QUERY_LEN), held a password or ran as a prepared statement (no values)")
  end
  local why, statement = explain.refusal(line.sample)
  if why then return explain_error("refused: " .. why .. "; only one plain SELECT is explained") end
  explaining = {line = line, rank = rank, sql = statement, db = line.db}
  proxy.queries:append(ID_EXPLAIN_WHERE, WHERE, NEEDED)
  return proxy.PROXY_SEND_QUERY
end

-- The digest line asked for (this process's digest), then explain_line().
local function start_explain(command)
  local line, rank
  if command.id then
    line, rank = digest.line_of(digests, command.id)
    if line == nil then
      return explain_error("no digest row has the id " .. command.id .. " (any more: RESET or eviction); see the id"
        .. " column of PROXY LOG DIGEST")
    end
  else
    rank = command.rank
    line = digest.lines(digests)[rank]
    if line == nil then
      return explain_error("the digest has no row " .. rank .. " (it has " .. #digest.lines(digests) .. ")")
    end
  end
  return explain_line(line, rank)
end

-- The plan (or what went wrong) as the answer to the control statement.
local function answer_explain(e, problem)
  explaining = nil
  if problem then return explain_error(problem) end
  local line = e.line
  return resultset.send({{"rank", T_NUMBER}, {"id", T_NUMBER}, {"db", T_STRING}, {"digest", T_STRING},
    {"statement", T_STRING}, {"sample_us", T_NUMBER}, {"plan", T_STRING}, {"note", T_STRING}},
    {{e.rank, line.sample_id, text(line.db), text(line.text), text(e.sql), line.sample_us, text(e.plan),
      text(e.note)}})
end

-- The result of one of the EXPLAIN's injections: the next one queued (PROXY_IGNORE_RESULT), or the answer.
local function explain_step(id, inj)
  local e = explaining
  if e == nil then return proxy.PROXY_IGNORE_RESULT end
  local res = inj.resultset
  local ok = res.query_status == proxy.MYSQLD_PACKET_OK
  if id == ID_EXPLAIN_WHERE then
    if not ok then return answer_explain(e, "cannot ask the connection's schema: " .. explain.error_of(res)) end
    local seen = false
    for row in res.rows do
      if not seen then e.back, e.server, seen = row[1], row[2], true end
    end
    e.mariadb = string_find(tostring(e.server or ""), "MariaDB", 1, true) ~= nil
    if e.db ~= nil and e.db ~= e.back then
      proxy.queries:append(ID_EXPLAIN_USE, explain.use(e.db), NEEDED)
    else
      proxy.queries:append(ID_EXPLAIN, explain.packet(e.sql, e.mariadb, EXPLAIN_SECONDS), NEEDED)
    end
    return proxy.PROXY_IGNORE_RESULT
  end
  if id == ID_EXPLAIN_USE then
    if not ok then
      return answer_explain(e, "cannot use the schema " .. e.db .. " the statement ran in: " .. explain.error_of(res))
    end
    e.switched = true
    proxy.queries:append(ID_EXPLAIN, explain.packet(e.sql, e.mariadb, EXPLAIN_SECONDS), NEEDED)
    return proxy.PROXY_IGNORE_RESULT
  end
  if id == ID_EXPLAIN then
    if ok then
      e.plan = explain.first_cell(res)
    else
      e.problem = "the server refused the EXPLAIN: " .. explain.error_of(res)
    end
    if e.switched then
      if e.back ~= nil then
        proxy.queries:append(ID_EXPLAIN_BACK, explain.use(e.back), NEEDED)
        return proxy.PROXY_IGNORE_RESULT
      end
      -- No schema to go back to (there is no USE of none): said, and asked again before the next logged statement.
      e.note = "this connection had no schema: it is now in " .. e.db
      schema_known, asked_epoch = false, false
    end
    return answer_explain(e, e.problem)
  end
  if not ok then -- ID_EXPLAIN_BACK failed: the connection stays in the sample's schema
    e.note = "could not go back to the schema " .. tostring(e.back) .. " (" .. explain.error_of(res) .. "): this"
      .. " connection is now in " .. e.db
    schema_known, asked_epoch = false, false
  end
  return answer_explain(e, e.problem)
end

-- A control statement of a verified admin (at most control.MAX_BYTES bytes: the caller checked), carried out.
local function run_control(query)
  local now = os_time()
  logfile.close(log) -- flushed; opened again by the next line (so a rotated file is followed)
  local command, problem = control.parse(query, settings)
  if command == nil then return usage_error(problem) end
  local verb = command.verb
  if verb == "on" then
    state.filter = command.filter
    local counted_afresh = not logging_on(now) -- counted per switch-on (again while on: a new deadline only)
    if counted_afresh then state.logged = 0 end
    state.on = true
    state.deadline = now + command.seconds
    state.epoch = state.epoch + 1 -- connections not followed meanwhile (off, filtered out) ask who and where again
    logfile.retry(log, counted_afresh)
    return status_result(now)
  end
  if verb == "tail" or verb == "digest" then
    logging_on(now)
    if verb == "tail" then return tail_result(command.rows) end
    return digest.result(digests, command.rows, command.order, command.host)
  end
  if verb == "explain" then
    -- Under `instrumented-proxy --workers N` the row may be another worker's: the host finds it in the merged
    -- digest, fetches its sample from the worker that keeps it (worker_sample) and comes back to explain_sample.
    if WORKERS > 1 then
      return resultset.send({{"rank", T_NUMBER}, {"id", T_NUMBER}}, {{command.rank or 0, command.id or 0}})
    end
    return start_explain(command)
  end
  if verb == "off" then turn_off() end
  if verb == "reset" then
    state.ring = {}
    state.ring_next = 1
    state.ring_count = 0
    digest.reset(digests)
    state.logged = 0
  end
  return status_result(now)
end

-- instrumented-proxy --workers N runs the script in N processes, each with its own proxy.global (proxy.workers is
-- its extension; nil under mysql-proxy 0.8.5, one process). A control statement an admin ran is marked for every
-- worker (proxy.response.relay): the host carries it out in the others through worker_control() and answers with
-- their answers merged, so PROXY LOG ON switches them all and STATUS, TAIL and DIGEST answer for all of them.
-- EXPLAIN is marked too: the host answers it through worker_sample() and explain_sample() below.
local function control_everywhere(query)
  local ret = run_control(query)
  if WORKERS > 1 and proxy.response.type == proxy.MYSQLD_PACKET_OK then proxy.response.relay = query end
  return ret
end

-- Called by instrumented-proxy for a control statement relayed from another worker (checked there).
function worker_control(query)
  return run_control(query)
end

-- Called by instrumented-proxy (--workers N) for PROXY LOG EXPLAIN in another worker: the line of this worker's digest
-- row `id` (merged like DIGEST shows it) and its sample, as a result (digest, db, user, id, sample_us, sample).
function worker_sample(id)
  local line = digest.line_of(digests, tonumber(id) or 0)
  if line == nil then return explain_error("no digest row has the id " .. tostring(id) .. " in this worker") end
  return resultset.send({{"digest", T_STRING}, {"db", T_STRING}, {"user", T_STRING}, {"id", T_NUMBER},
    {"sample_us", T_NUMBER}, {"sample", T_STRING}},
    {{line.text, line.db, line.user, line.sample_id or line.id, line.sample_us, line.sample}})
end

-- Called by instrumented-proxy (--workers N) on the admin's connection once it found the row PROXY LOG EXPLAIN asked
-- for, whichever worker keeps it: t = {rank, id, digest, db, sample_us, sample} (sample nil: none kept).
function explain_sample(t)
  return explain_line({text = t.digest, db = t.db, sample = t.sample, sample_us = t.sample_us, sample_id = t.id},
    t.rank)
end

-- Hooks -------------------------------------------------------------------------------------------

local COM_QUERY, COM_INIT_DB, COM_STMT_PREPARE, COM_STMT_EXECUTE, COM_STMT_CLOSE, COM_CHANGE_USER = proxy.COM_QUERY,
  proxy.COM_INIT_DB, proxy.COM_STMT_PREPARE, proxy.COM_STMT_EXECUTE, proxy.COM_STMT_CLOSE, proxy.COM_CHANGE_USER
-- MySQL Proxy 0.8.5 predates COM_RESET_CONNECTION (MySQL 5.7): its number then.
local COM_RESET_CONNECTION = proxy.COM_RESET_CONNECTION or 31
local ID_QUERY, ID_PREPARE, ID_EXECUTE, ID_WHOAMI, ID_HELD = 1, 2, 3, 4, 5
local WHOAMI = string_char(COM_QUERY) .. "SELECT CURRENT_USER(), DATABASE()"
local STREAMED, BUFFERED = {resultset_is_needed = false}, {resultset_is_needed = true}
local CONTROL_MAX = control.MAX_BYTES

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
    local sql = packet
    if command == COM_STMT_EXECUTE then sql = statements[resultset.stmt_id(packet)] or "" end
    if asked_epoch == false or not reads_diagnostics(sql) then
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
    return control_everywhere(string_sub(packet, 2))
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
    account, account_user = who, accounts.user(who) or who
    is_admin, views_trusted = accounts.listed(ADMINS, who), accounts.listed(VIEW_ACCOUNTS, who)
    schema, schema_known = db, true
  end
  local query, packet = pending_control, held
  pending_control, held = nil, nil
  if query then
    if type(who) ~= "string" then return denied(" (cannot check the account: SELECT CURRENT_USER() failed)") end
    if not is_admin then return denied(" (the account the server authenticated is not one)") end
    -- From here a control statement that injects statements of its own (EXPLAIN) has queued them already.
    local decision = control_everywhere(query)
    if decision == proxy.PROXY_SEND_QUERY then return proxy.PROXY_IGNORE_RESULT end
    return decision
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
    return
  end
  if id >= ID_EXPLAIN_WHERE and id <= ID_EXPLAIN_BACK then return explain_step(id, inj) end
end
