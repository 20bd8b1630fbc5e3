"""Router: which host actor runs a request, and building requests — shared by the driver-side
client and by hosts that send to other handlers, so both route and validate the same way."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import timedelta
from functools import partial
from typing import Any

import ray
from ray import cloudpickle
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.cluster.channel import HOST_DOWN, HostChannel, RuntimeDown
from actors.cluster.names import (
    Partitions,
    host_name,
    idempotent_invocation_id,
    new_invocation_id,
    route_hash,
)
from actors.engine.awakeable_ids import AwakeableIds
from actors.host.requests import InvokeRequest
from actors.sdk.definitions import HandlerSpec, ServiceDefinition, VirtualObject, Workflow, spec_of
from actors.sdk.errors import AlreadyCompletedError, TerminalError
from actors.sdk.serde import check_text
from journal.clock import now_ms
from journal.config import RuntimeConfig
from journal.errors import StatusCode
from journal.kinds import InvokeMode
from journal.partitions import Placement
from journal.records import Outcome
from journal.retry import retry
from journal.transport.remote import RemoteJournal
from journal.transport.wire import WireRoute

Target = Callable[..., Any] | str
SYSTEM_ACTOR = {
    "lifetime": "detached",
    "max_restarts": -1,
    "max_task_retries": 0,
    "num_cpus": 0,
    "max_concurrency": 100_000,
}
# Hosts spread over the cluster's nodes (they take no CPU, so Ray's default strategy would
# pack them all onto the creating node): a pool's host i prefers node i of the alive nodes
# (``pooled``), dedicated hosts SPREAD unless their object's actor_options say otherwise.
HOST_ACTOR = {**SYSTEM_ACTOR, "scheduling_strategy": "SPREAD"}


def idle_timeout_s(d: ServiceDefinition) -> float:
    """How long a key of ``d`` stays in memory unused (services hold no keys: the default)."""
    return (
        d.idle_timeout.total_seconds()
        if isinstance(d, VirtualObject)
        else VirtualObject.idle_timeout.total_seconds()
    )


def preferred_node(index: int) -> str | None:
    """The node pool host ``index`` should run on: node ``index`` of the alive nodes, round
    robin (None on a single node)."""
    nodes = sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))
    return nodes[index % len(nodes)] if len(nodes) > 1 else None


class Router:
    """Routes requests of one runtime (its namespace and config) to host actors."""

    def __init__(
        self, namespace: str, config: RuntimeConfig | Mapping[str, Any], host_actor: type
    ) -> None:
        """``host_actor``: the class of the host actors it creates (``HostActor``; passed in,
        since that actor holds a router itself and this module stays below it)."""
        typed = RuntimeConfig.of(config)
        if typed.secret is None:
            raise ValueError(
                "Router: the runtime config carries no secret (it comes from "
                "the journal actor's config())"
            )
        self.namespace = namespace
        self.host_actor = host_actor
        self.partitions = Partitions(typed.partitions)
        self.spread = Placement(typed.partition_placement) is Placement.SPREAD
        self.pool_size = typed.pool_size
        self.suspend_after_s = typed.suspend_after_s
        definitions: list[ServiceDefinition] = cloudpickle.loads(typed.definitions)
        self.definitions = {d.name: d for d in definitions}
        self.awakeables = AwakeableIds(typed.secret)
        self._hosts: dict[str, Any] = {}
        self._channels: dict[tuple[asyncio.AbstractEventLoop, str], HostChannel] = {}
        self._wires: dict[str, WireRoute] = {}
        self._journals: dict[int, RemoteJournal] = {}
        self.closed: str | None = None  # why it makes no hosts any more: its client closed

    def journal(self, partition: int) -> RemoteJournal:
        """Partition ``partition``'s journal, as this router's process reaches it."""
        journal = self._journals.get(partition)
        if journal is None:
            journal = self._journals[partition] = RemoteJournal(
                self.namespace, name=self.partitions.journal(partition)
            )
        return journal

    def _may_make_host(self, partition: int) -> None:
        """Hosts are made on demand, also for a request in flight whose host died; but not by
        a closed client (``RuntimeError``) nor while no runtime runs (``RuntimeDown``, sent
        again later): else a request in flight brings back the hosts that
        ``Runtime.shutdown`` kills, and they outlive their runtime, their names taken."""
        if self.closed is not None:
            raise RuntimeError(self.closed)
        try:
            ray.get_actor(self.partitions.journal(partition), namespace=self.namespace)
        except ValueError:
            raise RuntimeDown(f"no raystate runtime runs in namespace {self.namespace!r}") from None

    def host_node(self, index: int, partition: int) -> str | None:
        """The node pool host ``index`` of ``partition`` prefers: round the nodes, or, with
        partitions spread, its partition's node (where its journal is: a socket away)."""
        if self.spread:
            return preferred_node(partition)
        return preferred_node(index)

    @property
    def shared_hosts(self) -> bool:
        """Whether the partitions share their pooled hosts: yes unless spread (then a
        partition's hosts stay on its node). A process per partition and pool slot costs CPU
        and splits the batches that one call carries (docs/partitions.md)."""
        return not self.spread

    def _pooled_name(self, d: ServiceDefinition, index: int, partition: int) -> str:
        separate = self.partitions.count > 1 and not self.shared_hosts
        return host_name(d.name, index, partition if separate else None)

    def pooled(self, d: ServiceDefinition, index: int, partition: int = 0) -> Any:
        """Pool host ``index`` of ``d`` in ``partition`` (made now if it does not run)."""
        name = self._pooled_name(d, index, partition)
        handle = self._hosts.get(name)
        if handle is None:
            self._may_make_host(partition)
            options = dict(HOST_ACTOR)
            node = self.host_node(index, partition)
            if node is not None:  # SPREAD is best effort: it once put a whole pool on one node
                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=True)
            handle = self._hosts[name] = (
                ray.remote(self.host_actor)
                .options(name=name, namespace=self.namespace, get_if_exists=True, **options)
                .remote(
                    d,
                    self.namespace,
                    (index, self.pool_size),
                    None,
                    idle_timeout_s(d),
                    self.suspend_after_s,
                    partition,
                    self.partitions.count,
                    self.shared_hosts,
                )
            )
        return handle

    def pool_slots(self, d: ServiceDefinition) -> list[tuple[int, int]]:
        """(index, partition) of every pooled host of ``d``, each host once (local partitions
        share theirs)."""
        names = {
            self._pooled_name(d, i, p): (i, p)
            for p in self.partitions
            for i in range(self.pool_size)
        }
        return list(names.values())

    def pool(self, d: ServiceDefinition) -> list[Any]:
        """Every pooled host of ``d``, each once."""
        return [self.pooled(d, i, p) for i, p in self.pool_slots(d)]

    def replace(
        self, d: ServiceDefinition, index: int, partition: int = 0, timeout: float = 30.0
    ) -> Any:
        """Kill pool host ``index`` for good and create it again (placed anew). Only for an
        idle host: whatever it ran is recovered as after any crash, but that costs time."""
        name = self._pooled_name(d, index, partition)
        ray.kill(self.pooled(d, index, partition), no_restart=True)
        self._hosts.pop(name, None)
        deadline = time.monotonic() + timeout
        while True:  # the name is freed once Ray has buried the actor
            try:
                ray.get_actor(name, namespace=self.namespace)
            except ValueError:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"host {name!r} was killed but its name stays taken")
            time.sleep(0.05)  # poll interval while Ray frees the name
        return self.pooled(d, index, partition)

    def dedicated(self, d: VirtualObject, key: str) -> Any:
        name = host_name(d.name, key)
        handle = self._hosts.get(name)
        if handle is None:
            partition = self.partitions.of_key(d.name, key)
            self._may_make_host(partition)
            options = {**HOST_ACTOR, **d.actor_options}
            handle = self._hosts[name] = (
                ray.remote(self.host_actor)
                .options(name=name, namespace=self.namespace, get_if_exists=True, **options)
                .remote(
                    d,
                    self.namespace,
                    None,
                    key,
                    idle_timeout_s(d),
                    self.suspend_after_s,
                    partition,
                    self.partitions.count,
                )
            )
        return handle

    def _host_name(
        self, d: ServiceDefinition, key: str | None, route_hash: int, partition: int
    ) -> str:
        if isinstance(d, VirtualObject) and d.placement == "dedicated":
            assert key is not None
            return host_name(d.name, key)
        return self._pooled_name(d, route_hash % self.pool_size, partition)

    def host_for(
        self, d: ServiceDefinition, key: str | None, route_hash: int, partition: int = 0
    ) -> Any:
        """The host of (d, key) in ``partition`` (``route_hash``: the hash within it)."""
        if isinstance(d, VirtualObject) and d.placement == "dedicated":
            assert key is not None
            return self.dedicated(d, key)
        return self.pooled(d, route_hash % self.pool_size, partition)

    def clear(self) -> None:
        self._hosts.clear()

    async def close_wires(self) -> None:
        """Close this event loop's sockets to hosts and the journal."""
        for route in self._wires.values():
            await route.aclose()
        for journal in self._journals.values():
            await journal.close_wire()

    def resolve(self, target: Target) -> HandlerSpec:
        """The handler behind a function reference or a ``"Service/handler"`` string."""
        if isinstance(target, str):
            service, _, handler = target.partition("/")
            d = self.definitions.get(service)
            if d is None:
                raise TerminalError(
                    f"unknown service {service!r} (known: "
                    f"{', '.join(sorted(self.definitions)) or 'none'})",
                    StatusCode.NOT_FOUND,
                )
            spec = d.handlers.get(handler)
            if spec is None:
                raise TerminalError(
                    f"unknown handler {target!r} (known: {', '.join(sorted(d.handlers))})",
                    StatusCode.NOT_FOUND,
                )
            return spec
        spec = spec_of(target)
        if spec is None:
            raise TerminalError(f"{target!r} is not a raystate handler", StatusCode.NOT_FOUND)
        if spec.definition.name not in self.definitions:
            raise TerminalError(
                f"service {spec.definition.name!r} is not part of this runtime",
                StatusCode.NOT_FOUND,
            )
        return self.definitions[spec.definition.name].handlers[spec.name]

    def request(
        self,
        target: Target,
        key: str | None,
        arg: Any,
        mode: InvokeMode,
        *,
        idempotency_key: str | None = None,
        delay: timedelta | float | None = None,
        invocation_id: str | None = None,
        invoked_by: str | None = None,
    ) -> tuple[HandlerSpec, InvokeRequest]:
        """Validate a request before any round trip (bad input: ``TerminalError`` 400/404)."""
        spec = self.resolve(target)
        keyed = spec.definition.keyed
        if keyed and not isinstance(key, str):
            raise TerminalError(
                f"{spec.target} is a virtual-object handler: pass key=<str>", StatusCode.BAD_REQUEST
            )
        if not keyed and key is not None:
            raise TerminalError(
                f"{spec.target} is a service handler: it takes no key", StatusCode.BAD_REQUEST
            )
        if key is not None:
            check_text(key, "key")
        if idempotency_key is not None:
            check_text(idempotency_key, "idempotency key")
        if spec.takes_arg:
            data = spec.input.to_json(arg, f"input of {spec.target}")
        elif arg is not None:
            raise TerminalError(
                f"{spec.target} takes no input, got {type(arg).__name__}", StatusCode.BAD_REQUEST
            )
        else:
            data = "null"
        run_once = isinstance(spec.definition, Workflow) and spec.definition.is_main(spec.name)
        if run_once:  # one run per workflow key: every submission names the same invocation
            invocation_id = idempotent_invocation_id(spec.target, key, "\x00workflow-run")
        elif invocation_id is None:
            invocation_id = (
                new_invocation_id()
                if idempotency_key is None
                else idempotent_invocation_id(spec.target, key, idempotency_key)
            )
        name = spec.definition.name
        invocation_id = self.partitions.locate(name, key, invocation_id)
        delay_s = delay.total_seconds() if isinstance(delay, timedelta) else float(delay or 0)
        if delay_s < 0:
            raise TerminalError(
                f"delay must not be negative, got {delay!r}", StatusCode.BAD_REQUEST
            )
        req = InvokeRequest(
            invocation_id,
            spec.definition.name,
            spec.name,
            key,
            data,
            mode,
            self.partitions.within(route_hash(name, key, invocation_id)),
            idempotency_key,
            invoked_by,
            run_once,
            now_ms(),
            round(delay_s * 1000),
        )
        return spec, req

    async def submit(self, spec: HandlerSpec, req: InvokeRequest) -> Outcome | None:
        """Send a request to its host, again after a host failure (marked as a re-submission,
        so the host first asks the journal whether the first one got through). Requests to
        one host share its ``HostChannel``: few Ray calls carry many of them."""
        d, key, hash_ = spec.definition, req.key, req.route_hash
        partition = self.partitions.of_id(req.id)
        name = self._host_name(d, key, hash_, partition)
        at = (asyncio.get_running_loop(), name)  # a client may be used from several loops
        channel = self._channels.get(at)
        if channel is None:
            channel = self._channels[at] = HostChannel(
                partial(self._call_host, name, lambda: self.host_for(d, key, hash_, partition)),
                lambda: self._hosts.pop(name, None),
                lambda ch: self._drop_channel(at, ch),
            )
        return await channel.submit(req)

    def _wire_route(self, name: str) -> WireRoute:
        route = self._wires.get(name)
        if route is None:  # (a route keeps a client per event loop)
            route = self._wires[name] = WireRoute()
        return route

    async def _call_host(self, name: str, host: Callable[[], Any], method: str, *args: Any) -> Any:
        """``method(*args)`` on the host: over its socket when it runs on this node
        (``journal.transport.wire``), else through Ray. Raises ``HOST_DOWN`` if the host died."""
        handle = host()
        wire = await self._wire_route(name).client(handle)
        if wire is None:
            return await getattr(handle, method).remote(*args)
        return await wire.call(method, *args)

    def _drop_channel(
        self, at: tuple[asyncio.AbstractEventLoop, str], channel: HostChannel
    ) -> None:
        """An idle channel goes (a dedicated key's host may never be called again)."""
        if self._channels.get(at) is channel and channel.idle():
            del self._channels[at]

    async def cancel(self, invocation_id: str, kill: bool = False) -> str:
        """Cancel or kill an invocation on the host that runs it (see ``ObjectHost.cancel``)."""
        return await self._on_host_of(
            invocation_id, f"unknown invocation {invocation_id!r}", "cancel", invocation_id, kill
        )

    async def resolve_awakeable(
        self, awakeable_id: str, result: str | None, failure: str | None, by: str | None = None
    ) -> str:
        """Complete an awakeable on its invocation's host; ``TerminalError`` if that is
        refused (``AlreadyCompletedError`` when it was completed before). ``by``: the
        resolving handler's entry, when a handler resolves it (``ObjectHost``); else a token
        of this call, so that the host recognises this resolution when a host failure makes
        ``_on_host`` send it again after it got through (instead of refusing it as a second)."""
        inv_id, _ = self.awakeables.parse(awakeable_id)
        by = by or f"client:{uuid.uuid4().hex}"
        ok, message, code = await self._on_host_of(
            inv_id,
            f"unknown awakeable {awakeable_id} (no such invocation)",
            "resolve_awakeable",
            awakeable_id,
            result,
            failure,
            by,
        )
        if not ok:
            error = AlreadyCompletedError if code == StatusCode.CONFLICT else TerminalError
            raise error(message, code)
        return str(message)

    async def _on_host_of(self, invocation_id: str, unknown: str, method: str, *args: Any) -> Any:
        """Call ``method(*args)`` on the host of an accepted invocation (its partition's
        journal knows its route)."""
        partition = self.partitions.of_id(invocation_id)
        route = await self.journal(partition).route(invocation_id)
        if route is None:
            raise TerminalError(unknown, StatusCode.NOT_FOUND)
        service, key, route_hash = route
        d = self.definitions.get(service)
        if d is None:
            raise TerminalError(
                f"invocation {invocation_id!r} belongs to service "
                f"{service!r}, which this runtime does not know",
                StatusCode.NOT_FOUND,
            )
        return await self._on_host(d, key, route_hash, partition, method, *args)

    async def _on_host(
        self,
        d: ServiceDefinition,
        key: str | None,
        route_hash: int,
        partition: int,
        method: str,
        *args: Any,
    ) -> Any:
        """Call ``method(*args)`` on the host of (d, key), again after a host failure."""
        name = self._host_name(d, key, route_hash, partition)

        def host() -> Any:
            return self.host_for(d, key, route_hash, partition)

        # (a broken socket is closed: the route asks the successor)
        return await retry(
            lambda: self._call_host(name, host, method, *args),
            retry_on=HOST_DOWN,
            on_retry=lambda _: self._hosts.pop(name, None),
        )
