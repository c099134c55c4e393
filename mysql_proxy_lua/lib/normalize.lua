--[[
lib/normalize.lua - statement fingerprints for the digest (Lua 5.1, no dependencies).

In the spirit of pt-query-digest: comments dropped, string/number/hex literals become ?, IN (...)
and multi-row VALUES lists collapse to one group, whitespace collapses, everything is lower-cased.
Cheap enough to run on every logged statement; the result is capped in length.
]]

local string_find, string_sub, string_gsub, string_lower, string_byte = string.find, string.sub, string.gsub,
  string.lower, string.byte
local table_concat = table.concat

local M = {}

M.max_length = 1024

-- Numbers (decimal, float, hex) that are not part of an identifier become ?.
local function numbers(text)
  return (string_gsub(text, "%f[%w_$.]%d[%w.]*", "?"))
end

-- Find where a quoted literal starting at pos (the quote) ends; backslash escapes and doubled quotes.
local function quote_end(sql, pos, q)
  local i = pos + 1
  while true do
    local s = string_find(sql, q == "'" and "['\\]" or (q == '"' and '["\\]' or "`"), i)
    if not s then return #sql end
    local c = string_sub(sql, s, s)
    if c == "\\" and q ~= "`" then
      i = s + 2
    elseif string_sub(sql, s + 1, s + 1) == q then
      i = s + 2
    else
      return s
    end
  end
end

local function normalize(sql)
  -- Only string literals and comments need a scanner; everything else is a few gsubs over the whole text.
  local out, n, pos, len = {}, 0, 1, #sql
  while pos <= len do
    local s = string_find(sql, "['\"/#%-]", pos)
    if not s then
      n = n + 1 out[n] = string_sub(sql, pos)
      break
    end
    local c = string_sub(sql, s, s)
    local nxt = string_sub(sql, s + 1, s + 1)
    if c == "'" or c == '"' then
      n = n + 1 out[n] = string_sub(sql, pos, s - 1)
      n = n + 1 out[n] = "?"
      pos = quote_end(sql, s, c) + 1
    elseif c == "/" and nxt == "*" then
      local _, e = string_find(sql, "*/", s + 2, true)
      n = n + 1 out[n] = string_sub(sql, pos, s - 1) .. " "
      pos = (e or len) + 1
    elseif c == "#" or (c == "-" and nxt == "-" and string_find(string_sub(sql, s + 2, s + 2), "^[%s]")) then
      local e = string_find(sql, "\n", s, true)
      n = n + 1 out[n] = string_sub(sql, pos, s - 1) .. " "
      pos = (e or len) + 1
    else
      n = n + 1 out[n] = string_sub(sql, pos, s)
      pos = s + 1
    end
  end
  local text = string_lower(table_concat(out))
  if string_find(text, "%d") then text = numbers(text) end
  text = string_gsub(text, "%s+", " ")
  if string_byte(text, 1) == 32 then text = string_sub(text, 2) end
  local last = string_byte(text, -1)
  while last == 32 or last == 59 do -- trailing blanks and ;
    text = string_sub(text, 1, -2)
    last = string_byte(text, -1)
  end
  if string_find(text, "?", 1, true) then
    -- IN (?, ?, ?) and VALUES (?, ?), (?, ?) collapse to one group.
    text = string_gsub(text, "%(%s*%?[%s,%?]*%)", function(group)
      if string_find(group, ",", 1, true) then return "(?+)" end
    end)
    if string_find(text, "values", 1, true) then
      local count
      repeat
        text, count = string_gsub(text, "(values%s*%b())%s*,%s*%b()", "%1")
      until count == 0
    end
  end
  if #text > M.max_length then text = string_sub(text, 1, M.max_length) .. "..." end
  return text
end

-- Statements repeat (session set-up, health checks, ORM queries with the same values): remember recent ones.
local cache, cached = {}, 0
M.cache_size = 2000

function M.normalize(sql)
  local text = cache[sql]
  if text then return text end
  text = normalize(sql)
  if #sql <= 4096 then
    if cached >= M.cache_size then cache, cached = {}, 0 end
    cache[sql] = text
    cached = cached + 1
  end
  return text
end

return M
