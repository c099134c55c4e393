"""Literal stripping for raw SQL, per database vendor: values never reach memcached or a page.

Django's own SQL carries ``%s`` placeholders; raw SQL carries values. One left-to-right regex pass
per statement finds each token that decides how the rest reads (comments, quoted identifiers,
strings in every quoting form the vendor has, numbers) and replaces the values by ``%s``, the placeholder
Django's own SQL shows. It runs in
the flusher thread, never on the request path. A literal cut off by truncation still ends at the end
of the text (an unterminated string is a string to the end), so a prefix of a statement strips as
safely as the whole of it.

What each vendor reads as a string (Django quotes identifiers with ``"`` on SQLite and PostgreSQL,
with backticks on MySQL):

- ``mysql``: ``'…'`` and ``"…"`` with backslash escapes (no ``ANSI_QUOTES``: Django does not set it),
  ``X'…'``/``B'…'``/``N'…'``/``_charset'…'``, ``0x…``/``0b…``; ```…``` is an identifier; ``#`` and
  ``-- `` comments.
- ``postgresql``: ``'…'`` without backslash escapes (``standard_conforming_strings``, the default since
  9.1), ``E'…'`` with them, ``$$…$$`` and ``$tag$…$tag$``, ``X'…'``/``B'…'``/``U&'…'``; ``"…"`` is an
  identifier.
- ``sqlite`` and any other vendor: ``'…'`` without backslash escapes, ``X'…'``; ``"…"`` is an
  identifier when it reads as one (a word), else a string (SQLite accepts ``"text"`` as a string when
  no column has that name, which only the database knows: a word-shaped ``"value"`` is kept).
"""

from __future__ import annotations

import re
from collections.abc import Callable

# Numbers that are not part of a name: decimal, exponent, hex, binary, octal, PostgreSQL's 1_000.
_NUMBER = (
    r"(?P<num>(?<![\w$])(?:0[xX][0-9A-Fa-f_]+|0[bB][01_]+|0[oO][0-7_]+"
    r"|(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9]+)?)(?![\w$]))"
)
# Strings; each runs to the end of the text when it is not closed (a truncated statement).
# A string's type prefix (X'…', B'…', N'…', U&'…', MySQL's _charset'…') goes with it: the value becomes one %s.
_PREFIX = r"(?:(?<![\w$])(?:[xXbBnN]|[uU]&|_[A-Za-z0-9]+)(?='))?"
_STANDARD_STRING = rf"(?P<str>{_PREFIX}'(?:[^']|'')*'?)"
_BACKSLASH_STRING = rf"(?P<str>{_PREFIX}'(?:[^'\\]|\\[\s\S]|'')*\\?'?)"
_BACKSLASH_DQ_STRING = r"(?P<dqstr>\"(?:[^\"\\]|\\[\s\S]|\"\")*\\?\"?)"
_DQ_STRING = r"(?P<dqstr>\"(?:[^\"]|\"\")*\"?)"
_E_STRING = r"(?P<estr>(?<![\w$])[eE]'(?:[^'\\]|\\[\s\S]|'')*\\?'?)"
_DOLLAR_STRING = r"(?P<dollar>(?<![\w$])\$(?P<tag>[^\W\d]\w*|)\$[\s\S]*?(?:\$(?P=tag)\$|\Z))"
# Kept as they are: identifiers (closed), positional parameters.
_DQ_IDENTIFIER = r"(?P<keep>\"(?:[^\"]|\"\")*\")"
_WORD_DQ_IDENTIFIER = r"(?P<keep>\"[^\W\d][\w$]*\")"
_BACKTICK_IDENTIFIER = r"(?P<bt>`(?:[^`]|``)*`)"
_BRACKET_IDENTIFIER = r"(?P<br>\[[^\]']*\])"
_POSITIONAL = r"(?P<pos>\$[0-9]+)"
# Comments: kept by strip_literals with the literals inside them stripped too (MySQL runs /*! … */ as SQL);
# removed by strip_for_stats.
_BLOCK_COMMENT = r"(?P<block>/\*[\s\S]*?(?:\*/|\Z))"
_DASH_COMMENT = r"(?P<line>--[^\n]*)"
_MYSQL_LINE_COMMENT = r"(?P<line>(?:--(?=[\s\x00-\x1f]|\Z)|#)[^\n]*)"

