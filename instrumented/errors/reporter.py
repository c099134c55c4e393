"""A stricter exception reporter filter, and a reporter whose output is bounded and scrubbed.

Django's ``SafeExceptionReporterFilter`` hides settings whose *names* match
``API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE``, but shows ``SENTRY_DSN``, ``DATABASE_URL`` or
``SLACK_WEBHOOK`` and every undecorated local variable. :class:`StrictExceptionReporterFilter` also hides
those names, masks credentials in any ``scheme://user:pass@host`` value, masks local variables named like
secrets, and is always active (so ``@sensitive_variables`` is honoured even with ``DEBUG = True``).

Use it site-wide with ``DEFAULT_EXCEPTION_REPORTER_FILTER = "instrumented.reporter.StrictExceptionReporterFilter"``.
"""

from __future__ import annotations

import base64
import functools
import itertools
import os
import re
import reprlib
import threading
from collections.abc import Iterable
from pprint import pformat
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import quote, quote_plus, urlencode

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest
from django.template import Context
from django.utils.functional import empty
from django.views.debug import (
    DEBUG_ENGINE,
    ExceptionReporter,
    SafeExceptionReporterFilter,
    get_exception_reporter_filter,
)

from ..conf import get_config

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


def route_secrets(request: HttpRequest | None) -> list[str]:
    """Values captured from the URL path by secret-named route parameters (``reset/<uidb64>/<token>/``)."""
    match = getattr(request, "resolver_match", None) if request is not None else None
    if match is None:
        return []
    try:
        return [str(value) for name, value in match.kwargs.items() if is_secret_name(name)]
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

    __slots__ = ("_long", "_pattern")

    def __init__(self, values: Iterable[str] = ()) -> None:
        variants = set(_known_variants())
        long: set[str] = set()
        for value in values:
            for variant in _variants(value[:_LONGEST_SECRET]):
                (variants if len(variant) <= _LONGEST_PATTERN else long).add(variant)
        self._pattern = _compile(frozenset(variants))
        self._long = sorted(long, key=len, reverse=True)

    def text(self, text: str) -> str:
        """``text`` with URL credentials and every secret value replaced by stars."""
        text = mask_credentials(text)
        if self._pattern is not None:
            text = self._pattern.sub(SUBSTITUTE, text)
        for value in self._long:
            if value in text:
                text = text.replace(value, SUBSTITUTE)
        return text

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
            return self.text(value)
        if isinstance(value, bytes):
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


def request_secrets(request: HttpRequest | None) -> list[str]:
    """The request's own secret values: credential headers, secret-named cookies (and the session cookie),
    secret-named route parameters, GET and POST fields (and the POST fields the view marked sensitive).

    The raw POST is read, not the filtered copy: the filtered copy already shows stars, which would teach
    the masker nothing about the real values. At most ``MAX_REQUEST_SECRETS`` distinct values.
    """
    if request is None:
        return []
    found: list[str] = route_secrets(request)

    def harvest(read: Any) -> None:
        try:
            found.extend(read())
        except Exception:  # noqa: BLE001 - an unreadable part (body, cookies) has nothing more to hide
            pass

    def headers() -> Iterable[str]:
        for name, value in request.META.items():
            if isinstance(name, str) and name.startswith("HTTP_") and isinstance(value, str) and is_secret_key(name):
                yield from _authorization_parts(value) if name.endswith("AUTHORIZATION") else [value]

    def cookies() -> Iterable[str]:
        own = {getattr(settings, "SESSION_COOKIE_NAME", "sessionid"), getattr(settings, "CSRF_COOKIE_NAME", "")}
        return (str(v) for k, v in request.COOKIES.items() if k in own or is_secret_key(k))

    def params() -> Iterable[str]:
        sensitive = getattr(request, "sensitive_post_parameters", None) or ()
        for query, is_post in ((request.GET, False), (request.POST, True)):
            for name, values in query.lists():
                if is_secret_key(name) or (is_post and (sensitive == "__ALL__" or name in sensitive)):
                    yield from (str(v) for v in values)

    for read in (headers, cookies, lambda: [str(getattr(request.session, "session_key", "") or "")], params):
        harvest(read)
    return list(dict.fromkeys(v for v in found if v))[:MAX_REQUEST_SECRETS]


