--[[
lib/digest.lua - the digest of PROXY LOG DIGEST: one row per normalised statement, schema, user and client host
(Lua 5.1).

Each row counts executions, first/last seen, the sum/min/max of the response time and its distribution (log
buckets, four per doubling: about +-10 %, from which p50, p95 and p99 are read), rows sent and affected, errors,
warnings, and the Django views that sent it (the busiest MAX_VIEWS named, the rest counted). It holds at most
max_rows rows: when it is full the least recently seen quarter goes (one sort per max_rows / 4 new rows),
counted in `evicted`, so a flood of distinct statements cannot grow the proxy.

A row also keeps its slowest statement as it was sent (`sample`, only in memory, for PROXY LOG EXPLAIN: see
lib/explain.lua) when the caller offers one, and a number (`id`) that stays the row's while it lives, so that
a panel can ask for "that row" after the order changed. Under `instrumented-proxy --workers N` each worker numbers
its rows apart (worker k of N: k, k + N, k + 2N...), so an id names one worker's row: (id - 1) % N + 1.

DIGEST shows one line per statement, schema and user: the rows of several client hosts are merged when it is
read (their hosts named, busiest first), unless it asks for one host's rows (HOST name). Load is the row's
time over the span the digest covers (from its first statement to its last, in whole seconds, at least one:
what pt-query-digest calls concurrency); share is its part of the digest's total time.

The digest is a table kept in proxy.global (shared by every connection): new() makes it. Its fields: entries
(key -> row), by_id (id -> row), count (rows), evicted (rows dropped since the last reset), seq (statements
seen: the recency of a row), next_id, id_step (the workers), max_rows.
]]

local normalize = require("lib.normalize").normalize
local resultset = require("lib.resultset")
local timestamp = require("lib.json").timestamp

local pairs = pairs
local math_floor, math_min, math_max, math_log, math_exp = math.floor, math.min, math.max, math.log, math.exp
local string_format = string.format
local table_sort, table_concat = table.sort, table.concat
local text = resultset.text

local M = {}

-- Views and hosts named per line (the busiest first); more are counted, not named.
local MAX_VIEWS = 16
local MAX_HOSTS = 16

-- PROXY LOG DIGEST ... ORDER BY word -> the field it orders by (busiest first).
M.orders = {sum = "sum_us", count = "count", max = "max_us", rows = "rows", errors = "errors"}

