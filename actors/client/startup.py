"""How ``Runtime.start`` brings a runtime up: the journal actor next to the data dir, the
scheduler, the agreed config, and the hosts placed round the cluster's nodes."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import astuple
from datetime import timedelta
from typing import Any

import ray
from ray import cloudpickle
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.client.registry import service_rows
from actors.cluster.names import JOURNAL, SCHEDULER, default_pool_size
from actors.cluster.remote import UNAVAILABLE
from actors.cluster.router import SYSTEM_ACTOR, Router, preferred_node
from actors.sdk.definitions import ServiceDefinition, VirtualObject, Workflow
from actors.steps.runner import INLINE_LIMIT, delete_blobs, steps_config
from journal.actor import JournalActor
from journal.config import RuntimeConfig
from journal.errors import DataDirError
from journal.retention import retention_seconds
from scheduler.actor import SchedulerActor


def prepare(
    services: Sequence[ServiceDefinition],
    *,
    data_dir: str | os.PathLike[str],
    namespace: str,
    address: str | None,
    pool_size: int | None,
    suspend_after: timedelta | float,
    retention: timedelta | float | None,
    sql_timeout: timedelta | float | None,
    blob_store: str | os.PathLike[str] | None = None,
    inline_limit: int = INLINE_LIMIT,
) -> tuple[RuntimeConfig, Any]:
    """``Runtime.start`` up to the client: check the arguments, start (or attach to) the
    journal and scheduler actors, and agree on the runtime's config with a running one. Returns
    the config and the journal actor's handle."""
    retention_s = retention_seconds(retention)
    sql_timeout_s = (
        sql_timeout.total_seconds() if isinstance(sql_timeout, timedelta) else sql_timeout
    )
    if sql_timeout_s is not None and not sql_timeout_s > 0:
        raise ValueError(f"Runtime.start: sql_timeout must be positive, not {sql_timeout!r}")
    problems = [
        f"{s!r} is not a Service or VirtualObject"
        for s in services
        if not isinstance(s, ServiceDefinition)
    ]
    names = [s.name for s in services if isinstance(s, ServiceDefinition)]
    problems += [f"service {n!r} is given twice" for n in set(names) if names.count(n) > 1]
    problems += [
        f"workflow {s.name!r} has no @main() handler"
        for s in services
        if isinstance(s, Workflow) and s.main_handler is None
    ]
    if problems:
        raise ValueError("Runtime.start: " + "; ".join(problems))
    if not ray.is_initialized():
        ray.init(address=address, namespace=namespace, include_dashboard=False)
    _ship_handler_modules(services)
    data_dir = os.path.abspath(data_dir)
    journal = _start_journal(data_dir, namespace)
    if pool_size is None:
        pool_size = default_pool_size(ray.cluster_resources().get("CPU", 1))
    suspend_s = (
        suspend_after.total_seconds()
        if isinstance(suspend_after, timedelta)
        else float(suspend_after)
    )
    if os.environ.get("RAYSTATE_ALWAYS_REPLAY") == "1":
        suspend_s = 0.0
    config = RuntimeConfig(
        data_dir=data_dir,
        pool_size=pool_size,
        suspend_after_s=suspend_s,
        retention_s=retention_s,
        sql_timeout_s=sql_timeout_s,
        definitions=cloudpickle.dumps(list(services)),
        **steps_config(data_dir, blob_store, inline_limit),
    )
    registered: list[ServiceDefinition] = list(services)
    existing = ray.get(journal.config.remote())
    if existing:  # attach: the running runtime's layout wins
        running = RuntimeConfig.from_dict(existing)
        merged = {d.name: d for d in cloudpickle.loads(running.definitions)}
        merged.update({d.name: d for d in services})
        registered = list(merged.values())
        config = dataclasses.replace(
            config, pool_size=running.pool_size, definitions=cloudpickle.dumps(registered)
        )
    ray.get(journal.set_config.remote(config.to_dict()))
    ray.get(journal.set_services.remote([astuple(r) for r in service_rows(registered)]))
    config = RuntimeConfig.from_dict(ray.get(journal.config.remote()))  # with the secret
    ray.remote(SchedulerActor).options(
        name=SCHEDULER, namespace=namespace, get_if_exists=True, **SYSTEM_ACTOR
    ).remote(namespace)
    return config, journal


