"""Secrets out of everything shown or stored: secret names, credentials in URLs, known secret values.

The masking happens in the data (settings, environment, the request's own secret-named parameters,
credentials, cookies, route tokens), before any template runs; never by search-and-replace over HTML.
"""

from __future__ import annotations

import base64
import functools
import itertools
import os
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils.functional import empty

SUBSTITUTE = "********************"

#: Setting, META, environment and dict-key names whose values are hidden (searched, case-insensitive).
HIDDEN_NAMES = re.compile(
    r"API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|COOKIE|DSN|WEBHOOK|PRIVATE|CREDENTIAL|SALT", flags=re.IGNORECASE
)

#: ``scheme://userinfo@`` where userinfo is anything up to the last ``@`` of the authority part.
CREDENTIALS_IN_URL = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<userinfo>[^/\s<>]*@)")

#: Parts of local variable names (split on ``_``) that mark the variable as a secret.
_SECRET_PARTS = frozenset(
    {
        "pass", "password", "passwd", "passphrase", "pwd", "pw", "secret", "secrets", "token", "tokens",
        "apikey", "auth", "authorization", "credential", "credentials", "creds", "private", "privkey",
        "signature", "dsn", "webhook", "cookie", "cookies", "salt", "otp", "sessionid",
    }
)  # fmt: skip
#: A name part ending like this is a secret too (``accesstoken``, ``clientsecret``, ``dbpassword``).
_SECRET_SUFFIXES = ("password", "passwd", "token", "secret", "apikey", "webhook", "credentials")

#: Values that are never treated as secrets when scrubbing by value: dotted paths and plain words.
_HARMLESS_VALUE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+|[a-z_]{1,32}|[A-Z_]{1,32}")
_MIN_SECRET_LENGTH = 8
#: Request values that are not masked by value (issue 17: anyone could send ``?password=shop/views.py`` and
#: blank that text in every stored traceback): a plain word, a name made of words (``get_object``,
#: ``shop.views``: no digits; ``correct-horse-battery`` stays a secret), a path (``shop/views.py``,
#: ``/srv/site/app.py``). The field itself is still hidden by its name; these values are only not searched
#: for elsewhere.
_PLAIN_REQUEST_VALUE = re.compile(
    r"[A-Za-z]+(?:[._][A-Za-z]+)*|/?(?:[A-Za-z_.][\w.-]*/)+[A-Za-z_.][\w.-]*/?|/[A-Za-z_.][\w.-]*/?"
)


def is_plain_value(value: str) -> bool:
    """A request value that cannot be a secret worth searching every text for: short, a plain word, a name or a
    path. Masking such values by value would let whoever sends them blank that text in a traceback."""
    return len(value) < _MIN_SECRET_LENGTH or _PLAIN_REQUEST_VALUE.fullmatch(value) is not None


def is_secret_name(name: object) -> bool:
    """Whether a local variable or parameter called ``name`` should be masked (``api_token``, ``password``)."""
    if not isinstance(name, str):
        return False
    # Digits split parts too ("password1", "new_password2", "pw1"), and are dropped.
    parts = [p for p in re.split(r"[_\W\d]+", name.lower()) if p]
    if any(p in _SECRET_PARTS or p.endswith(_SECRET_SUFFIXES) for p in parts):
        return True
    # "api_key", "signing_key", "access_key": a compound ending in "key" (a bare "key" is usually a dict key).
    return len(parts) > 1 and parts[-1] in ("key", "keys")


def _label(kind: str, name: object) -> str:
    """How a page names a request field that caused a mask (``GET password``): its name cut and printable."""
    text = "".join(c if c.isprintable() else "?" for c in str(name)[:100])
    return f"{kind} {text}"


def route_secrets(request: HttpRequest | None) -> list[tuple[str, str]]:
    """(field, value) of the values captured from the URL path by secret-named route parameters
    (``reset/<uidb64>/<token>/``)."""
    match = getattr(request, "resolver_match", None) if request is not None else None
    if match is None:
        return []
    try:
        return [(_label("URL", name), str(value)) for name, value in match.kwargs.items() if is_secret_name(name)]
    except Exception:  # noqa: BLE001 - an odd resolver match hides nothing more
        return []


