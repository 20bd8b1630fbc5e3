"""JSON (de)serialization chosen from type annotations, via pydantic.

Models, dataclasses, TypedDicts and primitives all go through one ``TypeAdapter``; an
unannotated value uses ``Any`` (plain JSON types, and models dumped as objects).

NaN and +/-Infinity are not JSON: pydantic would write them as ``null`` (and a ``float``
handler would then fail on its own input after it was journaled), so every dump refuses them
(``NonFiniteFloat``); the callers turn that into a ``TerminalError``.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from actors.sdk.errors import TerminalError
from journal.errors import StatusCode

MAX_PAYLOAD_BYTES = 4 * 1024 * 1024  # inputs, outputs, action results, awakeable values


def check_size(data: str, what: str) -> str:
    """Refuse a payload over ``MAX_PAYLOAD_BYTES`` (``TerminalError`` 413) before it is
    journaled: every byte of it would be written to DuckDB and shipped between actors."""
    if len(data) > MAX_PAYLOAD_BYTES // 4 and len(data.encode()) > MAX_PAYLOAD_BYTES:
        raise TerminalError(
            f"{what} is {len(data.encode()):,} bytes of JSON; the limit is {MAX_PAYLOAD_BYTES:,}",
            StatusCode.PAYLOAD_TOO_LARGE,
        )
    return data


class NonFiniteFloat(ValueError):
    """A value holds NaN or +/-Infinity, which JSON cannot represent."""


def check_text(text: str, what: str) -> str:
    """Refuse text that cannot be encoded as UTF-8 (a lone surrogate such as ``"\\ud800"``):
    it could be neither hashed nor journaled. ``TerminalError`` (400)."""
    if isinstance(text, str) and not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError as e:
            raise TerminalError(
                f"{what} {text[:40]!r} is not valid text: {e.reason} at position {e.start}",
                StatusCode.BAD_REQUEST,
            ) from None
    return text


def non_finite(value: Any, path: str = "value", depth: int = 0) -> str | None:
    """Where in ``value`` a NaN or +/-Infinity float sits (``"value.items[2]"``), or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} = {value}"
    if depth > 64 or isinstance(value, str | int | bool | bytes) or value is None:
        return None
    if isinstance(value, dict):
        items: Any = ((f"{path}[{k!r}]", v) for k, v in value.items())
    elif isinstance(value, list | tuple | set | frozenset):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    elif isinstance(value, BaseModel):
        items = ((f"{path}.{k}", v) for k, v in value.__dict__.items())
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = (
            (f"{path}.{f.name}", getattr(value, f.name, None)) for f in dataclasses.fields(value)
        )
    else:
        return None
    for where, v in items:
        found = non_finite(v, where, depth + 1)
        if found is not None:
            return found
    return None


class Serde:
    """Dump values to JSON text and load them back as the annotated type."""

    __slots__ = ("_adapter", "type")

    def __init__(self, tp: Any = Any) -> None:
        self.type = Any if tp is inspect.Parameter.empty or tp is None else tp
        self._adapter: TypeAdapter[Any] = TypeAdapter(self.type)

    def dump(self, value: Any) -> str:
        """JSON text of ``value``; ``NonFiniteFloat`` if it holds NaN or +/-Infinity (pydantic
        writes those as ``null``, so only a dump with a ``null`` in it is searched)."""
        data = self._adapter.dump_json(value).decode()
        if "null" in data:
            found = non_finite(value)
            if found is not None:
                raise NonFiniteFloat(f"NaN and Infinity cannot be represented in JSON ({found})")
        return data

    def load(self, data: str) -> Any:
        return self._adapter.validate_json(data)

    def _validated_dump(self, value: Any) -> str:
        try:
            return self.dump(self._adapter.validate_python(value))
        except ValidationError:
            plain = _plain(value)
            if plain is value:
                raise
            # a model or dataclass of another copy of the class (definitions travel by value,
            # so a connecting driver's class is not the runtime's): go by its fields
            return self.dump(self._adapter.validate_python(plain))

    def to_json(self, value: Any, what: str) -> str:
        """Validate a Python value and dump it; a value that does not fit the type (or holds
        NaN/Infinity) is a ``TerminalError`` (400: bad input), over the size limit 413."""
        try:
            data = self._validated_dump(value)
        except (ValidationError, ValueError, TypeError) as e:
            raise TerminalError(f"{what}: {_short(e)}", StatusCode.BAD_REQUEST) from None
        return check_size(data, what)

    def output_json(self, value: Any, target: str) -> str:
        """A handler's return value checked against its return annotation and dumped: a
        mismatch is the handler's bug, a ``TerminalError`` (500) naming handler and type,
        recorded as the invocation's failure (instead of a success the caller cannot read)."""
        try:
            data = self._validated_dump(value)
        except ValidationError as e:
            raise TerminalError(
                f"the output of {target} does not match its return annotation "
                f"{_type_name(self.type)} (got {type(value).__name__}): {_short(e)}",
                StatusCode.INTERNAL,
            ) from None
        except (ValueError, TypeError) as e:
            raise TerminalError(
                f"the output of {target} is not JSON-serializable ({type(value).__name__}): {e}",
                StatusCode.INTERNAL,
            ) from None
        return check_size(data, f"the output of {target}")

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


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else repr(tp).removeprefix("typing.")


def _short(e: Exception) -> str:
    if isinstance(e, ValidationError):
        return "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'value'}: {err['msg']}" for err in e.errors()
        )
    return str(e)
