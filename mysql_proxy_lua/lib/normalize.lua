--[[
lib/normalize.lua - statement fingerprints for the digest (Lua 5.1, no dependencies).

In the spirit of pt-query-digest: comments dropped, string/number/hex literals become ?, IN (...) lists
(any length) and multi-row VALUES lists collapse to one group, savepoint names become ?, whitespace
collapses, everything is lower-cased.
Cheap enough to run on every logged statement: every step is one linear pass (a 1 MB VALUES list
costs no more per byte than a short one); the result is capped in length.

mask_secrets() replaces the passwords of IDENTIFIED BY '...', IDENTIFIED VIA ... USING '...',
PASSWORD('...'), SET PASSWORD ... = '...' (and any literal right after a word ending in "password")
with '***', for the log line and the ring; comments between the words and the literal do not hide it.
]]

local string_find, string_sub, string_gsub, string_lower, string_byte = string.find, string.sub, string.gsub,
  string.lower, string.byte
local table_concat = table.concat
local math_max = math.max

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

-- VALUES (a), (b), (c) -> VALUES (a), in one pass: each group is scanned once, and an unbalanced group ends
-- the collapsing (it would be scanned to the end of the text again for every later VALUES).
local function one_values_group(text)
  local out, n, pos = {}, 0, 1
  while true do
    local _, open = string_find(text, "values%s*%(", pos)
    if not open then break end
    local _, close = string_find(text, "^%b()", open)
    if not close then break end
    n = n + 1 out[n] = string_sub(text, pos, close)
    pos = close + 1
    while true do
      local _, comma = string_find(text, "^%s*,%s*%(", pos)
      if not comma then break end
      local _, e = string_find(text, "^%b()", comma)
      if not e then break end
      pos = e + 1
    end
  end
  if n == 0 then return text end
  n = n + 1 out[n] = string_sub(text, pos)
  return table_concat(out)
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
  local last = #text
  while true do -- trailing blanks and ; (one cut, not one copy per character)
    local b = string_byte(text, last)
    if b ~= 32 and b ~= 59 then break end
    last = last - 1
  end
  if last < #text then text = string_sub(text, 1, last) end
  if string_find(text, "?", 1, true) then
    -- IN (?), IN (?, ?, -?) (any length, the same row) and VALUES (?, ?), (?, ?) collapse to one group.
    if string_find(text, "in", 1, true) then
      text = string_gsub(text, "%f[%w_$]in %(%s*%-?%?[%s,%?%-]*%)", "in (?+)")
      text = string_gsub(text, "%f[%w_$]in%(%s*%-?%?[%s,%?%-]*%)", "in(?+)")
    end
    text = string_gsub(text, "%(%s*%?[%s,%?]*%)", function(group)
      if string_find(group, ",", 1, true) then return "(?+)" end
    end)
    if string_find(text, "values", 1, true) then text = one_values_group(text) end
  end
  -- Savepoint names are unique per use (Django: s140234_x1): one row for each kind of statement.
  local first, second = string_byte(text, 1, 2)
  if (first == 115 and second == 97) or (first == 114 and (second == 101 or second == 111)) then -- sa, re, ro
    text = string_gsub(text, "^savepoint [^ ]+$", "savepoint ?")
    text = string_gsub(text, "^release savepoint [^ ]+$", "release savepoint ?")
    text = string_gsub(text, "^rollback to savepoint [^ ]+$", "rollback to savepoint ?")
    text = string_gsub(text, "^rollback to [^ ]+$", "rollback to savepoint ?")
  end
  if #text > M.max_length then text = string_sub(text, 1, M.max_length) .. "..." end
  return text
end

-- A literal is a secret when the code before it (since the previous literal, lower-cased, comments as
-- blanks) ends like one of these ("using" only counts in statements that say "identified"), or when it
-- directly follows a secret (adjacent literals are one string in SQL).
local SECRET_BEFORE = {"password`?[%s=(]*$", "identified%s+by%s*$"}
local USING_BEFORE = "using%s*$"

-- The position after the comment that starts at s, or nil when none does. An executable comment
-- (/*!...*/, /*M!...*/) is code for the server: only its opener is skipped.
local function comment_end(sql, s, len)
  local c, nxt = string_byte(sql, s, s + 1)
  if c == 47 then -- "/"
    if nxt ~= 42 then return nil end
    local third, fourth = string_byte(sql, s + 2, s + 3)
    if third == 33 then return s + 3 end
    if (third == 77 or third == 109) and fourth == 33 then return s + 4 end
    local _, e = string_find(sql, "*/", s + 2, true)
    return (e or len) + 1
  end
  if c == 35 or (c == 45 and nxt == 45 and (string_byte(sql, s + 2) or 32) <= 32) then -- "#", "-- "
    local e = string_find(sql, "\n", s, true)
    return (e or len) + 1
  end
  return nil