def mask_credentials(text: str) -> str:
    """Replace the user:password part of every URL in ``text`` by stars."""
    if "://" not in text:
        return text
    return CREDENTIALS_IN_URL.sub(lambda m: f"{m['scheme']}{SUBSTITUTE}@", text)


def _strings_in(value: Any, depth: int = 0) -> Iterable[str]:
    """The strings inside a setting's value (nested dicts, lists, tuples), bounded in depth."""
    if isinstance(value, str):
        yield value
    elif depth < 4 and isinstance(value, dict):
        for item in value.values():
            yield from _strings_in(item, depth + 1)
    elif depth < 4 and isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _strings_in(item, depth + 1)


def _secret_values() -> set[str]:
    """Values of settings and environment variables that must never be shown, whatever name they appear under."""
    found: set[str] = set()

    def consider(name: str, value: Any) -> None:
        for text in _strings_in(value):
            for match in CREDENTIALS_IN_URL.finditer(text):
                userinfo = match["userinfo"][:-1]
                found.add(userinfo)
                found.update(userinfo.split(":"))
            if HIDDEN_NAMES.search(name):
                found.add(text)

    # The configured settings object itself: LazySettings would warn about deprecated settings on each read.
    wrapped = getattr(settings, "_wrapped", empty)
    source = settings if wrapped is empty else wrapped
    for name in dir(source):
        if name.isupper():
            try:
                consider(name, getattr(source, name))
            except Exception:  # noqa: BLE001 - a lazy setting that fails to evaluate cannot leak either
                continue
    for name, value in os.environ.items():
        consider(name, value)
    return {v for v in found if len(v) >= _MIN_SECRET_LENGTH and not _HARMLESS_VALUE.fullmatch(v)}


def _variants(value: str) -> set[str]:
    """The forms a value takes in data: raw, inside a repr, URL-encoded (``+`` or ``%20`` for spaces)."""
    found = {value, repr(value)[1:-1], quote_plus(value), quote(value)}
    return {v for v in found if len(v) >= _MIN_SECRET_LENGTH}


@functools.lru_cache(maxsize=64)
def _compile(variants: frozenset[str]) -> re.Pattern[str] | None:
    """One alternation of ``variants`` (longest first), compiled once per set: repeated requests cost nothing."""
    if not variants:
        return None
    return re.compile("|".join(re.escape(v) for v in sorted(variants, key=len, reverse=True)))


_known_lock = threading.Lock()
_known: tuple[tuple[int, int], frozenset[str]] | None = None


def _known_variants() -> frozenset[str]:
    """The variants of :func:`_secret_values`, recomputed only when the settings object or the environment changed."""
    global _known
    wrapped = getattr(settings, "_wrapped", empty)
    key = (id(wrapped), hash(frozenset(os.environ.items())))
    cached = _known
    if cached is not None and cached[0] == key:
        return cached[1]
    variants = frozenset(v for value in _secret_values() for v in _variants(value))
    with _known_lock:
        _known = (key, variants)
    return variants


@receiver(setting_changed)
def _forget_known_secrets(**kwargs: Any) -> None:
    """A changed setting may be a secret: recompute the known secrets on next use."""
    global _known
    with _known_lock:
        _known = None


#: Request values considered per request, and the longest form matched whole: attackers choose these, and
#: compiling is linear in their length. Longer values are matched by their first characters (as much as any
#: one place on a page shows).
MAX_REQUEST_SECRETS = 32
_LONGEST_PATTERN = 256
_LONGEST_SECRET = 4096
#: Extra characters masked past a cut, so a secret that straddles it is still found whole.
_MARGIN = 2 * _LONGEST_SECRET