_MASKER_ATTRIBUTE = "_instrumented_masker"


def masker_for(request: HttpRequest | None) -> Masker:
    """The masker of ``request`` (its secrets and the known ones), built once per request."""
    if request is None:
        return known_masker()
    masker = getattr(request, _MASKER_ATTRIBUTE, None)
    if isinstance(masker, Masker):
        return masker
    masker = Masker(request_secrets(request))
    try:
        setattr(request, _MASKER_ATTRIBUTE, masker)
    except Exception:  # noqa: BLE001 - a request that takes no attributes: build it again next time
        pass
    return masker


class StrictExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's filter, plus: more secret names, credentials in URLs, the request's secret values; always on.

    Every value it hands out is masked as data (:class:`Masker`), so a template renders nothing to replace.
    """

    hidden_settings = HIDDEN_NAMES

    def is_active(self, request: HttpRequest | None) -> bool:
        """Always: ``@sensitive_variables`` / ``@sensitive_post_parameters`` count even when DEBUG is on."""
        return True

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        """Hide by name (Django's pattern and secret names such as ``pw``, recursively), mask what is left."""
        if is_secret_key(key):
            return self.cleansed_substitute
        cleansed = super().cleanse_setting(key, value)
        if isinstance(cleansed, str):
            return known_masker().text(cleansed)
        return cleansed

    def get_safe_request_meta(self, request: HttpRequest | None) -> dict[str, Any]:
        """Django's cleansed META, with the request's secret values masked wherever they occur."""
        masker = masker_for(request)
        return {k: masker.data(v) for k, v in super().get_safe_request_meta(request).items()}

    def get_safe_cookies(self, request: HttpRequest | None) -> dict[str, Any]:
        """Django's cleansed cookies, with the request's secret values masked."""
        masker = masker_for(request)
        return {k: masker.data(v) for k, v in super().get_safe_cookies(request).items()}

    def get_post_parameters(self, request: HttpRequest | None) -> Any:
        """Also hide POST fields named like secrets (``password``, ``token``), and mask secret values in the rest."""
        params = super().get_post_parameters(request)
        if request is None or not hasattr(params, "copy") or not hasattr(params, "lists"):
            return params
        masker = masker_for(request)
        params = params.copy()
        for k, values in list(params.lists()):
            if is_secret_key(k):
                params[k] = self.cleansed_substitute
            else:
                params.setlist(k, [masker.text(v) if isinstance(v, str) else v for v in values])
        return params

    def get_traceback_frame_variables(self, request: HttpRequest | None, tb_frame: FrameType) -> Any:
        """Django's masking, then: secret-named locals hidden, and secrets masked in the values of the rest."""
        masker = masker_for(request)
        cleansed: dict[str, Any] = {}
        for name, value in super().get_traceback_frame_variables(request, tb_frame):
            cleansed[name] = self.cleansed_substitute if is_secret_name(name) else masker.data(value)
        return cleansed.items()


@functools.cache
def _strict_filter() -> StrictExceptionReporterFilter:
    return StrictExceptionReporterFilter()


def reporter_filter(request: HttpRequest | None) -> SafeExceptionReporterFilter:
    """The filter for everything this package renders or stores: strict (default), else the site's own."""
    if get_config().strict_reporter_filter:
        return _strict_filter()
    return get_exception_reporter_filter(request)


#: Longest exception message, GET/POST/cookie/META value shown on a page (characters), then marked trimmed.
MAX_SHOWN_CHARS = 4096
#: Longest parameter or cookie name shown.
MAX_NAME_CHARS = 200


class _Text:
    """Text that is shown as it is: ``{{ v }}`` and ``{{ v|pprint }}`` both give ``text`` (escaped by the template)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__


class _MaskingRepr(reprlib.Repr):
    """``reprlib`` with size limits, masking every string and object repr *before* cutting it."""

    def __init__(self, masker: Masker, max_chars: int) -> None:
        super().__init__()
        self.masker = masker
        self.maxlevel = 3
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = 40
        self.maxdeque = self.maxarray = 40
        self.maxstring = self.maxother = self.maxlong = max_chars

    def repr_str(self, x: str, level: int) -> str:
        head, cut = self.masker.head(x, self.maxstring)
        return repr(head) + ("..." if cut else "")

    def repr_instance(self, x: Any, level: int) -> str:
        try:
            text = repr(x)
        except Exception as exc:  # noqa: BLE001 - a broken __repr__ must not break the error page
            return f"<unprintable {type(x).__name__}: repr raised {type(exc).__name__}>"
        head, cut = self.masker.head(text, self.maxother)
        return head + ("..." if cut else "")


def shown(value: Any, max_chars: int, masker: Masker) -> _Text:
    """``value``'s repr, bounded (``reprlib``, so huge values cost little) and masked before any cut."""
    limits = _MaskingRepr(masker, max_chars)
    try:
        text = limits.repr(value)
        if isinstance(value, dict | list | tuple | set | frozenset) and "..." not in text and len(text) < max_chars:
            text = pformat(masker.data(value))  # a small, complete container: Django's pretty form
    except Exception as exc:  # noqa: BLE001 - a broken __repr__ must not break the error page
        text = f"<unprintable {type(value).__name__}: repr raised {type(exc).__name__}>"
    return _Text(masker.clip(text, max_chars))


class _RequestView:
    """What Django's templates read from ``request``, with the path masked (route tokens are credentials)."""

    def __init__(self, request: HttpRequest, masker: Masker) -> None:
        self.path_info = masker.clip(str(getattr(request, "path_info", "")), MAX_SHOWN_CHARS)
        self.META = {"REQUEST_METHOD": masker.clip(str(request.META.get("REQUEST_METHOD", "")), 16)}
        self.GET, self.FILES, self.COOKIES = (bool(getattr(request, n, None)) for n in ("GET", "FILES", "COOKIES"))

    def __bool__(self) -> bool:
        return True


_TEMPLATE_SCRIPT = re.compile(r"<script>.*?</script>", flags=re.DOTALL)
_TEMPLATE_EXPLANATION = re.compile(r'(<footer id="explanation">).*?(</footer>)', flags=re.DOTALL)
_EXPLANATION_TEXT = (
    r"\1<p>You are seeing this page because django-instrumented shows technical error pages to superusers. "
    r"Everyone else sees the site's 500 page with an error reference. Source lines, local variables and the "
    r"copy-and-paste view are all shown: the page runs no script.</p>\2"
)


@functools.lru_cache(maxsize=4)
def _html_template(path: str) -> Any:
    """Django's technical 500 template, compiled from its *source* without the inline script and with a
    truthful footer (DEBUG is not why it is shown). Edits the trusted template, never a rendered page."""
    with open(path, encoding="utf-8") as fh:
        source = fh.read()
    source = _TEMPLATE_SCRIPT.sub("", source, count=1)
    source = _TEMPLATE_EXPLANATION.sub(_EXPLANATION_TEXT, source, count=1)
    return DEBUG_ENGINE.from_string(source)


class BoundedExceptionReporter(ExceptionReporter):
    """The technical 500 page with the package's filter, capped frames, locals and values, secrets masked in data."""

    def __init__(
        self,
        request: HttpRequest | None,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        tb: TracebackType | None,
        is_email: bool = False,
        *,
        max_frames: int = 50,
        max_vars: int = 40,
        max_var_chars: int = 1500,
    ) -> None:
        super().__init__(request, exc_type, exc_value, tb, is_email)
        self.filter = reporter_filter(request)
        self.masker = masker_for(request)
        self.max_frames = max_frames
        self.max_vars = max_vars
        self.max_var_chars = max_var_chars

    def _message(self, exc: object) -> _Text:
        try:
            text = str(exc)
        except Exception:  # noqa: BLE001 - an exception whose __str__ raises
            text = "<unprintable exception message>"
        return _Text(self.masker.clip(text, MAX_SHOWN_CHARS))

    def get_traceback_frames(self) -> list[dict[str, Any]]:
        """Django's frames, the first few and the last ones, with bounded locals and masked source and causes."""
        frames = super().get_traceback_frames()
        if len(frames) > self.max_frames:
            head = min(10, self.max_frames // 2)
            frames = frames[:head] + frames[len(frames) - (self.max_frames - head) :]
        masked_causes: dict[int, _Text] = {}
        text = self.masker.text
        for frame in frames:
            if "vars" in frame:
                items = list(frame["vars"])[: self.max_vars]
                frame["vars"] = [(name, shown(value, self.max_var_chars, self.masker)) for name, value in items]
            for key in ("pre_context", "post_context"):
                if frame.get(key):
                    frame[key] = [text(str(line)) for line in frame[key]]
            if isinstance(frame.get("context_line"), str):
                frame["context_line"] = text(frame["context_line"])
            cause = frame.get("exc_cause")
            if cause is not None:
                if id(cause) not in masked_causes:
                    masked_causes[id(cause)] = self._message(cause)
                frame["exc_cause"] = masked_causes[id(cause)]
        return frames

    def get_traceback_data(self) -> dict[str, Any]:
        """Django's context, with every request value, message and hint masked and capped before rendering."""
        data = super().get_traceback_data()
        masker = self.masker
        for key in ("exception_value", "exception_notes"):
            if data.get(key) is not None:
                data[key] = str(self._message(data[key]))
        for key in ("unicode_hint", "user_str"):
            if isinstance(data.get(key), str):
                data[key] = masker.clip(data[key], MAX_SHOWN_CHARS)
        if isinstance(data.get("template_info"), dict):
            data["template_info"] = masker.data(data["template_info"])

        def table(items: Iterable[tuple[Any, Any]], hide_secret_names: bool = False) -> list[tuple[str, _Text]]:
            rows = []
            for k, v in items:
                value = SUBSTITUTE if hide_secret_names and is_secret_key(k) else v
                rows.append((masker.clip(str(k), MAX_NAME_CHARS), shown(value, MAX_SHOWN_CHARS, masker)))
            return rows

        data["filtered_POST_items"] = table(data.get("filtered_POST_items") or ())
        data["request_COOKIES_items"] = table(data.get("request_COOKIES_items") or ())
        data["request_meta"] = dict(table((data.get("request_meta") or {}).items()))
        if self.request is not None:
            get_items = list(self.request.GET.items())
            data["request_GET_items"] = table(get_items, hide_secret_names=True)
            data["request_FILES_items"] = table(data.get("request_FILES_items") or ())
            if "request_insecure_uri" in data:
                uri = str(data["request_insecure_uri"])
                if any(is_secret_key(k) for k, _ in get_items):
                    masked = [(k, SUBSTITUTE if is_secret_key(k) else v) for k, v in get_items]
                    uri = f"{uri.split('?', 1)[0]}?{urlencode(masked)}"
                data["request_insecure_uri"] = masker.clip(uri, MAX_SHOWN_CHARS)
            data["request"] = _RequestView(self.request, masker)
        return data

    def get_traceback_html(self) -> str:
        """The HTML page: Django's template without its script; everything it renders was masked before."""
        template = _html_template(str(self.html_template_path))
        return template.render(Context(self.get_traceback_data(), use_l10n=False))
