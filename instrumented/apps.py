"""App configuration: install the SQL hook and the exception receiver, register the checks."""

from __future__ import annotations

from django.apps import AppConfig
from django.core.signals import got_request_exception
from django.db.backends.signals import connection_created


class InstrumentedConfig(AppConfig):
    """django-instrumented's app."""

    name = "instrumented"
    verbose_name = "Instrumented"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the system checks
        from .errors.capture import connect_receivers
        from .profiling.store import install as install_profiling
        from .querylog import sqlcomment
        from .recording import connect_celery, connect_django_tasks, install_command_recording
        from .stats import cache, http, templates
        from .stats.probe import install_on_existing, on_connection_created, on_request_exception

        connection_created.connect(on_connection_created, dispatch_uid="instrumented.sql_hook")
        # After the stats hook: the view comment is the innermost wrapper (SQL_COMMENT).
        connection_created.connect(sqlcomment.on_connection_created, dispatch_uid="instrumented.sql_comment")
        got_request_exception.connect(on_request_exception, dispatch_uid="instrumented.exception_class")
        install_on_existing()
        sqlcomment.install_on_existing()
        cache.install()  # cache calls per view and alias
        http.install()  # outgoing HTTP per view and origin
        templates.install()  # template renders: the slowest requests' timelines, template time per view
        connect_receivers()  # error references
        install_command_recording()  # command:<name>
        connect_celery()  # task:<name>, when Celery is installed
        connect_django_tasks()  # task:<module.function>, Django 6's django.tasks
        install_profiling()  # arms learnt and armed profiles written at each flush
