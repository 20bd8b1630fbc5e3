"""Runtime: the client facade any Ray driver uses to start, reach and query raystate.

Every operation is written once as ``*_async``; the sync method runs it on a private event-loop
thread. Arguments are validated here, before any round trip; failures come back as data and are
rebuilt as ``TerminalError`` on this side.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import weakref
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TypeVar, overload

import pyarrow as pa
import ray

from actors.client.handles import CLOSED, InvocationHandle, ObjectProxy, _LoopThread, decode
from actors.client.partsql import PartitionedSql
from actors.client.rebalance import PartitionMethods
from actors.client.schedules import ScheduleMethods, start_runner
from actors.client.startup import prepare, start_hosts
from actors.client.stopping import stop_namespace
from actors.client.waiting import within
from actors.cluster.host_actor import HostActor
from actors.cluster.names import find_journal
from actors.cluster.remote import RemoteJournal
from actors.cluster.router import Router, Target
from actors.sdk.definitions import (
    HandlerNoArg,
    HandlerSpec,
    HandlerWithArg,
    In,
    Out,
    ServiceDefinition,
    VirtualObject,
)
from actors.sdk.errors import TerminalError
from actors.sdk.serde import ANY, check_size
from actors.steps.runner import INLINE_LIMIT
from journal.config import RuntimeConfig
from journal.errors import StatusCode
from journal.kinds import InvokeMode
from journal.retention import DEFAULT_RETENTION
from journal.usersql import DEFAULT_SQL_TIMEOUT_S

T = TypeVar("T")


def _close_at_exit(ref: weakref.ref[Runtime]) -> None:
    rt = ref()
    if rt is not None:
        rt.close()


class Runtime(ScheduleMethods, PartitionMethods):
    """A raystate runtime in one Ray namespace: journal, hosts, and this driver's client.

    >>> rt = Runtime.start([counter], data_dir="raystate-data")   # doctest: +SKIP
    >>> rt.call(add, key="alice", arg=5)                           # doctest: +SKIP
    5
    """

    def __init__(self, namespace: str, config: RuntimeConfig | dict[str, Any]) -> None:
        self.namespace = namespace
        self.data_dir: str = RuntimeConfig.of(config).data_dir
        self.router = Router(namespace, config, HostActor)
        self.pool_size = self.router.pool_size
        self.definitions = self.router.definitions
        self.partitions = self.router.partitions
        self._journal = self.router.journal(0)  # partition 0's: schedules live there
        self._sql = PartitionedSql(self.router.journal, self.partitions, RuntimeConfig.of(config))
        self._loop = _LoopThread()
        self._closed = False
        self._shut_down = False
        # a script that ends without close() must not leave its sockets' tasks to be destroyed
        # pending at exit (Python prints "Task was destroyed but it is pending!" for each)
        atexit.register(_close_at_exit, weakref.ref(self))

    def journal_of(self, invocation_id: str) -> RemoteJournal:
        """The journal of the partition an invocation id names."""
        return self.router.journal(self.partitions.of_id(invocation_id))

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(CLOSED)

    # -- starting and connecting -------------------------------------------------------------

    @classmethod
    def start(
        cls,
        services: Sequence[ServiceDefinition],
        *,
        data_dir: str | os.PathLike[str] = "raystate-data",
        namespace: str = "raystate",
        address: str | None = None,
        pool_size: int | None = None,
        suspend_after: timedelta | float = timedelta(seconds=30),
        retention: timedelta | float | None = DEFAULT_RETENTION,
        sql_timeout: timedelta | float | None = DEFAULT_SQL_TIMEOUT_S,
        blob_store: str | os.PathLike[str] | None = None,
        inline_limit: int = INLINE_LIMIT,
        partitions: int = 1,
        partition_placement: str = "local",
    ) -> Runtime:
        """Start the runtime's actors (or attach to the ones running in ``namespace``).

        Calls ``ray.init(address)`` if this process has not. The journal actor is placed on this
        driver's node, next to ``data_dir``; unfinished invocations found there are resumed.
        ``suspend_after``: how long an invocation waiting on a timer stays in memory before it
        is evicted (and replayed from its journal when the timer fires). The environment
        variable ``RAYSTATE_ALWAYS_REPLAY=1`` sets it to zero: every wait evicts, so every
        resumption is a replay (a determinism check for test suites).
        ``pool_size``: host actors per service (default: half the cluster's CPUs, at least
        one; see ``default_pool_size``); local partitions share them, spread partitions have
        as many each (by default shared out over the partitions).
        ``retention`` (timedelta or seconds; default 24 h): how long a finished invocation's
        journal, output and idempotency result stay in the journal before they are pruned
        (the state of objects always stays); None keeps them forever. See "Retention" in the
        README.
        ``sql_timeout`` (timedelta or seconds; default 30 s): ``sql`` queries still running
        after this long are interrupted with ``SqlTimeout``; None: no limit.
        ``blob_store`` (a path or a ``pyarrow.fs`` URI: ``file://``, ``s3://``, ``gs://`` ...;
        default ``<data_dir>/blobs``): where ``ctx.run`` results larger than ``inline_limit``
        bytes (default 256 KiB) and ``durable_ref=True`` results go; the journal keeps their
        URI, size and sha256.
        ``partitions`` (default 1): how many journals, each with its own scheduler and
        directory ``<data_dir>/partition-<p>/``, the keys split over; fixed when the data dir
        is made. ``partition_placement``: ``"local"`` (every partition on this node, next to
        ``data_dir``) or ``"spread"`` (over the cluster's nodes, ``data_dir`` on storage every
        node mounts; a lost node's partitions restart elsewhere). See docs/partitions.md.
        """
        config, journals = prepare(
            services,
            data_dir=data_dir,
            namespace=namespace,
            address=address,
            pool_size=pool_size,
            suspend_after=suspend_after,
            retention=retention,
            sql_timeout=sql_timeout,
            blob_store=blob_store,
            inline_limit=inline_limit,
            partitions=partitions,
            partition_placement=partition_placement,
        )
        rt = cls(namespace, config)
        start_hosts(rt.router, journals, list(services))
        if ray.get(journals[0].schedule_count.remote()):  # no runner process without schedules
            start_runner(namespace, rt.partitions.count)
        return rt

    @classmethod
    def connect(cls, namespace: str = "raystate", address: str | None = None) -> Runtime:
        """Attach to a runtime another driver started in ``namespace``."""
        if not ray.is_initialized():
            ray.init(address=address or "auto", namespace=namespace, include_dashboard=False)
        journal = find_journal(namespace)
        if journal is None:
            raise RuntimeError(f"no raystate runtime runs in namespace {namespace!r}")
        raw: dict[str, Any] = dict(ray.get(journal.config.remote()) or {})
        if not raw:
            raise RuntimeError(f"the runtime in namespace {namespace!r} is still starting")
        return cls(namespace, RuntimeConfig.from_dict(raw))

    # -- invoking ----------------------------------------------------------------------------

    def resolve(self, target: Target) -> HandlerSpec:
        """The handler behind a function reference or a ``"Service/handler"`` string."""
        self._check_open()
        return self.router.resolve(target)

    @overload
    async def call_async(
        self,
        target: HandlerNoArg[Out],
        key: str | None = None,
        arg: None = None,
        *,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Out: ...

    @overload
    async def call_async(
        self,
        target: HandlerWithArg[In, Out],
        key: str | None = None,
        arg: In = ...,
        *,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Out: ...

    @overload
    async def call_async(
        self,
        target: str,
        key: str | None = None,
        arg: Any = None,
        *,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Any: ...

    async def call_async(
        self,
        target: Target,
        key: str | None = None,
        arg: Any = None,
        *,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        self._check_open()
        spec, req = self.router.request(
            target, key, arg, InvokeMode.CALL, idempotency_key=idempotency_key
        )
        out = await within(timeout, req.id, self.router.submit(spec, req), self.sql_async)
        assert out is not None
        return decode(spec, out)

    @overload
    def call(
        self,
        target: HandlerNoArg[Out],
        key: str | None = None,
        arg: None = None,
        *,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Out: ...

    @overload
    def call(
        self,
        target: HandlerWithArg[In, Out],
        key: str | None = None,
        arg: In = ...,
        *,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Out: ...

    @overload
    def call(
        self,
        target: str,
        key: str | None = None,
        arg: Any = None,
        *,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Any: ...

    def call(
        self,
        target: Target,
        key: str | None = None,
        arg: Any = None,
        *,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Invoke a handler and wait for its result (``TerminalError`` if it failed). After
        ``timeout`` seconds (None: no limit) ``actors.client.waiting.InvocationTimeoutError`` (a
        ``TimeoutError``) names the invocation and its last failure; it goes on running."""
        return self._loop.run(
            self.call_async(target, key, arg, idempotency_key=idempotency_key, timeout=timeout)
        )

    @overload
    async def send_async(
        self,
        target: HandlerNoArg[Out],
        key: str | None = None,
        arg: None = None,
        *,
        idempotency_key: str | None = None,
        delay: timedelta | float | None = None,
    ) -> InvocationHandle[Out]: ...

    @overload
    async def send_async(
        self,
        target: HandlerWithArg[In, Out],
        key: str | None = None,
        arg: In = ...,
        *,
        idempotency_key: str | None = None,
        delay: timedelta | float | None = None,
    ) -> InvocationHandle[Out]: ...

    @overload
    async def send_async(
        self,
        target: str,
        key: str | None = None,
        arg: Any = None,
        *,
        idempotency_key: str | None = None,
        delay: timedelta | float | None = None,
    ) -> InvocationHandle[Any]: ...

    async def send_async(
        self,
        target: Target,
        key: str | None = None,
        arg: Any = None,
        *,
        idempotency_key: str | None = None,
        delay: timedelta | float | None = None,
    ) -> InvocationHandle[Any]:
        self._check_open()
        spec, req = self.router.request(
            target, key, arg, InvokeMode.SEND, idempotency_key=idempotency_key, delay=delay
        )
        await self.router.submit(spec, req)
        return InvocationHandle(self, req.id, spec)

    @overload
    def send(
        self,
        target: HandlerNoArg[Out],
        key: str | None = None,
        arg: None = None,
        *,
        idempotency_key: str | None = None,
        delay: timedelta | float | None = None,
    ) -> InvocationHandle[Out]: ...

    @overload
    def send(
        self,
        target: HandlerWithArg[In, Out],
        key: str | None = None,
        arg: In = ...,
        *,
        idempotency_key: str | None = None,
        delay: timedelta | float | None = None,
    ) -> InvocationHandle[Out]: ...

    @overload
    def send(
        self,
        target: str,
        key: str | None = None,
        arg: Any = None,
        *,
        idempotency_key: str | None = None,
        delay: timedelta | float | None = None,
    ) -> InvocationHandle[Any]: ...

    def send(
        self,
        target: Target,
        key: str | None = None,
        arg: Any = None,
        *,
        idempotency_key: str | None = None,
        delay: timedelta | float | None = None,
    ) -> InvocationHandle[Any]:
        """Submit without waiting for the result; returns once the invocation is durable.
        With ``delay`` it starts no earlier than that (a durable timer; status ``scheduled``)."""
        return self._loop.run(
            self.send_async(target, key, arg, idempotency_key=idempotency_key, delay=delay)
        )

    def attach(self, invocation_id: str) -> InvocationHandle[Any]:
        """A handle on an invocation submitted earlier (by any driver)."""
        self._check_open()
        journal = self.journal_of(invocation_id)
        accept = self._loop.run(journal.accepted(invocation_id))
        if accept is None:
            raise TerminalError(f"unknown invocation {invocation_id!r}", StatusCode.NOT_FOUND)
        d = self.definitions.get(accept.service)
        return InvocationHandle(self, invocation_id, d.handlers.get(accept.handler) if d else None)

    async def resolve_awakeable_async(self, awakeable_id: str, value: Any = None) -> None:
        self._check_open()
        await self.router.resolve_awakeable(awakeable_id, _json_value(value), None)

    def resolve_awakeable(self, awakeable_id: str, value: Any = None) -> None:
        """Complete an awakeable with ``value`` (JSON); returns once that is durable. The
        waiting handler resumes (replayed if it left memory). ``AlreadyCompletedError`` if it
        was completed before; ``TerminalError`` for a malformed (400) or unknown (404) id, or a
        value that does not fit the awakeable's type (400)."""
        self._loop.run(self.resolve_awakeable_async(awakeable_id, value))

    async def reject_awakeable_async(self, awakeable_id: str, reason: str) -> None:
        self._check_open()
        await self.router.resolve_awakeable(awakeable_id, None, str(reason))

    def reject_awakeable(self, awakeable_id: str, reason: str) -> None:
        """Fail an awakeable: ``TerminalError(reason)`` is raised where the handler awaits it."""
        self._loop.run(self.reject_awakeable_async(awakeable_id, reason))

    async def cancel_async(self, invocation_id: str) -> str:
        self._check_open()
        return await self.router.cancel(invocation_id)

    def cancel(self, invocation_id: str) -> str:
        """Cancel an invocation: ``TerminalError("cancelled")`` is raised in its handler at the
        next await, so it can compensate, and the request passes on to the call it waits for.
        Returns "cancelled", or "completed" if it had already finished; ``TerminalError``
        (404) for an unknown id."""
        return self._loop.run(self.cancel_async(invocation_id))

    async def kill_async(self, invocation_id: str) -> str:
        self._check_open()
        return await self.router.cancel(invocation_id, kill=True)

    def kill(self, invocation_id: str) -> str:
        """Stop an invocation at once, without compensation, and free its key (its outcome:
        ``TerminalError("killed")``; what it journaled so far stays). Returns "killed" or
        "completed"."""
        return self._loop.run(self.kill_async(invocation_id))

    def object(self, obj: VirtualObject | str, key: str) -> ObjectProxy:
        self._check_open()
        name = obj if isinstance(obj, str) else obj.name
        return ObjectProxy(self, name, key)

    # -- introspection and lifecycle ---------------------------------------------------------

    async def sql_async(self, query: str) -> pa.Table:
        self._check_open()
        return await self._sql.run(query)

    def sql(self, query: str) -> pa.Table:
        """Run a read-only query over the journal's views (``sys_invocation`` ...). It runs
        under the runtime's time limit (``Runtime.start(..., sql_timeout=30)``) and result cap;
        a refusal or failure raises ``SqlRefused`` (``SqlTimeout``, ``SqlResultTooLarge`` and
        ``SqlBusy`` are kinds of it). Interrupting this call (Ctrl-C) stops the query. With
        several partitions the views are over all of them (``journal.federated``): a query
        naming one invocation id or key reads its partition only."""
        return self._loop.run(self.sql_async(query))

    def close(self) -> None:
        """Release this driver's client (its event-loop thread); the runtime keeps running.
        Every method of this client (and of its handles and proxies) raises RuntimeError
        from now on, also a call another thread is waiting in. Closing twice does nothing."""
        if self._closed:
            return
        self._closed = True
        self.router.closed = CLOSED  # its requests in flight on other loops make no hosts now
        self._close_wires()
        self.router.clear()
        self._loop.stop()

    def _close_wires(self) -> None:
        """Close this client's sockets to hosts and the journal (``journal.transport.wire``)."""

        async def close() -> None:
            await self.router.close_wires()

        if self._loop.loop.is_running():
            with contextlib.suppress(Exception):
                self._loop.run(close(), timeout=5)

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def shutdown(self) -> None:
        """Stop this runtime's actors (journal, scheduler, hosts). The data stays on disk:
        the journal is stopped last, once it has moved its write-ahead log into DuckDB, so the
        DuckDB file alone holds everything (a journal that dies first loses nothing either:
        its next start replays the log). A second shutdown does nothing; after ``close()``
        it raises RuntimeError (connect again to stop the runtime)."""
        if self._shut_down:
            return
        self._check_open()
        self._shut_down = True
        self.router.closed = CLOSED
        self._close_wires()
        stop_namespace(self.namespace)
        self.close()


def _json_value(value: Any) -> str:
    try:
        data = ANY.dump(value)
    except Exception as e:
        raise TerminalError(
            f"awakeable value is not JSON-serializable: {e}", StatusCode.BAD_REQUEST
        ) from None
    return check_size(data, "awakeable value")
