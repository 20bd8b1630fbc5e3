"""The replay engine: one invocation attempt against its journal (no Ray, unit-tested alone).

Modules: ``context`` (the journal cursor, ``InvocationContext`` and ``execute``: an attempt
from its first entry to its output), ``statereads`` (state reads journaled as references),
``awakeable_ids`` (signed awakeable ids), ``failures`` (what user code raised, as records and
log lines). See docs/architecture.md.
"""
