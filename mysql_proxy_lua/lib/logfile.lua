--[[
lib/logfile.lua - the query log's file: buffered whole lines, rotation followed, a size cap (Lua 5.1).

Lines are buffered (a write per statement costs more than the rest of the logging), whole lines per write
so that a reader never sees half a line. The file is closed and opened again at most once a second while
statements come (so a rotated file - moved away or truncated - is followed within a second), on every PROXY
LOG statement and when logging stops; the instrumented-proxy host also flushes it every second when traffic
stops. C stdio gives a file a buffer of the file system's block size, whatever setvbuf asks (glibc), so 4 KB
is assumed: flushed before a line would not fit, and at once after a longer line.

The file never grows past its cap: a line that would not fit is not written (counted in `unwritten`, said by
describe()), and the file is looked at again a second later (rotated: written again).

The file's state is a table kept in proxy.global (shared by every connection: one file per proxy):
new() makes it. Its fields: file (open or nil), error (why it cannot be written, until retry()), full_at (the
second the cap was reached), unwritten (lines not written since the count was reset), and the writer's own
opened_at, buffered, size.
]]

local io = io
local pcall, tostring = pcall, tostring
local string_format = string.format

local M = {}

local BUFFER = 4096

function M.new()
  return {file = nil, error = nil, opened_at = 0, buffered = 0, size = 0, full_at = nil, unwritten = 0}
end

-- Flushed and closed; opened again by the next line.
local function close(log)
  if log.file then
    pcall(log.file.close, log.file)
    log.file = nil
  end
end
M.close = close

-- A file that could not be written (or was full) is tried again with the next line; unwritten lines are
-- counted afresh when `recount`.
function M.retry(log, recount)
  log.error = nil
  log.full_at = nil
  if recount then log.unwritten = 0 end
end

-- The function that writes a line (with its "\n") at second `now` to `path`, at most `max_bytes` in all.
function M.writer(log, path, max_bytes)
  return function(line, now)
    if log.file and now ~= log.opened_at then close(log) end
    if not log.file then
      if log.error or log.full_at == now then
        log.unwritten = log.unwritten + 1
        return
      end
      local f, err = io.open(path, "a")
      if not f then
        log.error = tostring(err)
        log.unwritten = log.unwritten + 1
        return
      end
      if f.setvbuf then f:setvbuf("full", BUFFER) end
      log.opened_at = now
      log.file = f
      log.buffered = 0
      log.size = f:seek("end") or 0
      log.full_at = nil
    end
    local size = #line
    local total = log.size + size
    if total > max_bytes then
      log.full_at = now
      log.unwritten = log.unwritten + 1
      close(log)
      return
    end
    log.size = total
    local f = log.file
    local buffered = log.buffered + size
    if buffered > BUFFER then
      f:flush()
      buffered = size
    end
    local ok, err = f:write(line)
    if ok and buffered >= BUFFER then
      ok, err = f:flush()
      buffered = 0
    end
    log.buffered = buffered
    if not ok then
      log.error = tostring(err)
      close(log)
    end
  end
end

-- The file as PROXY LOG STATUS shows it: its name, and why lines are not written.
function M.describe(log, path, max_file_mb)
  local text = path
  if log.error then
    text = text .. " (cannot write: " .. log.error .. ")"
  elseif log.full_at then
    text = text .. string_format(" (full: PROXY_LOG_MAX_FILE_MB = %g reached; written again once it is rotated)",
      max_file_mb)
  end
  local unwritten = log.unwritten
  if unwritten > 0 then
    text = text .. "; " .. unwritten .. (unwritten == 1 and " entry" or " entries") .. " not written"
  end
  return text
end

return M
