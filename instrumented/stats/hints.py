"""The fix for an N+1, offered only when it is valid on the queryset the developer wrote and removes the repeats.

At the threshold crossing, from the live stack (callsite.py hands over its frames, innermost first):

1. *Which relation ran the query, on which object*: a related descriptor's frame (``book.author``), a related
   manager's queryset (``author.books.all()``; filtered or ordered, ``.filter()`` bypasses a plain prefetch),
   a generic foreign key. A deferred field's load, raw SQL or anything else: no hint.
2. *Which queryset the loop iterates*: a ``{% for %}``'s sequence, a queryset or list in the locals of the
   site's code, a library's (DRF's list serializer) or a compiled Jinja2 template, and the object must be
   reachable from one of its rows through loaded relations (``page.image`` then ``image.renditions``):
   the path from that queryset's model is the lookup (``image__renditions``).
3. *Is it valid there*: every step is a relation of the model it starts from (a base ``Page`` queryset has
   no ``image``: no hint); ``select_related`` when every step is single-valued, else ``prefetch_related``,
   or ``Prefetch(..., queryset=..., to_attr=...)`` when the loop filters the related manager (unless the
   related model reads its own prefetch cache for that relation, as Wagtail's images do for renditions).
   A loop over polymorphic rows (Wagtail's ``.specific()``) gets the subquery form Wagtail has, or nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from types import FrameType
from typing import Any, NamedTuple

from . import frames
from .sites import encode_hint

#: Rows of a candidate queryset or list searched for the object, relation hops followed from each row, and
#: objects looked at in all for one hint (prefetched rows of prefetched rows must not make a walk slow).
MAX_ROWS = 1000
MAX_HOPS = 3
MAX_VISITS = 20_000

# The first condition of the WHERE clause: Django qualifies every column with its table.
_WHERE = re.compile(r'\bWHERE\s+\(*\s*[`"\[]?(\w+)[`"\]]?\.[`"\[]?(\w+)[`"\]]?\s*(?:=|IN\b)', re.IGNORECASE)


def _is(value: Any, cls: Any) -> bool:
    """``isinstance`` by the value's real type: a lazy object on the stack (``request.user`` not yet loaded) must
    not be evaluated by the walk (its ``__class__`` would run its query)."""
    return issubclass(type(value), cls)


def attributes(value: Any) -> dict[str, Any]:
    """An object's own attributes, read without running any of its code (properties, ``__getattr__``)."""
    try:
        found = object.__getattribute__(value, "__dict__")
    except AttributeError:
        return {}
    return found if type(found) is dict else {}


class Relation(NamedTuple):
    """The relation whose loading ran the query: on ``instance``, its accessor ``name``; ``filtered`` is the
    manager queryset that ran with filters or an order of its own (None for a plain load)."""

    instance: Any
    name: str
    filtered: Any


def _relation_fix(field: Any, table: str, column: str) -> str | None:
    """The accessor name of ``field`` when a query on ``table`` WHERE ``column`` is what following it runs."""
    related = getattr(field, "related_model", None)
    if not getattr(field, "is_relation", False) or related is None or isinstance(related, str):
        return None
    if field.many_to_many:
        through = field.remote_field.through if field.concrete else field.through
        own = field.m2m_column_name() if field.concrete else field.field.m2m_reverse_name()
        if through is not None and through._meta.db_table == table and own == column:
            return str(field.name if field.concrete else field.get_accessor_name())
        return None
    if field.concrete:  # a forward ForeignKey / OneToOneField
        if related._meta.db_table == table and field.target_field.column == column:
            return str(field.name)
        return None
    if related._meta.db_table == table and field.field.column == column:  # a reverse FK / one-to-one
        return str(field.get_accessor_name())
    return None


def relation_for_sql(model: type, sql: str) -> str | None:
    """The one relation of ``model`` whose loading runs ``sql`` (its WHERE's table and column), else None."""
    match = _WHERE.search(sql)
    if match is None:
        return None
    table, column = match.groups()
    names: set[str] = set()
    for field in model._meta.get_fields():  # type: ignore[attr-defined]
        try:
            name = _relation_fix(field, table, column)
        except (AttributeError, TypeError, ValueError):  # generic relations, composite keys: nothing to tell
            continue
        if name is not None:
            names.add(name)
    return names.pop() if len(names) == 1 else None


