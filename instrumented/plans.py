"""Query plans as readable trees: MySQL/MariaDB ``EXPLAIN FORMAT=JSON``, PostgreSQL ``EXPLAIN (FORMAT JSON)`` and
SQLite ``EXPLAIN QUERY PLAN`` read into one shape (:class:`Plan` of :class:`PlanNode`).

Shared by every page that shows a plan (the DBA panel's ``PROXY LOG EXPLAIN``, a view page's Explain form): each
node says what it does (a table read, a join, a sort), the access type, the rows the planner expects, the key it
uses and the keys it could have used, and whether it is a full scan. The tables and their keys are what a caller
maps to Django models. A plan comes from a database or a proxy: it is read as untrusted data (sizes, depth and
types checked); what cannot be read becomes a :class:`PlanError`, never an exception of another kind.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Largest plan text read, nesting followed and nodes made: far above real plans, a bound for forged ones.
MAX_TEXT = 4 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 5000

#: MySQL/MariaDB access types, best to worst (``ALL``: every row of the table; ``index``: every entry of an index).
FULL_SCANS = {"ALL": "full table scan", "index": "full index scan"}


class PlanError(ValueError):
    """The plan could not be read (not JSON, not a plan, or past the bounds)."""


@dataclass
class PlanNode:
    """One step of a plan: a table read (``table`` set) or an operation over its children."""

    operation: str
    table: str | None = None
    access: str | None = None
    rows: float | None = None
    filtered: float | None = None
    key: str | None = None
    possible_keys: tuple[str, ...] = ()
    used_key_parts: tuple[str, ...] = ()
    condition: str | None = None
    cost: float | None = None
    full_scan: str | None = None  # "full table scan" / "full index scan", or None
    notes: list[str] = field(default_factory=list)
    children: list[PlanNode] = field(default_factory=list)

    def walk(self, depth: int = 0) -> Iterator[tuple[int, PlanNode]]:
        """This node and every node below it, depth first, with their depth."""
        stack: list[tuple[int, PlanNode]] = [(depth, self)]
        while stack:
            level, node = stack.pop()
            yield level, node
            stack.extend((level + 1, child) for child in reversed(node.children))

    def summary(self) -> str:
        """One line: what the step does and its figures (the text tree's line, the HTML tree's label)."""
        parts = [self.operation if self.table is None else f"{self.operation} {self.table}"]
        if self.access and self.access != self.operation:
            parts.append(f"access {self.access}")
        if self.full_scan:
            parts.append(self.full_scan.upper())
        if self.key:
            used = f" ({', '.join(self.used_key_parts)})" if self.used_key_parts else ""
            parts.append(f"key {self.key}{used}")
        elif self.table is not None and self.access is not None:
            parts.append("no key")
        if self.possible_keys:
            parts.append(f"possible keys {', '.join(self.possible_keys)}")
        if self.rows is not None:
            parts.append(f"rows {_number(self.rows)}")
        if self.filtered is not None and self.filtered < 100:
            parts.append(f"filtered {_number(self.filtered)}%")
        if self.cost is not None:
            parts.append(f"cost {_number(self.cost)}")
        parts.extend(self.notes)
        if self.condition:
            parts.append(f"condition: {self.condition}")
        return " · ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, children included."""
        return {
            "operation": self.operation,
            "table": self.table,
            "access": self.access,
            "rows": self.rows,
            "filtered": self.filtered,
            "key": self.key,
            "possible_keys": list(self.possible_keys),
            "used_key_parts": list(self.used_key_parts),
            "condition": self.condition,
            "cost": self.cost,
            "full_scan": self.full_scan,
            "notes": list(self.notes),
            "children": [child.as_dict() for child in self.children],
        }


