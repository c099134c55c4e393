"""MySQL Proxy 0.8 Lua scripts shipped with django-instrumented (package data)."""
