"""Named, interchangeable parts chosen by configuration: one registry idiom for all of them.

Saliency backends, question policies, models, attention losses and aggregation methods are picked
by a name in a project's configuration or on the command line. Each kind of part has one
:class:`Registry`; a part joins it with the decorator ``@REGISTRY.register("name")``, and every
lookup goes through :meth:`Registry.get`, whose error names the kind and lists the valid names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
Part = TypeVar("Part")


class Registry(Generic[T]):
    """The parts of one kind by name, in the order they registered."""

    def __init__(self, kind: str):
        self.kind = kind
        """What a part is, in words ("saliency backend"): the error message names it."""
        self._parts: dict[str, T] = {}

    def register(self, name: str) -> Callable[[Part], Part]:
        """Decorator: the decorated class or function is this kind's part ``name``.

        A registered class also carries its name as ``cls.name``. A second, different part under a
        name already taken is refused: a configuration naming it would be ambiguous.
        """

        def add(part: Part) -> Part:
            known = self._parts.get(name)
            if known is not None and known is not part:
                raise ValueError(f"{self.kind} {name!r} is already registered by {_label(known)}")
            if isinstance(part, type):
                part.name = name  # type: ignore[attr-defined]
            self._parts[name] = part  # type: ignore[assignment]
            return part

        return add

    def get(self, name: str) -> T:
        """The part registered as ``name``; a ValueError listing the valid names when there is none."""
        try:
            return self._parts[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown {self.kind} {name!r}; choose from {', '.join(self._parts)}") from None

    def names(self) -> list[str]:
        """The valid names, in the order the parts registered."""
        return list(self._parts)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(list(self._parts.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._parts


def _label(part: object) -> str:
    return getattr(part, "__qualname__", repr(part))