class Masker:
    """Replaces secret values in *data* (strings, containers, repr text), before any template sees it.

    Never used on markup: an attacker chooses request values, and replacing them in HTML would let them
    pick which piece of the page disappears. Known secrets are the values of secret-named settings and
    environment variables, credentials in their URLs, and the request's own (:func:`request_secrets`).
    """

    __slots__ = ("_code", "_labels", "_long", "_pattern", "masked")

    def __init__(self, values: Iterable[str] = (), labels: Mapping[str, str] | None = None) -> None:
        known = _known_variants()
        variants = set(known)
        long: set[str] = set()
        #: Each variant of a request's value -> the request field it came from (``GET password``).
        self._labels: dict[str, str] = {}
        for value in values:
            label = labels.get(value) if labels else None
            for variant in _variants(value[:_LONGEST_SECRET]):
                (variants if len(variant) <= _LONGEST_PATTERN else long).add(variant)
                if label:
                    self._labels.setdefault(variant, label)
        self._pattern = _compile(frozenset(variants))
        self._code = _compile(known)
        self._long = sorted(long, key=len, reverse=True)
        #: The request fields whose values were masked so far (the error's pages say which).
        self.masked: set[str] = set()

    def _substitute(self, match: re.Match[str]) -> str:
        label = self._labels.get(match.group())
        if label:
            self.masked.add(label)
        return SUBSTITUTE

    def text(self, text: str) -> str:
        """``text`` with URL credentials and every secret value replaced by stars."""
        text = mask_credentials(text)
        if self._pattern is not None:
            text = self._pattern.sub(self._substitute if self._labels else SUBSTITUTE, text)
        for value in self._long:
            if value in text:
                text = text.replace(value, SUBSTITUTE)
                label = self._labels.get(value)
                if label:
                    self.masked.add(label)
        return text

    def code(self, text: str) -> str:
        """Text that comes from the site's code (a source line): URL credentials and the settings' and
        environment's secrets masked, never a request's values, which whoever sends them chooses (issue 17)."""
        text = mask_credentials(text)
        return text if self._code is None else self._code.sub(SUBSTITUTE, text)

    def head(self, text: str, limit: int) -> tuple[str, bool]:
        """The masked first ``limit`` characters of ``text`` (masked before cutting), and whether it was cut."""
        if len(text) <= limit:
            return self.text(text), False
        return self.text(text[: limit + _MARGIN])[:limit], True

    def tail(self, text: str, limit: int) -> str:
        """The masked last ``limit`` characters of ``text`` (masked before cutting)."""
        if len(text) <= limit:
            return self.text(text)
        return self.text(text[-(limit + _MARGIN) :])[-limit:]

    def clip(self, text: str, limit: int) -> str:
        """:meth:`head`, marked as trimmed when it was cut."""
        head, cut = self.head(text, limit)
        return f"{head}… <trimmed {len(text)} characters>" if cut else head

    def data(self, value: Any, depth: int = 0) -> Any:
        """A copy of ``value`` with strings masked and secret-named dict keys hidden (plain containers, bounded)."""
        if isinstance(value, str):
            if len(value) > _LONGEST_SHOWN:  # a page shows ~4 KB of any value: mask that, not megabytes
                return self.clip(value, _LONGEST_SHOWN)
            return self.text(value)
        if isinstance(value, bytes):
            value = value[:_LONGEST_SHOWN]
            decoded = value.decode("utf-8", "surrogateescape")
            masked = self.text(decoded)
            return value if masked == decoded else masked.encode("utf-8", "surrogateescape")
        if depth >= 4:
            return value
        kind = type(value)
        if kind is dict:
            return {
                k: SUBSTITUTE if is_secret_key(k) else self.data(v, depth + 1)
                for k, v in itertools.islice(value.items(), _MAX_CONTAINER_ITEMS)
            }
        if kind in (list, tuple, set, frozenset):
            return kind(self.data(v, depth + 1) for v in itertools.islice(value, _MAX_CONTAINER_ITEMS))
        return value


#: The longest string masked whole inside data: a page shows at most 4 KB of any value's repr, and masking a
#: 4 MB local in each of 300 recursive frames cost seconds per error. Longer strings are masked and cut.
_LONGEST_SHOWN = 2 * _LONGEST_SECRET

#: Items of a container that are masked and shown (the page shows the first 40).
_MAX_CONTAINER_ITEMS = 200


def is_secret_key(name: object) -> bool:
    """A parameter, header, cookie, setting or dict key to hide: Django's pattern, the package's and secret names."""
    return isinstance(name, str) and (is_secret_name(name) or HIDDEN_NAMES.search(name) is not None)


