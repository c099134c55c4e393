--[[
lib/sqlcomment.lua - the Django view in a sqlcommenter comment at the end of a statement (Lua 5.1).

Django's SQL_COMMENT (and other sqlcommenter integrations) end a statement with
/*view='shop%3Abook',route='books%2F%3Cint%3Abook_id%3E%2F'*/: "key='URL-encoded value'" pairs; "controller" is
read as the view too. split() cuts such a comment off, so that the statement is logged and normalised
without it. Parsed comments are cached (a site has few distinct views; at most 1000 kept, then started afresh).
]]

local json_value = require("lib.json").value

local string_byte, string_char, string_find, string_gmatch, string_gsub, string_sub =
  string.byte, string.char, string.find, string.gmatch, string.gsub, string.sub
local tonumber, math_max = tonumber, math.max

local M = {}

local function unescape(s)
  if not string_find(s, "%", 1, true) then return s end
  return (string_gsub(s, "%%(%x%x)", function(h) return string_char(tonumber(h, 16)) end))
end

local cache, cached = {}, 0

-- query -> the query without the comment, view, route (nil when there is none) and both as JSON members
-- ('"view":...,"route":...'); a query without such a comment comes back alone.
function M.split(query)
  local last = #query
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
  local parsed = cache[comment]
  if parsed == nil then
    local kv = {}
    for k, v in string_gmatch(comment, "(%w+)%s*=%s*'([^']*)'") do kv[k] = unescape(v) end
    local view, route = kv.view or kv.controller, kv.route
    parsed = {view or false, route or false, '"view":' .. json_value(view) .. ',"route":' .. json_value(route)}
    if cached >= 1000 then cache, cached = {}, 0 end
    cache[comment] = parsed
    cached = cached + 1
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

return M
