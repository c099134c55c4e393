"""Tasks of Django 6's ``django.tasks`` for tests/test_recording.py (imported only under Django 6)."""

from __future__ import annotations

from django.db import connection
from django.tasks import task  # type: ignore[import-not-found,unused-ignore]


@task
def refresh_prices() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.execute("SELECT 2")
    return "done"


@task
def send_invoice() -> None:
    raise ConnectionError("smtp down")
