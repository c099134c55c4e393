"""A process's window roll-up on the wire, and the reader's merge of many of them in C-level steps.

A stored roll-up (schema 4) is ``b"R"``, the length of its main part (4 bytes), the main part, then the
current bucket's series points, each packed on its own (memcached.pack_bytes): a full read inflates and
parses only the main part, a chart's read the points too. The main part, each piece after its length
where it has one:

- ``meta`` JSON (:class:`Rollup`): as_of, buckets, fin, ``dims`` and the sparse exceptions and findings;
- ``layout`` JSON (:class:`Layout`): which views and rows the numbers belong to: view names (sorted) and
  routes, and the tables keyed by (view, string): methods, SQL templates, aliases;
- the summed numbers, int64, as records: per view ``n e s0 s1 s2 s3 qn db n1 lsum`` and the findings' totals
  (snapshot.TOTALS: ``n1s n1q dup w1 w1s w1q cm``), then per row of each
  table its values (``mc``; ``qc qt q1``; ``ac au``); the maxima, int64: ``qmax`` of every view, then
  ``lmax``; latencies in tenths of µs;
- the histogram slices' offsets and lengths (int32) and their counts (histogram.pack_columns, narrowed to
  1 or 2 bytes a count when the largest fits: histogram.narrow).

Processes of one site mostly have the same layout (the same views and templates, in the same order), and
their layout bytes are then identical: the reader maps a layout to its merged views once, and adds the
numbers of every process of that layout as one wide integer (64-bit lanes; every stored number is below
2**48, so 2000 processes cannot carry into the next lane). Per process that leaves the maxima and the
histograms (one wide integer per view); per layout, each record (a view's or a row's numbers) is one wide
integer added into its merged view or row: one ``map(operator.add, ...)`` per layout and table.
"""

from __future__ import annotations

import json
import sys
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from itertools import accumulate, pairwise, repeat
from operator import add, itemgetter, lshift, mul, sub
from typing import Any, NotRequired, TypedDict, cast

from ..memcached import MAX_UNPACKED_BYTES, dumps, inflate, pack_bytes
from . import histogram
from .snapshot import TOTALS, ViewSnapshot, ViewTotals, add_into

#: First byte of a roll-up value (memcached.pack uses "j" and "z", snapshot.encode_sections "S").
ROLLUP = b"R"
#: Per-view summed numbers, in stored order (``lsum`` in tenths of µs).
SUMMED = ("n", "e", "s0", "s1", "s2", "s3", "qn", "db", "n1", "lsum", *(field for field, _slot in TOTALS))
#: Per-view maxima (``lmax`` in tenths of µs).
MAXIMA = ("qmax", "lmax")


@dataclass(frozen=True, slots=True)
class Table:
    """Rows keyed by (view index, index into the layout's ``strings`` list), with summed value columns."""

    view: str
    key: str
    values: tuple[str, ...]
    strings: str


TABLES = (
    Table("mv", "mk", ("mc",), "methods"),
    Table("qv", "qs", ("qc", "qt", "q1"), "sql"),
    Table("av", "ak", ("ac", "au"), "aliases"),
)


class Layout(TypedDict):
    """Which views and rows a roll-up's numbers belong to (index i is view ``names[i]``)."""

    names: list[str]
    routes: list[str]
    methods: list[str]
    sql: list[str]
    aliases: list[str]
    mv: list[int]
    mk: list[int]
    qv: list[int]
    qs: list[int]
    av: list[int]
    ak: list[int]


