"""The stats bookmarklet: the built overlay code (shipped in the package) with the mount path baked in.

``bookmarklet/build.py`` minifies ``bookmarklet/overlay.js`` into :data:`BUILT_PATH`; serving only
substitutes the dashboard's mount path and percent-encodes, so no build tool is needed at run time.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from urllib.parse import quote

from django.urls import reverse

#: Where the built code lives inside the package (under templates/, which the package data ships).
BUILT_PATH = "templates/instrumented/dashboard/bookmarklet.min.js"
#: The JS string literal in overlay.js that is replaced by the mount path (as a JSON string).
MOUNT_PLACEHOLDER = "'__INSTRUMENTED_MOUNT__'"
#: Characters left as they are in the javascript: URL (encodeURI's set, minus '#'): everything else is %-encoded.
URL_SAFE = ";/?:@&=+$,-_.!~*'()"


def encode(code: str) -> str:
    """``javascript:`` + the percent-encoded code (``%``, ``#``, spaces, quotes and braces never appear raw)."""
    return "javascript:" + quote(code, safe=URL_SAFE)


@functools.cache
def built_code() -> str:
    """The minified overlay, as shipped in the package."""
    return resources.files("instrumented").joinpath(BUILT_PATH).read_text(encoding="utf-8").strip()


def bake(code: str, mount: str) -> str:
    """Put the mount path into ``code`` as a JSON (hence JS-safe) string literal."""
    if MOUNT_PLACEHOLDER not in code:
        raise ValueError("the bookmarklet code has no mount placeholder")
    return code.replace(MOUNT_PLACEHOLDER, json.dumps(mount))


@functools.lru_cache(maxsize=32)
def href_for(mount: str) -> str:
    """The ``javascript:`` URL of the overlay for a dashboard mounted at ``mount`` (cached per mount)."""
    return encode(bake(built_code(), mount))


def href() -> str:
    """The bookmarklet for this site: the mount comes from ``reverse()``, so it includes any script prefix."""
    return href_for(reverse("instrumented:dashboard"))
