"""Service definitions and the ``.handler()`` decorator.

Each handler is inspected once, at decoration: it must be ``async``, take ``(ctx)`` or
``(ctx, arg)``, and its context annotation must fit its kind. Every problem is reported at once
in one ``DefinitionError``. The spec is stored on the function, so the function itself is the
typed reference callers pass (``rt.call(add, key=..., arg=...)``).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, TypeAlias, TypeVar, overload

from actors.sdk.contexts import (
    Context,
    ObjectContext,
    ObjectSharedContext,
    WorkflowContext,
    WorkflowSharedContext,
)
from actors.sdk.errors import DefinitionError, RetryPolicy
from actors.sdk.limits import RateLimit, limit_issues, limit_spec
from actors.sdk.serde import Serde
from scheduler.limiter import LimitSpec

HandlerKind = Literal["exclusive", "shared"]
Placement = Literal["pooled", "dedicated"]
SPEC_ATTR = "__raystate_handler__"

In = TypeVar("In")  # a handler's input type
Out = TypeVar("Out")  # a handler's output type
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

# Typed handler references, as Restate's Python SDK spells them: a decorated handler is its own
# reference, so ``rt.call(add, key=..., arg=...)`` is checked against ``add``'s input and typed
# as its output (``actors.client.runtime`` overloads ``call``/``send`` on these).
HandlerWithArg: TypeAlias = Callable[[Any, In], Awaitable[Out]]
"""A handler taking ``(ctx, arg: In)`` and returning ``Out``."""
HandlerNoArg: TypeAlias = Callable[[Any], Awaitable[Out]]
"""A handler taking ``(ctx)`` and returning ``Out``."""


@dataclass(eq=False)
class HandlerSpec:
    """Everything the runtime needs to call one handler."""

    definition: ServiceDefinition
    name: str
    fn: Callable[..., Any]
    kind: HandlerKind
    takes_arg: bool
    input: Serde
    output: Serde
    retry_policy: RetryPolicy | None
    limits: tuple[LimitSpec, ...] = ()  # the service's and the handler's, if any

    @property
    def target(self) -> str:
        return f"{self.definition.name}/{self.name}"

    @property
    def policy(self) -> RetryPolicy:
        return self.retry_policy or self.definition.retry_policy


@dataclass(eq=False)
class ServiceDefinition:
    """Common part of ``Service`` and ``VirtualObject``: a name and its handlers.

    ``concurrency``: at most this many of its invocations run at once (over all keys, hosts
    and nodes); ``rate``: at most ``rate.n`` start in any window of ``rate.per``. Waiting
    invocations stay pending and start in acceptance order; one that is suspended (a sleep,
    an awakeable, a call, a promise) holds no slot."""

    name: str
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    handlers: dict[str, HandlerSpec] = field(default_factory=dict, init=False)
    concurrency: int | None = field(default=None, kw_only=True)
    rate: RateLimit | None = field(default=None, kw_only=True)

    keyed: typing.ClassVar[bool] = False
    kinds: typing.ClassVar[tuple[str, ...]] = ("exclusive",)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise DefinitionError(repr(self.name), ["a name is a non-empty string without '/'"])
        issues = limit_issues(self.concurrency, self.rate)
        if issues:
            raise DefinitionError(self.name, issues)

    @overload
    def handler(self, name: F, /) -> F: ...

    @overload
    def handler(
        self,
        name: str | None = None,
        *,
        kind: HandlerKind = "exclusive",
        retry_policy: RetryPolicy | None = None,
        concurrency: int | None = None,
        rate: RateLimit | None = None,
    ) -> Callable[[F], F]: ...

    def handler(
        self,
        name: Any = None,
        *,
        kind: HandlerKind = "exclusive",
        retry_policy: RetryPolicy | None = None,
        concurrency: int | None = None,
        rate: RateLimit | None = None,
    ) -> Any:
        """Register an ``async def`` as a handler of this definition: ``@obj.handler()``,
        ``@obj.handler`` (the same) or ``@obj.handler("name", kind="shared")``. The function is
        returned as it is, signature and all: it is the typed reference callers pass.
        ``concurrency``/``rate`` limit this handler, beside the definition's own limits."""

        def register(fn: F) -> F:
            spec = self._inspect(fn, name, kind, retry_policy, concurrency, rate)
            self.handlers[spec.name] = spec
            setattr(fn, SPEC_ATTR, spec)
            return fn

        if callable(name):  # used without parentheses: ``name`` is the function
            fn, name = name, None
            return register(fn)
        return register

    def _context_type(self, kind: str) -> type:
        return Context

    def _inspect(
        self,
        fn: Callable[..., Any],
        name: str | None,
        kind: str,
        retry_policy: object,
        concurrency: object = None,
        rate: object = None,
    ) -> HandlerSpec:
        handler_name = str(name or getattr(fn, "__name__", ""))
        where = f"handler {self.name}/{handler_name}"
        issues: list[str] = []
        if not inspect.iscoroutinefunction(fn):
            issues.append("must be an 'async def' function")
        if kind not in self.kinds:
            issues.append(f"kind must be one of {self.kinds}, not {kind!r}")
        if retry_policy is not None and not isinstance(retry_policy, RetryPolicy):
            issues.append("retry_policy must be a RetryPolicy")
        if handler_name in self.handlers:
            issues.append("a handler of that name is already registered")
        issues += limit_issues(concurrency, rate)
        if not handler_name.isidentifier():
            issues.append("a handler name must be an identifier")
        params: list[inspect.Parameter] = []
        hints: dict[str, Any] = {}
        try:
            params = list(inspect.signature(fn).parameters.values())
            hints = typing.get_type_hints(fn)
        except (TypeError, ValueError, NameError) as e:
            issues.append(f"cannot read its signature or annotations: {e}")
        positional = [
            p
            for p in params
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
        if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.KEYWORD_ONLY) for p in params):
            issues.append("takes (ctx) or (ctx, arg): no *args, **kwargs or keyword-only")
        elif len(positional) not in (1, 2) or len(params) != len(positional):
            issues.append(f"takes (ctx) or (ctx, arg), not {len(params)} parameters")
        if positional:
            ctx_type = hints.get(positional[0].name)
            wanted = self._context_type(kind)
            if ctx_type is not None and not (
                isinstance(ctx_type, type) and issubclass(wanted, ctx_type)
            ):
                issues.append(
                    f"its context is annotated {getattr(ctx_type, '__name__', ctx_type)}, "
                    f"but a {kind} handler of a {type(self).__name__} gets {wanted.__name__}"
                )
        input_serde = output_serde = Serde()
        try:
            if len(positional) == 2:
                input_serde = Serde(hints.get(positional[1].name, Any))
            output_serde = Serde(hints.get("return", Any))
        except Exception as e:
            issues.append(f"its input or output type cannot be serialized as JSON: {e}")
        if issues:
            raise DefinitionError(where, issues)
        return HandlerSpec(
            definition=self,
            name=handler_name,
            fn=fn,
            kind=kind,  # type: ignore[arg-type]
            takes_arg=len(positional) == 2,
            input=input_serde,
            output=output_serde,
            retry_policy=retry_policy,  # type: ignore[arg-type]
            limits=tuple(
                spec
                for spec in (
                    limit_spec(self.name, self.concurrency, self.rate),
                    limit_spec(f"{self.name}/{handler_name}", concurrency, rate),  # type: ignore[arg-type]
                )
                if spec is not None
            ),
        )


