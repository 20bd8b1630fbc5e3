"""InvokeRequest: a request to run one handler, as it travels from a caller to a host."""

from __future__ import annotations

from dataclasses import dataclass

from journal.kinds import InvokeMode


@dataclass(slots=True)
class InvokeRequest:
    """A client's (or handler's) request to run one handler. ``id`` is chosen by the caller, so
    a request re-sent after a failure is recognised."""

    id: str
    service: str
    handler: str
    key: str | None
    input: str
    mode: InvokeMode = InvokeMode.CALL
    route_hash: int = 0
    idempotency_key: str | None = None
    invoked_by: str | None = None
    resubmit: bool = False
    created_at_ms: int = 0
    delay_ms: int = 0
