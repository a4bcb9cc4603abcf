"""Deep-immutable JSON values, so a cache hit can hand out the stored object itself.

Values are frozen once when they are stored; a memory hit then returns the same
object with no copy, and no caller can change what the next caller sees. Text
from the SQLite and Redis tiers is parsed straight into these shapes by
:mod:`.codec`.

``FrozenDict`` subclasses ``dict`` so ``json.dumps`` and bottle serialise it as
is, and ``dict(x)`` / ``{**x}`` give an ordinary mutable (shallow) copy.
"""

from __future__ import annotations

import math
from typing import Any, NoReturn


class FrozenDict(dict):  # type: ignore[type-arg]
    """A ``dict`` whose mutating methods raise TypeError. Immutable, so thread-safe.

    Build it with :func:`freeze`, which also freezes what it contains.
    """

    __slots__ = ()

    def _immutable(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("cached values are read-only; copy with dict(value) to change one")

    __setitem__ = __delitem__ = __ior__ = _immutable
    clear = pop = popitem = setdefault = update = _immutable

    def __copy__(self) -> FrozenDict:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenDict:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))

    def __repr__(self) -> str:
        return f"FrozenDict({dict.__repr__(self)})"


_SCALARS = (str, int, bool, type(None))


def freeze(value: Any) -> Any:
    """Return a deep-immutable copy of a JSON-compatible value.

    dicts become :class:`FrozenDict`, lists and tuples become tuples. Anything
    JSON cannot carry faithfully (non-string dict keys, NaN or infinite floats,
    sets, objects) raises ValueError, so the memory tier never holds a value
    the SQLite tier would store differently.
    """
    try:
        return _freeze(value)
    except RecursionError:
        raise ValueError("cached value is nested too deeply (or contains itself)") from None


def _freeze(value: Any) -> Any:
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is float:
        if not math.isfinite(value):
            raise ValueError("cached values must be JSON: NaN and infinite floats are not")
        return value
    if kind is dict or kind is FrozenDict:
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                raise ValueError(f"cached values must be JSON: dict key {key!r} is not a string")
            # Scalars inline: most cached dicts are flat (quotes, profiles).
            item_kind = type(item)
            if item_kind is str or item_kind is int or item is None or item_kind is bool:
                out[key] = item
            else:
                out[key] = _freeze(item)
        return FrozenDict(out)
    if kind is list or kind is tuple:
        return tuple([_freeze(item) for item in value])
    raise ValueError(f"cached values must be JSON-compatible, not {kind.__name__}")
