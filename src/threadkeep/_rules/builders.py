"""Frozen slotted dataclasses built fast: a read builds many (a row and a model per message).

A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``, which is
slow when a read builds twenty ``Message`` objects or a list page fifty ``Conversation``s.
``fast_builder(cls)`` returns a function that builds the same object in about a third of
the time: it makes an instance of a plain class with the very same ``__slots__``, stores the
values straight into them, then makes it a ``cls`` by ``__class__`` assignment (which CPython
allows only between identical layouts, and which is checked here once, at import).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

__all__ = ["fast_builder", "slots_twin"]

T = TypeVar("T")

# the generated builder's own names; a field may not take one of them
_OWN = frozenset({"_plain", "_cls", "_self"})


def slots_twin(cls: type) -> type:
    """Return a plain class with the very slots and bases of ``cls``, a dataclass.

    An instance whose every slot is set to a field's value, then given ``__class__ = cls``,
    is the object ``cls(...)`` makes. ``fast_builder`` builds one object a call with it; a
    read that builds many (``outcomes.to_messages``) fills the slots in its own loop.
    Being a subclass of the same bases, the twin runs their class-creation hooks
    (``__init_subclass__``, a metaclass) once and is listed in their ``__subclasses__()``;
    no base of this package's models and ops has such a hook.

    Raises:
        TypeError: ``cls`` is not a dataclass whose ``__slots__`` are its fields, in order
            (``slots=True``, no base with slots of its own), a base has a ``__new__``,
            ``__init__`` or ``__setattr__`` of its own, or its ``__init__`` does more than
            store them: a ``__post_init__``, an ``InitVar``, an ``init=False`` field (a
            default would be computed there; the builder takes every field, so none is ever
            left to a default), or an ``__init__`` of its own that checks or changes a value.
    """
    if not (isinstance(cls, type) and is_dataclass(cls)):
        raise TypeError(f"{cls!r} is not a dataclass")
    names = tuple(f.name for f in fields(cls))
    params = tuple(inspect.signature(cls).parameters)
    if cls.__dict__.get("__slots__") != names:
        raise TypeError(f"{cls.__name__}'s slots are not its fields (slots=True, no base fields)")
    if hasattr(cls, "__post_init__") or params != names or _OWN & set(names):
        raise TypeError(f"{cls.__name__}'s __init__ does more than store its fields in order")
    markers = [object() for _ in names]  # an __init__ of its own must store them, unchanged
    try:
        made = cls(*markers)
    except Exception as exc:
        raise TypeError(f"{cls.__name__}'s __init__ does more than store its fields") from exc
    if any(getattr(made, name) is not marker for name, marker in zip(names, markers, strict=True)):
        raise TypeError(f"{cls.__name__}'s __init__ does more than store its fields")
    # the same bases (a generic base such as ops.Op adds no slots: the layouts stay the
    # same); a generic class's own parameters come along, as typing wants for a subclass
    namespace: dict[str, Any] = {"__slots__": names}
    if "__orig_bases__" in cls.__dict__:
        namespace["__orig_bases__"] = cls.__dict__["__orig_bases__"]
    plain = type(f"_{cls.__name__}Slots", cls.__bases__, namespace)
    made_plainly = all(  # the twin is made and filled without a base's own code
        getattr(plain, name) is getattr(object, name)
        for name in ("__new__", "__init__", "__setattr__")
    )
    if not made_plainly:
        raise TypeError(f"{cls.__name__}'s bases make or set its instances their own way")
    probe: Any = plain()
    probe.__class__ = cls  # the layouts are identical (bases without slots), or TypeError here
    return plain


def fast_builder(cls: type[T]) -> Callable[..., T]:
    """Return a function that takes every field of ``cls``, in order, and returns ``cls(...)``.

    The object it returns is the one the dataclass's ``__init__`` makes from the same values:
    of type ``cls``, equal, hashed, printed, copied, replaced and pickled the same, frozen.

    Raises:
        TypeError: ``cls`` is refused by ``slots_twin``.
    """
    plain = slots_twin(cls)
    names: tuple[str, ...] = plain.__slots__  # type: ignore[attr-defined]
    args = ", ".join(names)
    stores = "".join(f"        _self.{name} = {name}\n" for name in names)
    source = (
        "def _make(_plain, _cls):\n"
        f"    def build_{cls.__name__}({args}, /):\n"
        "        _self = _plain()\n"
        f"{stores}"
        "        _self.__class__ = _cls\n"
        "        return _self\n"
        f"    return build_{cls.__name__}\n"
    )
    scope: dict[str, Any] = {}
    exec(compile(source, f"<fast_builder {cls.__qualname__}>", "exec"), scope)
    build: Callable[..., T] = scope["_make"](plain, cls)
    build.__qualname__ = f"fast_builder.<{cls.__qualname__}>"
    build.__doc__ = f"Return {cls.__name__}({args}), built fast (see ``fast_builder``)."
    return build
