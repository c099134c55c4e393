"""Demo-only session engine: the database engine, except that a store marked ``broken`` fails like a dead backend."""

from typing import Any

from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore


class SessionBackendDown(ConnectionError):
    """What a session backend raises when its server is unreachable."""


class SessionStore(DatabaseSessionStore):
    """Database sessions; ``broken = True`` (set by ``LateFaultMiddleware``) makes every load fail."""

    broken = False

    def load(self) -> dict[str, Any]:
        if self.broken:
            raise SessionBackendDown("session backend unavailable (demo fault)")
        return super().load()
