"""django-instrumented: see what a Django site does in production, with DEBUG off."""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``instrumented.record``, imported on first use so that importing the package stays light."""
    if name == "record":
        from .recording import record

        return record
    raise AttributeError(f"module 'instrumented' has no attribute {name!r}")
