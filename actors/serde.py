"""JSON (de)serialization chosen from type annotations, via pydantic.

Models, dataclasses, TypedDicts and primitives all go through one ``TypeAdapter``; an
unannotated value uses ``Any`` (plain JSON types, and models dumped as objects).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from actors.errors import TerminalError

MAX_PAYLOAD_BYTES = 4 * 1024 * 1024  # inputs, outputs, action results, awakeable values


def check_size(data: str, what: str) -> str:
    """Refuse a payload over ``MAX_PAYLOAD_BYTES`` (``TerminalError`` 413) before it is
    journaled: every byte of it would be written to DuckDB and shipped between actors."""
    if len(data) > MAX_PAYLOAD_BYTES // 4 and len(data.encode()) > MAX_PAYLOAD_BYTES:
        raise TerminalError(f"{what} is {len(data.encode()):,} bytes of JSON; the limit is "
                            f"{MAX_PAYLOAD_BYTES:,}", 413)
    return data


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
            try:
                data = self.dump(self._adapter.validate_python(value))
            except ValidationError:
                plain = _plain(value)
                if plain is value:
                    raise
                # a model or dataclass of another copy of the class (definitions travel by
                # value, so a connecting driver's class is not the runtime's): go by its fields
                data = self.dump(self._adapter.validate_python(plain))
        except (ValidationError, ValueError, TypeError) as e:
            raise TerminalError(f"{what}: {_short(e)}", 400) from None
        return check_size(data, what)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Serde, (self.type,))


ANY = Serde()


def _plain(value: Any) -> Any:
    """``value`` as plain JSON-able data if it is a pydantic model or a dataclass instance."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _short(e: Exception) -> str:
    if isinstance(e, ValidationError):
        return "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'value'}: {err['msg']}" for err in e.errors()
        )
    return str(e)
