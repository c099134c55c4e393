--[[
lib/statements.lua - what a statement's text tells before it runs, without parsing SQL (Lua 5.1).

query_log.lua asks the server who and where a connection is (SELECT CURRENT_USER(), DATABASE()) before the
statements it logs. Two kinds of statement change that: one that may switch the schema with USE (asked
again after it), and one that reads what the previous statement left (FOUND_ROWS() and the like), which a
question injected before it would change (put off).
]]

local string_byte, string_find, string_lower = string.byte, string.find, string.lower

local M = {}

-- Statements that read what the previous statement left, which a query injected before them would change:
-- FOUND_ROWS(), ROW_COUNT(), GET DIAGNOSTICS, and (in MySQL) SHOW WARNINGS / ERRORS and their counts.
local DIAGNOSTICS = {"found_rows", "row_count", "diagnostics", "warning", "error"}

function M.reads_diagnostics(text)
  local lower = string_lower(text)
  for i = 1, #DIAGNOSTICS do
    if string_find(lower, DIAGNOSTICS[i], 1, true) then return true end
  end
  return false
end

-- Does a statement start at i of the lower-cased COM_QUERY packet with USE (blanks and comments skipped;
-- an executable comment's inside is code)?
local function use_at(lower, i)
  while true do
    local _, e = string_find(lower, "^%s+", i)
    if e then i = e + 1 end
    local c, nxt = string_byte(lower, i, i + 1)
    if c == 47 and nxt == 42 then -- "/*"
      local third, fourth = string_byte(lower, i + 2, i + 3)
      if third == 33 or (third == 109 and fourth == 33) then -- "/*!", "/*M!", then a version
        _, e = string_find(lower, "^!%d*", i + (third == 33 and 2 or 3))
        i = e + 1
      else
        _, e = string_find(lower, "*/", i + 2, true)
        if not e then return false end
        i = e + 1
      end
    elseif c == 35 or (c == 45 and nxt == 45) then -- "#", "--": to the end of the line
      e = string_find(lower, "\n", i, true)
      if not e then return false end
      i = e + 1
    else
      return string_find(lower, "^use%f[^%w_$]", i) ~= nil
    end
  end
end

-- Could this COM_QUERY packet change the schema with USE (as its first statement or after a ";")? Over-eager
-- on purpose (a ";" in a literal counts): a false alarm costs one question to the server, a missed USE would
-- file statements under the wrong schema, past a DB filter. The caller rules out most statements first: a
-- first byte that is a letter other than U or a digit, and no ";".
function M.may_use(packet)
  local lower = string_lower(packet)
  if not string_find(lower, "use", 2, true) then return false end
  local i = 2
  while i do
    if use_at(lower, i) then return true end
    local semi = string_find(lower, ";", i, true)
    i = semi and semi + 1
  end
  return false
end

return M
