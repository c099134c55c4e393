"""The WSGI environ of one in-process GET, shared by the benchmarks that call the site's handler directly."""

from __future__ import annotations

from io import BytesIO
from typing import Any


def environ(path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A GET of ``path`` (``headers``: extra CGI-style keys such as ``HTTP_COOKIE``)."""
    env: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "SERVER_NAME": "bench",
        "SERVER_PORT": "80",
        "wsgi.input": BytesIO(b""),
        "wsgi.url_scheme": "http",
        "QUERY_STRING": "",
    }
    if headers:
        env.update(headers)
    return env
