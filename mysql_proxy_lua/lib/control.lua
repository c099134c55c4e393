--[[
lib/control.lua - the PROXY LOG control statements: recognised, parsed, refused (Lua 5.1).

  PROXY LOG ON [seconds] [SLOW ms] [USER name] [DB name] [ERRORS] [SAMPLE fraction]
  PROXY LOG OFF   PROXY LOG STATUS   PROXY LOG TAIL [n]   PROXY LOG RESET
  PROXY LOG DIGEST [n] [ORDER BY sum|count|max|rows|errors] [HOST client-host]
  PROXY LOG EXPLAIN [n | ID id]

is() tells a control statement from the first bytes of a COM_QUERY packet (every statement goes through it:
one byte compared for most); parse() reads one into a command table, or says what is wrong with it, for
usage_error(). Longer statements than MAX_BYTES are never parsed (the longest valid one is far shorter).
query_log.lua carries them out; who may is its business (README.md, "Who may switch logging").
]]

local resultset = require("lib.resultset")
local orders = require("lib.digest").orders

local string_byte, string_find, string_format, string_gmatch, string_lower, string_match, string_sub, string_upper =
  string.byte, string.find, string.format, string.gmatch, string.lower, string.match, string.sub, string.upper
local tonumber, next = tonumber, next
local table_concat = table.concat
local math_floor, math_min = math.floor, math.min

local M = {}

M.MAX_BYTES = 256
local MAX_BYTES = M.MAX_BYTES
-- Rows of TAIL and DIGEST without a count.
local DEFAULT_ROWS = 20

local USAGE = "PROXY LOG ON [seconds] [SLOW ms] [USER name] [DB name] [ERRORS] [SAMPLE fraction] | OFF | STATUS"
  .. " | TAIL [n] | DIGEST [n] [ORDER BY sum|count|max|rows|errors] [HOST name] | EXPLAIN [n | ID id] | RESET"

-- "PROXY LOG" followed by a blank, ";" or the end, within the first MAX_BYTES bytes of a COM_QUERY packet.
function M.is(packet)
  local b = string_byte(packet, 2)
  if b ~= 80 and b ~= 112 and not (b and b <= 32) then return false end -- P, p, or a blank first
  local head = string_sub(packet, 2, MAX_BYTES + 2)
  local _, e = string_find(head, "^%s*[Pp][Rr][Oo][Xx][Yy]%s+[Ll][Oo][Gg]")
  if not e then return false end
  local c = string_byte(head, e + 1)
  return c == nil or c == 59 or c <= 32
end

function M.usage_error(message)
  return resultset.error(message .. "; usage: " .. USAGE, 1064, "42000")
end

-- The caller is not one of PROXY_LOG_ADMINS (`why`: how it was found out, or nil).
function M.denied(why)
  return resultset.error("Access denied; PROXY LOG is only for the users in PROXY_LOG_ADMINS" .. (why or ""),
    1227, "42000")
end

local function positive_int(word)
  if word == nil then return nil end
  if not string_find(word, "^%d+$") then return false end
  local v = tonumber(word)
  if v == nil or v < 1 then return false end
  return v
end

-- A name as typed: bare, or in `back quotes` or 'quotes'.
local function unquoted(word)
  return string_match(word, "^`(.*)`$") or string_match(word, "^'(.*)'$") or word
end

