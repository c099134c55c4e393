"""Per-view stats, in the order data flows: probe → aggregate → snapshot → flusher → (memcached) → reader."""


def install() -> None:
    """The stats probes, once (from ``AppConfig.ready``): the SQL hook on every connection (those already open and
    each new one), the exception-class receiver, the cache, outgoing-HTTP and template probes."""
    from django.core.signals import got_request_exception
    from django.db.backends.signals import connection_created

    from . import cache, http, templates
    from .probe import install_on_existing, on_connection_created, on_request_exception

    connection_created.connect(on_connection_created, dispatch_uid="instrumented.sql_hook")
    got_request_exception.connect(on_request_exception, dispatch_uid="instrumented.exception_class")
    install_on_existing()
    cache.install()  # cache calls per view and alias
    http.install()  # outgoing HTTP per view and origin
    templates.install()  # template renders: the slowest requests' timelines, template time per view
