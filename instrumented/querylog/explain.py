"""The plan of a statement the stats show for a view: checked, run read-only under a timeout, mapped to models.

This is not a SQL console. The statement must be one the stats document shows for that view (the caller checks
that), and it must read as one plain SELECT: no writes, no ``INTO``, no locking clause, no second statement, no
executable comment (sqlparse reads it). Its placeholders get the values the user typed, passed to the driver as
parameters, never put into the text. It runs on a connection of its own (never the request's: its transaction,
session variables and ``ATOMIC_REQUESTS`` stay untouched), in a read-only transaction that is rolled back, under a
statement timeout: ``EXPLAIN FORMAT=JSON`` with ``max_statement_time`` on MariaDB, ``EXPLAIN (FORMAT JSON)`` with
``SET LOCAL statement_timeout`` on PostgreSQL, ``EXPLAIN QUERY PLAN`` under a progress handler on SQLite. The plan is
read by :mod:`instrumented.plans`; each table is named with its Django model and indexes (``Meta`` and the
database's own, from introspection) and whether the plan used them.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.utils import load_backend
from sqlparse import tokens as T
from sqlparse.lexer import tokenize

from .. import plans

#: ``(%s, ...)``: the stats' one template for a list of any length (an IN list, a function's arguments: stats/sql.py);
#: it takes a list of values.
IN_LIST = "(%s, ...)"
_PLACEHOLDER = re.compile(r"\(%s, \.\.\.\)|%%|%s")
#: Bounds on what a user may send: far above real statements, far below abuse.
MAX_PARAMS = 500
MAX_LIST = 1000
MAX_TEXT = 10_000
MAX_SQL = 100_000
#: Keywords that never belong in a plain SELECT: writes, DDL, locking (FOR UPDATE/SHARE, LOCK IN SHARE MODE), INTO,
#: session and transaction control, procedures, file access.
FORBIDDEN = frozenset(
    "INSERT UPDATE DELETE REPLACE MERGE UPSERT CREATE DROP ALTER TRUNCATE RENAME GRANT REVOKE INTO OUTFILE DUMPFILE "
    "LOCK SHARE NOWAIT CALL DO HANDLER LOAD SET RESET COPY EXECUTE EXEC PREPARE DEALLOCATE COMMIT ROLLBACK SAVEPOINT "
    "RELEASE BEGIN START VACUUM ANALYZE ATTACH DETACH PRAGMA REINDEX NOTIFY LISTEN DECLARE FETCH MOVE CLOSE KILL "
    "SHUTDOWN FLUSH PURGE".split()
)


class Refused(ValueError):
    """The request is not one this tool answers (the message says why, for the user); nothing was run."""


class Failed(RuntimeError):
    """The database did not give the plan (its message), or gave it past the timeout (``timed_out``)."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


def placeholders(sql: str) -> list[str]:
    """The statement's placeholders in order: ``"value"`` for ``%s``, ``"list"`` for the stats' ``(%s, ...)``."""
    return ["list" if m == IN_LIST else "value" for m in _PLACEHOLDER.findall(sql) if m != "%%"]


def _check_text(sql: str) -> None:
    """Refused when the text is empty, too long or holds a NUL."""
    if not sql.strip():
        raise Refused("The statement is empty.")
    if len(sql) > MAX_SQL:
        raise Refused(f"The statement is longer than {MAX_SQL} characters.")
    if "\x00" in sql:
        raise Refused("The statement contains a NUL character.")


def check_select(sql: str) -> None:
    """Refused unless ``sql`` is one plain SELECT (WITH … SELECT, a parenthesised SELECT too): see the module.

    Read with sqlparse's lexer (its tokens, without the grouping of ``sqlparse.parse``: a page checks each of its
    statements, and the tokens are all the rules need).
    """
    _check_text(sql)
    first: str | None = None
    for ttype, value in tokenize(sql):
        if ttype in T.Comment:
            if re.match(r"/\*[!M+]", value):
                raise Refused("Executable comments (/*! … */, /*M! … */, hints) are not allowed.")
            continue
        if ttype in T.Whitespace or ttype in T.Newline or ttype is T.Text.Whitespace:
            continue
        word = value.upper()
        if first is None:
            first = word
            if ttype not in T.Keyword.DML and ttype not in T.Keyword.CTE and word != "(":
                raise Refused(f"Only a plain SELECT can be explained, not {(value.split() or ['?'])[0][:30].upper()}.")
        if ttype is T.Punctuation and value == ";":
            raise Refused("Only one statement can be explained: ';' is not allowed.")
        if ttype in T.Keyword and (word in FORBIDDEN or (ttype in (T.Keyword.DML, T.Keyword.DDL) and word != "SELECT")):
            if first == word:
                raise Refused(f"Only a plain SELECT can be explained, not {word}.")
            kind = "a locking clause" if word in ("UPDATE", "SHARE", "LOCK", "NOWAIT") else word
            raise Refused(f"Only a plain SELECT can be explained: this statement has {kind} ({word}).")