@dataclass
class Plan:
    """A whole plan: its root step and the engine it came from (``mysql``, ``postgresql``, ``sqlite``)."""

    engine: str
    root: PlanNode

    def lines(self) -> list[tuple[int, PlanNode]]:
        """Every node with its depth, in reading order."""
        return list(self.root.walk())

    def tables(self) -> list[PlanNode]:
        """The table reads, in reading order: what a caller maps to models and their indexes."""
        return [node for _, node in self.root.walk() if node.table is not None]

    def full_scans(self) -> list[PlanNode]:
        """The table reads that read a whole table or index."""
        return [node for node in self.tables() if node.full_scan]

    def text(self) -> str:
        """The tree as indented lines, for a terminal or a log."""
        return "\n".join(("  " * depth) + ("- " if depth else "") + node.summary() for depth, node in self.lines())

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the engine, the tree, and the full scans' tables."""
        return {
            "engine": self.engine,
            "root": self.root.as_dict(),
            "full_scans": [node.table for node in self.full_scans()],
        }


def _number(value: float) -> str:
    """1200, 0.5, 12.25: no trailing zeros."""
    return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))


def _text(value: Any, limit: int = 2000) -> str | None:
    """A string attribute, bounded; anything else is None (a forged plan's types are not trusted)."""
    if isinstance(value, str):
        return value[:limit]
    return None