def _filtered(queryset: Any) -> bool:
    """Whether a related manager's queryset ran with conditions or an order beyond the relation's own."""
    query = queryset.query
    return len(query.where.children) > 1 or bool(query.order_by) or bool(query.distinct) or bool(query.annotations)


def find_relation(stack: list[FrameType], sql: str) -> Relation | None:
    """The relation that ran ``sql``, read from the framework frames nearest the query; None when there is none
    (a deferred field, raw SQL, a values() queryset, a relation the model graph cannot tell apart)."""
    from django.contrib.contenttypes.fields import GenericForeignKey
    from django.db.models import Model
    from django.db.models.fields.related_descriptors import (
        ForwardManyToOneDescriptor,
        ReverseOneToOneDescriptor,
    )
    from django.db.models.query import ModelIterable, QuerySet
    from django.db.models.query_utils import DeferredAttribute

    manager: Relation | None = None
    rules = frames.rules()
    for frame in stack:
        if frames.verdict(frame, rules) != frames.FRAMEWORK:
            break  # past the ORM: the loop's own code
        if "self" not in frame.f_code.co_varnames:
            continue
        owner: Any = frame.f_locals.get("self")
        instance = frame.f_locals.get("instance")
        if _is(owner, DeferredAttribute):
            return None  # a deferred field loaded row by row: .only()/.defer() chose it, no relation to follow
        if _is(owner, ForwardManyToOneDescriptor) and _is(instance, Model):
            return Relation(instance, owner.field.name, None)
        if _is(owner, ReverseOneToOneDescriptor) and _is(instance, Model):
            return Relation(instance, owner.related.get_accessor_name(), None)
        if _is(owner, GenericForeignKey) and _is(instance, Model):
            return Relation(instance, owner.name, None)
        if manager is None and _is(owner, QuerySet):
            hints = owner._hints
            instance = hints.get("instance") if type(hints) is dict else None
            if _is(instance, Model) and issubclass(owner._iterable_class, ModelIterable):
                name = relation_for_sql(type(instance), sql)
                if name is not None:
                    manager = Relation(instance, name, owner if _filtered(owner) else None)
    return manager


class Root(NamedTuple):
    """Where the loop's rows come from: ``model`` of the queryset (None for a list or a loop variable),
    the rows, and the queryset itself when there is one."""

    model: type | None
    rows: Iterable[Any]
    queryset: Any


def _roots_of(value: Any, found: list[Root], depth: int = 0) -> None:
    """Add what ``value`` can be the loop's rows from: a queryset's loaded rows, a list of model instances,
    a paginator page's rows, a loop variable; a dict's values one level down (a template context)."""
    from django.core.paginator import Page as PaginatorPage
    from django.db.models import Model
    from django.db.models.query import QuerySet

    if _is(value, QuerySet):
        if value._result_cache is not None:
            found.append(Root(value.model, value._result_cache, value))
    elif _is(value, Model):
        found.append(Root(None, (value,), None))
    elif _is(value, list | tuple) and value and _is(value[0], Model):
        found.append(Root(None, value, None))
    elif _is(value, PaginatorPage):
        _roots_of(attributes(value).get("object_list"), found, depth + 1)
    elif type(value) is dict and depth == 0:
        for item in list(value.values())[:50]:
            _roots_of(item, found, depth + 1)


def _frame_roots(frame: FrameType, rules: frames.Rules) -> list[Root]:
    """The loop's candidate rows held by one frame: a ``{% for %}``'s sequence, the locals of the site's code,
    of a library or of a compiled Jinja2 template, and the attributes of a site object the frame works for."""
    from django.template.defaulttags import ForNode

    code = frame.f_code
    found: list[Root] = []
    verdict = frames.verdict(frame, rules)
    if code is ForNode.render.__code__:
        _roots_of(frame.f_locals.get("values"), found)  # {% for %}'s sequence
        return found
    if verdict == frames.FRAMEWORK:
        owner = frame.f_locals.get("self") if "self" in code.co_varnames else None
        if owner is not None and frames.site_class(type(owner)):  # a class-based view of the site: object_list
            for value in list(attributes(owner).values())[:50]:
                _roots_of(value, found, 1)
        return found
    for value in list(frame.f_locals.values())[:100]:
        _roots_of(value, found)
    return found


