"""Send PageView to the "analytics" database, everything else to "default"; never migrate "querylog"."""

from typing import Any


class AnalyticsRouter:
    def _is_analytics(self, model: Any) -> bool:
        return model._meta.app_label == "shop" and model._meta.model_name == "pageview"

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return "analytics" if self._is_analytics(model) else None

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return "analytics" if self._is_analytics(model) else None

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool | None:
        if db == "querylog":  # MariaDB through the proxy, only for PROXY LOG statements: no tables of ours
            return False
        if app_label == "shop" and model_name == "pageview":
            return db == "analytics"
        if db == "analytics":
            return False
        return None
