"""What a driver holds besides its ``Runtime``: the private event-loop thread the sync methods
run on, a handle on a submitted invocation, and the proxy of one object key."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from actors.client.waiting import within
from actors.sdk.definitions import HandlerSpec, Out
from actors.sdk.errors import TerminalError
from actors.sdk.serde import ANY
from journal.errors import StatusCode
from journal.records import Outcome

if TYPE_CHECKING:
    from actors.client.runtime import Runtime

T = TypeVar("T")

CLOSED = (
    "this raystate Runtime client is closed (close() or shutdown() was called); "
    "Runtime.connect() gives a new one"
)


class _LoopThread:
    """A private event loop in a daemon thread, so sync methods can reuse the async ones."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.stopped = False
        self._thread = threading.Thread(
            target=self.loop.run_forever, daemon=True, name="raystate-client"
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self.stopped:
            coro.close()
            raise RuntimeError(CLOSED)
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.CancelledError:
            if self.stopped:  # cancelled by ``stop``: the wait ends with the client
                raise RuntimeError(CLOSED) from None
            raise
        except BaseException:  # Ctrl-C or a timeout: stop the work (a user's query stops too)
            future.cancel()
            raise

    def stop(self) -> None:
        """Stop the loop; whatever waits on it (a call in another thread) gets RuntimeError."""
        self.stopped = True

        async def cancel_all() -> None:
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            for task in tasks:
                task.cancel()
            if tasks:  # let the cancellations reach the threads that wait on them
                await asyncio.wait(tasks, timeout=5)
            self.loop.stop()

        with contextlib.suppress(RuntimeError):  # the loop is closed already
            asyncio.run_coroutine_threadsafe(cancel_all(), self.loop)


def decode(spec: HandlerSpec | None, out: Outcome) -> Any:
    if not out.ok:
        raise TerminalError(out.failure or "failed", out.failure_code or StatusCode.INTERNAL)
    if out.output is None:
        return None
    return (spec.output if spec is not None else ANY).load(out.output)


class InvocationHandle(Generic[Out]):
    """A submitted invocation: its ``id``, and its result once it has one (typed as its
    handler's return type when ``send`` was given the handler itself)."""

    def __init__(self, runtime: Runtime, invocation_id: str, spec: HandlerSpec | None) -> None:
        self.runtime = runtime
        self.id = invocation_id
        self._spec = spec

    async def result_async(self, timeout: float | None = None) -> Out:
        rt = self.runtime
        rt._check_open()
        return decode(
            self._spec,
            await within(  # type: ignore[no-any-return]
                timeout, self.id, rt.journal_of(self.id).await_output(self.id), rt.sql_async
            ),
        )

    def result(self, timeout: float | None = None) -> Out:
        """Wait for the outcome: the handler's return value, or its ``TerminalError``. After
        ``timeout`` seconds (None: no limit) ``actors.client.waiting.InvocationTimeoutError`` (a
        ``TimeoutError``) names the invocation and its last failure; it goes on running."""
        return self.runtime._loop.run(self.result_async(timeout))

    def __repr__(self) -> str:
        return f"InvocationHandle({self.id!r})"


class ObjectProxy:
    """``rt.object(counter, "alice").add(5)``: handlers of one key as methods."""

    def __init__(self, runtime: Runtime, service: str, key: str) -> None:
        self._rt, self._service, self._key = runtime, service, key

    def __getattr__(self, handler: str) -> Callable[..., Any]:
        if handler.startswith("_"):
            raise AttributeError(handler)

        def call(arg: Any = None, **options: Any) -> Any:
            return self._rt.call(f"{self._service}/{handler}", key=self._key, arg=arg, **options)

        return call
