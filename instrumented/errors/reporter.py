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
import re
import reprlib
from collections.abc import Iterable
from pprint import pformat
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest
from django.template import Context
from django.views.debug import (
    DEBUG_ENGINE,
    ExceptionReporter,
    SafeExceptionReporterFilter,
    get_exception_reporter_filter,
)

from ..conf import get_config
from .redact import (
    HIDDEN_NAMES,
    SUBSTITUTE,
    Masker,
    is_secret_key,
    is_secret_name,
    known_masker,
    masker_for,
)


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
#: What only the script drove, dead without it (and each inline handler is a console error in a sandbox): the
#: context toggles, the copy-and-paste switch, and the form that posts the traceback to a public pastebin.
_TEMPLATE_DEAD = (
    (re.compile(r' onclick="[^"]*"'), ""),
    (re.compile(r'<span class="commands"><a href="#" role="button".*?</a></span>', flags=re.DOTALL), ""),
    (re.compile(r"<form [^>]*pasteform[^>]*>|</form>"), ""),
    (re.compile(r'<input type="(?:hidden|submit)"[^>]*>', flags=re.DOTALL), ""),
    (re.compile(r"(<div id=\"pastebinTraceback\" class=\"pastebin\">)"), r"\1<h3>Copy-and-paste view</h3>"),
    # No favicon request to the site (a 404 in the console); the contexts are no longer clickable.
    (re.compile(r"(<head>)"), r'\1<link rel="icon" href="data:,"><style>div.context ol li { cursor: auto; }</style>'),
)
#: Under the exception's message: which request fields' values are shown as stars, so that a mask is not
#: mistaken for what the code did.
_TEMPLATE_MASKED = (
    re.compile(r'(<pre class="exception_value">.*?</pre>)', flags=re.DOTALL),
    r'\1{% if instrumented_masked_fields %}<p id="instrumented-masked">Shown as ******************** on this '
    r"page: the value of the request field{{ instrumented_masked_fields|length|pluralize }} "
    r'{{ instrumented_masked_fields|join:", " }} (a secret, hidden wherever it appears).</p>{% endif %}',
)
_TEMPLATE_EXPLANATION = re.compile(r'(<footer id="explanation">).*?(</footer>)', flags=re.DOTALL)
_EXPLANATION_TEXT = (
    r"\1<p>You are seeing this page because django-instrumented shows technical error pages to superusers. "
    r"Everyone else sees the site's 500 page with an error reference. Source lines, local variables and the "
    r"copy-and-paste view are all shown: the page runs no script.</p>\2"
)


@functools.lru_cache(maxsize=4)
def _html_template(path: str) -> Any:
    """Django's technical 500 template, compiled from its *source* without the inline script and the controls
    only it drove, with a truthful footer (DEBUG is not why it is shown). Edits the trusted template, never a
    rendered page."""
    with open(path, encoding="utf-8") as fh:
        source = fh.read()
    source = _TEMPLATE_SCRIPT.sub("", source, count=1)
    for pattern, replacement in _TEMPLATE_DEAD:
        source = pattern.sub(replacement, source)
    source = _TEMPLATE_EXPLANATION.sub(_EXPLANATION_TEXT, source, count=1)
    source = _TEMPLATE_MASKED[0].sub(_TEMPLATE_MASKED[1], source, count=1)
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
        # Source lines are the site's code: only the settings' secrets are masked there, never a request's
        # values (whoever sends them would choose which lines of the evidence vanish; issue 17).
        text = self.masker.code
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
        # Last, once everything above is masked: which request fields' values were (the page says so).
        data["instrumented_masked_fields"] = sorted(masker.masked)
        return data

    def get_traceback_html(self) -> str:
        """The HTML page: Django's template without its script; everything it renders was masked before."""
        template = _html_template(str(self.html_template_path))
        return template.render(Context(self.get_traceback_data(), use_l10n=False))
