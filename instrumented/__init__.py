"""django-instrumented: see what a Django site does in production, with DEBUG off."""

__version__ = "0.1.0"
