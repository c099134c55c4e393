--[[
lib/json.lua - JSON encoding for log lines (Lua 5.1, no dependencies).

Only what the query log writes: strings (invalid UTF-8 bytes become U+FFFD so every line is valid
JSON), numbers, booleans, nil (null) and objects with a fixed key order, so lines read well with
tail -f and parse with any JSON reader; and the log's timestamps.
]]

local string_format, string_byte, string_char, string_find, string_gsub = string.format, string.byte, string.char,
  string.find, string.gsub
local table_concat, math_floor, math_huge = table.concat, math.floor, math.huge
local type, tostring, setmetatable = type, tostring, setmetatable
local os_date = os.date

local M = {}

local escapes = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
}
for i = 0, 31 do
  local c = string_char(i)
  if not escapes[c] then escapes[c] = string_format("\\u%04x", i) end
end
escapes[string_char(127)] = "\\u007f"

-- Replace bytes that are not part of a well-formed UTF-8 sequence with U+FFFD.
local function valid_utf8(s)
  if not string_find(s, "[\128-\255]") then return s end
  local out, n, i, len = {}, 0, 1, #s
  while i <= len do
    local c = string_byte(s, i)
    local size = 0
    if c < 0x80 then size = 1
    elseif c >= 0xC2 and c <= 0xDF then size = 2
    elseif c >= 0xE0 and c <= 0xEF then size = 3
    elseif c >= 0xF0 and c <= 0xF4 then size = 4
    end
    local ok = size > 0 and i + size - 1 <= len
    if ok then
      for j = i + 1, i + size - 1 do
        local b = string_byte(s, j)
        if b < 0x80 or b > 0xBF then ok = false break end
      end
      if ok and size == 3 then
        local b = string_byte(s, i + 1)
        if (c == 0xE0 and b < 0xA0) or (c == 0xED and b > 0x9F) then ok = false end
      elseif ok and size == 4 then
        local b = string_byte(s, i + 1)
        if (c == 0xF0 and b < 0x90) or (c == 0xF4 and b > 0x8F) then ok = false end
      end
    end
    n = n + 1
    if ok then
      out[n] = s:sub(i, i + size - 1)
      i = i + size
    else
      out[n] = "\239\191\189"
      i = i + 1
    end
  end
  return table_concat(out)
end
M.valid_utf8 = valid_utf8

function M.string(s)
  s = tostring(s)
  -- Printable ASCII but " and \ from the start to the end: one anchored match, whose class is tried byte after
  -- byte in one C loop (an unanchored search starts the matcher again at every byte: several times the cost).
  if string_find(s, "^[ !#-[%]^-~]*$") then return '"' .. s .. '"' end
  s = valid_utf8(s)
  return '"' .. string_gsub(s, '[%c"\\]', escapes) .. '"'
end

function M.number(v)
  if v ~= v or v == math_huge or v == -math_huge then return "null" end
  if v == math_floor(v) and v > -1e15 and v < 1e15 then return string_format("%d", v) end
  return string_format("%.17g", v)
end

function M.value(v)
  local t = type(v)
  if t == "string" then return M.string(v) end
  if t == "number" then return M.number(v) end
  if t == "boolean" then return v and "true" or "false" end
  return "null"
end

local time_of, time_text = nil, nil

-- The log's time of second t (os.time()): ISO 8601 in UTC, "2026-11-28T04:01:40Z" (the last one kept).
function M.timestamp(t)
  if t ~= time_of then time_of, time_text = t, os_date("!%Y-%m-%dT%H:%M:%SZ", t) end
  return time_text
end

-- Encoded '"key":' prefixes, per keys array (the log always uses the same one).
local prefixes = setmetatable({}, {__mode = "k"})

-- Encode an object whose keys come in the given order: keys = {"a", "b"}, values = {a = 1, b = 2}.
function M.object(keys, values)
  local pre = prefixes[keys]
  if pre == nil then
    pre = {}
    for i = 1, #keys do pre[i] = (i == 1 and "{" or ",") .. M.string(keys[i]) .. ":" end
    prefixes[keys] = pre
  end
  local parts = {}
  local value = M.value
  for i = 1, #keys do
    parts[i] = pre[i] .. value(values[keys[i]])
  end
  parts[#keys + 1] = "}"
  return table_concat(parts)
end

return M
