"""State ⇄ JSON: pydantic models, dataclasses, aware datetimes, enums, plain JSON values."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, TypeVar, cast

from pydantic import TypeAdapter, ValidationError

from threadkeep._config import Limits
from threadkeep._exceptions import InvalidInput
from threadkeep._rules.rows import parse_json

__all__ = ["dump_state", "load_state"]

T = TypeVar("T")


@lru_cache(maxsize=256)
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


def dump_state(value: object, limits: Limits) -> str:
    """Return ``value`` as JSON text (a pydantic model, dataclass, dict, list or scalar).

    Raises:
        InvalidInput: when it cannot be serialized (NaN, infinity and text that is not
            Unicode included) or is over ``limits.max_state_bytes``.
    """
    adapter = _adapter(cast(Any, type(value)))
    try:
        raw = adapter.dump_json(value)
        # pydantic writes NaN and infinity as null: look for them only when a null was written
        if b"null" in raw and _has_inf_nan(adapter.dump_python(value)):
            raise ValueError("NaN and infinity are not JSON")
    except Exception as exc:  # pydantic raises several types for unserializable values
        raise InvalidInput(
            f"state of type {type(value).__name__} cannot be stored as JSON: {exc}",
            field="state",
        ) from None
    if len(raw) > limits.max_state_bytes:
        raise InvalidInput(
            f"state is {len(raw)} bytes; the limit is {limits.max_state_bytes} bytes "
            "(Limits.max_state_bytes)",
            field="state",
        )
    return raw.decode()


def _has_inf_nan(value: object) -> bool:
    """Whether a plain value (dicts, lists, tuples, sets, scalars) holds a NaN or infinity."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return True
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            pending.extend(item)
    return False


def load_state(text: str, model: type[T] | None) -> T | Any:
    """Return stored JSON as an instance of ``model`` (or as plain JSON when it is None).

    Raises:
        InvalidInput: when the stored state does not fit ``model``.
    """
    if model is None:
        return parse_json(text)  # json.loads's value or error, without its Python checks
    try:
        return _adapter(cast(Any, model)).validate_json(text)
    except ValidationError as exc:
        raise InvalidInput(
            f"the stored state does not fit {getattr(model, '__name__', model)}: {exc}",
            field="state",
        ) from None
