"""A MySQL protocol proxy that runs MySQL Proxy 0.8 Lua scripts on lupa's Lua 5.1 (see mysql_proxy_lua/README.md)."""
