"""The MySQL Proxy 0.8 scripting API on lupa's Lua 5.1: the ``proxy`` table, the sandboxed runtime."""
