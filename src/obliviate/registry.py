"""One generic registry: components register where they are defined (ARCHITECTURE.md)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import ObliviateError

T = TypeVar("T")


def suggest(name: str, choices: list[str]) -> str:
    """' (did you mean 'x'?)' or '' — shared by registries and config key checks."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Registry(Generic[T]):
    """Name -> component. Duplicate names and unknown names raise ObliviateError."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ObliviateError(f"duplicate {self.kind} name '{name}'")
            self._items[name] = obj
            return obj

        return decorator

    def unregister(self, name: str) -> None:
        """Remove `name` (a component registered for a test)."""
        self.get(name)  # unknown names raise as elsewhere
        del self._items[name]

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = sorted(self._items)
            raise ObliviateError(
                f"unknown {self.kind} '{name}'{suggest(name, known)}; known: {', '.join(known)}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
