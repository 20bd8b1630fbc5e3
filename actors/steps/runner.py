"""What ``ctx.run`` calls for Ray-native steps: the host's step configuration, the cheap test
for a Ray callable, the journal text of a result and the value a replay returns.

Plain callables with JSON results take the path they always took (one ``serde.dump``, the
journal text is the JSON); everything else (a Ray callable, a binary or large result, a
``DurableRef``) goes through ``actors.steps.results`` and ``actors.steps.remote``, imported on
first use: ``import actors`` and the replay engine import neither Ray nor pyarrow.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import BuiltinFunctionType, FunctionType, MethodType
from typing import TYPE_CHECKING, Any

from actors.sdk.errors import TerminalError
from actors.sdk.serde import MAX_PAYLOAD_BYTES, Serde, check_size
from actors.steps.codec import INLINE_LIMIT, binary_size, is_marked, writer
from journal.config import RuntimeConfig

if TYPE_CHECKING:
    from actors.steps.blobs import BlobRef, BlobStore
    from actors.steps.remote import StepResult, StepSpec

_PLAIN = (FunctionType, MethodType, BuiltinFunctionType)
BLOB_STORE_KEY = "blob_store"  # runtime config keys (``Runtime.start``)
INLINE_LIMIT_KEY = "inline_limit"
log = logging.getLogger("raystate.steps")


@dataclass(frozen=True)
class StepsConfig:
    """Where a host's step results go (``Runtime.start(blob_store=..., inline_limit=...)``).
    Without a blob store (a host outside a runtime) the limit is the journal's payload limit,
    and a larger result is refused as before."""

    store_uri: str | None = None
    inline_limit: int = MAX_PAYLOAD_BYTES

    @classmethod
    def from_config(cls, config: RuntimeConfig | Mapping[str, Any] | None) -> StepsConfig:
        if config is None:
            return cls()
        typed = RuntimeConfig.of(config)
        if not typed.blob_store:
            return cls()
        return cls(typed.blob_store, typed.inline_limit or INLINE_LIMIT)

    def store(self) -> BlobStore | None:
        if self.store_uri is None:
            return None
        from actors.steps.blobs import open_store

        return open_store(self.store_uri)


NO_STORE = StepsConfig()


def steps_config(
    data_dir: str, blob_store: str | os.PathLike[str] | None, inline_limit: int
) -> dict[str, Any]:
    """The runtime config entries of ``Runtime.start(blob_store=..., inline_limit=...)``."""
    if isinstance(inline_limit, bool) or not isinstance(inline_limit, int) or inline_limit < 0:
        raise ValueError(
            f"Runtime.start: inline_limit must be a number of bytes, not {inline_limit!r}"
        )
    uri = os.fspath(blob_store) if blob_store is not None else os.path.join(data_dir, "blobs")
    if "://" not in uri:
        uri = Path(uri).expanduser().absolute().as_uri()
    return {BLOB_STORE_KEY: uri, INLINE_LIMIT_KEY: inline_limit}


def is_remote(fn: Any) -> bool:
    """A Ray remote function, its ``.options(...)`` or an actor method: a type test for plain
    functions, Ray's types are looked at only for objects defined in Ray's modules."""
    kind = type(fn)
    if kind in _PLAIN or not kind.__module__.startswith("ray."):
        return False
    from actors.steps.remote import is_remote as ray_callable

    return ray_callable(fn)


def _untyped() -> None:  # an actor method's result: no annotation to decode it by
    pass


_untyped.__annotations__ = {}


def annotated(fn: Any) -> Callable[..., Any]:
    """The function whose return annotation types a remote step's result."""
    from actors.steps.remote import python_function

    return python_function(fn) or _untyped


def _make_ref(config: StepsConfig) -> Callable[[BlobRef], Any]:
    from actors.steps.refs import DurableRef

    def make(blob: BlobRef) -> DurableRef:
        return DurableRef(blob, config.store_uri or blob.uri.rsplit("/", 3)[0])

    return make


async def replayed(text: str, serde: Serde, config: StepsConfig) -> Any:
    """The value of a journaled marked result: decoded, read from the blob store and verified
    (``BlobCorrupted``, a ``TerminalError``, when it does not match; ``BlobStoreUnavailable``,
    retried with the invocation, when the store cannot be reached), or a ``DurableRef``."""
    from actors.steps import results

    return await results.load(text, config.store(), serde.load, make_ref=_make_ref(config))


