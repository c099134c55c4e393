"""What each frame of a stack is, for finding the line a developer edits: the site's own code, a library
(named), the framework, or a launcher, server or wrapper frame that is never a call site.

A verdict is made once per code object and remembered (``verdict``). The site's own code is every file
outside the interpreter's installation and virtualenv (standard library, site-packages, ``bin/`` scripts),
Django, this package, server entry points and WSGI/ASGI application wrappers. Libraries are what
site-packages holds (DRF, Wagtail, Django's contrib apps): named when a query runs inside them.
"""

from __future__ import annotations

import os
import re
import site
import sys
import sysconfig
from types import CodeType, FrameType
from typing import Any, NamedTuple

from ..conf import get_config

#: Code objects whose verdict is remembered; cleared when full.
MAX_CODES = 8192
#: Longest file path or function name kept in a verdict (a generated file name must not grow a stored value).
MAX_NAME = 160

#: Packages of servers, launchers and task runners: their frames are never a call site, nor a library to name.
SERVERS = frozenset(
    {
        "gunicorn",
        "uwsgi",
        "uwsgidecorators",
        "uvicorn",
        "daphne",
        "hypercorn",
        "granian",
        "waitress",
        "mod_wsgi",
        "twisted",
        "celery",
        "kombu",
        "billiard",
        "dramatiq",
        "rq",
        "huey",
        "asgiref",
        "whitenoise",
        "runpy",
        "pytest",
        "_pytest",
        "pluggy",
        "pytest_django",
    }
)

#: Template engines: their frames sit between a template's line and the query, and are no library to name.
ENGINES = frozenset({"jinja2", "markupsafe"})

_NAME_SUFFIX = re.compile(r"(?:\.<locals>)?\.<(?:listcomp|dictcomp|setcomp|genexpr|lambda)>$")


class Site(NamedTuple):
    """A frame of the site's own code: its path relative to its ``sys.path`` root, and its function."""

    path: str
    function: str


class Library(NamedTuple):
    """A frame of an installed library: the library's name (``rest_framework``, ``django.contrib.admin``),
    the path relative to site-packages and the function."""

    name: str
    path: str
    function: str


#: Django itself (its ORM, templates, handlers) and this package: skipped, never named.
FRAMEWORK = "framework"
#: Standard library, launchers, servers, WSGI/ASGI wrappers, CALL_SITE_SKIP: skipped, never named.
SKIP = "skip"
#: A compiled Jinja2 template (its file is the template's): located by template_lines.py.
JINJA = "jinja2"

Verdict = Site | Library | str

#: id(code) -> (code, verdict): keyed by id because hashing a code object hashes its constants and names every
#: time (microseconds a frame); the code is held, so its id is not reused while its verdict is kept.
_codes: dict[int, tuple[CodeType, Verdict]] = {}
_rules_for: tuple[Any, Rules] | None = None


class Rules(NamedTuple):
    """The directories and modules that decide a verdict, made once per CALL_SITE_SKIP setting."""

    skipped_dirs: tuple[str, ...]
    installation_dirs: tuple[str, ...]
    library_dirs: tuple[str, ...]
    framework_dirs: tuple[str, ...]
    skipped_modules: tuple[str, ...]
    roots: tuple[str, ...]
    wrappers: frozenset[str]


def _dir(path: str) -> str:
    return os.path.join(os.path.realpath(path), "")


def _installation_dirs() -> set[str]:
    """The interpreter's and the virtualenv's code directories: standard library, ``bin/`` scripts, headers.

    Not the prefixes themselves: a site deployed under ``/usr/src/app`` with ``sys.prefix`` ``/usr`` is the site's.
    """
    found: set[str] = set()
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, getattr(sys, "base_exec_prefix", sys.exec_prefix)}
    for prefix in prefixes:
        paths = sysconfig.get_paths(vars={"base": prefix, "platbase": prefix, "installed_base": prefix})
        for name in ("stdlib", "platstdlib", "scripts", "include", "platinclude"):
            if paths.get(name):
                found.add(paths[name])
        found.add(os.path.join(prefix, "bin"))
        found.add(os.path.join(prefix, "Scripts"))
        found.add(os.path.join(prefix, "local", "bin"))  # Debian's pip puts console scripts there
    scripts = sysconfig.get_paths().get("scripts")
    if scripts:
        found.add(scripts)
    return found