-- `worker` of `workers` (instrumented-proxy's proxy.worker and proxy.workers; 1 of 1 under mysql-proxy 0.8.5).
function M.new(max_rows, worker, workers)
  workers = workers or 1
  return {entries = {}, by_id = {}, count = 0, evicted = 0, seq = 0, next_id = (worker or 1) - workers,
          id_step = workers, max_rows = max_rows}
end

-- Every row gone (PROXY LOG RESET); ids go on counting, so an old id never names a new row.
function M.reset(dg)
  dg.entries = {}
  dg.by_id = {}
  dg.count = 0
  dg.evicted = 0
end

-- Coarse log buckets: four per doubling.
local LOG_STEP = math_log(2) / 4
local function bucket(us)
  if us < 1 then return 0 end
  return math_floor(math_log(us) / LOG_STEP) + 1
end
local function bucket_top(b)
  if b == 0 then return 0 end
  return math_floor(math_exp(b * LOG_STEP))
end

-- The least recently seen quarter goes.
local function evict(dg)
  local list, n = {}, 0
  local entries, by_id = dg.entries, dg.by_id
  for key, d in pairs(entries) do
    n = n + 1
    list[n] = {key, d.seen}
  end
  table_sort(list, function(a, b) return a[2] < b[2] end)
  local drop = math_max(1, math_floor(n / 4))
  for i = 1, drop do
    local key = list[i][1]
    by_id[entries[key].id] = nil
    entries[key] = nil
  end
  dg.count = n - drop
  dg.evicted = dg.evicted + drop
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

-- One statement (its text as logged, the comment off and secrets masked) at second `now`: `us` the response
-- time, `failed` whether it failed, `view` the Django view or nil, `host` the client's host (no port) or nil,
-- `sample` the statement as it ran when it may be kept for EXPLAIN (else nil). Returns the row's id, and whether
-- `query` is plain JSON text (lib/normalize.lua: the log line quotes it as it is).
function M.add(dg, query, db, user, now, us, rows, affected, failed, warnings, view, host, sample)
  local digest_text, plain = normalize(query)
  local key = digest_text .. "\0" .. (db or "") .. "\0" .. (user or "") .. "\0" .. (host or "")
  local entries = dg.entries
  local d = entries[key]
  local seq = dg.seq + 1
  dg.seq = seq
  if d == nil then
    if dg.count >= dg.max_rows then evict(dg) end
    local id = dg.next_id + (dg.id_step or 1)
    dg.next_id = id
    d = {text = digest_text, db = db, user = user, host = host, id = id, count = 0, sum_us = 0, min_us = us,
         max_us = 0, rows = 0, affected = 0, errors = 0, warnings = 0, first_seen = now, buckets = {}, sample_us = -1}
    entries[key] = d
    dg.by_id[id] = d
    dg.count = dg.count + 1
  end
  d.seen = seq
  d.last_seen = now
  d.count = d.count + 1
  d.sum_us = d.sum_us + us
  if us > d.max_us then d.max_us = us end
  if us < d.min_us then d.min_us = us end
  d.rows = d.rows + rows
  if affected then d.affected = d.affected + affected end
  if failed then d.errors = d.errors + 1 end
  d.warnings = d.warnings + warnings
  local b = bucket(us)
  local buckets = d.buckets
  buckets[b] = (buckets[b] or 0) + 1
  if view then count_view(d, view) end
  if sample and us >= d.sample_us then
    d.sample = sample
    d.sample_us = us
  end
  return d.id, plain
end

-- Lines: the rows of one statement, schema and user merged (one host's rows alone when `host` is given). --------

local SUMMED = {"count", "sum_us", "rows", "affected", "errors", "warnings"}

local function add_counts(counts, from, other)
  if from == nil then return other end
  for name, c in pairs(from) do counts[name] = (counts[name] or 0) + c end
  return other
end

local function merge(line, d)
  for i = 1, #SUMMED do
    local name = SUMMED[i]
    line[name] = line[name] + d[name]
  end
  if d.min_us < line.min_us then line.min_us = d.min_us end
  if d.max_us > line.max_us then line.max_us = d.max_us end
  if d.first_seen < line.first_seen then line.first_seen = d.first_seen end
  if d.last_seen > line.last_seen then line.last_seen = d.last_seen end
  for b, c in pairs(d.buckets) do line.buckets[b] = (line.buckets[b] or 0) + c end
  line.other_views = add_counts(line.views, d.views, line.other_views + (d.other_views or 0))
  line.hosts[d.host or ""] = (line.hosts[d.host or ""] or 0) + d.count
  if d.sample and d.sample_us > line.sample_us then
    line.sample, line.sample_us, line.sample_id = d.sample, d.sample_us, d.id
  end
  if d.seen > line.seen then line.seen = d.seen end
end

local function new_line(d)
  return {text = d.text, db = d.db, user = d.user, id = d.id, count = 0, sum_us = 0, min_us = d.min_us, max_us = 0,
          rows = 0, affected = 0, errors = 0, warnings = 0, first_seen = d.first_seen, last_seen = d.last_seen,
          buckets = {}, views = {}, other_views = 0, hosts = {}, sample_us = -1, seen = 0}
end

-- The time the digest holds: {sum_us, first, last, span} over every row (span: seconds from its first statement
-- to its last, at least 1).
local function totals_of(dg)
  local total, first, last = 0, nil, nil
  for _, d in pairs(dg.entries) do
    total = total + d.sum_us
    if first == nil or d.first_seen < first then first = d.first_seen end
    if last == nil or d.last_seen > last then last = d.last_seen end
  end
  local span = 1
  if first then span = math_max(1, last - first) end
  return {sum_us = total, first = first, last = last, span = span}
end

-- The digest's lines by `order` (a key of M.orders; by total time when nil), busiest first, of one client host
-- when `host` is given.
function M.lines(dg, order, host)
  local field = M.orders[order or "sum"]
  local by_key, list = {}, {}
  for _, d in pairs(dg.entries) do
    if host == nil or d.host == host then
      local key = d.text .. "\0" .. (d.db or "") .. "\0" .. (d.user or "")
      local line = by_key[key]
      if line == nil then
        line = new_line(d)
        line.key = key
        by_key[key] = line
        list[#list + 1] = line
      end
      merge(line, d)
    end
  end
  table_sort(list, function(a, b)
    local x, y = a[field], b[field]
    if x ~= y then return x > y end
    return a.key < b.key
  end)
  return list
end

-- The line whose rows include the row numbered `id` (merged like DIGEST shows it), or nil.
function M.line_of(dg, id)
  local d = dg.by_id[id]
  if d == nil then return nil end
  local lines = M.lines(dg)
  for i = 1, #lines do
    if lines[i].text == d.text and lines[i].db == d.db and lines[i].user == d.user then return lines[i], i end
  end
  return nil
end

-- The time below which a fraction q of the line's statements took (from its buckets, within min and max).
local function quantile(line, q)
  local list = {}
  for b, c in pairs(line.buckets) do list[#list + 1] = {b, c} end
  table_sort(list, function(x, y) return x[1] < y[1] end)
  local need, seen = line.count * q, 0
  for i = 1, #list do
    seen = seen + list[i][2]
    if seen >= need then return math_min(line.max_us, math_max(line.min_us, bucket_top(list[i][1]))) end
  end
  return line.max_us
end

-- The distribution as pt-query-digest draws it: counts per decade, 1 us, 10 us, ... 1 s, 10 s and more (each
-- bucket counted in the decade of its middle: a bucket that straddles a decade's edge counts on one side).
local DECADE_STEP = math_log(10)
local function histogram(line)
  local decades = {0, 0, 0, 0, 0, 0, 0, 0}
  for b, c in pairs(line.buckets) do
    local i = 1
    if b > 0 then i = math_min(8, math_max(1, math_floor(((b - 0.5) * LOG_STEP) / DECADE_STEP) + 1)) end
    decades[i] = decades[i] + c
  end
  return table_concat(decades, " ")
end

-- "name (count), ..." busiest first, "..." when more were counted than named; nil when none.
local function named(counts, other, show_counts, most)
  local list = {}
  for name, c in pairs(counts) do list[#list + 1] = {name, c} end
  if #list == 0 then return nil end
  table_sort(list, function(x, y)
    if x[2] ~= y[2] then return x[2] > y[2] end
    return x[1] < y[1]
  end)
  local names = {}
  for i = 1, math_min(#list, most) do
    names[i] = show_counts and (list[i][1] .. " (" .. list[i][2] .. ")") or list[i][1]
  end
  if #list > most or (other or 0) > 0 then names[#names + 1] = "..." end
  return text(table_concat(names, ", "))
end

local T_STRING, T_NUMBER, T_DOUBLE = proxy.MYSQL_TYPE_STRING, proxy.MYSQL_TYPE_LONGLONG, proxy.MYSQL_TYPE_DOUBLE
local FIELDS = {{"digest", T_STRING}, {"db", T_STRING}, {"user", T_STRING}, {"count", T_NUMBER},
  {"first_seen", T_STRING}, {"last_seen", T_STRING}, {"sum_us", T_NUMBER}, {"min_us", T_NUMBER},
  {"max_us", T_NUMBER}, {"avg_us", T_NUMBER}, {"p95_us", T_NUMBER}, {"rows_sent", T_NUMBER},
  {"rows_affected", T_NUMBER}, {"errors", T_NUMBER}, {"warnings", T_NUMBER}, {"views", T_STRING},
  {"p50_us", T_NUMBER}, {"p99_us", T_NUMBER}, {"load", T_DOUBLE}, {"share_pct", T_DOUBLE},
  {"histogram", T_STRING}, {"hosts", T_STRING}, {"id", T_NUMBER}, {"explain", T_STRING}}

-- PROXY LOG DIGEST: the n top lines by `order` (a key of M.orders; by total time when nil), of one client host
-- when `host` is given, as the result set.
function M.result(dg, n, order, host)
  local lines, totals = M.lines(dg, order, host), totals_of(dg)
  local rows = {}
  for i = 1, math_min(n, #lines) do
    local d = lines[i]
    local share = 0
    if totals.sum_us > 0 then share = d.sum_us * 100 / totals.sum_us end
    local id = d.sample_id or d.id
    rows[i] = {text(d.text), text(d.db), text(d.user), d.count, timestamp(d.first_seen), timestamp(d.last_seen),
               d.sum_us, d.min_us, d.max_us, math_floor(d.sum_us / d.count + 0.5), quantile(d, 0.95), d.rows,
               d.affected, d.errors, d.warnings, named(d.views, d.other_views, false, MAX_VIEWS), quantile(d, 0.5),
               quantile(d, 0.99), string_format("%.6f", d.sum_us / 1e6 / totals.span), string_format("%.4f", share),
               histogram(d), named(d.hosts, 0, true, MAX_HOSTS), id, d.sample and "yes" or nil}
  end
  return resultset.send(FIELDS, rows)
end

-- STATUS's totals: the digest's time, the span it covers (seconds) and its load.
function M.totals(dg)
  local totals = totals_of(dg)
  return totals.sum_us, totals.first and totals.span or 0, string_format("%.6f", totals.sum_us / 1e6 / totals.span)
end

return M