def known_masker() -> Masker:
    """A masker of the settings' and environment's secrets only (for what no request is attached to)."""
    return Masker()


def scrub(text: str, extra: Iterable[str] = ()) -> str:
    """Mask credentials in URLs, the known secret values and ``extra`` in plain text (never in HTML)."""
    return Masker(extra).text(text)


def _authorization_parts(value: str) -> list[str]:
    """An Authorization header's credentials: the whole value, the part after the scheme, Basic's password."""
    parts = [value]
    scheme, _, credentials = value.strip().partition(" ")
    credentials = credentials.strip()
    if credentials:
        parts.append(credentials)
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                decoded = ""
            if decoded:
                parts += [decoded, decoded.partition(":")[2]]
    return parts


def _secret_headers(request: HttpRequest) -> Iterable[tuple[str, str]]:
    """Values of secret-named request headers (the parts of an ``Authorization`` header)."""
    for name, value in request.META.items():
        if isinstance(name, str) and name.startswith("HTTP_") and isinstance(value, str) and is_secret_key(name):
            label = _label("header", name[5:].replace("_", "-").title())
            for part in _authorization_parts(value) if name.endswith("AUTHORIZATION") else [value]:
                yield label, part


def _secret_cookies(request: HttpRequest) -> Iterable[tuple[str, str]]:
    """Values of the session and CSRF cookies and of secret-named cookies."""
    own = {getattr(settings, "SESSION_COOKIE_NAME", "sessionid"), getattr(settings, "CSRF_COOKIE_NAME", "")}
    return ((_label("cookie", k), str(v)) for k, v in request.COOKIES.items() if k in own or is_secret_key(k))


def _secret_params(request: HttpRequest) -> Iterable[tuple[str, str]]:
    """Values of secret-named GET/POST fields, and of the POST fields the view marked sensitive."""
    sensitive = getattr(request, "sensitive_post_parameters", None) or ()
    for query, is_post in ((request.GET, False), (request.POST, True)):
        for name, values in query.lists():
            if is_secret_key(name) or (is_post and (sensitive == "__ALL__" or name in sensitive)):
                yield from ((_label("POST" if is_post else "GET", name), str(v)) for v in values)


def _session_key(request: HttpRequest) -> Iterable[tuple[str, str]]:
    """The session's key, when there is a session."""
    return [("the session key", str(getattr(request.session, "session_key", "") or ""))]


def request_secret_fields(request: HttpRequest | None) -> dict[str, str]:
    """The request's own secret values, each with the field it came from (``GET password``): credential headers,
    secret-named cookies (and the session cookie), secret-named route parameters, GET and POST fields (and the
    POST fields the view marked sensitive). Plain words, names and paths (:func:`is_plain_value`) are left out:
    whoever sends a request chooses them, and masking them by value would blank that text in the traceback.

    The raw POST is read, not the filtered copy: the filtered copy already shows stars, which would teach
    the masker nothing about the real values. At most ``MAX_REQUEST_SECRETS`` distinct values.
    """
    if request is None:
        return {}
    found: dict[str, str] = {}
    for read in (route_secrets, _secret_headers, _secret_cookies, _session_key, _secret_params):
        try:
            for label, value in read(request):
                if value and not is_plain_value(value) and len(found) < MAX_REQUEST_SECRETS:
                    found.setdefault(value, label)
        except Exception:  # noqa: BLE001 - an unreadable part (body, cookies) has nothing more to hide
            continue
    return found


def request_secrets(request: HttpRequest | None) -> list[str]:
    """The values of :func:`request_secret_fields`."""
    return list(request_secret_fields(request))


_MASKER_ATTRIBUTE = "_instrumented_masker"


def masker_for(request: HttpRequest | None) -> Masker:
    """The masker of ``request`` (its secrets and the known ones), built once per request."""
    if request is None:
        return known_masker()
    masker = getattr(request, _MASKER_ATTRIBUTE, None)
    if isinstance(masker, Masker):
        return masker
    fields = request_secret_fields(request)
    masker = Masker(fields, labels=fields)
    try:
        setattr(request, _MASKER_ATTRIBUTE, masker)
    except Exception:  # noqa: BLE001 - a request that takes no attributes: build it again next time
        pass
    return masker
