"""The demo shop."""

import time
from typing import Any

from django.apps import AppConfig
from django.db.backends.signals import connection_created


def demo_sleep(seconds: float) -> float:
    """SQL ``demo_sleep(seconds)`` for SQLite, which has no SLEEP(): the demo's slow query."""
    time.sleep(min(float(seconds), 2.0))
    return seconds


def add_sleep_function(sender: Any, connection: Any, **kwargs: Any) -> None:
    if connection.vendor == "sqlite":
        connection.connection.create_function("demo_sleep", 1, demo_sleep)


class ShopConfig(AppConfig):
    name = "shop"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        connection_created.connect(add_sleep_function, dispatch_uid="shop.demo_sleep")
