"""The DBA side in Django: the MySQL proxy's query log (control client, panel views, urls).

The client's functions are re-exported here (``instrumented.querylog.log_on(...)``, as documented).
"""

from .client import QueryLogError, digest, log_off, log_on, querylog_alias, reset, status, tail

__all__ = ["QueryLogError", "digest", "log_off", "log_on", "querylog_alias", "reset", "status", "tail"]
