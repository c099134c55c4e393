"""App configuration: register the checks and call each feature's ``install()``."""

from __future__ import annotations

from django.apps import AppConfig


class InstrumentedConfig(AppConfig):
    """django-instrumented's app."""

    name = "instrumented"
    verbose_name = "Instrumented"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """One ``install()`` per feature, each idempotent; the order matters only where said."""
        from . import (
            checks,  # noqa: F401 - registers the system checks
            errors,
            profiling,
            querylog,
            recording,
            stats,
        )

        stats.install()  # SQL hook, exception class, cache, HTTP and template probes
        querylog.install()  # the view comment, after the stats hook: the innermost wrapper (SQL_COMMENT)
        errors.install()  # error references
        recording.install()  # commands, Celery and django.tasks tasks
        profiling.install()  # arms learnt and armed profiles written at each flush
