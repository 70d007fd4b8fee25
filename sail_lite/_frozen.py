"""Frozen dataclasses whose methods are written once, not compiled per class at import.

``@dataclass(frozen=True)`` writes the source of ``__init__``, ``__repr__``,
``__eq__``, ``__hash__``, ``__setattr__`` and ``__delattr__`` for each class
and compiles it when the module is imported: for the sixteen fields of
:class:`~sail_lite.PollPolicy` that was about a sixth of what ``import
sail_lite`` cost over ``import requests``. :func:`frozen` keeps the class a
real dataclass (``dataclasses.fields``, ``replace``, ``asdict`` and
``is_dataclass`` work; assignment raises ``FrozenInstanceError``) with the
same behaviour as the generated methods, from generic ones defined here once.
The class writes its own ``__init__`` (typed parameters, for IDEs), setting
fields with ``object.__setattr__`` and calling ``__post_init__`` itself.
"""
from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass, fields
from typing import Any, Tuple, Type, TypeVar

__all__ = ["FACTORY", "frozen"]

C = TypeVar("C", bound=type)


def frozen(cls: C) -> C:
    """Make ``cls`` (which defines ``__init__``) a frozen dataclass without generated methods.

    Equality compares the fields in order between instances of the same class;
    the hash covers the fields a dataclass would hash (``hash=`` or, unset,
    ``compare=``); the repr lists the fields with ``repr=True``.
    """
    if "__init__" not in cls.__dict__:
        raise TypeError("@frozen needs {} to define __init__".format(cls.__name__))
    cls = dataclass(init=False, repr=False, eq=False)(cls)
    every = fields(cls)
    names: Tuple[str, ...] = tuple(f.name for f in every)
    compared = tuple(f.name for f in every if f.compare)
    hashed = tuple(f.name for f in every if (f.compare if f.hash is None else f.hash))
    shown = tuple(f.name for f in every if f.repr)
    owner: Type[Any] = cls

    def __repr__(self: Any) -> str:
        return "{}({})".format(type(self).__qualname__,
                               ", ".join("{}={!r}".format(name, getattr(self, name)) for name in shown))

    def __eq__(self: Any, other: Any) -> Any:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return tuple(getattr(self, name) for name in compared) == tuple(getattr(other, name) for name in compared)

    def __hash__(self: Any) -> int:
        return hash(tuple(getattr(self, name) for name in hashed))

    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is owner or name in names:
            raise FrozenInstanceError("cannot assign to field {!r}".format(name))
        super(owner, self).__setattr__(name, value)

    def __delattr__(self: Any, name: str) -> None:
        if type(self) is owner or name in names:
            raise FrozenInstanceError("cannot delete field {!r}".format(name))
        super(owner, self).__delattr__(name)

    for function in (__repr__, __eq__, __hash__, __setattr__, __delattr__):
        function.__qualname__ = "{}.{}".format(cls.__qualname__, function.__name__)
        setattr(cls, function.__name__, function)
    # Frozen as far as dataclasses can tell, too (a frozen subclass may derive from it).
    cls.__dataclass_params__.frozen = True  # type: ignore[attr-defined]
    return cls


class _Factory:
    """The default of a field whose value a factory makes (a fresh dict per instance)."""

    def __repr__(self) -> str:
        return "<factory>"


#: Stands for "the default" in a hand-written ``__init__`` where ``None`` would be a (bad) value.
FACTORY: Any = _Factory()
