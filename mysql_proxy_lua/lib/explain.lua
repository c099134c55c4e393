--[[
lib/explain.lua - PROXY LOG EXPLAIN: which sampled statements may be explained, and how (Lua 5.1).

The digest keeps one raw statement per row (the slowest, only in memory, never one holding a password
literal, a cut one or a prepared statement's template: see lib/digest.lua). PROXY LOG EXPLAIN runs
EXPLAIN FORMAT=JSON of that sample on the asking admin's own connection, with their privileges, in the
sample's schema (query_log.lua injects the statements and answers with the plan). Only one plain SELECT is
explained: refusal() reads the sample with a small scanner (literals, quoted names and comments skipped) and
turns away anything else with a reason a DBA can act on. EXPLAIN does not run a SELECT, but a write, an
INTO, a locking clause or a second statement is not what a DBA expects to find there, and an executable
comment (/*! ... */) is code the scanner does not read: all are refused.
]]

local string_byte, string_char, string_find, string_gsub, string_lower, string_sub, string_upper =
  string.byte, string.char, string.find, string.gsub, string.lower, string.sub, string.upper
local pcall, tostring, type = pcall, tostring, type

local M = {}

-- Words that make a SELECT more than a read (outside literals, quoted names and comments), and why.
local WRITES = {update = "it writes (UPDATE)", delete = "it writes (DELETE)", into = "SELECT ... INTO writes",
  procedure = "SELECT ... PROCEDURE runs a procedure", handler = "HANDLER is not a SELECT"}
-- Words that are string functions when "(" follows, statements otherwise.
local FUNCTION_OR_WRITE = {insert = "it writes (INSERT)", replace = "it writes (REPLACE)"}

-- Where the literal or quoted name opened at i (its quote q) ends, or nil when it does not; a backslash escapes
-- the next character when `backslash` (the server's default; NO_BACKSLASH_ESCAPES turns it off).
local function quoted_end(sql, i, q, backslash)
  local pattern = q == 96 and "`" or (q == 39 and "'" or '"')
  if backslash and q ~= 96 then pattern = q == 39 and "['\\]" or '["\\]' end
  local pos = i + 1
  while true do
    local s = string_find(sql, pattern, pos)
    if not s then return nil end
    local c = string_byte(sql, s)
    if c == 92 then -- a backslash escapes the next character (not in `names`)
      pos = s + 2
    elseif string_byte(sql, s + 1) == c then -- a doubled quote
      pos = s + 2
    else
      return s
    end
  end
end

local function refusal(sql, backslash)
  local len = #sql
  local i, first, previous, ended = 1, nil, nil, nil
  while i <= len do
    local c = string_byte(sql, i)
    if c <= 32 then
      i = i + 1
    elseif c == 47 and string_byte(sql, i + 1) == 42 then -- "/*"
      local third, fourth = string_byte(sql, i + 2, i + 3)
      if third == 33 or ((third == 77 or third == 109) and fourth == 33) then
        return "it holds an executable comment (/*! ... */), which is code"
      end
      local _, e = string_find(sql, "*/", i + 2, true)
      if not e then return "it holds an unterminated comment" end
      i = e + 1
    elseif c == 35 or (c == 45 and string_byte(sql, i + 1) == 45 and (string_byte(sql, i + 2) or 32) <= 32) then
      local e = string_find(sql, "\n", i, true)
      i = (e or len) + 1
    elseif c == 39 or c == 34 or c == 96 then -- 'literal', "literal", `name`
      local e = quoted_end(sql, i, c, backslash)
      if not e then return "it holds an unterminated literal" end
      if ended then return "it is more than one statement" end
      previous = nil
      i = e + 1
    elseif c == 59 then -- ";": the statement ends; only blanks, comments and ";" may follow
      ended = ended or i
      i = i + 1
    elseif ended then
      return "it is more than one statement"
    else
      local s, e = string_find(sql, "^[%w_$@]+", i)
      if s then
        local word = string_lower(string_sub(sql, s, e))
        if first == nil then
          first = word
          if word ~= "select" and word ~= "with" then return "it is not a SELECT (it starts with " .. word .. ")" end
        end
        local why = WRITES[word]
        if why then
          if previous == "for" then return "it has a locking clause (FOR " .. string_upper(word) .. ")" end
          return why
        end
        why = FUNCTION_OR_WRITE[word]
        if why and not string_find(sql, "^%s*%(", e + 1) then return why end
        if word == "share" and previous == "for" then return "it has a locking clause (FOR SHARE)" end
        if word == "in" and previous == "lock" then return "it has a locking clause (LOCK IN SHARE MODE)" end
        previous = word
        i = e + 1
      else -- punctuation, "(" before a parenthesised SELECT's first word among it
        previous = nil
        i = i + 1
      end
    end
  end
  if first == nil then return "it is empty" end
  return nil, ended
end

-- Why the statement may not be explained, or nil: one SELECT (or WITH ... SELECT, or a parenthesised one), no
-- write, INTO, locking clause, executable comment or second statement. Read twice: with backslash escapes and
-- without (the sample ran in the application's sql_mode, the EXPLAIN runs in the admin's): 'a\'; DROP ...' is
-- one literal in one mode and a second statement in the other.
-- Also returns the statement as it is explained: cut at its first ";" (what follows is blanks and comments, but
-- the admin's connection may run several statements: nothing after the statement is sent).
function M.refusal(sql)
  local why, ended = refusal(sql, true)
  if why then return why, nil end
  local other
  why, other = refusal(sql, false)
  if why then return why .. " when read without backslash escapes (as under NO_BACKSLASH_ESCAPES)", nil end
  if other and (ended == nil or other < ended) then ended = other end
  if ended then sql = string_sub(sql, 1, ended - 1) end
  return nil, M.body(sql)
end

-- The statement without the blanks and ";" at its end (EXPLAIN ...; would be fine, EXPLAIN ... ; -- x too, but
-- the injected text stays one plain statement).
function M.body(sql)
  local last = #sql
  while last > 0 do
    local b = string_byte(sql, last)
    if b > 32 and b ~= 59 then break end
    last = last - 1
  end
  return string_sub(sql, 1, last)
end

-- The COM_QUERY packet that explains the statement: EXPLAIN FORMAT=JSON, under a statement timeout where the
-- server has one for it (MariaDB's SET STATEMENT max_statement_time; MySQL's MAX_EXECUTION_TIME hint does not
-- cover EXPLAIN, and EXPLAIN does not run the SELECT).
function M.packet(sql, mariadb, seconds)
  local prefix = ""
  if mariadb and seconds and seconds > 0 then
    prefix = "SET STATEMENT max_statement_time=" .. seconds .. " FOR "
  end
  return string_char(3) .. prefix .. "EXPLAIN FORMAT=JSON " .. M.body(sql)
end

-- USE `db` as a COM_QUERY packet (a quote in the name doubled). USE, not COM_INIT_DB: MySQL Proxy 0.8.5 fills a
-- result's status only for COM_QUERY and COM_STMT_EXECUTE.
function M.use(db)
  return string_char(3) .. "USE `" .. string_gsub(db, "`", "``") .. "`"
end

-- The message of a failed injected statement: the host's error_message, else read from the ERR packet (MySQL
-- Proxy 0.8.5 keeps a buffered result's first packet in res.raw: 0xff, code, "#", SQLSTATE, message).
function M.error_of(res)
  local ok, message = pcall(function() return res.error_message end)
  if ok and message then return tostring(message) end
  ok, message = pcall(function() return res.raw end)
  if ok and type(message) == "string" and string_byte(message, 1) == 255 then
    local text = string_sub(message, 4)
    if string_byte(text, 1) == 35 then text = string_sub(text, 7) end
    return text
  end
  return "the server refused it"
end

-- The first column of the first row of a buffered result (every row is read: 0.8.5's iterator wants it).
function M.first_cell(res)
  local cell, seen = nil, false
  for row in res.rows do
    if not seen then cell, seen = row[1], true end
  end
  return cell
end

return M