def _path_to(obj: Any, target: Any, hops: int, visits: list[int]) -> list[str] | None:
    """The relation names from ``obj`` to ``target`` through what ``obj`` has loaded (select_related, earlier
    attribute access, prefetches); None when ``target`` is not reachable in ``hops`` (or within the visits left)."""
    if obj is target:
        return []
    visits[0] -= 1
    if hops == 0 or visits[0] <= 0:
        return None
    own = attributes(obj)
    cache = attributes(own.get("_state")).get("fields_cache")
    if type(cache) is dict:
        for name, value in list(cache.items()):
            if value is not None:
                rest = _path_to(value, target, hops - 1, visits)
                if rest is not None:
                    return [str(name), *rest]
    prefetched = own.get("_prefetched_objects_cache")
    if type(prefetched) is dict:
        for name, queryset in list(prefetched.items()):
            for row in (attributes(queryset).get("_result_cache") or ())[:MAX_ROWS]:
                rest = _path_to(row, target, hops - 1, visits)
                if rest is not None:
                    return [str(name), *rest]
    return None


def _step(model: type, name: str) -> Any:
    """The relation of ``model`` reached by the lookup step ``name`` (forward name or reverse accessor)."""
    from django.db.models import ForeignObjectRel

    for field in model._meta.get_fields():  # type: ignore[attr-defined]
        if getattr(field, "is_relation", False):
            accessor = field.get_accessor_name() if isinstance(field, ForeignObjectRel) else field.name
            if accessor == name:
                return field
    return None


def lookup_kind(model: type, path: list[str]) -> str | None:
    """``select_related`` when every step of ``path`` from ``model`` is a single-valued relation that joins,
    ``prefetch_related`` when some step is many-valued or generic, None when a step is no relation of it."""
    single = True
    current: Any = model
    for name in path:
        field = _step(current, name)
        if field is None:
            return None
        related = getattr(field, "related_model", None)
        if field.many_to_many or field.one_to_many or related is None:  # many-valued, or a generic foreign key
            single = False
        if related is None:
            return "prefetch_related" if name == path[-1] else None  # nothing to follow past a generic key
        current = related
    return "select_related" if single else "prefetch_related"


def _lookup_text(query: Any) -> tuple[list[str], str]:
    """The filter's field names (values elided: ``approved=…``) and an ``.order_by(...)`` of a manager queryset."""
    from django.db.models.lookups import Lookup

    names: list[str] = []
    model = query.model
    for child in query.where.children:
        lhs = getattr(child, "lhs", None)
        target = getattr(lhs, "target", None)
        if not isinstance(child, Lookup) or target is None or getattr(target, "model", None) is None:
            names.append("…")
            continue
        if not issubclass(model, target.model) or target.is_relation:  # the relation's own condition
            continue
        lookup = "" if child.lookup_name == "exact" else f"__{child.lookup_name}"
        names.append(f"{target.name}{lookup}")
    order = [o for o in query.order_by if isinstance(o, str)]
    ordering = f".order_by({', '.join(repr(o).replace(chr(39), chr(34)) for o in order)})" if order else ""
    return names, ordering


def _prefetch_code(lookup: str, manager_queryset: Any, owner: type) -> str:
    """``prefetch_related(Prefetch(lookup, queryset=Model.objects.filter(…), to_attr="…"))``: the rows the loop
    filters, loaded once into an attribute the loop then reads (``.filter()`` on a manager always queries)."""
    names, ordering = _lookup_text(manager_queryset.query)
    model = manager_queryset.model.__name__
    fields = [n for n in names if n != "…"]
    filters = ", ".join(f"{n}=…" if n != "…" else "…" for n in names)
    queryset = f"{model}.objects" + (f".filter({filters})" if names else "") + ordering
    if not names and not ordering:
        queryset += ".all()"
    relation = lookup.rsplit("__", 1)[-1]
    attribute = f"{fields[0].split('__')[0]}_{relation}" if fields else f"filtered_{relation}"
    if hasattr(owner, attribute):  # a property of that name (often the one running the filter): another name
        attribute += "_list"
    return f'prefetch_related(Prefetch("{lookup}", queryset={queryset}, to_attr="{attribute}"))'