class RemoteStep:
    """One ``ctx.run`` step on Ray: adopts what an earlier run wrote before its host died
    (only when this is not the invocation's first run), else runs it; ``out`` is the last
    result (the journal text of a blob the worker wrote comes from it)."""

    def __init__(self, fn: Any, spec: StepSpec, load: Callable[[str], Any], adopt: bool) -> None:
        self.fn, self.spec, self.load, self._adopt = fn, spec, load, adopt
        self.out: StepResult | None = None

    @classmethod
    def make(
        cls,
        fn: Any,
        config: StepsConfig,
        service: str,
        handler: str,
        step: str,
        invocation_id: str,
        idx: int,
        durable_ref: bool,
        serde: Serde,
        adopt: bool,
    ) -> RemoteStep:
        from actors.steps.remote import StepSpec

        limit = min(config.inline_limit, MAX_PAYLOAD_BYTES)
        spec = StepSpec(
            service, handler, step, invocation_id, idx, config.store_uri, limit, durable_ref
        )
        return cls(fn, spec, serde.load, adopt)

    async def run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        from actors.steps import remote

        out = None
        if self._adopt:
            self._adopt = False
            out = await remote.adopt(self.spec, self.load)
        self.out = out or await remote.run_remote(self.fn, args, kwargs, self.spec)
        return self.out.value


def _not_json(name: str, result: Any, e: Exception) -> TerminalError:
    return TerminalError(
        f"ctx.run({name!r}) returned a value that is not JSON-serializable "
        f"({type(result).__name__}): {e}"
    )


def _is_ref(value: Any) -> bool:
    refs = sys.modules.get("actors.steps.refs")  # no DurableRef exists before it is imported
    return refs is not None and isinstance(value, refs.DurableRef | refs.BlobRef)


async def journal(
    result: Any,
    serde: Serde,
    name: str,
    invocation_id: str,
    idx: int,
    config: StepsConfig,
    durable_ref: bool = False,
    step: RemoteStep | None = None,
) -> tuple[str, Any]:
    """The journal text of a step's result and the value ``ctx.run`` returns (what a replay
    returns too: JSON goes through the step's serde)."""
    written = step.out.journal_text() if step is not None and step.out is not None else None
    if written is not None:  # the worker wrote a blob (or a DurableRef)
        return written, result
    if not durable_ref and binary_size(result) is None and not _is_ref(result):
        try:
            data = serde.dump(result)
        except Exception as e:
            raise _not_json(name, result, e) from None
        if config.store_uri is None:
            check_size(data, f"the result of ctx.run({name!r})")
        limit = config.inline_limit
        if not is_marked(data) and (len(data) <= limit // 4 or len(data.encode()) <= limit):
            return data, serde.load(data)
    from actors.steps import results

    store = config.store()
    if durable_ref and not _is_ref(result):  # a local step's value by reference
        if store is None:
            raise TerminalError(f"step {name!r}: durable_ref=True needs a blob store", 400)
        kind, write = writer(result, name, serde.dump)
        blob = await asyncio.to_thread(store.put, invocation_id, idx, write, kind)
        return results.blob_to_journal(blob, durable_ref=True), _make_ref(config)(blob)
    text = await results.save(
        result,
        step=name,
        store=store,
        invocation_id=invocation_id,
        idx=idx,
        inline_limit=config.inline_limit,
        dump=serde.dump,
    )
    if is_marked(text):
        return text, result
    return text, serde.load(text)


def delete_blobs(invocation_ids: list[str], config: dict[str, Any]) -> None:
    """Retention: remove the blobs of pruned invocations (the journal actor calls this, on a
    thread, after their rows are gone). A blob that cannot be deleted is logged, not retried:
    nothing references it any more."""
    store = StepsConfig.from_config(config).store()
    if store is None:
        return
    for invocation_id in invocation_ids:
        try:
            store.delete_invocation(invocation_id)
        except Exception as e:
            log.warning("could not delete the blobs of pruned invocation %s: %s", invocation_id, e)
