"""raystate: durable building blocks (in the style of Restate) on Ray.

Public API: service definitions, contexts, errors and the ``Runtime`` client.
"""

from actors.client import InvocationHandle, Runtime
from actors.contexts import Context, ObjectContext, ObjectSharedContext
from actors.definitions import Service, VirtualObject
from actors.errors import DefinitionError, JournalMismatch, RetryPolicy, TerminalError
from journal.sqlguard import SqlRefused
from journal.store import DataDirError

__all__ = [
    "Context",
    "DataDirError",
    "DefinitionError",
    "InvocationHandle",
    "JournalMismatch",
    "ObjectContext",
    "ObjectSharedContext",
    "RetryPolicy",
    "Runtime",
    "Service",
    "SqlRefused",
    "TerminalError",
    "VirtualObject",
]