class Rollup(TypedDict):
    """``<prefix>:roll:<process>``'s JSON: ``as_of`` the bucket it was written in, ``at`` the unix time,
    ``fin`` which finished-bucket series (snapshot.SeriesHeader) goes with it, ``dims`` the number of views
    and of rows per table, ``hw`` the bytes per histogram count (histogram.narrow); ``x`` (exceptions) and
    ``fx`` (findings ``{"qx", "c", "o", "qt", "t"}``) are sparse, keyed by view index as a string, in row form. The
    current bucket's series points ``[view name, bucket, requests, errors, histogram slice]`` follow in the
    value's second part."""

    process: str
    as_of: int
    at: float
    buckets: list[int]
    fin: int
    dims: NotRequired[list[int]]
    hw: NotRequired[int]
    x: NotRequired[dict[str, dict[str, list[Any]]]]
    fx: NotRequired[dict[str, dict[str, Any]]]
    truncated: NotRequired[bool]


def _packed(typecode: str, values: Iterable[int]) -> bytes:
    packed = array(typecode, values)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def _unpacked(typecode: str, data: bytes) -> list[int]:
    values = array(typecode, data)
    if sys.byteorder != "little":
        values.byteswap()
    return values.tolist()


def _tenths(us: float) -> int:
    return round(us * 10)


def encode_rollup(meta: Rollup, views: dict[str, ViewSnapshot], current: list[list[Any]]) -> bytes:
    """A roll-up value of row-form view snapshots (the flusher's roll-up) and the current bucket's series
    points (``[view name, bucket, requests, errors, histogram slice]``, kept as they are)."""
    names = sorted(views)
    rows = [views[name] for name in names]
    blob, offsets, lengths = histogram.pack_columns(row.get("h", "") for row in rows)
    layout: dict[str, list[Any]] = {"names": names, "routes": [row.get("route", "") for row in rows]}
    strings: dict[str, dict[str, int]] = {table.strings: {} for table in TABLES}
    columns: dict[str, list[int]] = {name: [] for table in TABLES for name in (table.view, table.key, *table.values)}

    def row_of(table: Table, view: int, key: str, values: tuple[int, ...]) -> None:
        columns[table.view].append(view)
        known = strings[table.strings]
        columns[table.key].append(known.setdefault(key, len(known)))
        for name, value in zip(table.values, values, strict=True):
            columns[name].append(value)

    for i, row in enumerate(rows):  # rows sorted too: processes with the same views write the same layout
        for method, count in sorted(row.get("m", {}).items()):
            row_of(TABLES[0], i, method, (count,))
        for sql, count, time_us, n1 in sorted(row.get("q", ())):
            row_of(TABLES[1], i, sql, (count, time_us, n1))
        for alias, (count, time_us) in sorted(row.get("a", {}).items()):
            row_of(TABLES[2], i, alias, (count, time_us))
    for table in TABLES:
        layout[table.strings] = list(strings[table.strings])
        layout[table.view], layout[table.key] = columns[table.view], columns[table.key]
    width, blob = histogram.narrow(blob)
    doc: Rollup = {**meta, "dims": [len(names), *(len(columns[table.view]) for table in TABLES)], "hw": width}
    exceptions = {str(i): row["x"] for i, row in enumerate(rows) if row.get("x")}
    if exceptions:
        doc["x"] = exceptions
    findings: dict[str, dict[str, Any]] = {
        str(i): {name: row[name] for name in ("qx", "c", "o", "qt", "t") if name in row}
        for i, row in enumerate(rows)
        if "qx" in row or "c" in row or "o" in row or "qt" in row or "t" in row
    }
    if findings:
        doc["fx"] = findings
    summed = [
        value
        for row in rows
        for value in (
            row["n"], row.get("e", 0), *row["s"], row.get("qn", 0), row.get("db", 0), row.get("n1", 0),
            _tenths(row["lsum"]), *(int(cast(dict[str, Any], row).get(field, 0)) for field, _slot in TOTALS),
        )
    ]  # fmt: skip
    for table in TABLES:  # a record per row, its values side by side
        summed += [value for values in zip(*(columns[name] for name in table.values), strict=True) for value in values]
    maxima = [[row.get("qmax", 0) for row in rows], [_tenths(row["lmax"]) for row in rows]]
    parts = [dumps(doc), dumps(layout)]
    main = b"".join(len(part).to_bytes(4, "little") + part for part in parts)
    main += _packed("q", summed)
    main += _packed("q", (value for column in maxima for value in column))
    main += _packed("i", offsets + lengths) + blob
    main = pack_bytes(main)
    return ROLLUP + len(main).to_bytes(4, "little") + main + pack_bytes(dumps(current))