def start_hosts(router: Router, journal: Any, services: list[ServiceDefinition]) -> None:
    """Start the hosts that have unfinished invocations to resume. On one node the others
    start on their first request (a host actor costs a process, and idle ones add up);
    on a cluster every pool starts now, its hosts placed round the nodes
    (``Router.pooled``, and moved by ``_spread`` where Ray put them elsewhere)."""
    pending = set(ray.get(journal.pending_services.remote()))
    cluster = sum(1 for n in ray.nodes() if n.get("Alive")) > 1
    ready = []
    for d in services:
        if d.name not in pending and not (cluster and not _dedicated(d)):
            continue
        if _dedicated(d):
            keys = ray.get(journal.pending_keys.remote(d.name))
            ready += [
                router.dedicated(d, k).ready.remote()  # type: ignore[arg-type]
                for k in keys
            ]
        else:
            ready += [router.pooled(d, i).ready.remote() for i in range(router.pool_size)]
    for ref in ready:
        with contextlib.suppress(*UNAVAILABLE):  # died while resuming (a handler crashed
            ray.get(ref)  # it): Ray restarts it, and it resumes on its own
    if cluster:
        for d in services:
            if not _dedicated(d):
                _spread(router, d)


def _spread(router: Router, d: ServiceDefinition, timeout: float = 30.0) -> None:
    """Move the pool hosts of ``d`` that landed off their preferred node by creating them
    again. Their node affinity is soft, and right after a node joins Ray may place such
    actors elsewhere (all of a pool at once). Only idle hosts move."""
    deadline = time.monotonic() + timeout
    while True:
        misplaced = [i for i in range(router.pool_size) if _misplaced(router, d, i)]
        if not misplaced:
            return
        if time.monotonic() > deadline:
            warnings.warn(
                f"raystate: {len(misplaced)} host(s) of {d.name} stay off their "
                "preferred node (Ray placed them elsewhere)",
                stacklevel=3,
            )
            return
        moved = [router.replace(d, i) for i in misplaced]
        with contextlib.suppress(*UNAVAILABLE):
            ray.get([h.ready.remote() for h in moved])


def _misplaced(router: Router, d: ServiceDefinition, index: int) -> bool:
    want = preferred_node(index)
    if want is None:
        return False
    host = router.pooled(d, index)
    try:
        stats = ray.get(host.ready.remote())
        return ray.get(host.node.remote()) != want and not stats["active"] and not stats["parked"]
    except UNAVAILABLE:
        return False  # restarting: Ray places it again


def _dedicated(d: ServiceDefinition) -> bool:
    return isinstance(d, VirtualObject) and d.placement == "dedicated"


def _ship_handler_modules(services: Sequence[ServiceDefinition]) -> None:
    """Pickle handler modules by value unless installed, so host actors on any node can run
    handlers defined in scripts, notebooks and test files that their processes cannot import."""
    installed = tuple(p for p in sys.path if p.endswith("site-packages"))
    for d in services:
        for spec in d.handlers.values():
            module = sys.modules.get(spec.fn.__module__)
            path = getattr(module, "__file__", None) or ""
            if (
                module is not None
                and module.__name__ != "__main__"
                and not path.startswith(installed)
            ):
                cloudpickle.register_pickle_by_value(module)


def _start_journal(data_dir: str, namespace: str) -> Any:
    """Attach to the namespace's journal actor, or create it on this node."""
    journal: Any
    try:
        journal = ray.get_actor(JOURNAL, namespace=namespace)
    except ValueError:
        journal = (
            ray.remote(JournalActor)
            .options(
                name=JOURNAL,
                namespace=namespace,
                get_if_exists=True,
                scheduling_strategy=NodeAffinitySchedulingStrategy(
                    ray.get_runtime_context().get_node_id(), soft=False
                ),
                **SYSTEM_ACTOR,
            )
            .remote(data_dir, on_pruned=delete_blobs)
        )
    try:
        failure: str | None = ray.get(journal.start_error.remote())
        info: dict[str, Any] = ray.get(journal.info.remote()) if failure is None else {}
    except UNAVAILABLE as e:  # died starting, of something else than its data dir
        ray.kill(journal, no_restart=True)
        raise DataDirError(f"the journal actor could not start on {data_dir}") from e
    if failure is not None:  # the actor could not open the data dir: it said why, as data
        ray.kill(journal, no_restart=True)
        raise DataDirError(failure)
    if info["data_dir"] != data_dir:
        raise DataDirError(
            f"namespace {namespace!r} already runs a runtime on {info['data_dir']}, not {data_dir}"
        )
    return journal
