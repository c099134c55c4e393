"""Where a query came from: the first application frame on the live stack, and a fix read from the model graph.

Looked up only when a template crosses the N+1 threshold or after a slow query, at most once per
template per request, and not again once known for the view and bucket (:func:`locate`). The stack is
walked with ``sys._getframe`` (no ``traceback.extract_stack``: no source lines are read); each code
object's verdict (skipped, or its display name) is remembered. The hint (``select_related("author")``,
``prefetch_related("books")``) comes from Django's model ``_meta``: the table and column of the query's
WHERE clause must be one relation of a model whose instances are on the stack, else there is no hint.
"""

from __future__ import annotations

import os
import re
import site
import sys
import sysconfig
import threading
import time
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any

from ..conf import get_config
from ..failopen import fail_open, failures
from ..naming import view_name

if TYPE_CHECKING:
    from .probe import Probe

#: Known call sites kept per process: (view, alias, sql) -> (bucket, site, hint); cleared when full.
MAX_KNOWN = 4096
#: Code objects whose verdict is remembered; cleared when full.
MAX_CODES = 8192
#: How many frames are walked at most before giving up (a deep recursion must not cost much).
MAX_DEPTH = 200

_SKIP = object()
_codes: dict[CodeType, Any] = {}
_known: dict[tuple[str, str, str], tuple[int, str | None, str | None]] = {}
_skip_for: tuple[tuple[str, ...], tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] | None = None
_lock = threading.Lock()
#: Stack walks done by this process (tests check that a known site is not looked up again).
walks = 0

_NAME_SUFFIX = re.compile(r"(?:\.<locals>)?\.<(?:listcomp|dictcomp|setcomp|genexpr|lambda)>$")
# The first condition of the WHERE clause: Django qualifies every column with its table.
_WHERE = re.compile(r'\bWHERE\s+\(*\s*[`"\[]?(\w+)[`"\]]?\.[`"\[]?(\w+)[`"\]]?\s*(?:=|IN\b)', re.IGNORECASE)


