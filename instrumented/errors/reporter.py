"""A stricter exception reporter filter, and a reporter whose output is bounded and scrubbed.

Django's ``SafeExceptionReporterFilter`` hides settings whose *names* match
``API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE``, but shows ``SENTRY_DSN``, ``DATABASE_URL`` or
``SLACK_WEBHOOK`` and every undecorated local variable. :class:`StrictExceptionReporterFilter` also hides
those names, masks credentials in any ``scheme://user:pass@host`` value, masks local variables named like
secrets, and is always active (so ``@sensitive_variables`` is honoured even with ``DEBUG = True``).

Use it site-wide with ``DEFAULT_EXCEPTION_REPORTER_FILTER = "instrumented.reporter.StrictExceptionReporterFilter"``.
"""

from __future__ import annotations

import functools
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
from django.utils.functional import empty
from django.utils.html import escape
from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter, get_exception_reporter_filter

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


def _pattern_for(values: Iterable[str]) -> re.Pattern[str] | None:
    """One alternation matching each value raw, HTML-, repr- and URL-escaped (longest first); None if empty."""
    variants: set[str] = set()
    for value in values:
        variants.update((value, str(escape(value)), repr(value)[1:-1], quote_plus(value), quote(value)))
    variants = {v for v in variants if len(v) >= _MIN_SECRET_LENGTH}
    if not variants:
        return None
    return re.compile("|".join(re.escape(v) for v in sorted(variants, key=len, reverse=True)))


_known_lock = threading.Lock()
_known: tuple[tuple[int, int], re.Pattern[str] | None] | None = None


def _known_secrets_pattern() -> re.Pattern[str] | None:
    """The pattern of :func:`_secret_values`, rebuilt only when the settings object or the environment changed."""
    global _known
    wrapped = getattr(settings, "_wrapped", empty)
    key = (id(wrapped), hash(frozenset(os.environ.items())))
    cached = _known
    if cached is not None and cached[0] == key:
        return cached[1]
    pattern = _pattern_for(_secret_values())
    with _known_lock:
        _known = (key, pattern)
    return pattern


@receiver(setting_changed)
def _forget_known_secrets(**kwargs: Any) -> None:
    """A changed setting may be a secret: rebuild the pattern on next use."""
    global _known
    with _known_lock:
        _known = None


def scrub(text: str, extra: Iterable[str] = ()) -> str:
    """Mask credentials in URLs and every known secret value (raw, HTML-, repr- and URL-escaped) in ``text``.

    Known secrets: values of settings and environment variables with secret names, credentials found in
    any of their URLs, and ``extra`` (e.g. the request's secret-named query parameters).
    """
    text = mask_credentials(text)
    for pattern in (_known_secrets_pattern(), _pattern_for(v for v in extra if len(v) >= _MIN_SECRET_LENGTH)):
        if pattern is not None:
            text = pattern.sub(SUBSTITUTE, text)
    return text


class StrictExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's filter, plus: DSN/URL/WEBHOOK/COOKIE/... names, credentials in URLs, secret-named locals; always on."""

    hidden_settings = HIDDEN_NAMES

    def is_active(self, request: HttpRequest | None) -> bool:
        """Always: ``@sensitive_variables`` / ``@sensitive_post_parameters`` count even when DEBUG is on."""
        return True

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        """Hide by name (recursively, as Django does), then mask credentials in what is left."""
        cleansed = super().cleanse_setting(key, value)
        if isinstance(cleansed, str):
            return mask_credentials(cleansed)
        return cleansed

    def get_post_parameters(self, request: HttpRequest | None) -> Any:
        """Also hide POST fields named like secrets (``password``, ``token``) that were not decorated."""
        params = super().get_post_parameters(request)
        if request is None or not hasattr(params, "copy"):
            return params
        secret_keys = [k for k in params if is_secret_name(k) or HIDDEN_NAMES.search(k)]
        if not secret_keys:
            return params
        params = params.copy()
        for k in secret_keys:
            params[k] = self.cleansed_substitute
        return params

    def get_traceback_frame_variables(self, request: HttpRequest | None, tb_frame: FrameType) -> Any:
        """Django's masking, then: secret-named locals hidden, credentials in strings masked, small dicts cleansed."""
        cleansed: dict[str, Any] = {}
        for name, value in super().get_traceback_frame_variables(request, tb_frame):
            if is_secret_name(name):
                value = self.cleansed_substitute
            elif isinstance(value, str):
                value = mask_credentials(value)
            elif type(value) in (dict, list, tuple) and len(value) <= 200:
                value = self.cleanse_setting("", value)
            cleansed[name] = value
        return cleansed.items()


@functools.cache
def _strict_filter() -> StrictExceptionReporterFilter:
    return StrictExceptionReporterFilter()