def read_params(raw: Any, kinds: Sequence[str]) -> list[Any]:
    """The user's values for ``kinds`` (:func:`placeholders`): a JSON list (text) or a list; each value a scalar, a
    list for an IN list. Refused with the reason otherwise."""
    if isinstance(raw, str):
        if len(raw) > MAX_PARAMS * MAX_TEXT:
            raise Refused("The parameters are too long.")
        try:
            raw = json.loads(raw) if raw.strip() else []
        except ValueError:
            raise Refused('params must be a JSON list of values, e.g. [1, "text", null].') from None
    if not isinstance(raw, list):
        raise Refused("params must be a JSON list of values, one per placeholder.")
    if len(raw) != len(kinds):
        raise Refused(f"The statement has {len(kinds)} placeholder(s); {len(raw)} value(s) were given.")
    values: list[Any] = []
    for number, (value, kind) in enumerate(zip(raw, kinds, strict=True), 1):
        if kind == "list":
            if not isinstance(value, list) or not value or len(value) > MAX_LIST:
                raise Refused(f"Placeholder {number} is a list (%s, ...): give a JSON list of 1 to {MAX_LIST} values.")
            values.append([_scalar(v, number) for v in value])
        else:
            values.append(_scalar(value, number))
    return values


def _scalar(value: Any, number: int) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise Refused(f"Value {number} is longer than {MAX_TEXT} characters.")
        if "\x00" in value:
            raise Refused(f"Value {number} contains a NUL character.")
        return value
    raise Refused(f"Value {number} must be text, a number, true/false or null.")


