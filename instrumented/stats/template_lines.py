"""Where in a template a frame is: the Django template tag or variable being rendered, or a compiled Jinja2
template's file and line.

Read only during a stack walk (at an N+1 threshold crossing or after a slow query): Django's
``Node.render_annotated`` frames carry the node, whose ``token`` has the line and text and whose ``origin`` the
template; a compiled Jinja2 template's globals carry ``__jinja_template__``, whose debug info maps the
frame's line back to the template's, as Jinja2's own traceback rewriting does.
"""

from __future__ import annotations

import linecache
import os
from types import CodeType, FrameType
from typing import NamedTuple

from . import frames

#: Longest tag or line text kept.
MAX_NODE = 120


class TemplateLine(NamedTuple):
    """A template's name, line and the tag/variable (Django) or source line (Jinja2) there; ``site`` when the
    template is the site's own (not a library's or Django's), ``engine`` ``django`` or ``jinja2``."""

    name: str
    line: int
    node: str
    engine: str
    site: bool


_render_codes: tuple[CodeType, ...] | None = None


def _django_render_codes() -> tuple[CodeType, ...]:
    """The code of ``Node.render_annotated``: its frames are the nodes being rendered."""
    global _render_codes
    if _render_codes is None:
        from django.template.base import Node

        _render_codes = (Node.render_annotated.__code__,)
    return _render_codes


def _is_site_file(path: str, rules: frames.Rules) -> bool:
    """Whether a template file is the site's own, not one shipped by a library or Django."""
    if not path or path.startswith("<"):
        return True  # a template made from a string in the site's code
    real = os.path.realpath(path)
    return not real.startswith(rules.framework_dirs + rules.library_dirs + rules.installation_dirs)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_NODE else text[: MAX_NODE - 1] + "…"


def _django(frame: FrameType, rules: frames.Rules) -> TemplateLine | None:
    from django.template.base import TokenType

    node = frame.f_locals.get("self")
    token = getattr(node, "token", None)
    origin = getattr(node, "origin", None)
    if token is None or origin is None:
        return None
    contents = _clip(str(token.contents))
    if token.token_type == TokenType.VAR:
        text = "{{ " + contents + " }}"
    elif token.token_type == TokenType.BLOCK:
        text = "{% " + contents + " %}"
    else:
        text = ""
    name = str(getattr(origin, "template_name", None) or getattr(origin, "name", "") or "(template)")
    return TemplateLine(name, int(token.lineno or 0), text, "django", _is_site_file(str(origin.name), rules))


def _jinja(frame: FrameType, rules: frames.Rules) -> TemplateLine | None:
    template = frame.f_globals.get("__jinja_template__")
    if template is None:
        return None
    line = int(template.get_corresponding_lineno(frame.f_lineno))
    filename = str(getattr(template, "filename", None) or "")
    name = str(getattr(template, "name", None) or filename or "(template)")
    text = _clip(linecache.getline(filename, line)) if filename and not filename.startswith("<") else ""
    return TemplateLine(name, line, text, "jinja2", _is_site_file(filename, rules))


def template_line(frame: FrameType, verdict: frames.Verdict, rules: frames.Rules) -> TemplateLine | None:
    """The template line ``frame`` renders, when it is a Django node's render or a compiled Jinja2 template."""
    if verdict == frames.JINJA:
        return _jinja(frame, rules)
    if verdict == frames.FRAMEWORK and any(frame.f_code is code for code in _django_render_codes()):
        return _django(frame, rules)
    return None
