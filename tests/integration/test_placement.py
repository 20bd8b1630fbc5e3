"""Placement: one Ray actor per dedicated key, deactivated when idle; pooled keys idle past
their timeout leave their host's memory; state kept either way."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta

import pytest
import ray

from actors import ObjectContext, Runtime, VirtualObject
from tests.conftest import assert_eventually
from tests.integration import apps

quick = VirtualObject("Quick", placement="dedicated", idle_timeout=timedelta(seconds=0.5))

brief = VirtualObject("Brief", idle_timeout=timedelta(seconds=0.5))  # pooled


@quick.handler()
async def incr(ctx: ObjectContext) -> int:
    n = (await ctx.get("n")) or 0
    ctx.set("n", n + 1)
    return n + 1


@brief.handler(name="incr")
async def brief_incr(ctx: ObjectContext) -> int:
    n = (await ctx.get("n")) or 0
    ctx.set("n", n + 1)
    return n + 1


def named_hosts(rt: Runtime, service: str) -> set[str]:
    return {
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == rt.namespace and a["name"].startswith(f"host:{service}:")
    }


@pytest.fixture(scope="module")
def rt(ray_session: None, tmp_path_factory) -> Iterator[Runtime]:
    """One runtime for this module's tests (each start costs seconds): each test uses its own
    service (Heavy, Quick, Brief, Counter), so the hosts one test counts are its own."""
    runtime = Runtime.start(
        [*apps.ALL, quick, brief],
        data_dir=tmp_path_factory.mktemp("placement") / "data",
        namespace=f"placement-{os.getpid()}",
    )
    yield runtime
    runtime.shutdown()


def test_dedicated_keys_get_their_own_actor(rt: Runtime) -> None:
    assert rt.call(apps.bump, key="x") == 1
    assert rt.call(apps.bump, key="y") == 1
    assert rt.call(apps.bump, key="x") == 2
    assert rt.call(apps.pid, key="x") != rt.call(apps.pid, key="y")
    assert named_hosts(rt, "Heavy") == {"host:Heavy:x", "host:Heavy:y"}


def test_idle_dedicated_host_exits_and_reactivates(rt: Runtime) -> None:
    assert rt.call(incr, key="z") == 1
    assert_eventually(
        lambda: not named_hosts(rt, "Quick"), timeout=30, message="the idle dedicated host exited"
    )
    assert rt.call(incr, key="z") == 2


def test_pool_hosts_are_named_per_service(rt: Runtime) -> None:
    from actors.cluster.names import route_hash

    assert named_hosts(rt, "Counter") == set(), "hosts without work to resume start on demand"
    slots: dict[int, str] = {}
    for i in range(100):
        slots.setdefault(route_hash("Counter", f"key{i}", "") % rt.pool_size, f"key{i}")
    for key in slots.values():
        rt.call(apps.add, key=key, arg=1)
    assert named_hosts(rt, "Counter") == {f"host:Counter:{i}" for i in range(rt.pool_size)}


def keys_in_memory(rt: Runtime, service: str) -> int:
    return sum(
        ray.get(ray.get_actor(name, namespace=rt.namespace).ready.remote())["keys"]
        for name in named_hosts(rt, service)
    )


def test_idle_keys_leave_pooled_hosts_memory_and_come_back_with_their_state(rt: Runtime) -> None:
    keys = [f"k{i}" for i in range(20)]
    assert [rt.call(brief_incr, key=k) for k in keys] == [1] * 20
    assert_eventually(
        lambda: keys_in_memory(rt, "Brief") == 0,
        timeout=30,
        message="keys idle past the object's idle_timeout were evicted",
    )
    assert [rt.call(brief_incr, key=k) for k in keys] == [2] * 20
