"""A small user file that ``tests/unit/test_typing.py`` runs mypy on (never imported by the
tests): handlers keep their signatures, and the client is typed by them."""

from typing import reveal_type

from actors import ObjectContext, Runtime, Service, VirtualObject, Workflow, WorkflowContext
from actors.sdk.contexts import Context

counter = VirtualObject("Counter")
greeter = Service("Greeter")
signup = Workflow("Signup")


@counter.handler()
async def add(ctx: ObjectContext, delta: int) -> int:
    n: int = (await ctx.get("count")) or 0
    ctx.set("count", n + delta)
    return n + delta


@counter.handler  # without parentheses: the same
async def reset(ctx: ObjectContext) -> None:
    ctx.clear("count")


@greeter.handler(kind="exclusive")
async def greet(ctx: Context, name: str) -> str:
    return f"hello {name}"


@signup.main
async def run(ctx: WorkflowContext, email: str) -> bool:
    reveal_type(await ctx.object_call(add, "total", 1))
    return await ctx.service_call(greet, email) != ""


def use(rt: Runtime) -> None:
    reveal_type(add)
    reveal_type(rt.call(add, key="alice", arg=5))
    reveal_type(rt.call(reset, key="alice"))
    reveal_type(rt.call(greet, arg="bob"))
    reveal_type(rt.send(add, key="alice", arg=5).result())
    reveal_type(rt.call("Counter/add", key="alice", arg=5))
    rt.call(add, key="alice", arg="five")  # WRONG-ARG


async def use_async(rt: Runtime) -> None:
    reveal_type(await rt.call_async(greet, arg="bob"))
    reveal_type(await rt.send(run, key="a@b.c", arg="a@b.c").result_async())