def split_rollup(value: bytes) -> tuple[bytes, bytes] | None:
    """The two packed parts of a roll-up value (main, current points), or None when it is not one."""
    if value[:1] != ROLLUP or len(value) < 5:
        return None
    end = 5 + int.from_bytes(value[1:5], "little")
    return (value[5:end], value[end:]) if end <= len(value) else None


@dataclass(slots=True)
class Decoded:
    """A roll-up's main part cut into its pieces (sizes checked against ``dims``); the layout is parsed only
    by a reader that has not seen the same layout bytes, the current points only by a chart's read."""

    doc: dict[str, Any]
    dims: tuple[int, int, int, int]
    layout: bytes
    numbers: bytes
    maxima: bytes
    histograms: bytes
    blob: bytes
    current: bytes

    def parse_layout(self) -> Layout:
        """The layout JSON, checked against ``dims`` (ValueError when malformed)."""
        layout = json.loads(self.layout)
        if not isinstance(layout, dict):
            raise ValueError("layout")
        views = self.dims[0]
        for name in ("names", "routes", "methods", "sql", "aliases"):
            values = layout.get(name)
            if not isinstance(values, list) or not set(map(type, values)) <= {str}:
                raise ValueError(name)
        if len(layout["names"]) != views or len(layout["routes"]) != views:
            raise ValueError("views")
        for table, rows in zip(TABLES, self.dims[1:], strict=True):
            for name, size in ((table.view, views), (table.key, len(layout[table.strings]))):
                values = layout.get(name)
                if not isinstance(values, list) or len(values) != rows or not set(map(type, values)) <= {int}:
                    raise ValueError(name)
                if values and (min(values) < 0 or max(values) >= size):
                    raise ValueError(name)
        return layout  # type: ignore[return-value]


def _lengths(dims: tuple[int, int, int, int]) -> tuple[int, int, int]:
    """Bytes of the summed numbers, the maxima and the histogram offsets and lengths."""
    views, methods, templates, aliases = dims
    return 8 * (len(SUMMED) * views + methods + 3 * templates + 2 * aliases), 16 * views, 8 * views