def _skipped_dirs(extra: tuple[str, ...]) -> tuple[str, ...]:
    """Directories whose code is never the call site: Django, this package, the standard library, site-packages."""
    import django

    dirs = {os.path.dirname(django.__file__), os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    paths = sysconfig.get_paths()
    dirs.update(paths[name] for name in ("stdlib", "platstdlib", "purelib", "platlib") if paths.get(name))
    try:
        dirs.update(site.getsitepackages())
        dirs.add(site.getusersitepackages())
    except AttributeError:  # a virtualenv's old site.py
        pass
    dirs.update(p for p in extra if "/" in p or os.sep in p)
    return tuple(os.path.join(os.path.realpath(d), "") for d in dirs if d)


def _skip_rules() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(skipped directories, skipped module prefixes, sys.path roots longest first), rebuilt when settings change."""
    global _skip_for
    extra = get_config().call_site_skip
    cached = _skip_for
    if cached is None or cached[0] is not extra:
        modules = tuple(p for p in extra if "/" not in p and os.sep not in p)
        roots = sorted({os.path.join(os.path.realpath(p), "") for p in sys.path if p}, key=len, reverse=True)
        cached = _skip_for = (extra, (_skipped_dirs(extra), modules, tuple(roots)))
        _codes.clear()
    return cached[1]


def _verdict(code: CodeType, frame: FrameType, rules: tuple[tuple[str, ...], ...]) -> Any:
    """``_SKIP``, or (display path, function name) for an application code object."""
    dirs, modules, roots = rules
    filename = code.co_filename
    if not filename or filename.startswith("<"):
        return _SKIP
    path = os.path.realpath(filename)
    module = str(frame.f_globals.get("__name__", ""))
    if path.startswith(dirs) or any(module == m or module.startswith(m + ".") for m in modules):
        return _SKIP
    shown = next((path[len(root) :] for root in roots if path.startswith(root)), path)
    name = qualname = getattr(code, "co_qualname", code.co_name)
    while (name := _NAME_SUFFIX.sub("", qualname)) != qualname:  # a comprehension reads as its function
        qualname = name
    return shown, name or code.co_name


def _held_instance(frame: FrameType, model: type) -> Any:
    """The model instance a Django frame works for: a related descriptor's, or a related manager queryset's."""
    frame_locals = frame.f_locals
    instance = frame_locals.get("instance")
    if isinstance(instance, model):
        return instance
    hints = getattr(frame_locals.get("self"), "_hints", None)
    instance = hints.get("instance") if isinstance(hints, dict) else None
    return instance if isinstance(instance, model) else None


def _relation_fix(field: Any, table: str, column: str) -> str | None:
    """The fix when a query on ``table`` WHERE ``column`` is what following ``field`` runs, else None."""
    related = getattr(field, "related_model", None)
    if not getattr(field, "is_relation", False) or related is None or isinstance(related, str):
        return None
    if field.many_to_many:
        through = field.remote_field.through if field.concrete else field.through
        own = field.m2m_column_name() if field.concrete else field.field.m2m_reverse_name()
        if through is not None and through._meta.db_table == table and own == column:
            return f'prefetch_related("{field.name if field.concrete else field.get_accessor_name()}")'
        return None
    if field.concrete:  # a forward ForeignKey / OneToOneField
        if related._meta.db_table == table and field.target_field.column == column:
            return f'select_related("{field.name}")'
        return None
    if related._meta.db_table == table and field.field.column == column:  # a reverse FK / one-to-one
        return f'{"select_related" if field.one_to_one else "prefetch_related"}("{field.get_accessor_name()}")'
    return None


def _relations(model: type, table: str, column: str) -> set[str]:
    """The fixes for a query on ``table`` WHERE ``column`` issued through one relation of ``model``."""
    fixes: set[str] = set()
    for field in model._meta.get_fields():  # type: ignore[attr-defined]
        try:
            fix = _relation_fix(field, table, column)
        except (AttributeError, TypeError, ValueError):  # generic relations, composite keys: nothing to tell
            continue
        if fix is not None:
            fixes.add(fix)
    return fixes


def hint_for(sql: str, models: set[type]) -> str | None:
    """``select_related(...)`` / ``prefetch_related(...)`` when exactly one relation of ``models`` explains ``sql``."""
    match = _WHERE.search(sql)
    if match is None:
        return None
    table, column = match.groups()
    fixes: set[str] = set()
    for model in models:
        fixes |= _relations(model, table, column)
    return fixes.pop() if len(fixes) == 1 else None


def capture(frame: FrameType | None, sql: str) -> tuple[str | None, str | None]:
    """(``path:line in function`` of the first application frame, hint); (None, None) when there is none."""
    global walks
    from django.db.models import Model

    walks += 1
    rules = _skip_rules()
    codes = _codes
    if len(codes) > MAX_CODES:
        codes.clear()
    models: set[type] = set()
    depth = 0
    while frame is not None and depth < MAX_DEPTH:
        code = frame.f_code
        verdict = codes.get(code)
        if verdict is None:
            verdict = codes[code] = _verdict(code, frame, rules)
        if verdict is not _SKIP:
            models.update(type(v) for v in frame.f_locals.values() if isinstance(v, Model))
            site_ = f"{verdict[0]}:{frame.f_lineno} in {verdict[1]}"
            return site_, hint_for(sql, models)
        if code.co_name in ("__get__", "__iter__", "_fetch_all"):
            instance = _held_instance(frame, Model)
            if instance is not None:
                models.add(type(instance))
        frame = frame.f_back
        depth += 1
    return None, None


def locate(probe: Probe, key: tuple[str, str], frame: FrameType | None) -> None:
    """Note the call site of ``key`` (alias, SQL) on ``probe``: known for the view and bucket, else from the stack."""
    try:  # by hand: fail_open() costs ~0.2 µs, and a known site is the common case (once per template per request)
        sites = probe.sites
        if sites is None:
            sites = probe.sites = {}
        elif key in sites:
            return
        view = probe.view
        if view is None:
            match = getattr(probe.request, "resolver_match", None)
            view = probe.view = view_name(match) if match is not None else ""
        bucket = int(time.time() // get_config().bucket_seconds)
        known_key = (view, key[0], key[1])
        known = _known.get(known_key)
        if known is not None and known[0] == bucket:
            sites[key] = known[1:]
            return
    except Exception as exc:  # noqa: BLE001 - fail open
        failures.record("finding a call site failed", exc)
        return
    with fail_open("finding a call site failed"):
        found = capture(frame, key[1])
        with _lock:
            if len(_known) >= MAX_KNOWN:
                _known.clear()
            _known[known_key] = (bucket, *found)
        sites[key] = found


def forget() -> None:
    """Forget known sites and code verdicts (tests, and settings changes)."""
    global _skip_for
    _known.clear()
    _codes.clear()
    _skip_for = None