def _library_dirs() -> set[str]:
    """site-packages and dist-packages, the virtualenv's and the interpreter's, and the user's."""
    found: set[str] = set()
    for prefix in {sys.prefix, sys.base_prefix}:
        paths = sysconfig.get_paths(vars={"base": prefix, "platbase": prefix})
        found.update(paths[name] for name in ("purelib", "platlib") if paths.get(name))
    paths = sysconfig.get_paths()
    found.update(paths[name] for name in ("purelib", "platlib") if paths.get(name))
    try:
        found.update(site.getsitepackages())
        found.add(site.getusersitepackages())
    except AttributeError:  # a virtualenv's old site.py
        pass
    found.update(p for p in sys.path if os.path.basename(p.rstrip("/\\")) in ("site-packages", "dist-packages"))
    return found


def _wrapper_modules() -> frozenset[str]:
    """The modules of ``WSGI_APPLICATION`` / ``ASGI_APPLICATION``: the site's application wrapper."""
    from django.conf import settings

    names = set()
    for setting in ("WSGI_APPLICATION", "ASGI_APPLICATION"):
        value = getattr(settings, setting, None)
        if isinstance(value, str) and "." in value:
            names.add(value.rsplit(".", 1)[0])
    return frozenset(names)


def rules() -> Rules:
    """The rules for the current settings (CALL_SITE_SKIP), rebuilt when they change."""
    global _rules_for
    extra = get_config().call_site_skip
    cached = _rules_for
    if cached is not None and cached[0] is extra:
        return cached[1]
    import django

    framework = {os.path.dirname(django.__file__), os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    made = Rules(
        skipped_dirs=tuple(_dir(p) for p in extra if "/" in p or os.sep in p),
        installation_dirs=tuple(_dir(d) for d in _installation_dirs() if d),
        library_dirs=tuple(sorted((_dir(d) for d in _library_dirs() if d), key=len, reverse=True)),
        framework_dirs=tuple(_dir(d) for d in framework),
        skipped_modules=tuple(p for p in extra if "/" not in p and os.sep not in p),
        roots=tuple(sorted({_dir(p) for p in sys.path if p}, key=len, reverse=True)),
        wrappers=_wrapper_modules(),
    )
    _rules_for = (extra, made)
    _codes.clear()
    return made


def _function(code: CodeType) -> str:
    """The function's qualified name; a comprehension or lambda reads as the function it is in."""
    name = qualname = getattr(code, "co_qualname", code.co_name)
    while (name := _NAME_SUFFIX.sub("", qualname)) != qualname:
        qualname = name
    return (name or code.co_name)[:MAX_NAME]


def _is_application_wrapper(code: CodeType) -> bool:
    """A WSGI ``(environ, start_response)`` or ASGI ``(scope, receive, send)`` callable: a wrapper, not the view."""
    args = code.co_varnames[: code.co_argcount]
    return ("environ" in args and "start_response" in args) or ("scope" in args and "receive" in args)


def _library_name(module: str, relative: str) -> str:
    """``rest_framework``, ``wagtail``; Django's contrib apps by their own name (``django.contrib.admin``)."""
    parts = (module.split(".") if module and module != "__main__" else relative.split("/"))[:3]
    if parts[:2] == ["django", "contrib"] and len(parts) > 2:
        return ".".join(parts[:3])
    return parts[0].removesuffix(".py")


def _judge(code: CodeType, module: str, rules_: Rules) -> Verdict:
    filename = code.co_filename
    if not filename or filename.startswith("<"):
        return SKIP  # generated code (a compiled Jinja2 template is found apart, by its globals)
    path = os.path.realpath(filename)
    top = module.split(".", 1)[0]
    if top in SERVERS or module in rules_.wrappers or _is_application_wrapper(code):
        return SKIP
    if path.startswith(rules_.skipped_dirs) or any(
        module == m or module.startswith(m + ".") for m in rules_.skipped_modules
    ):
        return SKIP
    if path.startswith(rules_.framework_dirs):
        if module.startswith("django.contrib."):
            relative = module.replace(".", "/")
            return Library(_library_name(module, relative), f"{relative}.py"[:MAX_NAME], _function(code))
        return FRAMEWORK
    for root in rules_.library_dirs:  # before the installation: a base interpreter's site-packages is inside it
        if path.startswith(root):
            relative = path[len(root) :]
            name = _library_name(module, relative)
            if name in SERVERS:
                return SKIP
            if name in ENGINES:
                return FRAMEWORK
            return Library(name, relative[-MAX_NAME:], _function(code))
    if path.startswith(rules_.installation_dirs):
        return SKIP
    shown = next((path[len(root) :] for root in rules_.roots if path.startswith(root)), path)
    return Site(shown[-MAX_NAME:], _function(code))


def verdict(frame: FrameType, rules_: Rules) -> Verdict:
    """The remembered verdict on ``frame``'s code object."""
    code = frame.f_code
    entry = _codes.get(id(code))
    if entry is not None and entry[0] is code:
        return entry[1]
    if len(_codes) >= MAX_CODES:
        _codes.clear()
    if "__jinja_template__" in frame.f_globals:
        found: Verdict = JINJA
    else:
        found = _judge(code, str(frame.f_globals.get("__name__", "")), rules_)
    _codes[id(code)] = (code, found)
    return found


_class_sites: dict[type, bool] = {}


def site_class(cls: type) -> bool:
    """Whether ``cls`` is defined in the site's own code (a serializer, a page model, a ModelAdmin of the site)."""
    found = _class_sites.get(cls)
    if found is None:
        module = sys.modules.get(getattr(cls, "__module__", "") or "")
        filename = getattr(module, "__file__", None)
        found = False
        if isinstance(filename, str):
            rules_ = rules()
            path = os.path.realpath(filename)
            name = getattr(module, "__name__", "")
            found = not (
                path.startswith(
                    rules_.framework_dirs + rules_.skipped_dirs + rules_.library_dirs + rules_.installation_dirs
                )
                or name.split(".", 1)[0] in SERVERS
                or any(name == m or name.startswith(m + ".") for m in rules_.skipped_modules)
            )
        if len(_class_sites) >= MAX_CODES:
            _class_sites.clear()
        _class_sites[cls] = found
    return found


def forget() -> None:
    """Forget every verdict (tests, settings changes)."""
    global _rules_for
    _codes.clear()
    _class_sites.clear()
    _rules_for = None


#: Frames looked at for a query's place before giving up (the view's own frame is rarely deeper).
MAX_PLACE_DEPTH = 120
_node_render: CodeType | None = None


def place(frame: FrameType | None) -> Any:
    """A cheap key for where a query was issued: the first frame of the site's code (its code and line), the Django
    template node or compiled Jinja2 template line being rendered; None when none is within reach.

    Two places in one view (two Wagtail page types served by ``wagtail_serve`` running the same statement) are
    then known apart, without walking the whole stack each time.
    """
    global _node_render
    if _node_render is None:
        from django.template.base import Node

        _node_render = Node.render_annotated.__code__
    node_render = _node_render
    rules_ = rules()
    codes = _codes
    depth = 0
    while frame is not None and depth < MAX_PLACE_DEPTH:
        code = frame.f_code
        if code is node_render:  # the node's template and place in it: the same when the template is compiled again
            node = frame.f_locals.get("self")
            token = getattr(node, "token", None)
            origin = getattr(getattr(node, "origin", None), "name", None)
            return origin, getattr(token, "lineno", None), getattr(token, "contents", None)
        entry = codes.get(id(code))
        found = entry[1] if entry is not None and entry[0] is code else verdict(frame, rules_)
        if found.__class__ is Site or found is JINJA:
            return code.co_filename, frame.f_lineno
        frame = frame.f_back
        depth += 1
    return None
