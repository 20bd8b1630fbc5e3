"""What is registered, as rows of ``sys_service``: one per handler, with its options as JSON.

``Runtime.start`` writes these into the journal (``JournalActor.set_services``), so the
registry can be queried like the rest (``rt.sql``, ``raystate sql``, ``--db``). Only JSON goes
there: type names as text, durations in seconds, Ray actor options as their JSON form (or text).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any

from actors.sdk.definitions import HandlerSpec, ServiceDefinition, VirtualObject, Workflow
from actors.sdk.errors import RetryPolicy


@dataclass(frozen=True)
class ServiceRow:
    """One row of ``sys_service``."""

    name: str
    ty: str  # service | virtual_object | workflow
    handler: str
    kind: str | None  # exclusive | shared | workflow (a workflow's main); None: a service's
    options: str  # JSON object


def service_type(d: ServiceDefinition) -> str:
    if isinstance(d, Workflow):
        return "workflow"
    return "virtual_object" if isinstance(d, VirtualObject) else "service"


def _plain(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, RetryPolicy):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    return value


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def _options(d: ServiceDefinition, spec: HandlerSpec) -> str:
    options: dict[str, Any] = {
        "retry_policy": _plain(spec.policy),
        "input": _type_name(spec.input.type) if spec.takes_arg else None,
        "output": _type_name(spec.output.type),
    }
    if spec.limits:  # the definition's and the handler's
        options["limits"] = [
            {
                "name": lim.name,
                "concurrency": lim.concurrency,
                "rate": lim.rate,
                "per_ms": lim.per_ms,
            }
            for lim in spec.limits
        ]
    if isinstance(d, VirtualObject):
        options.update(
            placement=d.placement,
            idle_timeout=_plain(d.idle_timeout),
            actor_options=d.actor_options,
        )
    return json.dumps(options, default=str, sort_keys=True)


def service_rows(definitions: Iterable[ServiceDefinition]) -> list[ServiceRow]:
    """Every handler of ``definitions``, in name order."""
    rows = []
    for d in definitions:
        for spec in d.handlers.values():
            kind: str | None = spec.kind if d.keyed else None
            if isinstance(d, Workflow) and d.is_main(spec.name):
                kind = "workflow"
            rows.append(ServiceRow(d.name, service_type(d), spec.name, kind, _options(d, spec)))
    return sorted(rows, key=lambda r: (r.name, r.handler))
