"""What a handler may do, by kind: the context interfaces handlers are annotated with.

``Context`` (services) < ``ObjectSharedContext`` (read state) < ``ObjectContext`` (write state).
One concrete class implements them all (``actors.engine.InvocationContext``); the types tell a
handler's author which operations its kind allows, and the runtime refuses the others.
"""

from __future__ import annotations

import random
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from actors.errors import RetryPolicy

T = TypeVar("T")


class DeterministicRandom(random.Random):
    """``random.Random`` seeded from the invocation id: the same numbers on every replay."""

    def uuid4(self) -> uuid.UUID:
        return uuid.UUID(int=self.getrandbits(128), version=4)


class Context(ABC):
    """Operations every handler has: journaled actions, time, randomness."""

    rand: DeterministicRandom

    @abstractmethod
    async def run(
        self,
        name: str,
        fn: Callable[..., T] | Callable[..., Awaitable[T]],
        *args: Any,
        retry_policy: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> T:
        """Run a side effect once and journal its result (or its ``TerminalError``).

        A sync ``fn`` runs in a thread, off the event loop. On replay the journaled result is
        returned and ``fn`` is not called. An exception other than ``TerminalError`` fails the
        attempt (the invocation is retried from its journal), unless ``retry_policy`` is given:
        then ``fn`` is retried in place and, once the policy is exhausted, a ``TerminalError`` is
        journaled and raised.
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
    def object_send(self, handler: Any, key: str, arg: Any = None, *,
                    delay: timedelta | float | None = None) -> str:
        """Send to a virtual-object handler (function or ``"Service/handler"``) without
        waiting; optionally ``delay``-ed. Returns the callee's invocation id; delivered once."""

    @abstractmethod
    def service_send(self, handler: Any, arg: Any = None, *,
                     delay: timedelta | float | None = None) -> str:
        """Send to a service handler without waiting (see ``object_send``)."""


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
