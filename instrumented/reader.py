"""Public path of :func:`read_stats` (``from instrumented.reader import read_stats``); the code lives in
:mod:`instrumented.stats.reader`."""

from .stats.reader import read_stats

__all__ = ["read_stats"]
