"""JSON (de)serialization chosen from type annotations, via pydantic.

Models, dataclasses, TypedDicts and primitives all go through one ``TypeAdapter``; an
unannotated value uses ``Any`` (plain JSON types, and models dumped as objects).
"""

from __future__ import annotations

import inspect
from typing import Any

from pydantic import TypeAdapter, ValidationError

from actors.errors import TerminalError


class Serde:
    """Dump values to JSON text and load them back as the annotated type."""

    __slots__ = ("_adapter", "type")

    def __init__(self, tp: Any = Any) -> None:
        self.type = Any if tp is inspect.Parameter.empty or tp is None else tp
        self._adapter: TypeAdapter[Any] = TypeAdapter(self.type)

    def dump(self, value: Any) -> str:
        return self._adapter.dump_json(value).decode()

    def load(self, data: str) -> Any:
        return self._adapter.validate_json(data)

    def to_json(self, value: Any, what: str) -> str:
        """Validate a Python value and dump it; bad input is a ``TerminalError`` (400)."""
        try:
            return self.dump(self._adapter.validate_python(value))
        except (ValidationError, ValueError, TypeError) as e:
            raise TerminalError(f"{what}: {_short(e)}", 400) from None

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Serde, (self.type,))


ANY = Serde()


def _short(e: Exception) -> str:
    if isinstance(e, ValidationError):
        return "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'value'}: {err['msg']}" for err in e.errors()
        )
    return str(e)
