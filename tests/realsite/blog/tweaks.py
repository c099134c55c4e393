"""How the hint proofs apply a hint to the queryset a view wrote: views pass their queryset through
:func:`tweak`, which leaves it alone unless a proof set a change for that name (tests/realsite/prove.py)."""

from collections.abc import Callable
from typing import Any

#: name -> a function of the queryset, set by the proofs only.
TWEAKS: dict[str, Callable[[Any], Any]] = {}


def tweak(name: str, queryset: Any) -> Any:
    change = TWEAKS.get(name)
    return change(queryset) if change is not None else queryset