def reporter_filter(request: HttpRequest | None) -> SafeExceptionReporterFilter:
    """The filter for everything this package renders or stores: strict (default), else the site's own."""
    if get_config().strict_reporter_filter:
        return _strict_filter()
    return get_exception_reporter_filter(request)


#: Django's footer says "you have DEBUG = True", which is not why this page is shown.
_EXPLANATION = re.compile(r'(<footer id="explanation">).*?(</footer>)', flags=re.DOTALL)
_EXPLANATION_TEXT = (
    r"\1<p>You are seeing this page because django-instrumented shows technical error pages to superusers. "
    r"Everyone else sees the site's 500 page with an error reference.</p>\2"
)


class _Bounded:
    """A value whose repr is computed with size limits (``reprlib``), so huge locals cost little and stay small."""

    __slots__ = ("text",)

    def __init__(self, value: Any, max_chars: int) -> None:
        limits = reprlib.Repr()
        limits.maxlevel = 3
        limits.maxdict = limits.maxlist = limits.maxtuple = limits.maxset = limits.maxfrozenset = 40
        limits.maxdeque = limits.maxarray = 40
        limits.maxstring = limits.maxother = limits.maxlong = max_chars
        try:
            text = limits.repr(value)
            if isinstance(value, dict | list | tuple | set | frozenset) and "..." not in text and len(text) < max_chars:
                text = pformat(value)  # a small, complete container: Django's pretty form (repr runs only once else)
        except Exception as exc:  # noqa: BLE001 - a broken __repr__ must not break the error page
            text = f"<unprintable {type(value).__name__}: repr raised {type(exc).__name__}>"
        if len(text) > max_chars:
            text = f"{text[:max_chars]}… <trimmed {len(text)} characters>"
        self.text = text

    def __repr__(self) -> str:
        return self.text


class BoundedExceptionReporter(ExceptionReporter):
    """The technical 500 page with the package's filter, capped frames and locals, and secrets scrubbed."""

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
        self.max_frames = max_frames
        self.max_vars = max_vars
        self.max_var_chars = max_var_chars

    def get_traceback_frames(self) -> list[dict[str, Any]]:
        """Django's frames, keeping the first few and the last ones, each with bounded local variables."""
        frames = super().get_traceback_frames()
        if len(frames) > self.max_frames:
            head = min(10, self.max_frames // 2)
            frames = frames[:head] + frames[len(frames) - (self.max_frames - head) :]
        for frame in frames:
            if "vars" in frame:
                items = list(frame["vars"])[: self.max_vars]
                frame["vars"] = [(name, _Bounded(value, self.max_var_chars)) for name, value in items]
        return frames

    def get_traceback_data(self) -> dict[str, Any]:
        """Django's context, with secret-named GET parameters masked (Django shows GET unfiltered)."""
        data = super().get_traceback_data()
        if self.request is not None and "request_GET_items" in data:
            items = [
                (k, SUBSTITUTE if (is_secret_name(k) or HIDDEN_NAMES.search(k)) else v)
                for k, v in self.request.GET.items()
            ]
            data["request_GET_items"] = items
            if any(v == SUBSTITUTE for _, v in items) and "request_insecure_uri" in data:
                base = str(data["request_insecure_uri"]).split("?", 1)[0]
                data["request_insecure_uri"] = f"{base}?{urlencode(items)}"
        return data

    def request_secrets(self) -> list[str]:
        """Values of the request's secret-named GET/POST parameters (and of the POST fields the view marked
        sensitive): they also show in META, reprs and local variables, so they are scrubbed wherever they are.

        The raw POST is read, not the filtered copy: the filtered copy already shows stars, which would
        teach the scrubber nothing about the real values.
        """
        found: list[str] = route_secrets(self.request)
        if self.request is None:
            return found
        try:
            sensitive = getattr(self.request, "sensitive_post_parameters", None) or ()
            for params, is_post in ((self.request.GET, False), (self.request.POST, True)):
                for name, values in params.lists():
                    if (
                        is_secret_name(name)
                        or HIDDEN_NAMES.search(name)
                        or (is_post and (sensitive == "__ALL__" or name in sensitive))
                    ):
                        found.extend(str(v) for v in values)
        except Exception:  # noqa: BLE001 - an unreadable body: nothing more to hide from it
            pass
        return found

    def get_traceback_html(self) -> str:
        """The HTML page, scrubbed of credentials and known secret values, with a truthful footer."""
        html = _EXPLANATION.sub(_EXPLANATION_TEXT, super().get_traceback_html(), count=1)
        return scrub(html, self.request_secrets())

    def get_traceback_text(self) -> str:
        """The plain-text page, scrubbed the same way."""
        return scrub(super().get_traceback_text(), self.request_secrets())
