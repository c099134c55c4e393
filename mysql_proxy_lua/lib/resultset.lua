--[[
lib/resultset.lua - answering the client from Lua (proxy.response) and reading injected packets.

send() builds a text result set, error() a MySQL ERR packet; both return proxy.PROXY_SEND_RESULT so
a read_query hook can `return resultset.send(...)`; text() makes a cell valid UTF-8 (the results declare
utf8mb4). Works with MySQL Proxy 0.8 and the host.
]]

local string_byte = string.byte
local tostring = tostring
local valid_utf8 = require("lib.json").valid_utf8

local M = {}

-- fields = {{"name", proxy.MYSQL_TYPE_STRING}, ...}; rows = {{v1, v2, ...}, ...} (nil = NULL).
function M.send(fields, rows)
  local f = {}
  for i = 1, #fields do
    f[i] = {name = fields[i][1], type = fields[i][2] or proxy.MYSQL_TYPE_STRING}
  end
  proxy.response = {type = proxy.MYSQLD_PACKET_OK, resultset = {fields = f, rows = rows}}
  return proxy.PROXY_SEND_RESULT
end

function M.error(message, code, sqlstate)
  proxy.response = {type = proxy.MYSQLD_PACKET_ERR, errmsg = tostring(message), errcode = code or 1105,
                    sqlstate = sqlstate or "HY000"}
  return proxy.PROXY_SEND_RESULT
end

-- A cell's text: valid UTF-8 whatever the statements held (invalid bytes become U+FFFD); nil stays NULL.
function M.text(v)
  if v == nil then return nil end
  return valid_utf8(tostring(v))
end

-- Little-endian unsigned integer of `size` bytes at `pos` (1-based) of a packet string.
function M.uint(s, pos, size)
  local v, mul = 0, 1
  for i = pos, pos + size - 1 do
    v = v + (string_byte(s, i) or 0) * mul
    mul = mul * 256
  end
  return v
end

-- The statement id of a COM_STMT_EXECUTE/CLOSE packet, or of a COM_STMT_PREPARE OK (raw result).
function M.stmt_id(packet)
  return M.uint(packet, 2, 4)
end

return M