end

function M.mask_secrets(sql)
  local lower = string_lower(sql)
  local identified = string_find(lower, "identified", 1, true)
  if not identified and not string_find(lower, "password", 1, true) then return sql end
  -- SET PASSWORD [FOR 'user'@'host'] = '...': every literal after the first "=".
  local eq_at = string_find(lower, "^%s*set%s+password") and string_find(lower, "=", 1, true) or nil
  local len = #sql
  local out, n, copied = {}, 0, 1
  local code, c, from, pos = {}, 0, 1, 1 -- the code since the previous literal, in pieces of `lower`
  local follows_secret = false
  while true do
    local s = string_find(sql, "['\"`/#%-]", pos)
    if not s then break end
    local ch = string_byte(sql, s)
    local after = comment_end(sql, s, len)
    if after then
      c = c + 1 code[c] = string_sub(lower, from, s - 1) .. " "
      from, pos = after, after
    elseif ch == 96 then -- an `identifier` is code (`password` = '...'); a quote inside it starts nothing
      pos = quote_end(sql, s, "`") + 1
    elseif ch == 39 or ch == 34 then
      local q = ch == 39 and "'" or '"'
      local e = quote_end(sql, s, q)
      c = c + 1 code[c] = string_sub(lower, from, s - 1)
      local before = table_concat(code, "", 1, c)
      if #before > 64 then before = string_sub(before, -64) end
      local secret = (eq_at ~= nil and s > eq_at) or (follows_secret and not string_find(before, "%S"))
        or (identified ~= nil and string_find(before, USING_BEFORE) ~= nil)
      for i = 1, #SECRET_BEFORE do
        if secret then break end
        secret = string_find(before, SECRET_BEFORE[i]) ~= nil
      end
      if secret then
        n = n + 1 out[n] = string_sub(sql, copied, s) .. "***"
        if e > s and string_sub(sql, e, e) == q then n = n + 1 out[n] = q end
        copied = e + 1
      end
      follows_secret = secret
      c, from, pos = 0, e + 1, e + 1
    else
      if ch == 47 and string_byte(sql, s - 1) == 42 then -- the "*/" of an executable comment: a blank
        c = c + 1 code[c] = string_sub(lower, from, s - 2) .. " "
        from = s + 1
      end
      pos = s + 1
    end
  end
  if n == 0 then return sql end
  n = n + 1 out[n] = string_sub(sql, copied)
  return table_concat(out)
end

-- Statements repeat (session set-up, health checks, ORM queries with the same values): remember recent ones.
-- More often they repeat with other numbers (a lookup by id, sysbench's point selects): the statement with its
-- numbers as ? (its shape: one gsub, a fraction of a normalisation) finds the fingerprint of an earlier one of the
-- same shape. Numbers become ? in the fingerprint anyway, wherever they are (a literal or a comment is ? or
-- dropped whatever digits it holds, and no digit starts or ends one), so statements of one shape have one
-- fingerprint. Only the shape is kept for those: they do not fill the cache of whole statements.
-- Whether the statement is plain JSON text (printable ASCII but " and \: json.string() quotes it as it is) is
-- remembered with it, and with its shape too (what the shape replaced are letters, digits and dots): the log line
-- of a statement already seen, or of one of a known shape, needs no scan of its own.
local cache, cached, escaped = {}, 0, {}
local shapes, shaped, escaped_shapes = {}, 0, {}
M.cache_size = 2000

local PLAIN_JSON = "^[ !#-[%]^-~]*$" -- as lib/json.lua's string()

-- sql's fingerprint, and whether sql is plain JSON text (true) or not (false).
function M.normalize(sql)
  local text = cache[sql]
  if text then return text, not escaped[sql] end
  local shape, numbers_seen = sql, 0
  if #sql <= 4096 then
    shape, numbers_seen = string_gsub(sql, "%f[%w_$.]%d[%w.]*", "?")
    if numbers_seen > 0 then
      text = shapes[shape]
      if text then return text, not escaped_shapes[shape] end
    end
  end
  text = normalize(sql)
  local plain = string_find(sql, PLAIN_JSON) ~= nil
  if #sql <= 4096 then
    if numbers_seen > 0 then
      if shaped >= M.cache_size then shapes, shaped, escaped_shapes = {}, 0, {} end
      shapes[shape] = text
      if not plain then escaped_shapes[shape] = true end
      shaped = shaped + 1
    end
    if cached >= M.cache_size then cache, cached, escaped = {}, 0, {} end
    cache[sql] = text
    if not plain then escaped[sql] = true end
    cached = cached + 1
  end
  return text, plain
end

return M
