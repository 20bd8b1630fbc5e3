"""raystate: durable building blocks (in the style of Restate) on Ray.

Public API: service definitions, contexts, errors and the ``Runtime`` client. The client (which
imports Ray) loads on first use, so definitions and the replay engine import without Ray, and
the errors come from ``journal.errors``, so ``import actors`` does not load DuckDB.
"""

from typing import TYPE_CHECKING, Any

from actors.sdk.contexts import (
    Awakeable,
    Context,
    DurablePromise,
    ObjectContext,
    ObjectSharedContext,
    WorkflowContext,
    WorkflowSharedContext,
)
from actors.sdk.definitions import Service, VirtualObject, Workflow
from actors.sdk.errors import (
    AlreadyCompletedError,
    DefinitionError,
    JournalMismatch,
    RetryPolicy,
    TerminalError,
)
from actors.sdk.limits import RateLimit
from journal.errors import (
    DataDirError,
    RaystateError,
    SqlBusy,
    SqlCancelled,
    SqlRefused,
    SqlResultTooLarge,
    SqlTimeout,
    StatusCode,
)
from journal.kinds import Overlap

if TYPE_CHECKING:
    from actors.client.runtime import InvocationHandle, Runtime
    from actors.client.schedules import Schedule
    from actors.steps.refs import DurableRef

_LAZY = {"Runtime", "InvocationHandle"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from actors.client import runtime

        return getattr(runtime, name)
    if name == "Schedule":  # imports Ray, like the client
        from actors.client.schedules import Schedule

        return Schedule
    if name == "DurableRef":  # imports pyarrow: only when asked for
        from actors.steps.refs import DurableRef

        return DurableRef
    raise AttributeError(f"module 'actors' has no attribute {name!r}")


__all__ = [
    "AlreadyCompletedError",
    "Awakeable",
    "Context",
    "DataDirError",
    "DefinitionError",
    "DurablePromise",
    "DurableRef",
    "InvocationHandle",
    "JournalMismatch",
    "ObjectContext",
    "ObjectSharedContext",
    "Overlap",
    "RateLimit",
    "RaystateError",
    "RetryPolicy",
    "Runtime",
    "Schedule",
    "Service",
    "SqlBusy",
    "SqlCancelled",
    "SqlRefused",
    "SqlResultTooLarge",
    "SqlTimeout",
    "StatusCode",
    "TerminalError",
    "VirtualObject",
    "Workflow",
    "WorkflowContext",
    "WorkflowSharedContext",
]
