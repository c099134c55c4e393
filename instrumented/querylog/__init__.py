"""The DBA side in Django: the MySQL proxy's query log (control client, panel views, urls).

The client's functions are re-exported here (``instrumented.querylog.log_on(...)``, as documented).
"""

from .client import QueryLogError, digest, log_off, log_on, querylog_alias, reset, status, tail

__all__ = ["QueryLogError", "digest", "install", "log_off", "log_on", "querylog_alias", "reset", "status", "tail"]


def install() -> None:
    """The view comment on the proxied aliases' statements (from ``AppConfig.ready``, after the stats hook, so it is
    the innermost wrapper: SQL_COMMENT)."""
    from django.db.backends.signals import connection_created

    from . import sqlcomment

    connection_created.connect(sqlcomment.on_connection_created, dispatch_uid="instrumented.sql_comment")
    sqlcomment.install_on_existing()
