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

from actors.client.journal_placement import place_new, place_new_journal
from actors.client.registry import service_rows
from actors.cluster.names import default_pool_size
from actors.cluster.remote import UNAVAILABLE
from actors.cluster.router import SYSTEM_ACTOR, Router
from actors.sdk.definitions import ServiceDefinition, VirtualObject, Workflow
from actors.steps.runner import INLINE_LIMIT, delete_blobs, steps_config
from journal.actor import JournalActor
from journal.config import RuntimeConfig
from journal.errors import DataDirError
from journal.partitions import Partitions, Placement, claim
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
    partitions: int = 1,
    partition_placement: Placement | str = Placement.LOCAL,
) -> tuple[RuntimeConfig, list[Any]]:
    """``Runtime.start`` up to the client: check the arguments, start (or attach to) the
    journal and scheduler actors of every partition, and agree on the runtime's config with a
    running one. Returns the config and the journal actors' handles, partition 0 first."""
    layout = Partitions(partitions)
    try:
        placement = Placement(partition_placement)
    except ValueError:
        raise ValueError(
            f"Runtime.start: partition_placement must be 'local' or 'spread', "
            f"not {partition_placement!r}"
        ) from None
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
    _check_running_layout(namespace, layout)
    claim(data_dir, layout)
    crowded = layout.crowding(placement, _node_cpus(ray.get_runtime_context().get_node_id()))
    if crowded is not None:
        warnings.warn(f"raystate: {crowded}", RuntimeWarning, stacklevel=3)
    journals = [
        start_journal(data_dir, namespace, layout, p, placement, _node_for(p, placement))
        for p in layout
    ]
    journal = journals[0]
    if pool_size is None:
        pool_size = default_pool_size(ray.cluster_resources().get("CPU", 1))
        if placement is Placement.SPREAD:  # every partition has a pool of its own
            pool_size = max(pool_size // layout.count, 1)
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
        partitions=layout.count,
        partition_placement=placement.value,
    )
    registered: list[ServiceDefinition] = list(services)
    existing = ray.get(journal.config.remote())
    if existing:  # attach: the running runtime's layout wins
        running = RuntimeConfig.from_dict(existing)
        merged = {d.name: d for d in cloudpickle.loads(running.definitions)}
        merged.update({d.name: d for d in services})
        registered = list(merged.values())
        config = dataclasses.replace(
            config,
            pool_size=running.pool_size,
            definitions=cloudpickle.dumps(registered),
            partition_placement=running.partition_placement,
        )
    rows = [astuple(r) for r in service_rows(registered)]
    ray.get([j.set_config.remote(config.to_dict()) for j in journals])
    ray.get([j.set_services.remote(rows) for j in journals])
    config = RuntimeConfig.from_dict(ray.get(journal.config.remote()))  # with the secret
    for p in layout:
        start_scheduler(namespace, layout, p, _node_for(p, placement))
    return config, journals


def start_scheduler(namespace: str, layout: Partitions, partition: int, node: str | None) -> Any:
    """The scheduler actor of ``partition`` (made now if it does not run): next to its journal
    on ``node`` when spread, and free to move when that node is lost. A running one stays."""
    name = layout.scheduler(partition)
    with contextlib.suppress(ValueError):
        return ray.get_actor(name, namespace=namespace)
    options = dict(SYSTEM_ACTOR, name=name, namespace=namespace)
    if node is not None:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=True)
    actor = ray.remote(SchedulerActor).options(get_if_exists=True, **options)

    def create() -> Any:
        return actor.remote(namespace, layout.journal(partition))

    scheduler = create()
    if node is None:
        return scheduler
    return place_new(scheduler, node, create, name, namespace)  # soft: Ray may misplace it


