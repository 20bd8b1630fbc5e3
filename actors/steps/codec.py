"""Step results as (kind, bytes), never pickled.

A step result is journaled (or written to the blob store) in a format that another Python, a
later version of the code, or SQL can read without running arbitrary code: JSON text for JSON
values, ``.npy`` (``allow_pickle=False``) for NumPy arrays, Arrow IPC streams for Arrow tables
and record batches, the bytes themselves for ``bytes``. Anything else is a ``TerminalError``
naming the step and the type: pickling it instead would journal something only the same code
can load, and a retry would not make it serializable.

NumPy and pyarrow are imported only when a value of theirs is met (numpy is not a dependency).
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, BinaryIO

from actors.sdk.errors import TerminalError

Writer = Callable[[BinaryIO], object]


INLINE_LIMIT = 256 * 1024  # a larger result goes to the blob store
MARKER = "$raystate"  # the first key of a journaled result that is not plain JSON text
_PREFIX = '{"' + MARKER + '":'


def is_marked(text: str) -> bool:
    """Whether journal text is a marked document (``actors.steps.results``), not JSON text."""
    return text.startswith(_PREFIX)


class Kind(StrEnum):
    """What an encoded payload holds; also the extension of its blob file."""

    JSON = "json"
    BYTES = "bytes"
    NDARRAY = "npy"
    ARROW_TABLE = "arrow"
    ARROW_BATCH = "arrowbatch"


@dataclass(frozen=True)
class Encoded:
    """An encoded step result."""

    kind: Kind
    payload: bytes


def _is_ndarray(value: Any) -> bool:
    np = sys.modules.get("numpy")  # an ndarray exists only if numpy was imported
    return np is not None and isinstance(value, np.ndarray)


def _arrow_kind(value: Any) -> Kind | None:
    pa = sys.modules.get("pyarrow")
    if pa is None:
        return None
    if isinstance(value, pa.Table):
        return Kind.ARROW_TABLE
    if isinstance(value, pa.RecordBatch):
        return Kind.ARROW_BATCH
    return None


def binary_size(value: Any) -> int | None:
    """Bytes a binary value takes (about its encoded size), or None for a JSON value: lets a
    worker decide to spill a large result without encoding it first."""
    if isinstance(value, bytes | bytearray | memoryview):
        return memoryview(value).nbytes
    if _is_ndarray(value) or _arrow_kind(value) is not None:
        return int(value.nbytes)
    return None


def dump_json(value: Any) -> str:
    """Strict JSON: NaN and infinities are refused (they are not JSON; SQL could not read them)."""
    return json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)


def writer(value: Any, step: str, dump: Callable[[Any], str] | None = None) -> tuple[Kind, Writer]:
    """The kind of ``value`` and a function that writes its encoding to a binary sink (so a
    large value streams into a blob without a second copy in memory).

    Raises:
        TerminalError: ``value`` is of no supported type, or a JSON value cannot be dumped.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        data = value
        return Kind.BYTES, lambda sink: sink.write(data)
    if _is_ndarray(value):
        if value.dtype.hasobject:
            raise _unsupported(
                step,
                value,
                f"a NumPy array of Python objects (dtype {value.dtype}) would need pickle",
            )
        from numpy.lib import format as npy

        return Kind.NDARRAY, lambda sink: npy.write_array(sink, value, allow_pickle=False)
    arrow = _arrow_kind(value)
    if arrow is not None:
        import pyarrow as pa

        def write_arrow(sink: BinaryIO) -> None:
            with pa.ipc.new_stream(sink, value.schema) as out:
                out.write(value)

        return arrow, write_arrow
    try:
        text = (dump or dump_json)(value)
    except (TypeError, ValueError, OverflowError) as e:
        raise _unsupported(step, value, str(e)) from None
    data = text.encode()
    return Kind.JSON, lambda sink: sink.write(data)


def encode(value: Any, step: str, dump: Callable[[Any], str] | None = None) -> Encoded:
    """``value`` as (kind, bytes); see ``writer``."""
    kind, write = writer(value, step, dump)
    buf = io.BytesIO()
    write(buf)
    return Encoded(kind, buf.getvalue())


def decode(encoded: Encoded, load: Callable[[str], Any] | None = None) -> Any:
    """The value back; ``load`` parses JSON text (default ``json.loads``; the engine passes
    the step's return-type serde)."""
    kind, payload = encoded.kind, encoded.payload
    if kind is Kind.JSON:
        return (load or json.loads)(payload.decode())
    if kind is Kind.BYTES:
        return payload
    if kind is Kind.NDARRAY:
        from numpy.lib import format as npy

        return npy.read_array(io.BytesIO(payload), allow_pickle=False)
    import pyarrow as pa

    reader = pa.ipc.open_stream(pa.BufferReader(payload))
    if kind is Kind.ARROW_TABLE:
        return reader.read_all()
    batches = list(reader)
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches, schema=reader.schema).combine_chunks().to_batches()[0]


def _unsupported(step: str, value: Any, why: str) -> TerminalError:
    tp = type(value)
    name = tp.__name__ if tp.__module__ == "builtins" else f"{tp.__module__}.{tp.__qualname__}"
    return TerminalError(
        f"the result of step {step!r} is a {name}, which cannot be journaled ({why}); a step "
        "may return JSON values, bytes, numpy.ndarray, pyarrow.Table or pyarrow.RecordBatch",
        500,
    )
