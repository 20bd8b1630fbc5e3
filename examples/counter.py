"""A durable counter: start a local runtime, drive a counter, query its journal with SQL.

Run: python examples/counter.py  (data goes to ./raystate-data)
"""

from __future__ import annotations

import sys

from actors import ObjectContext, ObjectSharedContext, Runtime, VirtualObject
from actors.client.tables import write

counter = VirtualObject("Counter")


@counter.handler()
async def add(ctx: ObjectContext, delta: int) -> int:
    n = (await ctx.get("count")) or 0
    ctx.set("count", n + delta)
    return n + delta


@counter.handler(kind="shared")
async def get(ctx: ObjectSharedContext) -> int:
    return (await ctx.get("count")) or 0


def main(data_dir: str = "raystate-data") -> None:
    rt = Runtime.start([counter], data_dir=data_dir, namespace="counter-example")
    try:
        for key in ("alice", "bob"):
            for delta in (1, 2, 3):
                print(f"add({key}, {delta}) -> {rt.call(add, key=key, arg=delta)}")
        print("alice:", rt.object(counter, "alice").get())
        handle = rt.send(add, key="bob", arg=10, idempotency_key="bonus")
        print("bob after idempotent bonus:", handle.result())
        print("\nThe journal, queried with SQL:")
        write(
            rt.sql(
                "SELECT target, status, count(*) AS invocations, "
                "arg_max(output, created_at) AS last_output "
                "FROM sys_invocation GROUP BY ALL ORDER BY 1"
            )
        )
        write(rt.sql("SELECT service_key, key, value FROM state ORDER BY 1"))
    finally:
        rt.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