def bind(sql: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
    """The statement with each IN list's ``(%s, ...)`` widened to its values' count, and the flat parameters."""
    flat: list[Any] = []
    parts: list[str] = []
    index = 0
    position = 0
    for match in _PLACEHOLDER.finditer(sql):
        if match.group(0) == "%%":
            continue
        value = values[index]
        index += 1
        parts.append(sql[position : match.start()])
        if match.group(0) == IN_LIST:
            parts.append("(" + ", ".join(["%s"] * len(value)) + ")")
            flat.extend(value)
        else:
            parts.append("%s")
            flat.append(value)
        position = match.end()
    parts.append(sql[position:])
    return "".join(parts), flat


# Running it ------------------------------------------------------------------------------------------------------


def own_connection(alias: str) -> BaseDatabaseWrapper:
    """A new connection to ``alias``'s database, not the one the request (or its transaction) uses."""
    settings_dict = dict(connections[alias].settings_dict)
    return load_backend(settings_dict["ENGINE"]).DatabaseWrapper(settings_dict, alias)


def explain_prefix(connection: BaseDatabaseWrapper, analyze: bool) -> str:
    """The EXPLAIN of the alias's database (ANALYZE only when allowed and the database has one that keeps JSON)."""
    vendor = connection.vendor
    if vendor == "postgresql":
        return "EXPLAIN (ANALYZE, FORMAT JSON) " if analyze else "EXPLAIN (FORMAT JSON) "
    if vendor == "mysql":
        return "ANALYZE FORMAT=JSON " if analyze and connection.mysql_is_mariadb else "EXPLAIN FORMAT=JSON "
    if vendor == "sqlite":
        return "EXPLAIN QUERY PLAN "
    raise Refused(f"Plans of {vendor} databases are not supported (MySQL/MariaDB, PostgreSQL and SQLite are).")


def _timed_out(vendor: str, exc: BaseException) -> bool:
    text = str(exc).lower()
    return (
        ("max_statement_time" in text or "maximum statement execution time" in text)
        if vendor == "mysql"
        else ("statement timeout" in text or "canceling statement" in text)
        if vendor == "postgresql"
        else "interrupted" in text
    )


def run(alias: str, sql: str, params: Sequence[Any], *, timeout: float, analyze: bool = False) -> tuple[Any, str]:
    """The raw plan of ``sql`` on ``alias`` (rows for SQLite, JSON text otherwise) and its engine name.

    On a connection of its own, read-only, rolled back, cut after ``timeout`` seconds (:class:`Failed`).
    """
    connection = own_connection(alias)
    vendor = connection.vendor
    prefix = explain_prefix(connection, analyze)
    statement = prefix + sql
    try:
        connection.ensure_connection()
        try:
            if vendor == "postgresql":
                raw = _run_postgresql(connection, statement, params, timeout)
            elif vendor == "mysql":
                raw = _run_mysql(connection, statement, params, timeout)
            else:
                raw = _run_sqlite(connection, statement, params, timeout)
        except Failed:
            raise
        except Exception as exc:  # noqa: BLE001 - every driver error becomes the user's message
            if _timed_out(vendor, exc):
                raise Failed(f"The plan took longer than {timeout:g} s (EXPLAIN_TIMEOUT) and was cut: {exc}",
                             timed_out=True) from None  # fmt: skip
            raise Failed(f"The database refused the EXPLAIN: {exc}") from None
    finally:
        connection.close()
    return raw, ("sqlite" if vendor == "sqlite" else vendor)


def _run_postgresql(connection: BaseDatabaseWrapper, statement: str, params: Sequence[Any], timeout: float) -> Any:
    connection.set_autocommit(False)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION READ ONLY")
            cursor.execute("SET LOCAL statement_timeout = %s", [max(1, int(timeout * 1000))])
            cursor.execute(statement, list(params))
            (doc,) = cursor.fetchone()
    finally:
        connection.rollback()
    return doc if isinstance(doc, str) else json.dumps(doc)


def _run_mysql(connection: BaseDatabaseWrapper, statement: str, params: Sequence[Any], timeout: float) -> Any:
    with connection.cursor() as cursor:
        # The connection is ours and closed afterwards: session settings cannot reach another request.
        if connection.mysql_is_mariadb:
            cursor.execute("SET SESSION max_statement_time = %s", [timeout])
        else:
            cursor.execute("SET SESSION max_execution_time = %s", [max(1, int(timeout * 1000))])
        cursor.execute("SET SESSION TRANSACTION READ ONLY")
        cursor.execute("START TRANSACTION READ ONLY")
        try:
            cursor.execute(statement, list(params))
            (doc,) = cursor.fetchone()
        finally:
            cursor.execute("ROLLBACK")
    return doc  # plans._load reads MariaDB's \' escapes


def _run_sqlite(connection: BaseDatabaseWrapper, statement: str, params: Sequence[Any], timeout: float) -> Any:
    raw = connection.connection
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA query_only = ON")  # the connection is ours: nothing it runs may write
        deadline = time.monotonic() + timeout
        # Called every few virtual-machine steps (EXPLAIN QUERY PLAN takes few): non-zero interrupts the statement.
        raw.set_progress_handler(lambda: int(time.monotonic() > deadline), 1)
        try:
            cursor.execute(statement, list(params))
            return [tuple(row) for row in cursor.fetchall()]
        finally:
            raw.set_progress_handler(None, 0)


# Tables, models, indexes -----------------------------------------------------------------------------------------


@dataclass
class Index:
    """One index of a table: its name and columns, where it is declared, whether the plan used or could use it."""

    name: str
    columns: list[str]
    fields: list[str]
    unique: bool = False
    primary_key: bool = False
    in_meta: bool = False
    in_database: bool = False
    used: bool = False
    possible: bool = False


@dataclass
class Table:
    """A table the plan reads: its model, indexes, full scan and the filtered columns no index starts with."""

    name: str
    model: str | None = None
    full_scan: str | None = None
    key: str | None = None
    indexes: list[Index] = field(default_factory=list)
    unindexed: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.name,
            "model": self.model,
            "full_scan": self.full_scan,
            "key": self.key,
            "indexes": [vars(i) for i in self.indexes],
            "unindexed": self.unindexed,
            "error": self.error,
        }


def model_of(table: str) -> Any:
    """The installed model whose ``db_table`` is ``table`` (MySQL's may differ in case), or None."""
    found = None
    for model in apps.get_models(include_auto_created=True):
        name = model._meta.db_table
        if name == table:
            return model
        if found is None and name.lower() == table.lower():
            found = model
    return found


def _meta_indexes(model: Any) -> dict[str, tuple[list[str], bool, bool]]:
    """Indexes the model declares, by column list: {column tuple as key: (field names, unique, primary key)}."""
    meta = model._meta
    by_columns: dict[str, tuple[list[str], bool, bool]] = {}
    for f in meta.concrete_fields:
        if f.primary_key or f.unique or getattr(f, "db_index", False):
            by_columns[f.column] = ([f.name], bool(f.unique or f.primary_key), bool(f.primary_key))
    names = {f.name: f.column for f in meta.concrete_fields}
    for index in meta.indexes:
        cols = [names.get(n.lstrip("-"), n.lstrip("-")) for n in index.fields]
        if cols:
            by_columns[",".join(cols)] = ([n.lstrip("-") for n in index.fields], False, False)
    for constraint in meta.constraints:
        fields = list(getattr(constraint, "fields", ()) or ())
        if fields and type(constraint).__name__ == "UniqueConstraint":
            by_columns[",".join(names.get(n, n) for n in fields)] = (fields, True, False)
    for together in meta.unique_together:
        by_columns[",".join(names.get(n, n) for n in together)] = (list(together), True, False)
    return by_columns


