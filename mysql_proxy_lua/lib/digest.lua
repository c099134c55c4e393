--[[
lib/digest.lua - the digest of PROXY LOG DIGEST: one row per normalised statement, schema and user (Lua 5.1).

Each row counts executions, first/last seen, the sum/min/max of the response time and a coarse p95 (log
buckets, four per doubling: about +-10 %), rows sent and affected, errors, warnings, and the Django views that
sent it (the busiest MAX_VIEWS named, the rest counted). It holds at most max_rows rows: when it is full the
least recently seen quarter goes (one sort per max_rows / 4 new rows), counted in `evicted`, so a flood of
distinct statements cannot grow the proxy.

The digest is a table kept in proxy.global (shared by every connection): new() makes it. Its fields: entries
(key -> row), count (rows), evicted (rows dropped since the last reset), seq (statements seen: the recency
of a row), max_rows.
]]

local normalize = require("lib.normalize").normalize
local resultset = require("lib.resultset")
local timestamp = require("lib.json").timestamp

local pairs = pairs
local math_floor, math_min, math_max, math_log, math_exp = math.floor, math.min, math.max, math.log, math.exp
local table_sort, table_concat = table.sort, table.concat
local text = resultset.text

local M = {}

-- Views remembered per row (the busiest first); more are counted, not named.
local MAX_VIEWS = 16

-- PROXY LOG DIGEST ... ORDER BY word -> the field it orders by (busiest first).
M.orders = {sum = "sum_us", count = "count", max = "max_us", rows = "rows", errors = "errors"}

function M.new(max_rows)
  return {entries = {}, count = 0, evicted = 0, seq = 0, max_rows = max_rows}
end

-- Every row gone (PROXY LOG RESET).
function M.reset(dg)
  dg.entries = {}
  dg.count = 0
  dg.evicted = 0
end

-- Coarse log buckets for the p95: four per doubling.
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
  local entries = dg.entries
  for key, d in pairs(entries) do
    n = n + 1
    list[n] = {key, d.seen}
  end
  table_sort(list, function(a, b) return a[2] < b[2] end)
  local drop = math_max(1, math_floor(n / 4))
  for i = 1, drop do entries[list[i][1]] = nil end
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
-- time, `failed` whether it failed, `view` the Django view or nil.
function M.add(dg, query, db, user, now, us, rows, affected, failed, warnings, view)
  local digest_text = normalize(query)
  local key = digest_text .. "\0" .. (db or "") .. "\0" .. (user or "")
  local entries = dg.entries
  local d = entries[key]
  local seq = dg.seq + 1
  dg.seq = seq
  if d == nil then
    if dg.count >= dg.max_rows then evict(dg) end
    d = {text = digest_text, db = db, user = user, count = 0, sum_us = 0, min_us = us, max_us = 0, rows = 0,
         affected = 0, errors = 0, warnings = 0, first_seen = now, buckets = {}}
    entries[key] = d
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

local T_STRING, T_NUMBER = proxy.MYSQL_TYPE_STRING, proxy.MYSQL_TYPE_LONGLONG
local FIELDS = {{"digest", T_STRING}, {"db", T_STRING}, {"user", T_STRING}, {"count", T_NUMBER},
  {"first_seen", T_STRING}, {"last_seen", T_STRING}, {"sum_us", T_NUMBER}, {"min_us", T_NUMBER},
  {"max_us", T_NUMBER}, {"avg_us", T_NUMBER}, {"p95_us", T_NUMBER}, {"rows_sent", T_NUMBER},
  {"rows_affected", T_NUMBER}, {"errors", T_NUMBER}, {"warnings", T_NUMBER}, {"views", T_STRING}}

-- PROXY LOG DIGEST: the n top rows by `order` (a key of M.orders; by total time when nil), as the result set.
function M.result(dg, n, order)
  local field = M.orders[order or "sum"]
  local list = {}
  for key, d in pairs(dg.entries) do list[#list + 1] = {key, d} end
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
  return resultset.send(FIELDS, rows)
end

return M
