"""SQL templates (fingerprints), on the request path; the values of raw SQL are stripped off it (literals.py).

``template_of`` runs once per distinct statement when a request ends (cheap: Django's SQL already has
``%s`` placeholders). ``request_key`` is the per-request key of a statement run (memoised per process): the
same for every length of its ``IN (…)`` and ``VALUES (…), (…)`` lists, so a loop whose statement differs only
in a list's length is one N+1. ``kind_of`` tells reads from per-row writes and transaction control, which is
never an N+1 or a duplicate. ``sqlparse`` is for display only (see display.py), never here.
"""

from __future__ import annotations

import re
from typing import Any

#: A parenthesised list of two or more placeholders (an ``IN`` list, a row of values, a function's arguments).
_LIST = re.compile(r"\((?:%s, )+%s\)")
#: ``IN (%s)``: a one-element IN list is the same statement as a longer one.
_IN_ONE = re.compile(r"(\bIN )\(%s\)", re.IGNORECASE)
#: Two or more rows of ``VALUES``, each the same as the first (once lists are collapsed): the first row alone, so
#: that one row and a thousand are one statement.
_ROWS = re.compile(r"(\((?:[^()]|\([^()]*\))*\))(?:, \1)+")
#: ``bulk_update``'s ``CASE WHEN (…) THEN %s …`` chain, one arm per row: the first arm alone.
_ARMS = re.compile(r"(\bWHEN \([^()]*\) THEN %s)(?: \1)+")
#: Savepoint names are per transaction (``s140…_x1``): one template for every name.
_SAVEPOINT = re.compile(r"^((?:RELEASE |ROLLBACK TO )?SAVEPOINT )\S+", re.IGNORECASE)

#: What a statement is, for findings: a read, a write (a write per row in a loop is its own finding) or
#: transaction control (never an N+1, never a duplicate).
READ = "read"
WRITE = "write"
CONTROL = "control"
_WRITES = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE", "MERGE", "UPSERT"})
_CONTROL = frozenset({"BEGIN", "START", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "END", "ABORT"})
_FIRST_WORD = re.compile(r"(?:\s|\(|/\*.*?\*/|--[^\n]*\n|#[^\n]*\n)*([A-Za-z]+)", re.DOTALL)

#: Per process: statement -> its per-request key ("" when it is its own key), and template -> kind. Bounded.
MAX_MEMO = 8192
MAX_MEMO_SQL = 4096
_keys: dict[Any, str] = {}
_kinds: dict[str, str] = {}


def template_of(sql: str) -> str:
    """The query's fingerprint: Django's SQL already has %s placeholders; IN lists and VALUES rows collapse to one."""
    # Three C-level searches for most statements: every list collapsed here starts with "(%s", but the arms.
    if "(%s" not in sql and ") THEN %s WHEN" not in sql and "SAVEPOINT" not in sql:
        return sql
    if "%s, %s" in sql:
        sql = _LIST.sub("(%s, ...)", sql)
    if "(%s)" in sql:
        sql = _IN_ONE.sub(r"\1(%s, ...)", sql)
    if "), (" in sql:
        sql = _ROWS.sub(r"\1", sql)
    if ") THEN %s WHEN" in sql:
        sql = _ARMS.sub(r"\1", sql)
    if "SAVEPOINT" in sql:
        sql = _SAVEPOINT.sub(r"\1%s", sql)
    return sql


def request_key(sql: Any) -> str:
    """The key a statement is counted under in one request: its template when a list's length is all that tells it
    from others ("" when the statement is its own key). Memoised per process for plain, short strings."""
    key = template_of(sql) if type(sql) is str else ""
    key = "" if key is sql or key == sql else key
    if type(sql) is str and len(sql) <= MAX_MEMO_SQL:
        if len(_keys) >= MAX_MEMO:
            _keys.clear()
        _keys[sql] = key
    return key


def kind_of(sql: Any) -> str:
    """READ, WRITE or CONTROL, from the statement's first keyword (comments and parentheses skipped); memoised."""
    kind = _kinds.get(sql)
    if kind is None:
        if type(sql) is not str:
            return READ
        match = _FIRST_WORD.match(sql)
        word = match.group(1).upper() if match else ""
        kind = WRITE if word in _WRITES else CONTROL if word in _CONTROL else READ
        if len(sql) <= MAX_MEMO_SQL:
            if len(_kinds) >= MAX_MEMO:
                _kinds.clear()
            _kinds[sql] = kind
    return kind


def write_hint(sql: str) -> str | None:
    """The fix for a write per row: one ``bulk_create`` for INSERTs, one ``bulk_update`` (or ``update()``) for
    UPDATEs, one queryset ``delete()`` for DELETEs."""
    match = _FIRST_WORD.match(sql)
    word = match.group(1).upper() if match else ""
    if word in ("INSERT", "REPLACE", "UPSERT"):
        return "bulk_create"
    if word in ("UPDATE", "MERGE"):
        return "bulk_update"
    if word == "DELETE":
        return "delete"
    return None