_reads_prefetch: dict[tuple[type, str], bool] = {}


def reads_own_prefetch(model: type, name: str) -> bool:
    """Whether ``model``'s own code (not Django's) looks in its prefetch cache for ``name`` before querying, as
    Wagtail's images do for ``renditions``: then a plain prefetch serves the filtered lookups too."""
    key = (model, name)
    found = _reads_prefetch.get(key)
    if found is None:
        found = False
        for cls in model.__mro__:
            if cls.__module__.startswith("django."):
                continue
            for value in vars(cls).values():
                function = getattr(value, "fget", value)
                code = getattr(function, "__code__", None)
                if (
                    code is not None
                    and name in code.co_consts
                    and ("_prefetched_objects_cache" in code.co_consts or "_prefetched_objects_cache" in code.co_names)
                ):
                    found = True
        if len(_reads_prefetch) > 1024:
            _reads_prefetch.clear()
        _reads_prefetch[key] = found
    return found


def _mti_child(model: type) -> bool:
    """A multi-table child (a Wagtail page type): rows of it can come from a polymorphic query of its parent."""
    return any(link is not None for link in model._meta.parents.values())  # type: ignore[attr-defined]


def _claim(root: Root, target: Any, visits: list[int]) -> tuple[Any, list[str]] | None:
    """(the row, path) by which ``root`` reaches ``target``; None when it does not."""
    for row in list(root.rows)[:MAX_ROWS]:
        path = _path_to(row, target, MAX_HOPS, visits)
        if path is not None:
            return row, path
    return None


def _specific_hint(root: Root, path: list[str], relation: Relation) -> str | None:
    """Wagtail's ``.specific()`` queryset: the ``for_specific_subqueries`` form when every loaded row's model
    has the path, else None (a base ``Page`` has no ``image``)."""
    if not hasattr(root.queryset, "_specific_select_related_fields") or relation.filtered is not None:
        return None
    kinds = {lookup_kind(model, path) for model in {type(row) for row in list(root.rows)[:MAX_ROWS]}}
    if len(kinds) != 1 or None in kinds:
        return None
    kind = kinds.pop()
    return f'{kind}("{"__".join(path)}", for_specific_subqueries=True)'


def _choose_root(stack: list[FrameType], target: Any) -> tuple[Root, Any, list[str]] | None:
    """The innermost queryset whose rows reach ``target`` (with the row and path), else the innermost list or
    loop variable that does; None when nothing on the stack holds it."""
    rules = frames.rules()
    loose: tuple[Root, Any, list[str]] | None = None
    visits = [MAX_VISITS]
    for frame in stack:
        for root in _frame_roots(frame, rules):
            claim = _claim(root, target, visits)
            if claim is None:
                continue
            if root.model is not None:
                return (root, *claim)
            if loose is None:
                loose = (root, *claim)
    return loose


def hint(stack: list[FrameType], sql: str) -> str | None:
    """The stored hint for the query ``sql`` run from ``stack`` (innermost frame first), or None."""
    relation = find_relation(stack, sql)
    if relation is None:
        return None
    chosen = _choose_root(stack, relation.instance)
    if chosen is None:
        return None
    root, row, chain = chosen
    path = [*chain, relation.name]
    types = {type(r) for r in list(root.rows)[:MAX_ROWS]}
    if root.model is not None and types != {root.model}:  # polymorphic rows (Wagtail's .specific())
        specific = _specific_hint(root, path, relation)
        return encode_hint(specific, root.model.__name__) if specific else None
    model = root.model or type(row)
    if root.model is None and (_mti_child(model) or len(types) != 1):
        return None  # a list or a loop variable whose rows may come from a polymorphic query: cannot tell
    kind = lookup_kind(model, path)
    if kind is None:
        return None
    if relation.filtered is not None and not reads_own_prefetch(type(relation.instance), relation.name):
        return encode_hint(_prefetch_code("__".join(path), relation.filtered, type(relation.instance)), model.__name__)
    return encode_hint(f'{kind}("{"__".join(path)}")', model.__name__)


def forget() -> None:
    """Forget what was learnt about models (tests)."""
    _reads_prefetch.clear()
