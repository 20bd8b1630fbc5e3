"""What a handler may do, by kind: the context interfaces handlers are annotated with.

``Context`` (services) < ``ObjectSharedContext`` (read state) < ``ObjectContext`` (write state).
One concrete class implements them all (``actors.engine.context.InvocationContext``); the
types tell a handler's author which operations its kind allows, and the runtime refuses the others.
"""

from __future__ import annotations

import logging
import random
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload

from actors.sdk.errors import RetryPolicy

if TYPE_CHECKING:
    from actors.sdk.definitions import HandlerNoArg, HandlerWithArg, In, Out

T = TypeVar("T")


class DeterministicRandom(random.Random):
    """``random.Random`` seeded from the invocation id: the same numbers on every replay."""

    def uuid4(self) -> uuid.UUID:
        return uuid.UUID(int=self.getrandbits(128), version=4)


class Context(ABC):
    """Operations every handler has: journaled actions, time, randomness."""

    logger: logging.Logger
    """Log through this in handlers: it stays silent while the handler replays its journal, so
    a line appears once per execution, not again on every retry or resumption. Records go to
    the logger ``raystate.handler.<Service>.<handler>`` (configure that one, or ``raystate``)
    and carry ``invocation_id``."""

    @property
    @abstractmethod
    def rand(self) -> DeterministicRandom:
        """A ``random.Random`` seeded from the invocation id (with ``.uuid4()``): the same
        numbers on every replay."""

    @abstractmethod
    async def run(
        self,
        name: str,
        fn: Callable[..., T] | Callable[..., Awaitable[T]],
        *args: Any,
        retry_policy: RetryPolicy | None = None,
        durable_ref: bool = False,
        **kwargs: Any,
    ) -> T:
        """Run a side effect once and journal its result (or its ``TerminalError``).

        A sync ``fn`` runs in a thread, off the event loop. On replay the journaled result is
        returned and ``fn`` is not called. An exception other than ``TerminalError`` fails the
        attempt (the invocation is retried from its journal), unless ``retry_policy`` is given:
        then ``fn`` is retried in place and, once the policy is exhausted, a ``TerminalError`` is
        journaled and raised.

        ``fn`` may be a Ray remote function (or its ``.options(...)``) or a Ray actor's method:
        the step runs as a Ray task (named ``service/handler/step``) or on that actor, and the
        host awaits it without blocking. Results may be JSON values, ``bytes``,
        ``numpy.ndarray`` or ``pyarrow.Table``/``RecordBatch``; large ones go to the blob
        store. ``durable_ref=True`` returns a ``DurableRef`` (the value stays in the blob store).
        """

    @abstractmethod
    async def sleep(self, delay: timedelta | float) -> None:
        """A durable timer: returns after ``delay`` (a ``timedelta`` or seconds), never earlier,
        also across crashes and restarts. A long sleep holds no memory: the invocation is
        evicted and replayed from its journal when the timer fires."""

    @abstractmethod
    async def time(self) -> float:
        """Wall-clock time in epoch seconds, journaled so replays see the same value."""

    @abstractmethod
    def invocation_id(self) -> str: ...

    @abstractmethod
    def object_send(
        self, handler: Any, key: str, arg: Any = None, *, delay: timedelta | float | None = None
    ) -> str:
        """Send to a virtual-object handler (function or ``"Service/handler"``) without
        waiting; optionally ``delay``-ed. Returns the callee's invocation id; delivered once."""

    @abstractmethod
    def service_send(
        self, handler: Any, arg: Any = None, *, delay: timedelta | float | None = None
    ) -> str:
        """Send to a service handler without waiting (see ``object_send``)."""

    @abstractmethod
    def workflow_send(
        self, handler: Any, key: str, arg: Any = None, *, delay: timedelta | float | None = None
    ) -> str:
        """Send to a workflow handler (``key``: the workflow id) without waiting."""

    @overload
    async def object_call(self, handler: HandlerNoArg[Out], key: str, arg: None = None) -> Out: ...

    @overload
    async def object_call(self, handler: HandlerWithArg[In, Out], key: str, arg: In) -> Out: ...

    @overload
    async def object_call(self, handler: str, key: str, arg: Any = None) -> Any: ...

    @abstractmethod
    async def object_call(self, handler: Any, key: str, arg: Any = None) -> Any:
        """Call a virtual-object handler and wait for its result; its ``TerminalError`` is
        raised here. The call is journaled and its callee runs once, also when this handler
        crashes and replays. An exclusive handler calling an exclusive handler of its own key
        would wait forever: that is refused with ``TerminalError`` (409)."""

    @overload
    async def service_call(self, handler: HandlerNoArg[Out], arg: None = None) -> Out: ...

    @overload
    async def service_call(self, handler: HandlerWithArg[In, Out], arg: In) -> Out: ...

    @overload
    async def service_call(self, handler: str, arg: Any = None) -> Any: ...

    @abstractmethod
    async def service_call(self, handler: Any, arg: Any = None) -> Any:
        """Call a service handler and wait for its result (see ``object_call``)."""

    @overload
    async def workflow_call(
        self, handler: HandlerNoArg[Out], key: str, arg: None = None
    ) -> Out: ...

    @overload
    async def workflow_call(self, handler: HandlerWithArg[In, Out], key: str, arg: In) -> Out: ...

    @overload
    async def workflow_call(self, handler: str, key: str, arg: Any = None) -> Any: ...

    @abstractmethod
    async def workflow_call(self, handler: Any, key: str, arg: Any = None) -> Any:
        """Call a workflow handler and wait for its result (see ``object_call``)."""

    @abstractmethod
    def object_client(self, obj: Any, key: str) -> Any:
        """``await ctx.object_client(counter, "bob").add(1)``: one key's handlers as
        awaitable methods (calls, as ``object_call``)."""

    @abstractmethod
    def service_client(self, service: Any) -> Any:
        """``await ctx.service_client(payments).charge(order)``."""

    @abstractmethod
    def workflow_client(self, workflow: Any, key: str) -> Any: ...

    @abstractmethod
    def awakeable(self, type_hint: Any = None) -> tuple[str, Awakeable]:
        """A completion to hand to the outside world: returns its id and an awaitable. Whoever
        has the id resolves it (``rt.resolve_awakeable(id, value)``, ``raystate resolve``,
        ``ctx.resolve_awakeable``) or rejects it (``TerminalError`` at the ``await``)."""

    @abstractmethod
    def resolve_awakeable(self, awakeable_id: str, value: Any = None) -> Awaitable[None]:
        """Resolve another invocation's awakeable (journaled, delivered once).

        Fire and forget, as in Restate: delivered whether or not the result is awaited (the
        handler's output waits for the delivery). ``await`` it to learn whether it was
        delivered: it raises ``AlreadyCompletedError`` (409) if the awakeable was completed
        before, ``TerminalError`` (404) for an unknown awakeable, (400) for a value that does
        not fit its type. The verdict is journaled, so a replay gets the same one. A malformed
        or forged id raises ``TerminalError`` (400) at once.

        >>> await ctx.resolve_awakeable(awk_id, "yes")   # doctest: +SKIP
        """

    @abstractmethod
    def reject_awakeable(self, awakeable_id: str, reason: str) -> Awaitable[None]:
        """Reject another invocation's awakeable: its ``await`` raises
        ``TerminalError(reason)``. Delivered and awaitable as ``resolve_awakeable``."""


