"""Error references: capture and store tracebacks, scrub secrets, answer handler500 and the lookup pages."""


def install() -> None:
    """Error references (from ``AppConfig.ready``): the capture receiver on ``got_request_exception``."""
    from .capture import connect_receivers

    connect_receivers()
