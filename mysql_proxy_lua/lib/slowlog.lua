--[[
lib/slowlog.lua - entries in MySQL's slow-log format (Lua 5.1; uses lib/json.lua's UTF-8 check).

As MariaDB writes them, plus Percona's Rows_affected/Last_errno and a View line that pt-query-digest reads
as attributes (--group-by View). Nothing a client sends can break the layout:

- Readers (pt-query-digest, mysqldumpslow) split events on ";\n#" and take the lines before the statement
  that start with "#", "use " or "SET timestamp=" as its attributes; pt-query-digest also drops mysqld's
  start-up banner lines ("Tcp port: ...", "Time  Id  Command", "/usr/sbin/mysqld, Version: ...") anywhere.
  So every line of the statement, its first included, that could read as one of those is indented by a
  blank (SQL does not care), and carriage returns become line feeds first (a lone "\r" would hide a line
  from one reader and show it to the next).
- A value in a header line (user, host, schema, view, route) is one word: blanks, control characters and
  brackets become "_", and so does a colon at its end ("x:" would take the next attribute's name as value).
]]

local string_byte, string_find, string_format, string_gsub, string_lower, string_match, string_sub =
  string.byte, string.find, string.format, string.gsub, string.lower, string.match, string.sub
local table_concat, tostring, os_date = table.concat, tostring, os.date
local valid_utf8 = require("lib.json").valid_utf8

local M = {}

-- First words of the lines a reader takes for a header, in any case (not every reader is pt-query-digest); SET
-- only with the variables readers look for.
local HEADER_WORDS = {use = true, tcp = true, time = true}
local SET_HEADERS = {timestamp = true, insert_id = true, last_insert_id = true}

-- Could the line that starts at i be read as a header (with mysqld's banner in the text: any line not
-- starting with a blank)?
local function header_like(s, i, banner)
  local b = string_byte(s, i)
  if b == nil or b <= 32 then return false end
  if b == 35 or banner then return true end -- "#"
  local word = string_match(s, "^%a+", i)
  if word == nil then return false end
  word = string_lower(word)
  if word == "set" then
    local name = string_match(s, "^[Ss][Ee][Tt]%s+([%w_]+)", i)
    return name ~= nil and SET_HEADERS[string_lower(name)] == true
  end
  return HEADER_WORDS[word] == true
end

-- The statement as the slow log shows it: valid UTF-8, lines that could read as headers indented, ending in ";".
function M.statement(query)
  local text = valid_utf8(query)
  if string_find(text, "\r", 1, true) then text = string_gsub(string_gsub(text, "\r\n", "\n"), "\r", "\n") end
  local banner = string_find(text, "mysqld,", 1, true) ~= nil
  local out, n, from, i = nil, 0, 1, 1
  while true do
    if header_like(text, i, banner) then
      out = out or {}
      out[n + 1], out[n + 2] = string_sub(text, from, i - 1), " "
      n = n + 2
      from = i
    end
    local nl = string_find(text, "\n", i, true)
    if not nl then break end
    i = nl + 1
  end
  if out then
    out[n + 1] = string_sub(text, from)
    text = table_concat(out)
  end
  if string_byte(text, -1) ~= 59 then text = text .. ";" end
  return text
end

-- One word of a header line.
function M.word(v)
  if v == nil or v == "" then return "" end
  local w = string_gsub(valid_utf8(tostring(v)), "[%s%c%[%]]", "_")
  if string_byte(w, -1) == 58 then w = string_sub(w, 1, -2) .. "_" end
  return w
end

local word = M.word
local time_of, time_text = nil, nil

-- An entry: e = {time (os.time), user (authenticated; nil: unknown), claimed_user, host, thread_id, db,
-- errno, seconds, rows, affected, bytes (the result's size as the proxy relayed it; nil: not known), view, route,
-- query}.
function M.entry(e)
  local view_line = ""
  if e.view or e.route then
    view_line = "# View: " .. word(e.view or "-") .. "  Route: " .. word(e.route or "-") .. "\n"
  end
  local host = word(e.host)
  local user = e.user
  if user == nil then user = "?" end
  if e.time ~= time_of then time_of, time_text = e.time, os_date("!%Y-%m-%dT%H:%M:%S.000000Z", e.time) end
  return string_format("# Time: %s\n# User@Host: %s[%s] @ %s [%s]\n# Thread_id: %s  Schema: %s  Last_errno: %d"
    .. "  Killed: 0\n# Query_time: %.6f  Lock_time: 0.000000  Rows_sent: %d  Rows_examined: 0  Rows_affected: %d%s\n"
    .. "%sSET timestamp=%d;\n%s\n",
    time_text, word(user), word(e.claimed_user), host, host,
    tostring(e.thread_id or 0), word(e.db), e.errno, e.seconds, e.rows, e.affected or 0,
    e.bytes and string_format("  Bytes_sent: %d", e.bytes) or "", view_line, e.time,
    M.statement(e.query))
end

return M
