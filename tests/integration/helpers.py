"""Finding and killing the actors behind a runtime, for the durability tests."""

from __future__ import annotations

import os
from typing import Any

import ray

from actors import Runtime
from actors.cluster.names import JOURNAL, host_name, route_hash
from journal.partitions import Partitions


def host_of(rt: Runtime, service: str, key: str) -> Any:
    """The pooled host actor that owns ``service``/``key``."""
    slot = route_hash(service, key, "") % rt.pool_size
    return ray.get_actor(host_name(service, slot), namespace=rt.namespace)


def host_pid(rt: Runtime, service: str, key: str) -> int:
    return ray.get(host_of(rt, service, key).pid.remote())


def journal_of(rt: Runtime) -> Any:
    return ray.get_actor(JOURNAL, namespace=rt.namespace)


def partition_journal(rt: Runtime, layout: Partitions, p: int) -> Any:
    """Partition ``p``'s journal actor."""
    return ray.get_actor(layout.journal(p), namespace=rt.namespace)


def partition_rows(rt: Runtime, layout: Partitions, p: int, query: str) -> list[dict[str, Any]]:
    """A query on one partition's journal alone (no federation)."""
    return ray.get(partition_journal(rt, layout, p).sql.remote(query)).to_pylist()


def kill_and_restart(actor: Any) -> None:
    """Kill the actor's process at once; Ray restarts it (max_restarts=-1)."""
    ray.kill(actor, no_restart=False)


def kill_until_gone(actor: Any, timeout: float = 30.0, pid: int | None = None) -> None:
    """Kill the actor's process (Ray restarts it) and return once that process is gone:
    ``ray.kill`` is asynchronous, and a test that goes on at once races a process that still
    runs its handlers."""
    from pathlib import Path

    from tests.conftest import assert_eventually

    if pid is None:  # (a journal actor tells its pid in info())
        pid = ray.get(actor.pid.remote())

    def gone() -> bool:
        try:
            os.kill(pid, 0)
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (ProcessLookupError, FileNotFoundError):
            return True
        return state == "Z"  # a zombie runs nothing

    ray.kill(actor, no_restart=False)
    assert_eventually(gone, timeout=timeout, message=f"process {pid} is gone")


def wait_serving(actor: Any, timeout: float = 60.0) -> None:
    """Block until a (restarting) actor answers again; fault loops use it so that every kill
    hits a serving actor instead of one still restarting."""
    import time

    from actors.cluster.remote import UNAVAILABLE

    deadline = time.monotonic() + timeout
    while True:
        try:
            ray.get(actor.__ray_ready__.remote(), timeout=max(deadline - time.monotonic(), 0.1))
            return
        except (*UNAVAILABLE, ray.exceptions.GetTimeoutError):
            if time.monotonic() > deadline:
                raise