def describe_tables(alias: str, plan: plans.Plan, sql: str) -> list[Table]:
    """Each table the plan reads, with its model and indexes (Meta and the database's), once per table."""
    seen: dict[str, Table] = {}
    nodes = [n for n in plan.tables() if n.table]
    if not nodes:
        return []
    connection = own_connection(alias)
    try:
        with connection.cursor() as cursor:
            existing = set(connection.introspection.table_names(cursor))
            lowered = {t.lower(): t for t in existing}
            for node in nodes:
                name = str(node.table)
                table = seen.get(name)
                real = name if name in existing else lowered.get(name.lower())
                if table is None:
                    table = seen[name] = _describe(connection, cursor, name, real)
                _mark(table, node, sql, len({n.table for n in nodes}) == 1)
    except Exception as exc:  # noqa: BLE001 - introspection is a help, never the reason the plan is not shown
        for table in seen.values():
            table.error = table.error or f"introspection failed: {exc}"
        if not seen:
            return [Table(name=str(n.table), error=f"introspection failed: {exc}") for n in nodes]
    finally:
        connection.close()
    return list(seen.values())


def _describe(connection: BaseDatabaseWrapper, cursor: Any, name: str, real: str | None) -> Table:
    model = model_of(real or name)
    table = Table(name=name, model=f"{model._meta.label}" if model is not None else None)
    columns_to_fields = {f.column: f.name for f in model._meta.concrete_fields} if model is not None else {}
    meta = _meta_indexes(model) if model is not None else {}
    indexes: dict[str, Index] = {}
    if real is not None:
        for index_name, c in connection.introspection.get_constraints(cursor, real).items():
            if not (c.get("index") or c.get("primary_key") or c.get("unique")) or not c.get("columns"):
                continue
            columns = [str(col) for col in c["columns"]]
            key = ",".join(columns)
            indexes[index_name] = Index(
                name=str(index_name),
                columns=columns,
                fields=[columns_to_fields.get(col, col) for col in columns],
                unique=bool(c.get("unique") or c.get("primary_key")),
                primary_key=bool(c.get("primary_key")),
                in_meta=key in meta,
                in_database=True,
            )
    present = {",".join(i.columns) for i in indexes.values()}
    for key, (fields, unique, pk) in meta.items():
        if key not in present:  # declared, but not in this database (a migration not run here, or a replica)
            name_ = f"({', '.join(fields)})"
            indexes[name_] = Index(name=name_, columns=key.split(","), fields=fields, unique=unique, primary_key=pk,
                                   in_meta=True)  # fmt: skip
    table.indexes = sorted(indexes.values(), key=lambda i: (not i.primary_key, i.name))
    return table


def _where(sql: str) -> str:
    """The text after the statement's first WHERE (the columns a filter names), or ''."""
    match = re.search(r"\bWHERE\b", sql, re.IGNORECASE)
    return sql[match.end() :] if match else ""


def _mark(table: Table, node: plans.PlanNode, sql: str, single: bool) -> None:
    """What the plan did with this table: the index used and possible; for a full scan, the filtered columns that
    no index starts with (the missing index)."""
    key = node.key or ""
    possible = set(node.possible_keys)
    for index in table.indexes:
        pk_key = index.primary_key and key in ("PRIMARY", "INTEGER PRIMARY KEY", "PRIMARY KEY")
        if index.name == key or pk_key:
            index.used = True
        if index.name in possible or (index.primary_key and "PRIMARY" in possible):
            index.possible = True
    table.key = table.key or node.key
    if node.full_scan and not table.full_scan:
        table.full_scan = node.full_scan
    if not node.full_scan or table.model is None:
        return
    model = apps.get_model(table.model)
    where = _where(sql)
    leading = {i.columns[0] for i in table.indexes if i.columns}
    for f in model._meta.concrete_fields:
        column = re.escape(f.column)
        bare = rf"(?<![\w$.]){column}(?![\w$])"
        qualified = rf"(?<![\w$]){re.escape(table.name)}[\"`]?\s*\.\s*[\"`]?{column}(?![\w$])"
        named = (
            re.search(bare, node.condition or "")  # the plan's own condition on this table
            or re.search(qualified, f"{node.condition or ''} {where}")
            or (single and re.search(rf"(?<![\w$.]){column}(?![\w$])|[\"`]{column}[\"`]", where))
        )
        if f.column in leading or not named:
            continue
        entry = {"field": f"{model.__name__}.{f.name}", "column": f.column}
        if entry not in table.unindexed:
            table.unindexed.append(entry)