def start_hosts(router: Router, journals: list[Any], services: list[ServiceDefinition]) -> None:
    """Start the hosts that have unfinished invocations to resume, in each partition. On one
    node the others start on their first request (a host actor costs a process, and idle ones
    add up); on a cluster every pool starts now, its hosts placed round the nodes
    (``Router.pooled``, and moved by ``spread_hosts`` where Ray put them elsewhere)."""
    cluster = sum(1 for n in ray.nodes() if n.get("Alive")) > 1
    ready = []
    for p, journal in enumerate(journals):
        pending = set(ray.get(journal.pending_services.remote()))
        for d in services:
            if d.name not in pending and not (cluster and not _dedicated(d)):
                continue
            if _dedicated(d):
                keys = ray.get(journal.pending_keys.remote(d.name))
                ready += [
                    router.dedicated(d, k).ready.remote()  # type: ignore[arg-type]
                    for k in keys
                ]
            else:  # (a host that partitions share is asked once per partition: harmless)
                ready += [router.pooled(d, i, p).ready.remote() for i in range(router.pool_size)]
    for ref in ready:
        with contextlib.suppress(*UNAVAILABLE):  # died while resuming (a handler crashed
            ray.get(ref)  # it): Ray restarts it, and it resumes on its own
    if cluster:
        for d in services:
            if not _dedicated(d):
                spread_hosts(router, d)


def spread_hosts(router: Router, d: ServiceDefinition, timeout: float = 30.0) -> None:
    """Move the pool hosts of ``d`` that landed off their preferred node by creating them
    again. Their node affinity is soft, and right after a node joins Ray may place such
    actors elsewhere (all of a pool at once). Only idle hosts move."""
    deadline = time.monotonic() + timeout
    while True:
        misplaced = [(i, p) for i, p in router.pool_slots(d) if _misplaced(router, d, i, p)]
        if not misplaced:
            return
        if time.monotonic() > deadline:
            warnings.warn(
                f"raystate: {len(misplaced)} host(s) of {d.name} stay off their "
                "preferred node (Ray placed them elsewhere)",
                stacklevel=3,
            )
            return
        moved = [router.replace(d, i, p) for i, p in misplaced]
        with contextlib.suppress(*UNAVAILABLE):
            ray.get([h.ready.remote() for h in moved])


def _misplaced(router: Router, d: ServiceDefinition, index: int, partition: int) -> bool:
    want = router.host_node(index, partition)
    if want is None:
        return False
    host = router.pooled(d, index, partition)
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


def _check_running_layout(namespace: str, layout: Partitions) -> None:
    """A runtime already running in ``namespace`` with another partition count is an error
    (its names would not be found, and two layouts would share one namespace)."""
    other = Partitions(2 if layout.count == 1 else 1)
    try:
        ray.get_actor(other.journal(0), namespace=namespace)
    except ValueError:
        return
    raise DataDirError(
        f"namespace {namespace!r} already runs a runtime with "
        f"{'one partition' if layout.count > 1 else 'several partitions'}; start this one "
        f"in another namespace, or with the running runtime's partition count"
    )


def _node_cpus(node_id: str) -> float:
    """The CPUs Ray counts on node ``node_id`` (0 when it is not known)."""
    return next(
        (float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n["NodeID"] == node_id), 0.0
    )


def _node_for(partition: int, placement: Placement) -> str | None:
    """The node a partition's actors prefer when spread: node ``partition`` of the alive
    nodes, round robin (None: local placement)."""
    if placement is not Placement.SPREAD:
        return None
    nodes = sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))
    return nodes[partition % len(nodes)]


def start_journal(
    root: str,
    namespace: str,
    layout: Partitions,
    partition: int,
    placement: Placement,
    node: str | None,
) -> Any:
    """Attach to the namespace's journal actor of ``partition``, or create it: on this node
    (local placement, next to the data dir), or preferring ``node`` but free to restart
    elsewhere when that node is lost (spread: the data dir is on shared storage)."""
    data_dir = layout.directory(root, partition)
    name = layout.journal(partition)
    journal: Any
    try:
        journal = ray.get_actor(name, namespace=namespace)
    except ValueError:
        strategy = NodeAffinitySchedulingStrategy(
            node or ray.get_runtime_context().get_node_id(), soft=node is not None
        )

        def create() -> Any:
            return (
                ray.remote(JournalActor)
                .options(
                    name=name,
                    namespace=namespace,
                    get_if_exists=True,
                    scheduling_strategy=strategy,
                    **SYSTEM_ACTOR,
                )
                .remote(
                    data_dir,
                    on_pruned=delete_blobs,
                    secret_dir=root if layout.count > 1 else None,
                    # spread: Ray may start it on another node while the old process still runs
                    fenced=placement is Placement.SPREAD,
                )
            )

        journal = create()
        if node is not None:  # soft affinity: Ray may have put it elsewhere
            journal = place_new_journal(journal, node, create, name, namespace)
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
