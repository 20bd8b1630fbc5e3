"""Running a durable step as a Ray task or a Ray actor method.

``ctx.run(name, fn, ...)`` with ``fn`` a Ray remote function (``@ray.remote(...)``, or its
``.options(...)``) or a method of a live actor handle runs the step there, with the options the
user gave, under a task name ``service/handler/step`` (``ray list tasks``, the dashboard). The
host awaits the ``ObjectRef`` on its event loop, so other invocations keep running.

A remote function is not submitted as it is: a wrapper task with the same options runs it, so
that what Ray does not carry as a contract is decided in the worker: an inline result comes
back as it is (a tuple spec and a bare value keep the task as cheap as a raw one), the rest as
data (``_Outcome``): a ``TerminalError`` comes back as message and status code (Ray's
``RayTaskError`` wrapping is not relied on), ``DurableRef`` arguments are read in the worker,
and a result asked for by reference (``durable_ref=True``) or larger than the inline limit is
encoded and written to the blob store by the worker (keyed by invocation and journal index),
so it never passes through the host. An actor's method cannot be wrapped in its actor: its
``DurableRef`` arguments are loaded by a small task whose ``ObjectRef`` Ray hands the actor,
and a ``durable_ref`` result is written by a small task that receives the method's
``ObjectRef``; a ``TerminalError`` is taken from ``RayTaskError.cause``.

Failures that are not the step's verdict -- a worker or node that died (after Ray's own task
retries, ``max_retries``), an actor that died, a lost object, a user exception -- surface as
``RemoteStepError``, which is retried like any failed step.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
from ray.actor import ActorMethod
from ray.remote_function import RemoteFunction

from actors.sdk.errors import TerminalError
from actors.steps.blobs import BlobRef, open_store
from actors.steps.codec import binary_size, decode, writer
from actors.steps.refs import DurableRef, resolve_args
from actors.steps.results import INLINE_LIMIT, blob_to_journal


@dataclass(frozen=True)
class StepSpec:
    """What a remote step's worker needs to know besides the function and its arguments."""

    service: str
    handler: str
    step: str
    invocation_id: str
    idx: int
    store_uri: str | None = None
    inline_limit: int = INLINE_LIMIT
    durable_ref: bool = False

    @property
    def task_name(self) -> str:
        return f"{self.service}/{self.handler}/{self.step}"

    def wire(self) -> tuple[Any, ...]:
        """The spec as a tuple of plain values: Ray sends those without pickling a class."""
        return (
            self.service,
            self.handler,
            self.step,
            self.invocation_id,
            self.idx,
            self.store_uri,
            self.inline_limit,
            self.durable_ref,
        )


@dataclass(frozen=True)
class StepResult:
    """A remote step's result at the host: the value, and the blob the worker wrote (if any).
    With ``durable_ref`` the value is the ``DurableRef``."""

    value: Any
    blob: BlobRef | None = None
    durable_ref: bool = False

    def journal_text(self) -> str | None:
        """The journal text when the worker wrote a blob; None: journal ``value`` as usual."""
        return None if self.blob is None else blob_to_journal(self.blob, self.durable_ref)


@dataclass(frozen=True)
class _Outcome:
    """What a step's worker returns: a value, a blob it wrote, or a terminal failure."""

    value: Any = None
    blob: BlobRef | None = None
    failure: str | None = None
    failure_code: int = 500


class RemoteStepError(Exception):
    """A remote step failed in a way that may pass (its worker, node or actor died, or it
    raised an error that is not a ``TerminalError``): retried per the step's retry policy."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"remote step {step!r} failed: {reason}")
        self.step = step
        self.reason = reason

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.step, self.reason))


def is_remote(fn: Any) -> bool:
    """True for a Ray remote function, its ``.options(...)``, or an actor handle's method."""
    return isinstance(fn, RemoteFunction | ActorMethod) or _options_of(fn) is not None


def python_function(fn: Any) -> Callable[..., Any] | None:
    """The Python function behind a remote function or its ``.options(...)`` (its return
    annotation types the step's result); None for an actor method."""
    if isinstance(fn, RemoteFunction):
        return fn._function  # type: ignore[no-any-return]
    found = _options_of(fn)
    return None if found is None else found[0]._function  # type: ignore[no-any-return]


def _options_of(fn: Any) -> tuple[RemoteFunction, dict[str, Any]] | None:
    """The remote function and merged options behind ``remote_fn.options(...)``: Ray returns
    a local class whose ``remote`` closes over them (no public accessor)."""
    remote = getattr(type(fn), "remote", None)
    code = getattr(remote, "__code__", None)
    cells = getattr(remote, "__closure__", None)
    if code is None or not cells:
        return None
    free = dict(zip(code.co_freevars, cells, strict=False))
    func, options = free.get("func_cls"), free.get("updated_options")
    if func is None or options is None:
        return None
    func, options = func.cell_contents, options.cell_contents
    if isinstance(func, RemoteFunction) and isinstance(options, dict):
        return func, dict(options)
    return None


# -- in the worker ----------------------------------------------------------------------------


def _persist(value: Any, spec: StepSpec) -> Any:
    """The step's value as it is (inline), or an ``_Outcome`` naming the blob it went to."""
    size = binary_size(value)
    if not spec.durable_ref and (
        size is None or size <= spec.inline_limit or spec.store_uri is None
    ):
        return value
    assert spec.store_uri is not None
    kind, write = writer(value, spec.step)
    blob = open_store(spec.store_uri).put(spec.invocation_id, spec.idx, write, kind)
    return _Outcome(value=None if spec.durable_ref else value, blob=blob)