@dataclass(eq=False)
class Service(ServiceDefinition):
    """Stateless handlers; invocations run concurrently on a pool of host actors.

    >>> greeter = Service("Greeter")
    >>> @greeter.handler()
    ... async def greet(ctx: Context, name: str) -> str:
    ...     return f"hello {name}"
    """


@dataclass(eq=False)
class VirtualObject(ServiceDefinition):
    """Keyed handlers with per-key state; exclusive handlers run one at a time per key.

    Args:
        name: the service name (``"Counter"``).
        placement: ``"pooled"`` hashes keys onto a pool of host actors; ``"dedicated"`` gives
            every key its own Ray actor (for heavy state), started on demand.
        actor_options: Ray actor options for dedicated hosts (``num_gpus``, ``memory`` ...).
        idle_timeout: a key idle this long is dropped from memory (a dedicated host exits).
    """

    placement: Placement = "pooled"
    actor_options: dict[str, Any] = field(default_factory=dict)
    idle_timeout: timedelta = timedelta(minutes=5)

    keyed: typing.ClassVar[bool] = True
    kinds: typing.ClassVar[tuple[str, ...]] = ("exclusive", "shared")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.placement not in ("pooled", "dedicated"):
            raise DefinitionError(
                self.name, [f"placement must be 'pooled' or 'dedicated', not {self.placement!r}"]
            )

    def _context_type(self, kind: str) -> type:
        return ObjectContext if kind == "exclusive" else ObjectSharedContext