#: Per vendor: the tokens of a statement, and of a comment's body (no comments inside a comment).
_BODY_TOKENS: dict[str, list[str]] = {
    "mysql": [_BACKTICK_IDENTIFIER, _BACKSLASH_STRING, _BACKSLASH_DQ_STRING, _NUMBER],
    "postgresql": [_DQ_IDENTIFIER, _POSITIONAL, _E_STRING, _DOLLAR_STRING, _STANDARD_STRING, _DQ_STRING, _NUMBER],
    "": [_WORD_DQ_IDENTIFIER, _BACKTICK_IDENTIFIER, _BRACKET_IDENTIFIER, _STANDARD_STRING, _DQ_STRING, _NUMBER],
}
_COMMENT_TOKENS: dict[str, list[str]] = {
    "mysql": [_BLOCK_COMMENT, _MYSQL_LINE_COMMENT],
    "postgresql": [_BLOCK_COMMENT, _DASH_COMMENT],
    "": [_BLOCK_COMMENT, _DASH_COMMENT],
}


def _compile(parts: list[str]) -> re.Pattern[str]:
    return re.compile("|".join(parts))


_STATEMENT = {vendor: _compile(_COMMENT_TOKENS[vendor] + body) for vendor, body in _BODY_TOKENS.items()}
_COMMENT_BODY = {vendor: _compile(body) for vendor, body in _BODY_TOKENS.items()}


#: What a value becomes: Django's own placeholder, so raw SQL and Django's SQL read alike on every page.
PLACEHOLDER = "%s"
_VALUE_KINDS = frozenset({"str", "num", "dqstr", "estr", "dollar"})


def _replacer(vendor: str) -> Callable[[re.Match[str]], str]:
    """The substitution for one vendor's tokens (a comment's body is stripped with the same rules)."""

    def replace(match: re.Match[str]) -> str:
        kind = match.lastgroup
        if kind in _VALUE_KINDS:
            return PLACEHOLDER
        if kind == "block":
            text = match.group(0)
            closed = len(text) >= 4 and text.endswith("*/")
            inner = text[2:-2] if closed else text[2:]
            return "/*" + _COMMENT_BODY[vendor].sub(replace, inner) + ("*/" if closed else "")
        if kind == "line":
            text = match.group(0)
            lead = 1 if text.startswith("#") else 2
            return text[:lead] + _COMMENT_BODY[vendor].sub(replace, text[lead:])
        return match.group(0)  # identifiers and positional parameters

    return replace


_REPLACE = {vendor: _replacer(vendor) for vendor in _BODY_TOKENS}


#: What a removed comment leaves: one blank, and runs of blanks then read as one.
_BLANKS = re.compile(r"[ \t]{2,}")


def _comment_remover(vendor: str, removed: list[int]) -> Callable[[re.Match[str]], str]:
    """The substitution that strips values and removes comments (counted in ``removed[0]``), keeping MySQL's
    ``/*! … */`` (run as SQL) and optimizer hints ``/*+ … */`` with their values stripped."""
    replace = _REPLACE[vendor]

    def remove(match: re.Match[str]) -> str:
        kind = match.lastgroup
        if kind == "line" or (kind == "block" and match.group(0)[2:3] not in ("!", "+")):
            removed[0] += 1
            return " "
        return replace(match)

    return remove


def strip_for_stats(sql: str, vendor: str = "") -> tuple[str, int]:
    """``sql`` as the stats keep it: values replaced by ``%s`` and comments removed (``/* user 42 */``, ``-- …``,
    MySQL's ``# …``: a new template per distinct comment, and what a comment says is not the stats' to keep);
    and how many comments were removed (counted, never stored)."""
    vendor = grammar(vendor)
    if "/*" not in sql and "--" not in sql and (vendor != "mysql" or "#" not in sql):
        return _STATEMENT[vendor].sub(_REPLACE[vendor], sql), 0
    removed = [0]
    text = _STATEMENT[vendor].sub(_comment_remover(vendor, removed), sql)
    if removed[0]:
        text = _BLANKS.sub(" ", text).strip()
    return text, removed[0]


def grammar(vendor: str) -> str:
    """The literal rules used for a Django ``connection.vendor`` (unknown vendors read as standard SQL)."""
    return vendor if vendor in _BODY_TOKENS else ""


def strip_literals(sql: str, vendor: str = "") -> str:
    """``sql`` with every string and number literal replaced by ``%s``, read as ``vendor`` reads it."""
    vendor = grammar(vendor)
    return _STATEMENT[vendor].sub(_REPLACE[vendor], sql)