class Awakeable(ABC):
    """A completion that someone outside resolves: ``value = await awakeable``."""

    @abstractmethod
    def __await__(self) -> Any: ...


class DurablePromise(ABC):
    """A workflow's named durable promise: resolved (or rejected) once, by any handler of the
    workflow (or the main handler itself); a value resolved before anyone waits is kept."""

    @abstractmethod
    async def value(self) -> Any:
        """Wait for the promise; its rejection raises ``TerminalError``."""

    @abstractmethod
    async def peek(self) -> Any:
        """The value if resolved, else None (without waiting)."""

    @abstractmethod
    def resolve(self, value: Any = None) -> None:
        """Resolve it; ``AlreadyCompletedError`` if it was resolved or rejected before."""

    @abstractmethod
    def reject(self, message: str) -> None: ...


class ObjectSharedContext(Context):
    """A virtual object's shared handler: reads committed state of its key."""

    @abstractmethod
    def key(self) -> str: ...

    @abstractmethod
    async def get(self, name: str, default: Any = None, *, type_hint: Any = None) -> Any:
        """The state entry ``name`` (decoded as ``type_hint`` if given), or ``default``."""

    @abstractmethod
    async def state_keys(self) -> list[str]: ...


class ObjectContext(ObjectSharedContext):
    """A virtual object's exclusive handler: one at a time per key, may change state.

    Changes become durable together with the next journal step, atomically.
    """

    @abstractmethod
    def set(self, name: str, value: Any) -> None: ...

    @abstractmethod
    def clear(self, name: str) -> None: ...

    @abstractmethod
    def clear_all(self) -> None: ...


class WorkflowSharedContext(ObjectSharedContext):
    """A workflow's shared handler: reads its state, resolves its promises."""

    @abstractmethod
    def promise(self, name: str, type_hint: Any = None) -> DurablePromise:
        """The workflow's durable promise ``name`` (values decoded as ``type_hint``)."""


class WorkflowContext(WorkflowSharedContext, ObjectContext):
    """A workflow's main handler: runs once per workflow key; may change its state."""
