"""Public path of ``handler500 = "instrumented.views.server_error"``.

The code lives in :mod:`instrumented.errors.views`.
"""

from .errors.views import server_error

__all__ = ["server_error"]