def _small(data: bytes) -> bool:
    """Every int64 in ``data`` is in 0 .. snapshot.NUMBER_LIMIT-1: its two top bytes are zero (C-level slices)."""
    zeros = bytes(len(data) // 8)
    return data[6::8] == zeros and data[7::8] == zeros


def parse_rollup(main: bytes, current: bytes = b"") -> Decoded:
    """The inflated main part of a roll-up cut into its pieces and checked (ValueError when anything is
    malformed), so that merging it cannot fail half-way."""
    pieces = []
    position = 0
    for _ in range(2):
        size = int.from_bytes(main[position : position + 4], "little")
        position += 4
        if len(main) < position + size:
            raise ValueError("short roll-up")
        pieces.append(main[position : position + size])
        position += size
    doc = json.loads(pieces[0])
    dims = doc.get("dims") if isinstance(doc, dict) else None
    if not isinstance(dims, list) or len(dims) != 4 or not set(map(type, dims)) <= {int} or min(dims) < 0:
        raise ValueError("dims")
    dimensions = (dims[0], dims[1], dims[2], dims[3])
    numbers, maxima, offsets = _lengths(dimensions)
    ends = list(accumulate((numbers, maxima, offsets), initial=position))
    if len(main) < ends[-1]:
        raise ValueError("short numbers")
    blob = histogram.widen(main[ends[3] :], doc.get("hw", 4))
    summed, highest, slices = (main[start:end] for start, end in pairwise(ends))
    decoded = Decoded(doc, dimensions, pieces[1], summed, highest, slices, blob, current)
    if not _small(decoded.numbers) or not _small(decoded.maxima):
        raise ValueError("numbers out of range")
    for sparse in ("x", "fx"):
        entries = doc.get(sparse, {})
        # Keys are view indexes: ASCII digits only ("²".isdigit() is true, int("²") raises), and short.
        if not isinstance(entries, dict) or not all(k.isascii() and k.isdecimal() and len(k) < 10 for k in entries):
            raise ValueError(sparse)
    return decoded


def decode_rollup(value: bytes, limit: int = MAX_UNPACKED_BYTES) -> Decoded | None:
    """A stored roll-up value, inflated and cut (None when it is not a well-formed one); tests and tools."""
    parts = split_rollup(value)
    main = None if parts is None else inflate(parts[0], limit)
    if parts is None or main is None:
        return None
    try:
        return parse_rollup(main, parts[1])
    except (ValueError, RecursionError):
        return None


def _gather(values: list[Any], order: list[int]) -> list[Any] | tuple[Any, ...]:
    """``[values[i] for i in order]`` at C speed."""
    if len(order) > 1:
        return itemgetter(*order)(values)
    return [values[i] for i in order]


def _order(positions: list[int], size: int, missing: int) -> tuple[list[int], list[tuple[int, int]]]:
    """For merged slots ``0..size-1``, the local index that adds into each (``missing`` where none does), from
    ``positions`` (each local index's slot, -1 for none); and the (local, slot) pairs beyond the first per slot."""
    where = dict(zip(positions, range(len(positions)), strict=True))
    where.pop(-1, None)
    order = list(map(where.get, range(size), repeat(missing, size)))
    extra: list[tuple[int, int]] = []
    if len(where) + positions.count(-1) < len(positions):  # two locals in one slot: folded or repeated names
        extra = [(i, slot) for i, slot in enumerate(positions) if slot != -1 and where[slot] != i]
    return order, extra


def _add_column(total: list[Any], values: list[Any], order: list[int], extra: list[tuple[int, int]], op: Any) -> None:
    """``total[slot] = op(total[slot], values[local])`` for every local of ``order`` (and of ``extra``)."""
    values.append(0)  # what ``missing`` points at
    total[:] = map(op, total, _gather(values, order))
    for local, slot in extra:
        total[slot] = op(total[slot], values[local])


def _add_into_slots(
    total: list[Any],
    values: list[Any],
    positions: list[int],
    ordered: Callable[[], tuple[list[int], list[tuple[int, int]]]],
    op: Any,
) -> None:
    """``total[positions[i]] = op(total[positions[i]], values[i])`` (-1: left out): one by one for a few values,
    else over every slot in C-level steps (``ordered`` gives :func:`_order`'s result for ``positions``)."""
    if 2 * len(values) < len(total):
        for slot, value in zip(positions, values, strict=True):
            if slot != -1:
                total[slot] = op(total[slot], value)
    else:
        order, extra = ordered()
        _add_column(total, values, order, extra, op)


_times4 = partial(mul, 4)
_times32 = partial(mul, 32)
_from_little = partial(int.from_bytes, byteorder="little")
#: Row keys are ``slot * _STRIDE + string id``: an int hashes far faster than a (slot, text) tuple.
_STRIDE = 1 << 32
_strided = partial(mul, _STRIDE)


def _wides(blob: bytes, offsets: Iterable[int], lengths: Iterable[int], starts: Iterable[int]) -> list[int]:
    """Each histogram slice as one wide integer (bin i of the slice in bits 32(offset+i)..+31), in C-level maps."""
    starts = list(starts)
    parts = map(blob.__getitem__, map(slice, map(_times4, starts), map(_times4, map(add, starts, lengths))))
    return list(map(lshift, map(_from_little, parts), map(_times32, offsets)))


class _Rows:
    """The merged rows of one table: (slot, string) -> row, each row's values one wide integer (a record)."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.ids: dict[str, int] = {}
        self.strings: list[str] = []
        self.index: dict[int, int] = {}
        self.keys: list[int] = []
        self.totals: list[int] = []

    def rows_of(self, layout: Layout, positions: list[int]) -> list[int]:
        """Each row of ``layout``: its merged row (new ones added), -1 where its view is not asked for."""
        table = self.table
        strings: list[str] = layout[table.strings]  # type: ignore[literal-required]
        ids = list(map(self.ids.get, strings))
        if None in ids:
            for i, known in enumerate(ids):
                if known is None:
                    known = ids[i] = self.ids.setdefault(strings[i], len(self.strings))
                    if known == len(self.strings):
                        self.strings.append(strings[i])
        slots = _gather(positions, layout[table.view])  # type: ignore[literal-required]
        keys = list(map(add, map(_strided, slots), _gather(ids, layout[table.key])))  # type: ignore[literal-required]
        rows = list(map(self.index.get, keys))
        if None in rows:
            for i, row in enumerate(rows):
                if row is None:
                    rows[i] = -1 if slots[i] == -1 else self._new(keys[i])
        return rows  # type: ignore[return-value]

    def _new(self, key: int) -> int:
        row = self.index.get(key)
        if row is None:
            row = self.index[key] = len(self.keys)
            self.keys.append(key)
            self.totals.append(0)
        return row

    def add(self, records: list[int], rows: list[int]) -> None:
        """Add one layout's records (one per row of it)."""
        _add_into_slots(self.totals, records, rows, partial(_order, rows, len(self.keys), len(rows)), add)

    def rows(self) -> Iterable[tuple[int, str, list[int]]]:
        """Each merged row's slot, string and values."""
        strings, width = self.strings, 8 * len(self.table.values)
        for key, record in zip(self.keys, self.totals, strict=True):
            slot, string = divmod(key, _STRIDE)
            yield slot, strings[string], _unpacked("Q", record.to_bytes(width, "little"))


def _records(data: bytes, start: int, count: int, width: int) -> list[int]:
    """``count`` records of ``width`` bytes from ``start``, each as one wide integer."""
    stops = range(start + width, start + (count + 1) * width, width)
    return list(map(_from_little, map(data.__getitem__, map(slice, range(start, start + count * width, width), stops))))


@dataclass(slots=True)
class _Group:
    """The processes of one layout: where its views and rows go, and their numbers summed so far."""

    dims: tuple[int, int, int, int]
    positions: list[int]
    rows: list[list[int]]
    folded: int
    total: int = 0
    maxima: list[int] | None = None
    processes: int = 0
    order: tuple[int, list[int], list[tuple[int, int]]] | None = None
    #: Each view has a slot of its own (none folded, none left out): its histograms may be added in place.
    direct: bool = False


class RollupMerge:
    """Many processes' roll-ups summed per view name; :meth:`into` hands out ViewTotals.

    Past ``max_views`` names, new names add into ``other_name`` (counted in ``folded``): a reader's view budget.
    """

    def __init__(self, view: str | None = None, max_views: int | None = None, other_name: str = "") -> None:
        self.view = view
        self.max_views = max_views
        self.other_name = other_name
        self.slots: dict[str, int] = {}
        self.names: list[str] = []
        self.routes: list[str] = []
        self.wide: list[int] = []
        self.base: list[int] = []
        self.tables = [_Rows(table) for table in TABLES]
        self.groups: dict[bytes, _Group] = {}
        self.sparse: list[tuple[int, str, Any]] = []
        self.folded = 0

    def _slot(self, name: str) -> int:
        slot = self.slots.get(name)
        if slot is not None:
            return slot
        if self.max_views is not None and len(self.slots) >= self.max_views:
            self.folded += 1
            name = self.other_name
            slot = self.slots.get(name)
            if slot is not None:
                return slot
        slot = self.slots[name] = len(self.names)
        self.names.append(name)
        self.routes.append("")
        self.wide.append(0)
        self.base.append(histogram.SIZE)
        return slot

    def _group(self, parsed: Decoded) -> _Group:
        """The group of ``parsed``'s layout, made (the layout parsed and its views given slots) when new."""
        group = self.groups.get(parsed.layout)
        if group is not None:
            if group.dims != parsed.dims:
                raise ValueError("dims")
            return group
        layout = parsed.parse_layout()
        names = layout["names"]
        folded = self.folded
        if self.view is not None:
            positions = [self._slot(name) if name == self.view else -1 for name in names]
        else:
            found = list(map(self.slots.get, names))
            positions = [self._slot(name) for name in names] if None in found else cast(list[int], found)
        if "" in self.routes:
            for i, slot in enumerate(positions):
                if slot != -1 and not self.routes[slot]:
                    self.routes[slot] = layout["routes"][i]
        rows = [table.rows_of(layout, positions) for table in self.tables]
        group = self.groups[parsed.layout] = _Group(parsed.dims, positions, rows, self.folded - folded)
        group.direct = -1 not in positions and len(set(positions)) == len(positions)
        self.folded = folded  # counted per process, in add()
        return group

    def add(self, parsed: Decoded) -> bool:
        """Add one process's roll-up; False (nothing added) when its layout is malformed."""
        try:
            group = self._group(parsed)
        except (ValueError, RecursionError):
            return False
        group.processes += 1
        self.folded += group.folded
        group.total += _from_little(parsed.numbers)
        maxima = _unpacked("q", parsed.maxima)
        group.maxima = maxima if group.maxima is None else list(map(max, group.maxima, maxima))
        self._add_histograms(parsed, group)
        positions, count = group.positions, len(group.positions)
        for kind in ("x", "fx"):
            for index, entry in parsed.doc.get(kind, {}).items():
                slot = positions[int(index)] if int(index) < count else -1  # checked by parse_rollup
                if slot != -1:
                    self.sparse.append((slot, kind, entry))
        return True

    def _order(self, group: _Group) -> tuple[list[int], list[tuple[int, int]]]:
        """The group's view order for the current number of slots (recomputed only when slots were added)."""
        size = len(self.names)
        if group.order is None or group.order[0] != size:
            group.order = (size, *_order(group.positions, size, len(group.positions)))
        return group.order[1], group.order[2]

    def _add_histograms(self, parsed: Decoded, group: _Group) -> None:
        """Each slot's histograms summed as one wide integer whose bin 0 is the slot's ``base`` (the lowest
        offset seen): shifting by the offset itself would make every integer thousands of bits wide."""
        both = _unpacked("i", parsed.histograms)
        count = len(both) // 2
        offsets, lengths = both[:count], both[count:]
        starts = list(accumulate(lengths, initial=0))
        if lengths and (
            min(offsets) < 0 or min(lengths) < 0 or max(map(add, offsets, lengths)) > histogram.SIZE
            or 4 * starts[-1] > len(parsed.blob)
        ):  # fmt: skip
            return  # not what a flusher writes: the counts stand, the histograms are left out
        if group.direct and 2 * count < len(self.names):  # a few of the views: each added where it goes
            self._add_few_histograms(parsed.blob, group.positions, offsets, lengths, starts[:-1])
            return
        order, extra = self._order(group)
        offsets.append(histogram.SIZE)  # what ``missing`` points at: an empty slice
        lengths.append(0)
        shifts = list(map(sub, _gather(offsets, order), self.base))
        if shifts and min(shifts) < 0:
            for slot, shift in enumerate(shifts):
                if shift < 0:
                    self._rebase(slot, self.base[slot] + shift)
                    shifts[slot] = 0
        self.wide[:] = map(add, self.wide, _wides(parsed.blob, shifts, _gather(lengths, order), _gather(starts, order)))
        for i, slot in extra:
            if offsets[i] < self.base[slot]:
                self._rebase(slot, offsets[i])
            self.wide[slot] += _wides(parsed.blob, [offsets[i] - self.base[slot]], [lengths[i]], [starts[i]])[0]

    def _add_few_histograms(
        self, blob: bytes, positions: list[int], offsets: list[int], lengths: list[int], starts: list[int]
    ) -> None:
        """The histograms of a process that has a few of the views, one by one into their own slots."""
        wide = self.wide
        shifts = list(map(sub, offsets, _gather(self.base, positions)))
        if shifts and min(shifts) < 0:
            for i, shift in enumerate(shifts):
                if shift < 0:
                    self._rebase(positions[i], offsets[i])
                    shifts[i] = 0
        for slot, value in zip(positions, _wides(blob, shifts, lengths, starts), strict=True):
            if value:
                wide[slot] += value

    def _rebase(self, slot: int, base: int) -> None:
        """Move a slot's bin 0 down to ``base``."""
        self.wide[slot] <<= 32 * (self.base[slot] - base)
        self.base[slot] = base

    def _sums(self) -> tuple[list[int], dict[str, list[Any]]]:
        """Every group's summed records and maxima added into the slots, once per group."""
        size = len(self.names)
        sums = [0] * size
        maxima: dict[str, list[Any]] = {name: [0] * size for name in MAXIMA}
        width = 8 * len(SUMMED)
        for group in self.groups.values():
            if not group.processes:
                continue
            views = group.dims[0]
            data = group.total.to_bytes(_lengths(group.dims)[0], "little")
            slots = partial(self._order, group)
            _add_into_slots(sums, _records(data, 0, views, width), group.positions, slots, add)
            position = views * width
            for table, rows, count in zip(self.tables, group.rows, group.dims[1:], strict=True):
                row_width = 8 * len(table.table.values)
                table.add(_records(data, position, count, row_width), rows)
                position += count * row_width
            group_maxima = group.maxima or []
            for k, name in enumerate(MAXIMA):
                _add_into_slots(maxima[name], group_maxima[k * views : (k + 1) * views], group.positions, slots, max)
        return sums, maxima

    def into(self, merged: dict[str, ViewTotals], malformed: Callable[[int], None]) -> None:
        """Add the sums to ``merged`` (one ViewTotals per name); ``malformed`` is told how many sparse entries
        (exceptions, findings) were left out, each checked before anything of it is added."""
        sums, maxima = self._sums()
        totals = []
        width = 8 * len(SUMMED)
        for slot, name in enumerate(self.names):
            t = merged.get(name)
            if t is None:
                t = merged[name] = ViewTotals(self.routes[slot])
            totals.append(t)
            t.route = t.route or self.routes[slot]
            n, e, s0, s1, s2, s3, qn, db, n1, lsum, *totals_ = _unpacked("Q", sums[slot].to_bytes(width, "little"))
            t.requests += n
            t.errors += e
            status = t.status
            status[0] += s0
            status[1] += s1
            status[2] += s2
            status[3] += s3
            t.lat_sum += lsum / 10
            t.lat_max = max(t.lat_max, maxima["lmax"][slot] / 10)
            t.queries += qn
            t.queries_max = max(t.queries_max, maxima["qmax"][slot])
            t.db_us += db
            t.n_plus_one += n1
            for (_field, name), value in zip(TOTALS, totals_, strict=True):
                setattr(t, name, getattr(t, name) + value)
            if self.wide[slot]:
                t.wide += self.wide[slot] << (32 * self.base[slot])
        methods, templates, aliases = self.tables
        for slot, method, (count,) in methods.rows():
            table = totals[slot].methods
            table[method] = table.get(method, 0) + count
        for slot, sql, values in templates.rows():
            add_into(totals[slot].templates, sql, values)
        for slot, alias, values in aliases.rows():
            add_into(totals[slot].aliases, alias, values)
        for slot, kind, entry in self.sparse:
            try:
                bad = totals[slot].add_exceptions(entry) if kind == "x" else totals[slot].add_findings(entry)
            except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError):
                bad = 1
            if bad:
                malformed(bad)
