"""The memcached value codec: JSON (never pickle), compressed when large, inflated within a limit; no I/O.

Kept apart from the client (as pymemcache keeps ``serde`` apart from its clients): the writers pack, the readers
unpack values they do not trust, and neither needs a connection to do so.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

#: Values larger than this are zlib-compressed before they are stored.
COMPRESS_OVER = 1024
#: memcached's default item limit is 1 MiB; stay well below it.
MAX_VALUE_BYTES = 900 * 1024

#: Largest value unpack() inflates: memcached is not trusted, a compressed bomb must not exhaust memory.
MAX_UNPACKED_BYTES = 64 * 1024 * 1024

_PLAIN = b"j"
_ZLIB = b"z"


def pack(obj: Any) -> bytes:
    """JSON (never pickle: memcached is not a trusted store), compressed when large."""
    return pack_bytes(dumps(obj))


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON (a lone surrogate, from raw SQL built from bad input, becomes "?")."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "replace")


def pack_bytes(raw: bytes) -> bytes:
    """Already-encoded JSON bytes as a stored value, compressed when large."""
    if len(raw) > COMPRESS_OVER:
        return _ZLIB + zlib.compress(raw, 6)
    return _PLAIN + raw


class ValueTooLarge(ValueError):
    """A stored value inflates past the caller's limit: not something this package wrote, or over a budget."""


def inflate(data: bytes, limit: int = MAX_UNPACKED_BYTES) -> bytes | None:
    """The JSON bytes of a packed value (None when it is not one); raises ValueTooLarge past ``limit``."""
    kind, body = data[:1], data[1:]
    if kind == _ZLIB:
        inflater = zlib.decompressobj()
        try:
            body = inflater.decompress(body, limit)
        except zlib.error:
            return None
        if inflater.unconsumed_tail or (len(body) >= limit and not inflater.eof):
            raise ValueTooLarge(f"inflates past {limit} bytes")
    elif kind != _PLAIN:
        return None
    elif len(body) > limit:
        raise ValueTooLarge(f"{len(body)} bytes, over {limit}")
    return body


def unpack(data: bytes | None, limit: int = MAX_UNPACKED_BYTES) -> Any:
    """Inverse of :func:`pack`; None for missing, unreadable or too large (past ``limit``) values."""
    if not data:
        return None
    try:
        body = inflate(data, limit)
        return None if body is None else json.loads(body.decode("utf-8"))
    except (ValueError, zlib.error, UnicodeDecodeError, RecursionError):
        return None
