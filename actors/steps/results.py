"""How a step result is written in the journal: JSON text, or a small marked JSON document.

A JSON result is journaled as its JSON text, as before this module existed, so old journals,
``sys_journal`` and SQL read it unchanged. Everything else is a JSON object whose first key is
``"$raystate"`` (the form) -- the journal column must stay JSON, since the views cast it:

    {"$raystate":"json","value":...}                   a JSON result that is itself an object
                                                       with a "$raystate" key (escaped)
    {"$raystate":"inline","kind":"npy","data":"<b64>"} a small non-JSON result
    {"$raystate":"blob","kind":..,"uri":..,"size":..,"sha256":..}
                                                       a result in the blob store
    {"$raystate":"ref",...the same fields...}          a ``DurableRef`` (a replay returns the
                                                       reference, not the value)

No JSON user value can be taken for a marked document: a journaled text is ours exactly when it
starts with ``{"$raystate":`` (our compact dumps always do), and a user's JSON text that starts
so is escaped (written as the "json" form).
Telling them apart is a prefix test, so replaying a JSON result costs what it did.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from actors.sdk.errors import TerminalError
from actors.steps.blobs import BlobRef, BlobStore
from actors.steps.codec import (
    INLINE_LIMIT,
    MARKER,
    Encoded,
    Kind,
    binary_size,
    decode,
    encode,
    is_marked,
)
from actors.steps.refs import DurableRef

_ON_LOOP = 64 * 1024  # a binary result up to this size is encoded on the event loop


class Form(StrEnum):
    """The forms of a marked journal document."""

    JSON = "json"
    INLINE = "inline"
    BLOB = "blob"
    REF = "ref"


@dataclass(frozen=True)
class Journaled:
    """A parsed marked document: the value's encoding when inline, else where it is."""

    form: Form
    encoded: Encoded | None = None
    blob: BlobRef | None = None


def _doc(form: Form, **fields: Any) -> str:
    return json.dumps({MARKER: form.value, **fields}, separators=(",", ":"), allow_nan=False)


def blob_to_journal(ref: BlobRef, durable_ref: bool = False) -> str:
    """The journal text of a result in the blob store (or of a ``DurableRef`` to one)."""
    return _doc(
        Form.REF if durable_ref else Form.BLOB,
        kind=ref.kind.value,
        uri=ref.uri,
        size=ref.size,
        sha256=ref.sha256,
    )


def _ref_to_journal(value: BlobRef | DurableRef) -> str:
    if isinstance(value, DurableRef):  # a step that passes a reference on
        return blob_to_journal(value.blob, durable_ref=True)
    return blob_to_journal(value)


def to_journal(
    value: Any,
    inline_limit: int = INLINE_LIMIT,
    *,
    step: str = "step",
    dump: Callable[[Any], str] | None = None,
    spill: Callable[[Encoded], BlobRef] | None = None,
) -> str:
    """The journal text of a step result.

    Args:
        value: the result (JSON value, bytes, ndarray, Arrow table or batch), a ``BlobRef``
            a worker wrote already, or a ``DurableRef`` (journaled as the reference).
        inline_limit: a larger encoding goes to the blob store through ``spill``.
        step: named in errors.
        dump: JSON dumper (the engine passes the step's return-type serde).
        spill: writes an encoding to the blob store; without one an oversized result is a
            ``TerminalError`` (413).
    """
    if isinstance(value, BlobRef | DurableRef):
        return _ref_to_journal(value)
    encoded = encode(value, step, dump)
    if len(encoded.payload) > inline_limit:
        if spill is None:
            raise _too_large(step, encoded, inline_limit)
        return blob_to_journal(spill(encoded))
    return _inline(value, encoded)


def _inline(value: Any, encoded: Encoded) -> str:
    if encoded.kind is Kind.JSON:
        text = encoded.payload.decode()
        if is_marked(text):  # a user object that looks like ours: escaped
            return _doc(Form.JSON, value=json.loads(text))
        return text
    return _doc(
        Form.INLINE, kind=encoded.kind.value, data=base64.b64encode(encoded.payload).decode()
    )


def _too_large(step: str, encoded: Encoded, inline_limit: int) -> TerminalError:
    return TerminalError(
        f"the result of step {step!r} is {len(encoded.payload):,} bytes, over "
        f"the inline limit of {inline_limit:,}, and there is no blob store",
        413,
    )


def from_journal(text: str) -> Journaled:
    """Parse journal text; plain JSON text comes back as a JSON encoding."""
    if not is_marked(text):
        return Journaled(Form.JSON, encoded=Encoded(Kind.JSON, text.encode()))
    doc = json.loads(text)
    form = Form(doc[MARKER])
    if form is Form.JSON:
        return Journaled(form, encoded=Encoded(Kind.JSON, json.dumps(doc["value"]).encode()))
    kind = Kind(doc["kind"])
    if form is Form.INLINE:
        return Journaled(form, encoded=Encoded(kind, base64.b64decode(doc["data"])))
    return Journaled(form, blob=BlobRef(doc["uri"], int(doc["size"]), doc["sha256"], kind))


async def save(
    value: Any,
    *,
    step: str,
    store: BlobStore | None,
    invocation_id: str,
    idx: int,
    inline_limit: int = INLINE_LIMIT,
    dump: Callable[[Any], str] | None = None,
) -> str:
    """``to_journal`` for the engine: a small JSON result is journaled on the event loop, a
    result to encode at length or write to the blob store is handled on a thread."""
    if isinstance(value, BlobRef | DurableRef):
        return _ref_to_journal(value)
    size = binary_size(value)
    if size is None or size <= min(inline_limit, _ON_LOOP):
        encoded = encode(value, step, dump)  # JSON, or small: not worth a thread hop
    else:
        encoded = await asyncio.to_thread(encode, value, step, dump)
    if len(encoded.payload) <= inline_limit:
        return _inline(value, encoded)
    if store is None:
        raise _too_large(step, encoded, inline_limit)
    ref = await asyncio.to_thread(store.put, invocation_id, idx, encoded.payload, encoded.kind)
    return blob_to_journal(ref)


async def load(
    text: str,
    store: BlobStore | None,
    load_json: Callable[[str], Any] | None = None,
    make_ref: Callable[[BlobRef], Any] | None = None,
) -> Any:
    """The value a journaled result stands for (a blob is read, on a thread, and verified);
    for a ``ref`` document ``make_ref(blob)`` (the engine builds a ``DurableRef``)."""
    if not is_marked(text):
        return (load_json or json.loads)(text)
    entry = from_journal(text)
    if entry.encoded is not None:
        return decode(entry.encoded, load_json)
    assert entry.blob is not None
    if entry.form is Form.REF:
        return make_ref(entry.blob) if make_ref is not None else entry.blob
    if store is None:
        from actors.steps.blobs import store_for

        store = store_for(entry.blob)
    encoded = await asyncio.to_thread(store.get, entry.blob)
    return await asyncio.to_thread(decode, encoded, load_json)
