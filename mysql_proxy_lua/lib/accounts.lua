--[[
lib/accounts.lua - lists of MySQL accounts (PROXY_LOG_ADMINS, PROXY_LOG_VIEW_ACCOUNTS; Lua 5.1).

An entry is "user" (that user at any host) or "user@host", exactly as CURRENT_USER() shows the account
(dba@localhost, dba@%, dba@10.0.0.%); "*" is any account where the list allows it. A list keeps the user
parts apart (names), so that a name a client claims can be turned away with one table look-up before the
server is asked which account it authenticated.
]]

local string_gmatch, string_match = string.gmatch, string.match

local M = {}

-- The list in text (comma- or blank-separated): {names, users, accounts, any}.
function M.parse(text, any_allowed)
  local list = {names = {}, users = {}, accounts = {}, any = false}
  for entry in string_gmatch(text, "[^,%s]+") do
    if entry == "*" and any_allowed then
      list.any = true
    else
      local user = string_match(entry, "^(.*)@[^@]*$")
      if user then
        list.accounts[entry] = true
      else
        user = entry
        list.users[entry] = true
      end
      if user ~= "" then list.names[user] = true end
    end
  end
  return list
end

-- The user part of an account as CURRENT_USER() shows it ("user@host"), or nil.
function M.user(account)
  return string_match(account, "^(.*)@[^@]*$")
end

-- The authenticated account (CURRENT_USER(), "user@host") is in the list.
function M.listed(list, account)
  if list.any or list.accounts[account] then return true end
  local user = M.user(account)
  return user ~= nil and user ~= "" and list.users[user] == true
end

return M
