"""Public path of ``DEFAULT_EXCEPTION_REPORTER_FILTER = "instrumented.reporter.StrictExceptionReporterFilter"``.

The code lives in :mod:`instrumented.errors.reporter`.
"""

from .errors.reporter import BoundedExceptionReporter, StrictExceptionReporterFilter

__all__ = ["BoundedExceptionReporter", "StrictExceptionReporterFilter"]
