"""One small generic registry for plug-ins (teachers, students, losses, index backends).

Plug-ins register themselves by name in their own module::

    LOSSES = Registry("loss")

    @LOSSES.register("margin-mse")
    class MarginMSE: ...

and are selected from YAML by that name. ``parameters`` describes a plug-in's constructor for
``retrodistill plugins``.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A name → plug-in mapping for one kind of plug-in."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``; a name can be taken only once."""

        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise ValueError(f"unknown {self.kind} {name!r}; registered: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def build(self, name: str, params: dict[str, Any] | None = None) -> Any:
        """Instantiate the plug-in ``name`` with keyword ``params``, naming any unknown parameter."""
        factory = self.get(name)
        params = dict(params or {})
        accepted = {p.name for p in parameters(factory)}
        unknown = sorted(set(params) - accepted)
        if unknown:
            raise ValueError(
                f"{self.kind} {name!r} has no parameter(s) {', '.join(unknown)}; "
                f"it takes: {', '.join(sorted(accepted)) or 'nothing'}"
            )
        return factory(**params)  # type: ignore[operator]


@dataclasses.dataclass(frozen=True)
class Parameter:
    name: str
    annotation: str
    default: Any
    help: str = ""


def parameters(obj: Any) -> list[Parameter]:
    """The constructor parameters of a plug-in (dataclass fields or ``__init__`` arguments)."""
    if dataclasses.is_dataclass(obj):
        out = []
        for f in dataclasses.fields(obj):
            if not f.init:
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = inspect.Parameter.empty
            out.append(Parameter(f.name, str(f.type), default, f.metadata.get("help", "")))
        return out
    signature = inspect.signature(obj)
    return [
        Parameter(p.name, str(p.annotation) if p.annotation is not p.empty else "", p.default)
        for p in signature.parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