def _float(value: Any) -> float | None:
    """A number attribute (MySQL writes some as strings: "cost_info": {"query_cost": "1.25"})."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _names(value: Any) -> tuple[str, ...]:
    """A list of names (possible keys, key parts), bounded."""
    if isinstance(value, list):
        return tuple(v[:200] for v in value[:64] if isinstance(v, str))
    if isinstance(value, str):
        return (value[:200],)
    return ()


#: MariaDB writes a condition's quote as a backslash and a quote in its JSON plan: JSON has no such escape.
_MARIADB_ESCAPE = re.compile(r"(\\\\)|\\'")


def _load(raw: str | bytes | Any) -> Any:
    """JSON text (or an already parsed document), bounded; MariaDB's ``\\'`` read as ``'`` (the app's Explain and
    ``PROXY LOG EXPLAIN`` alike)."""
    if isinstance(raw, bytes | bytearray):
        raw = bytes(raw).decode("utf-8", "replace")
    if isinstance(raw, str):
        if len(raw) > MAX_TEXT:
            raise PlanError(f"the plan is larger than {MAX_TEXT} bytes")
        try:
            return json.loads(raw)
        except ValueError as exc:
            if "\\'" not in raw:
                raise PlanError(f"the plan is not JSON: {exc}") from None
        except RecursionError as exc:
            raise PlanError(f"the plan is not JSON: {exc}") from None
        try:
            return json.loads(_MARIADB_ESCAPE.sub(lambda m: m.group(1) or "'", raw))
        except (ValueError, RecursionError) as exc:
            raise PlanError(f"the plan is not JSON: {exc}") from None
    return raw


class _Budget:
    """Counts the nodes made and bounds the depth of a plan being read."""

    def __init__(self) -> None:
        self.nodes = 0

    def node(self, depth: int, **kwargs: Any) -> PlanNode:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise PlanError(f"the plan has more than {MAX_NODES} steps")
        if depth > MAX_DEPTH:
            raise PlanError(f"the plan is nested deeper than {MAX_DEPTH}")
        return PlanNode(**kwargs)


# MySQL / MariaDB -------------------------------------------------------------------------------------------------

#: Operation keys of MySQL's and MariaDB's JSON plans and how a reader calls them; flags that become notes.
_MYSQL_OPERATIONS = {
    "nested_loop": "nested loop join",
    "ordering_operation": "order by",
    "grouping_operation": "group by",
    "duplicates_removal": "distinct",
    "windowing": "window functions",
    "window_functions_computation": "window functions",
    "filesort": "sort",
    "read_sorted_file": "read sorted rows",
    "temporary_table": "temporary table",
    "union_result": "union",
    "materialized_from_subquery": "materialized subquery",
    "materialized": "materialized subquery",
    "subqueries": "subqueries",
    "attached_subqueries": "subqueries",
    "optimized_away_subqueries": "subqueries (optimized away)",
    "having_subqueries": "subqueries in HAVING",
    "select_list_subqueries": "subqueries in the select list",
    "order_by_subqueries": "subqueries in ORDER BY",
    "group_by_subqueries": "subqueries in GROUP BY",
}
_MYSQL_FLAGS = {
    "using_filesort": "using filesort",
    "using_temporary_table": "using temporary table",
    "using_index": "covering index",
    "using_index_for_group_by": "index for group by",
    "using_join_buffer": "join buffer",
    "using_MRR": "multi-range read",
    "dependent": "dependent",
    "cacheable": None,
    "distinct": "distinct",
    "first_match": "first match",
    "loose_scan": "loose scan",
}
#: Table attributes read into the node (everything else of a table that is a dict or list is walked for steps).
_MYSQL_TABLE_FIELDS = {
    "table_name", "access_type", "possible_keys", "key", "used_key_parts", "key_length", "ref", "rows",
    "rows_examined_per_scan", "rows_produced_per_join", "filtered", "attached_condition", "index_condition",
    "cost_info", "used_columns", "message", "partitions",
}  # fmt: skip


def _mysql_notes(data: Mapping[str, Any]) -> list[str]:
    notes = []
    for name, note in _MYSQL_FLAGS.items():
        value = data.get(name)
        if note and value is True:
            notes.append(note)
        elif note and isinstance(value, str) and value:  # MySQL 5.7: "using_join_buffer": "Block Nested Loop"
            notes.append(f"{note} ({value[:80]})")
    return notes


def _mysql_table(data: Mapping[str, Any], depth: int, budget: _Budget) -> PlanNode:
    access = _text(data.get("access_type"), 40)
    name = _text(data.get("table_name"), 200)
    message = _text(data.get("message"), 200)
    rows = _float(data.get("rows"))
    if rows is None:
        rows = _float(data.get("rows_examined_per_scan"))
    cost_info = data.get("cost_info")
    node = budget.node(
        depth,
        operation="table" if name is not None else (message or "table"),
        table=name,
        access=access,
        rows=rows,
        filtered=_float(data.get("filtered")),
        key=_text(data.get("key"), 200),
        possible_keys=_names(data.get("possible_keys")),
        used_key_parts=_names(data.get("used_key_parts")),
        condition=_text(data.get("attached_condition")),
        cost=_float(cost_info.get("read_cost")) if isinstance(cost_info, dict) else None,
        full_scan=FULL_SCANS.get(access or ""),
        notes=_mysql_notes(data),
    )
    if name is not None and message:
        node.notes.append(message)
    index_condition = _text(data.get("index_condition"))
    if index_condition:
        node.notes.append(f"index condition: {index_condition}")
    for key, value in data.items():
        if key not in _MYSQL_TABLE_FIELDS and isinstance(value, dict | list):
            _mysql_walk(key, value, node, depth + 1, budget)
    return node


def _mysql_children(value: Any, target: PlanNode, depth: int, budget: _Budget) -> None:
    """Walk the dict/list values of an object (or of each object of a list) under ``target``."""
    items: Iterable[Any] = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, dict):
            for k, v in item.items():
                if isinstance(v, dict | list):
                    _mysql_walk(k, v, target, depth, budget)


def _mysql_query_block(value: Mapping[str, Any], parent: PlanNode, depth: int, budget: _Budget) -> None:
    """A SELECT of the statement: its number, its cost, then its steps."""
    select_id = value.get("select_id")
    label = f"select #{select_id}" if isinstance(select_id, int) and not isinstance(select_id, bool) else "select"
    cost_info = value.get("cost_info")
    cost = _float(cost_info.get("query_cost")) if isinstance(cost_info, dict) else _float(value.get("cost"))
    node = budget.node(depth, operation=label, cost=cost, notes=_mysql_notes(value))
    message = _text(value.get("message"), 200)
    if message:
        node.notes.append(message)
    parent.children.append(node)
    _mysql_children(value, node, depth + 1, budget)


def _mysql_join_buffer(key: str, value: Mapping[str, Any], parent: PlanNode, depth: int, budget: _Budget) -> None:
    """MariaDB's block-nl-join / hash-join: the table read through a join buffer; the buffer's kind and condition
    belong to that table."""
    before = len(parent.children)
    _mysql_children(value, parent, depth, budget)
    if len(parent.children) > before:
        joined = parent.children[before]
        joined.notes.append(f"join buffer ({_text(value.get('join_type'), 40) or key})")
        condition = _text(value.get("attached_condition"))
        if condition:
            joined.condition = f"{joined.condition} AND {condition}" if joined.condition else condition


def _mysql_operation(label: str, value: Any, depth: int, budget: _Budget) -> PlanNode:
    """An operation over the steps below it (a sort, a union, a group by), with its flags as notes."""
    node = budget.node(depth, operation=label, notes=_mysql_notes(value) if isinstance(value, dict) else [])
    if isinstance(value, dict):
        name = _text(value.get("table_name"), 200)
        if name:
            node.table, node.access = name, _text(value.get("access_type"), 40)
        sort_key = _text(value.get("sort_key"), 500)
        if sort_key:
            node.notes.append(f"sort key: {sort_key}")
    return node


def _mysql_walk(key: str, value: Any, parent: PlanNode, depth: int, budget: _Budget) -> None:
    """Add the steps of one key of a JSON plan object under ``parent``."""
    if depth > MAX_DEPTH:
        raise PlanError(f"the plan is nested deeper than {MAX_DEPTH}")
    if key == "table" and isinstance(value, dict):
        parent.children.append(_mysql_table(value, depth, budget))
    elif key == "query_block" and isinstance(value, dict):
        _mysql_query_block(value, parent, depth, budget)
    elif key in ("block-nl-join", "hash-join") and isinstance(value, dict):
        _mysql_join_buffer(key, value, parent, depth, budget)
    else:
        label = _MYSQL_OPERATIONS.get(key)
        target = parent
        if label is not None and not (key == "nested_loop" and isinstance(value, list) and len(value) < 2):
            target = _mysql_operation(label, value, depth, budget)
            parent.children.append(target)
        _mysql_children(value, target, depth + 1, budget)


def from_mysql(raw: str | bytes | Mapping[str, Any]) -> Plan:
    """A MySQL (5.7+) or MariaDB (10+) ``EXPLAIN FORMAT=JSON`` document as a plan."""
    doc = _load(raw)
    if not isinstance(doc, dict) or not isinstance(doc.get("query_block"), dict):
        raise PlanError("not a MySQL/MariaDB JSON plan (no query_block)")
    budget = _Budget()
    holder = PlanNode(operation="plan")
    _mysql_walk("query_block", doc["query_block"], holder, 0, budget)
    return Plan("mysql", holder.children[0])


# PostgreSQL ------------------------------------------------------------------------------------------------------

_PG_CONDITIONS = ("Index Cond", "Recheck Cond", "Hash Cond", "Merge Cond", "Join Filter", "Filter")


def _pg_node(data: Mapping[str, Any], depth: int, budget: _Budget) -> PlanNode:
    kind = _text(data.get("Node Type"), 80) or "step"
    relation = _text(data.get("Relation Name"), 200)
    operation = kind
    join = _text(data.get("Join Type"), 40)
    if join and join != "Inner":
        operation = f"{kind} ({join} join)"
    conditions = [f"{name}: {text}" for name in _PG_CONDITIONS if (text := _text(data.get(name)))]
    node = budget.node(
        depth,
        operation=operation,
        table=relation,
        access=kind,
        rows=_float(data.get("Plan Rows")),
        key=_text(data.get("Index Name"), 200),
        condition="; ".join(conditions) or None,
        cost=_float(data.get("Total Cost")),
        full_scan="full table scan" if kind == "Seq Scan" else None,
    )
    alias = _text(data.get("Alias"), 200)
    if relation and alias and alias != relation:
        node.notes.append(f"as {alias}")
    sort_key = data.get("Sort Key")
    if isinstance(sort_key, list):
        node.notes.append("sort key: " + ", ".join(_names(sort_key)))
    children = data.get("Plans")
    if isinstance(children, list):
        for child in children:
            if isinstance(child, dict):
                node.children.append(_pg_node(child, depth + 1, budget))
    if kind == "Bitmap Heap Scan" and node.key is None:  # the table read names the index its bitmap came from
        node.key = next((n.key for _, n in node.walk() if n.access == "Bitmap Index Scan" and n.key), None)
    return node


def from_postgresql(raw: str | bytes | Sequence[Any] | Mapping[str, Any]) -> Plan:
    """A PostgreSQL ``EXPLAIN (FORMAT JSON)`` document (``[{"Plan": {...}}]``) as a plan."""
    doc = _load(raw)
    if isinstance(doc, list) and doc:
        doc = doc[0]
    if not isinstance(doc, dict) or not isinstance(doc.get("Plan"), dict):
        raise PlanError("not a PostgreSQL JSON plan (no Plan)")
    return Plan("postgresql", _pg_node(doc["Plan"], 0, _Budget()))


# SQLite ----------------------------------------------------------------------------------------------------------


def _sqlite_node(detail: str, depth: int, budget: _Budget) -> PlanNode:
    words = detail.split()
    verb = words[0].upper() if words else ""
    if verb not in ("SCAN", "SEARCH") or len(words) < 2:
        return budget.node(depth, operation=detail[:500])
    rest = words[1:]
    if rest[0].upper() == "TABLE" and len(rest) > 1:  # SQLite before 3.36: "SCAN TABLE book"
        rest = rest[1:]
    table, rest = rest[0], rest[1:]
    notes = []
    if len(rest) >= 2 and rest[0].upper() == "AS":
        notes.append(f"as {rest[1]}")
        rest = rest[2:]
    text = " ".join(rest)
    upper = text.upper()
    key = None
    covering = "COVERING INDEX" in upper
    if "USING" in upper:
        after = text[upper.index("USING") + len("USING") :].strip()
        for prefix in ("COVERING INDEX ", "INDEX ", "INTEGER PRIMARY KEY", "PRIMARY KEY"):
            if after.upper().startswith(prefix):
                name = after[len(prefix) :].strip().split(" ")[0] if prefix.endswith(" ") else prefix.strip()
                key = name or None
                break
    condition = text[text.index("(") + 1 : text.rindex(")")] if "(" in text and text.endswith(")") else None
    if covering:
        notes.append("covering index")
    full = None
    if verb == "SCAN":
        full = "full index scan" if key else "full table scan"
    return budget.node(depth, operation="table", table=table, access=verb, key=key, condition=condition,
                       full_scan=full, notes=notes)  # fmt: skip


def from_sqlite(rows: Iterable[Sequence[Any]]) -> Plan:
    """SQLite's ``EXPLAIN QUERY PLAN`` rows (``id, parent, notused, detail``) as a plan."""
    budget = _Budget()
    root = PlanNode(operation="query plan")
    by_id: dict[int, tuple[int, PlanNode]] = {0: (0, root)}
    for row in rows:
        if len(row) < 4 or not isinstance(row[0], int) or not isinstance(row[1], int) or not isinstance(row[3], str):
            raise PlanError("not SQLite EXPLAIN QUERY PLAN rows (id, parent, notused, detail)")
        depth, parent = by_id.get(row[1], (0, root))
        node = _sqlite_node(row[3], depth + 1, budget)
        parent.children.append(node)
        by_id[row[0]] = (depth + 1, node)
    return Plan("sqlite", root)


def parse(raw: Any, engine: str) -> Plan:
    """A plan of any of the engines: ``mysql`` (or ``mariadb``), ``postgresql``, ``sqlite``."""
    if engine in ("mysql", "mariadb"):
        return from_mysql(raw)
    if engine in ("postgresql", "postgres"):
        return from_postgresql(raw)
    if engine == "sqlite":
        return from_sqlite(raw)
    raise PlanError(f"no reader for {engine!r} plans")
