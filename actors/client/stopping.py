"""How ``Runtime.shutdown`` stops a runtime's actors: every named actor of its namespace, the
journal last (once it has moved its write-ahead log into DuckDB), until no name is left.

Until the journal is gone a client's request in flight may bring a host back that was just
killed (``Router`` makes hosts on demand, and makes them again after a host's death): such a
host is killed in a later round. Once the journal is gone no router makes a host
(``Router._may_make_host``), so the rounds end, and a ``Runtime.start`` right after makes new
actors instead of finding the dying or revived ones by name.
"""

from __future__ import annotations

import contextlib
import time

import ray

from actors.cluster.names import JOURNAL

ROUND_S = 0.05  # pause between rounds while Ray releases the names of killed actors
STOP_DEADLINE_S = 30.0


def named_actors(namespace: str) -> list[str]:
    return [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == namespace
    ]


def stop_namespace(namespace: str, deadline_s: float = STOP_DEADLINE_S) -> list[str]:
    """Kill every named actor of ``namespace`` (the journal last, flushed first) until none is
    left; returns the names still taken after ``deadline_s`` (none, unless Ray lags)."""
    deadline = time.monotonic() + deadline_s
    flushed: set[str] = set()
    while names := named_actors(namespace):
        if time.monotonic() > deadline:
            return names
        for name in sorted(names, key=_is_journal):
            with contextlib.suppress(ValueError):  # gone meanwhile
                actor = ray.get_actor(name, namespace=namespace)
                if _is_journal(name) and name not in flushed:
                    flushed.add(name)
                    with contextlib.suppress(Exception):
                        ray.get(actor.flush.remote(), timeout=60)
                ray.kill(actor, no_restart=True)
        time.sleep(ROUND_S)  # Ray releases the names asynchronously
    return []


def _is_journal(name: str) -> bool:
    """A journal actor: ``journal``, or a partition's ``journal:<p>``."""
    return name == JOURNAL or name.startswith(JOURNAL + ":")
