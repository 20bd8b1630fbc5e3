"""Helpers of the context that need none of its state: the proxy behind
``ctx.object_client(...)``, service names, and the serde of a ``ctx.run`` action's result."""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from actors.sdk.serde import ANY, Serde

if TYPE_CHECKING:
    from actors.engine.context import InvocationContext


class CallProxy:
    """Handlers of one service (and key) as awaitable methods: ``await proxy.add(1)``."""

    def __init__(self, ctx: InvocationContext, service: str, key: str | None) -> None:
        self._ctx, self._service, self._key = ctx, service, key

    def __getattr__(self, handler: str) -> Callable[..., Any]:
        if handler.startswith("_"):
            raise AttributeError(handler)

        def call(arg: Any = None) -> Any:
            return self._ctx._call(f"{self._service}/{handler}", self._key, arg)

        return call


def service_name(obj: Any) -> str:
    if isinstance(obj, str):
        return obj
    name = getattr(obj, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"expected a service definition or its name, got {obj!r}")
    return name


@functools.lru_cache(maxsize=1024)
def return_serde(fn: Callable[..., Any]) -> Serde:
    """Decode ``ctx.run`` results as the action's return annotation, so that a first run and a
    replay return the same type; plain JSON when there is none."""
    try:
        hint = typing.get_type_hints(fn).get("return")
    except Exception:
        return ANY
    if hint is None or hint is type(None):
        return ANY
    try:
        return Serde(hint)
    except Exception:
        return ANY