-- PROXY LOG ON's arguments (words[4..], as typed): seconds, then filters in any order.
local function switch_on(words, settings)
  local i, seconds = 4, nil
  if words[i] and string_find(words[i], "^[%d%-]") then
    seconds = positive_int(words[i])
    if not seconds then
      return nil, "PROXY LOG ON takes a number of seconds >= 1 (at most " .. settings.max_seconds .. ")"
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
      if arg == nil then return nil, "PROXY LOG ON ... " .. string_upper(word) .. " needs a value" end
      -- Plain decimals (0.5, .5, 10): no signs, exponents or hex.
      local decimal = (string_find(arg, "^%d*%.?%d*$") and string_find(arg, "%d")) and tonumber(arg) or nil
      if word == "slow" then
        if decimal == nil then return nil, "SLOW takes milliseconds >= 0" end
        f.slow_us = math_floor(decimal * 1000 + 0.5)
      elseif word == "sample" then
        local fraction = decimal
        if fraction == nil or fraction <= 0 or fraction > 1 then return nil, "SAMPLE takes a fraction > 0 and <= 1" end
        if fraction < 1 then f.sample = fraction end
      else
        f[word] = unquoted(arg)
      end
      i = i + 2
    else
      return nil, "unknown PROXY LOG ON filter " .. words[i]
    end
  end
  if f.slow_us == nil and settings.default_slow_us > 0 then f.slow_us = settings.default_slow_us end
  if f.slow_us == 0 then f.slow_us = nil end
  if next(f) == nil then f = nil end
  return {verb = "on", seconds = math_min(seconds or settings.default_seconds, settings.max_seconds), filter = f}
end

-- DIGEST's arguments after the row count (words[i..]): ORDER BY and HOST, in any order.
local function digest_options(words, i, command)
  while words[i] do
    local word = string_lower(words[i])
    if word == "order" then
      if command.order or string_lower(words[i + 1] or "") ~= "by" or not orders[string_lower(words[i + 2] or "")] then
        return nil, "PROXY LOG DIGEST [n] ORDER BY takes sum, count, max, rows or errors"
      end
      command.order = string_lower(words[i + 2])
      i = i + 3
    elseif word == "host" then
      if command.host or words[i + 1] == nil then return nil, "PROXY LOG DIGEST [n] HOST takes a client host" end
      command.host = unquoted(words[i + 1])
      i = i + 2
    else
      return nil, "too many arguments"
    end
  end
  return command
end

-- A control statement (at most MAX_BYTES bytes: the caller checked) -> a command, or nil and what is wrong:
-- {verb = "on", seconds, filter = {slow_us, user, db, errors, sample} or nil}, {verb = "tail", rows},
-- {verb = "digest", rows, order, host}, {verb = "explain", rank or id}, {verb = "off" | "status" | "reset"}.
-- Row counts are capped by the ring's and the digest's sizes (settings, see lib/settings.lua).
function M.parse(query, settings)
  local words = {}
  for w in string_gmatch(query, "[^%s;]+") do words[#words + 1] = w end
  if string_find(query, ";", 1, true) and not string_find(query, "^[^;]*;[%s;]*$") then
    return nil, "PROXY LOG takes one statement"
  end
  local verb, arg = string_lower(words[3] or ""), words[4]
  if verb == "on" then return switch_on(words, settings) end
  if verb == "tail" or verb == "digest" then
    local n = positive_int(arg)
    if verb == "digest" and arg and not string_find(arg, "^%d") then n = nil end
    if n == false then return nil, "PROXY LOG " .. string_upper(verb) .. " takes a row count >= 1" end
    local rest = n and 5 or 4
    if verb == "tail" then
      if words[rest] then return nil, "too many arguments" end
      return {verb = verb, rows = math_min(n or DEFAULT_ROWS, settings.ring_size)}
    end
    return digest_options(words, rest, {verb = verb, rows = math_min(n or DEFAULT_ROWS, settings.max_digests)})
  end
  if verb == "explain" then
    local by_id = arg and string_lower(arg) == "id"
    local n = positive_int(by_id and words[5] or arg)
    if n == false or (by_id and n == nil) then
      return nil, by_id and "PROXY LOG EXPLAIN ID takes a digest row id (DIGEST's id column)"
        or "PROXY LOG EXPLAIN takes the rank of a digest row >= 1 (1: the heaviest)"
    end
    if words[by_id and 6 or 5] then return nil, "too many arguments" end
    if by_id then return {verb = verb, id = n} end
    return {verb = verb, rank = n or 1}
  end
  if arg ~= nil then return nil, "PROXY LOG " .. string_upper(verb) .. " takes no argument" end
  if verb == "off" or verb == "status" or verb == "reset" then return {verb = verb} end
  return nil, "unknown PROXY LOG command"
end

-- A filter of PROXY LOG ON as STATUS shows it: "slow 10 ms, user app, errors, sample 0.1".
function M.filter_text(f)
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

return M
