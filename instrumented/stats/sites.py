"""The stored form of a call site and of its hint, and how readers turn them back into something to show.

A call site is one string (it is a key where sites are merged): parts separated by newlines, innermost first,
each a role and its fields separated by tabs::

    library  <library> <file> <line> <function> <object>   (the library frame nearest the query)
    code     <file> <line> <function>                       (a frame of the site's own code)
    template <name> <line> <tag or variable> <engine>       (a Django or Jinja2 template's line)
    view     <view name>                                    (when no frame of the site's own code is on the stack)

A hint is ``<code>\\t<model>``: ``select_related("author")`` and the model of the queryset it goes on.
Both are read back from memcached, so :func:`parts` and :func:`hint` accept anything and never raise:
unknown roles and malformed fields are dropped, every field is cut. Templates escape what they show.
"""

from __future__ import annotations

from typing import Any

#: Longest field kept, and the most parts a site holds.
MAX_FIELD = 200
MAX_PARTS = 5
#: Longest stored site or hint read back: anything longer was not written by this package.
MAX_STORED = 2048

#: Each role's field names, in stored order.
ROLES: dict[str, tuple[str, ...]] = {
    "library": ("library", "file", "line", "function", "object"),
    "code": ("file", "line", "function"),
    "template": ("template", "line", "node", "engine"),
    "view": ("view",),
}


def _field(value: Any) -> str:
    """One field as stored: text without tabs or newlines, cut at MAX_FIELD."""
    text = str(value)
    if "\t" in text or "\n" in text or "\r" in text:
        text = " ".join(text.split())
    return text[:MAX_FIELD]


def encode(parts: list[tuple[str, ...]]) -> str | None:
    """The stored string of ``parts`` (``(role, field, ...)``, innermost first); None when there are none."""
    lines = ["\t".join((role, *(_field(f) for f in fields))) for role, *fields in parts[:MAX_PARTS]]
    return "\n".join(lines) or None


def encode_hint(code: str, model: str) -> str:
    """A hint as stored: the code to add and the model of the queryset it is added to."""
    return f"{_field(code)}\t{_field(model)}"


def _line_number(text: str) -> bool:
    """A line number as written: ASCII digits, short ("²".isdigit() is true and int("²") raises)."""
    return text.isascii() and text.isdigit() and len(text) < 10


def parts(site: Any) -> list[dict[str, Any]]:
    """The parts of a stored site as dicts (``{"kind": role, field: value, ...}``); a string of an earlier
    version (``path:line in function``) is one ``code`` part. Anything malformed is left out."""
    if not isinstance(site, str) or not site or len(site) > MAX_STORED:
        return []
    if "\t" not in site:  # the form before parts: "path:line in function"
        file, _, rest = site.partition(":")
        line, _, function = rest.partition(" in ")
        if not _line_number(line):
            return [{"kind": "code", "file": site[:MAX_FIELD], "line": None, "function": ""}]
        return [{"kind": "code", "file": file[:MAX_FIELD], "line": int(line), "function": function[:MAX_FIELD]}]
    found: list[dict[str, Any]] = []
    for row in site.split("\n")[:MAX_PARTS]:
        role, *fields = row.split("\t")
        names = ROLES.get(role)
        if names is None or len(fields) != len(names):
            continue
        part: dict[str, Any] = {"kind": role}
        for name, value in zip(names, fields, strict=True):
            part[name] = value[:MAX_FIELD]
        if "line" in part:
            part["line"] = int(part["line"]) if _line_number(part["line"]) else None
        found.append(part)
    return found


def _text(part: dict[str, Any]) -> str:
    """One part in a line of text."""
    kind = part["kind"]
    line = "" if part.get("line") is None else f":{part['line']}"
    if kind == "code":
        return f"{part['file']}{line} in {part['function']}" if part["function"] else f"{part['file']}{line}"
    if kind == "template":
        return f"{part['template']}{line} {part['node']}".rstrip()
    if kind == "library":
        where = f"in {part['file']}{line} in {part['function']}"
        return f"{where}, {part['object']}" if part["object"] else where
    return f"view {part['view']}"


def text(site_parts: list[dict[str, Any]]) -> str:
    """A site in one line, innermost first: ``blog/index.html:23 {{ post.image }}, from blog/views.py:42 in index``."""
    shown = [_text(part) for part in site_parts]
    return ", from ".join(shown[:1] + [s for s in shown[1:] if not s.startswith("view ")]) + "".join(
        f", {s}" for s in shown[1:] if s.startswith("view ")
    )


def describe(site: Any) -> dict[str, Any]:
    """What readers show of a stored site: ``site`` (one line), ``where`` (its parts) and ``in_site_code`` (a line
    of the site's own code or template is among them), never raising."""
    found = parts(site)
    own = any(part["kind"] in ("code", "template") for part in found)
    return {"site": text(found) if found else "", "where": found, "in_site_code": own}


def hint(stored: Any) -> tuple[str | None, str | None]:
    """(code to add, model of the queryset it goes on) of a stored hint; (None, None) when there is none."""
    if not isinstance(stored, str) or not stored or len(stored) > MAX_STORED:
        return None, None
    code, _, model = stored.partition("\t")
    return code[:MAX_FIELD] or None, model[:MAX_FIELD] or None


def describe_hint(stored: Any) -> dict[str, str | None]:
    """What readers show of a stored hint: ``hint`` (code to add) and ``hint_model`` (the queryset's model)."""
    code, model = hint(stored)
    return {"hint": code, "hint_model": model}