@dataclass(eq=False)
class Workflow(VirtualObject):
    """A workflow: one ``@wf.main()`` handler that runs at most once per workflow key (a second
    submission attaches to the first run and gets its result), and shared ``@wf.handler()``s
    that read its state and resolve its durable promises while it runs (and after).

    >>> signup = Workflow("Signup")
    >>> @signup.main()
    ... async def run(ctx: WorkflowContext, email: str) -> str:
    ...     return await ctx.promise("confirmed").value()
    """

    main_handler: str | None = field(default=None, init=False)

    @overload
    def main(self, name: F, /) -> F: ...

    @overload
    def main(
        self,
        name: str | None = None,
        *,
        retry_policy: RetryPolicy | None = None,
        concurrency: int | None = None,
        rate: RateLimit | None = None,
    ) -> Callable[[F], F]: ...

    def main(
        self,
        name: Any = None,
        *,
        retry_policy: RetryPolicy | None = None,
        concurrency: int | None = None,
        rate: RateLimit | None = None,
    ) -> Any:
        """Register the workflow's main handler (exactly one per workflow); ``@wf.main()`` and
        ``@wf.main`` are the same."""

        def register(fn: F) -> F:
            if self.main_handler is not None:
                raise DefinitionError(
                    f"workflow {self.name}",
                    [f"has a main handler already ({self.main_handler}); a workflow has one"],
                )
            out = ServiceDefinition.handler(
                self,
                name,
                kind="exclusive",
                retry_policy=retry_policy,
                concurrency=concurrency,
                rate=rate,
            )(fn)
            self.main_handler = spec_of(out).name  # type: ignore[union-attr]
            return out

        if callable(name):
            fn, name = name, None
            return register(fn)
        return register

    @overload
    def handler(self, name: F, /) -> F: ...

    @overload
    def handler(
        self,
        name: str | None = None,
        *,
        kind: HandlerKind = "shared",
        retry_policy: RetryPolicy | None = None,
        concurrency: int | None = None,
        rate: RateLimit | None = None,
    ) -> Callable[[F], F]: ...

    def handler(
        self,
        name: Any = None,
        *,
        kind: HandlerKind = "shared",
        retry_policy: RetryPolicy | None = None,
        concurrency: int | None = None,
        rate: RateLimit | None = None,
    ) -> Any:
        """Register a shared handler (queries, signals): it runs beside the main handler."""
        if kind != "shared":
            raise DefinitionError(
                f"workflow {self.name}",
                ["its handlers are shared; the one exclusive handler is @wf.main()"],
            )
        return super().handler(
            name, kind=kind, retry_policy=retry_policy, concurrency=concurrency, rate=rate
        )

    def _context_type(self, kind: str) -> type:
        return WorkflowContext if kind == "exclusive" else WorkflowSharedContext

    def is_main(self, handler: str) -> bool:
        return handler == self.main_handler


def spec_of(handler: Callable[..., Any]) -> HandlerSpec | None:
    return getattr(handler, SPEC_ATTR, None)
