"""``DurableRef``: a step result that stays in the blob store, passed around by reference."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from actors.steps.blobs import BlobRef, BlobStore, open_store
from actors.steps.codec import Kind, decode


@dataclass(frozen=True)
class DurableRef:
    """A durable step's result by reference: ``ctx.run(..., durable_ref=True)`` returns one.

    The worker that ran the step wrote the value to the blob store; the journal holds only this
    reference (URI, size, sha256), so a large value never passes through the host or the
    journal. It is small and picklable: pass it to another remote step (the worker there reads
    it) or to a handler, and ``await ref.get()`` anywhere that can reach the store. Every read
    verifies size and sha256 (``BlobCorrupted`` otherwise).

    Attributes:
        blob: where the value is and what it hashes to.
        store_uri: the blob store's URI as configured (with its options, e.g. an S3
            endpoint); it is not journaled.
    """

    blob: BlobRef
    store_uri: str

    @property
    def kind(self) -> Kind:
        return self.blob.kind

    @property
    def size(self) -> int:
        return self.blob.size

    def store(self) -> BlobStore:
        return open_store(self.store_uri)

    def get_sync(self, load_json: Callable[[str], Any] | None = None) -> Any:
        """The value, read and verified (blocking: for worker code and threads)."""
        return decode(self.store().get(self.blob), load_json or json.loads)

    async def get(self, load_json: Callable[[str], Any] | None = None) -> Any:
        """The value, read and verified on a thread (the event loop keeps running)."""
        return await asyncio.to_thread(self.get_sync, load_json)

    def __repr__(self) -> str:
        return f"DurableRef({self.blob.uri!r}, {self.blob.kind.value}, {self.blob.size:,} bytes)"


def resolve_args(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Top-level ``DurableRef`` arguments replaced by their values (in the worker that runs
    a step, so the values never pass through the host)."""
    if not any(isinstance(a, DurableRef) for a in (*args, *kwargs.values())):
        return args, kwargs
    return (
        tuple(a.get_sync() if isinstance(a, DurableRef) else a for a in args),
        {k: v.get_sync() if isinstance(v, DurableRef) else v for k, v in kwargs.items()},
    )
