--[[
lib/settings.lua - query_log.lua's settings, read from the PROXY_LOG_* environment variables (Lua 5.1).

read() is called by the script for every new connection (a module is loaded once per process, the script is
run per connection), so the settings are what the environment says when a connection starts. A value that
is not a number >= 0 falls back to its default. See README.md, "Environment variables".
]]

local accounts = require("lib.accounts")

local tonumber = tonumber
local string_lower = string.lower
local math_floor, math_max, math_min, math_huge = math.floor, math.max, math.min, math.huge

local M = {}

-- os.getenv is looked up when read() runs: a host may give the script its own (the instrumented-proxy sandbox).
local function getenv(name)
  return os.getenv(name)
end

local function number(name, default)
  local v = tonumber(getenv(name) or "")
  if v == nil or v < 0 then return default end
  return math_floor(v)
end

local function text(name, default)
  local v = getenv(name)
  if v == nil or v == "" then return default end
  return v
end

-- Megabytes (fractions too): as given, and as bytes (0 = no limit).
local function megabytes(name, default)
  local v = tonumber(getenv(name) or "")
  if v == nil or v < 0 then v = default end
  if v == 0 then return v, math_huge end
  return v, math_floor(v * 1048576)
end

function M.read()
  local s = {}
  s.slowlog = string_lower(text("PROXY_LOG_FORMAT", "json")) == "slowlog"
  s.log_file = text("PROXY_LOG_FILE", s.slowlog and "query_log.slow.log" or "query_log.jsonl")
  s.max_seconds = math_max(1, number("PROXY_LOG_MAX_SECONDS", 3600))
  s.default_seconds = math_min(300, s.max_seconds)
  s.default_slow_us = number("PROXY_LOG_SLOW_US", 0)
  s.ring_size = math_max(1, number("PROXY_LOG_RING", 1000))
  s.max_digests = math_max(1, number("PROXY_LOG_MAX_DIGESTS", 1000))
  s.max_query = math_max(16, number("PROXY_LOG_MAX_QUERY_LEN", 8192))
  s.explain_seconds = number("PROXY_LOG_EXPLAIN_SECONDS", 2) -- 0: no statement timeout for PROXY LOG EXPLAIN
  s.max_file_mb, s.max_file_bytes = megabytes("PROXY_LOG_MAX_FILE_MB", 1024)
  s.admins = accounts.parse(text("PROXY_LOG_ADMINS", "root"), false)
  -- Unset: any account ("*"); set but empty: none.
  s.view_accounts = accounts.parse(getenv("PROXY_LOG_VIEW_ACCOUNTS") or "*", true)
  return s
end

return M
