"""Names and routes, built in one place: actor names, key hashing, invocation ids.

Names live in the runtime's Ray namespace, so two runtimes can share one Ray cluster.
"""

from __future__ import annotations

import hashlib
import uuid
import zlib
from typing import Any

from journal.partitions import Partitions
from journal.transport.remote import JOURNAL_ACTOR as JOURNAL
from scheduler.actor import SCHEDULER_ACTOR as SCHEDULER

__all__ = [
    "JOURNAL",
    "SCHEDULER",
    "SCHEDULES",
    "Partitions",
    "find_journal",
    "host_name",
    "idempotent_invocation_id",
    "new_invocation_id",
    "route_hash",
    "tick_invocation_id",
]


def host_name(service: str, slot: int | str, partition: int | None = None) -> str:
    """``host:<Service>:<n>`` for a pooled host (``host:<Service>:<p>:<n>`` in partition ``p``
    of several), ``host:<Service>:<key>`` for a dedicated one."""
    return f"host:{service}:{slot}" if partition is None else f"host:{service}:{partition}:{slot}"


def route_hash(service: str, key: str | None, invocation_id: str) -> int:
    """Stable across processes: keyed calls by (service, key), service calls by id."""
    return zlib.crc32(f"{service}/{key if key is not None else invocation_id}".encode())


def new_invocation_id() -> str:
    return "inv_" + uuid.uuid4().hex


def idempotent_invocation_id(target: str, key: str | None, idempotency_key: str) -> str:
    """The same idempotency key on the same target always names the same invocation."""
    digest = hashlib.sha256(f"{target}\x00{key}\x00{idempotency_key}".encode()).hexdigest()
    return "inv_" + digest[:32]


def default_pool_size(cpus: float) -> int:
    """One host per two CPUs, at least one: the journal, Ray and the drivers need the rest,
    and every host more splits the batches that one Ray call carries (figures in
    docs/performance.md, "Tuning")."""
    return max(int(cpus) // 2, 1)


def find_journal(namespace: str) -> Any:
    """The journal actor of the runtime in ``namespace`` (partition 0's when it has several),
    or None when no runtime runs there."""
    import ray

    for name in (JOURNAL, Partitions(2).journal(0)):
        try:
            return ray.get_actor(name, namespace=namespace)
        except ValueError:
            continue
    return None


SCHEDULES = "schedules"  # the schedule runner (actors.cluster.schedule_runner), made on demand


def tick_invocation_id(service: str, handler: str, key: str | None, tick_key: str) -> str:
    """A schedule tick's invocation id, derived from its tick key
    (``scheduler.schedules.tick_key``) as an idempotency key's is (so a tick submitted again
    is the same invocation), in a space of its own (no caller's idempotency key names it)."""
    return idempotent_invocation_id(f"{service}/{handler}", key, "\x00" + tick_key)