def _execute(
    fn: Callable[..., Any], wire: tuple[Any, ...], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    spec = StepSpec(*wire)
    try:
        args, kwargs = resolve_args(args, kwargs)
        return _persist(fn(*args, **kwargs), spec)
    except TerminalError as e:
        return _Outcome(failure=e.message, failure_code=e.status_code)


@ray.remote(num_cpus=0)  # only I/O
def _load(ref: DurableRef) -> Any:
    return ref.get_sync()


@ray.remote(num_cpus=0)
def _persist_task(wire: tuple[Any, ...], value: Any) -> Any:
    try:
        return _persist(value, StepSpec(*wire))
    except TerminalError as e:
        return _Outcome(failure=e.message, failure_code=e.status_code)


# -- at the host ------------------------------------------------------------------------------

_wrappers: weakref.WeakKeyDictionary[RemoteFunction, RemoteFunction] = weakref.WeakKeyDictionary()
_bound_cache: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _wrapper(func: RemoteFunction) -> RemoteFunction:
    """The wrapper task for ``func``, made once per remote function (each new remote function
    is exported to the cluster once), with the decorator's options."""
    wrapped = _wrappers.get(func)
    if wrapped is None:
        fn = func._function

        def step(wire: tuple[Any, ...], *args: Any, **kwargs: Any) -> Any:
            return _execute(fn, wire, args, kwargs)

        step.__name__ = step.__qualname__ = getattr(fn, "__name__", "step")
        options = dict(func._default_options)
        wrapped = _wrappers[func] = ray.remote(**options)(step) if options else ray.remote(step)
    return wrapped


def _check_returns(spec: StepSpec, options: dict[str, Any], generator: bool) -> None:
    if options.get("num_returns") not in (None, 1) or generator:
        raise TerminalError(
            f"step {spec.step!r}: a remote step returns one value (num_returns "
            f"is {options.get('num_returns')!r})",
            400,
        )


def submit(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], spec: StepSpec) -> ray.ObjectRef:
    """Start the step; the ``ObjectRef`` of its value or its ``_Outcome``."""
    if spec.durable_ref and spec.store_uri is None:
        raise TerminalError(f"step {spec.step!r}: durable_ref=True needs a blob store", 400)
    if isinstance(fn, ActorMethod):
        args = tuple(_loaded(a, spec) for a in args)
        kwargs = {k: _loaded(v, spec) for k, v in kwargs.items()}
        ref = fn.options(name=spec.task_name).remote(*args, **kwargs)
        if spec.durable_ref:
            ref = _persist_task.options(name=f"{spec.task_name}:write").remote(spec.wire(), ref)
        return ref
    return _bound(fn, spec).remote(spec.wire(), *args, **kwargs)


def _bound(fn: Any, spec: StepSpec) -> Any:
    """The wrapper task with ``fn``'s options and the step's task name; cached per ``fn``
    object and name, as Ray's ``.options()`` validates its arguments on every call."""
    by_name = _bound_cache.get(fn)
    if by_name is None:
        by_name = _bound_cache[fn] = {}
    bound = by_name.get(spec.task_name)
    if bound is not None:
        return bound
    func, options = (fn, {}) if isinstance(fn, RemoteFunction) else _options_of(fn) or (fn, {})
    if not isinstance(func, RemoteFunction):
        raise TypeError(f"not a Ray remote function or actor method: {fn!r}")
    _check_returns(spec, {**func._default_options, **options}, bool(func._is_generator))
    options.pop("max_calls", None)  # not allowed in .options(); the wrapper has the decorator's
    bound = by_name[spec.task_name] = _wrapper(func).options(**options, name=spec.task_name)
    return bound


def _loaded(arg: Any, spec: StepSpec) -> Any:
    if isinstance(arg, DurableRef):
        return _load.options(name=f"{spec.task_name}:read").remote(arg)
    return arg


async def adopt(spec: StepSpec, load_json: Callable[[str], Any] | None = None) -> StepResult | None:
    """The result a run of this step wrote to the blob store before its host died (a
    ``durable_ref`` result, or one over the inline limit), so a replay journals it instead of
    running the step again; None if there is none (then run the step)."""
    if spec.store_uri is None:
        return None
    store = open_store(spec.store_uri)
    blob = await asyncio.to_thread(store.find, spec.invocation_id, spec.idx)
    if blob is None:
        return None
    if spec.durable_ref:
        return StepResult(DurableRef(blob, spec.store_uri), blob, durable_ref=True)
    encoded = await asyncio.to_thread(store.get, blob)
    return StepResult(await asyncio.to_thread(decode, encoded, load_json), blob)


async def run_remote(
    fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], spec: StepSpec
) -> StepResult:
    """Run a remote step and await it without blocking the event loop.

    Raises:
        TerminalError: the step raised one (rebuilt from its message and status code).
        RemoteStepError: anything else went wrong; retry the step.
    """
    ref = submit(fn, args, kwargs, spec)
    try:
        out = await ref
    except asyncio.CancelledError:  # the invocation was killed (or its host is closing)
        with contextlib.suppress(Exception):
            ray.cancel(ref)
        raise
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, TerminalError):  # an actor method's (tasks return it as data)
            raise TerminalError(cause.message, cause.status_code) from None
        reason = f"{type(cause).__name__}: {cause}" if cause is not None else str(e)
        raise RemoteStepError(spec.step, reason) from None
    except ray.exceptions.RayError as e:
        raise RemoteStepError(spec.step, f"{type(e).__name__}: {e}") from None
    if not isinstance(out, _Outcome):
        return StepResult(out)
    if out.failure is not None:
        raise TerminalError(out.failure, out.failure_code)
    if spec.durable_ref:
        assert out.blob is not None and spec.store_uri is not None
        return StepResult(DurableRef(out.blob, spec.store_uri), out.blob, durable_ref=True)
    return StepResult(out.value, out.blob)
