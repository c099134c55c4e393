"""The MySQL servers a proxy sends clients to, and which of them are down for now."""

from __future__ import annotations

import time
from dataclasses import dataclass

#: A backend that refused a connection is skipped for this long (unless it is the only choice).
DOWN_RETRY_SECONDS = 5.0


@dataclass
class Backend:
    """One MySQL server the proxy can send clients to (``proxy.connection.backend_ndx`` is 1-based)."""

    index: int
    host: str
    port: int
    connected_clients: int = 0
    down_since: float = 0.0

    @property
    def name(self) -> str:
        """``host:port``."""
        return f"{self.host}:{self.port}"

    def mark_down(self) -> None:
        """Connecting failed: skip for a while."""
        self.down_since = time.monotonic()

    def mark_up(self) -> None:
        """Connecting worked."""
        self.down_since = 0.0

    @property
    def is_down(self) -> bool:
        """Down and not yet due for a retry."""
        return bool(self.down_since) and time.monotonic() - self.down_since < DOWN_RETRY_SECONDS
