"""A workflow's durable promises on its host: completed in memory at once, waited for by
entries."""

from __future__ import annotations

from actors.engine.invocation import Invocation
from actors.host.base import HostBase
from journal.records import Completion


class Promises(HostBase):
    """Workflow promises, kept in the key slot (and durable as state)."""

    def promise_of(self, invocation: Invocation, name: str) -> str | None:
        assert invocation.accept.key is not None
        return self._slot(invocation.accept.key).promises.get(name)

    def claim_promise(self, invocation: Invocation, name: str, data: str) -> bool:
        assert invocation.accept.key is not None
        slot = self._slot(invocation.accept.key)
        if name in slot.promises:
            return False
        slot.promises[name] = data
        waiting = slot.watchers.pop(name, [])
        if waiting:
            self._spawn(self.wake([(i, idx, Completion(i, idx, data)) for i, idx in waiting]))
        return True

    def watch_promise(self, invocation: Invocation, idx: int, name: str) -> None:
        assert invocation.accept.key is not None
        slot = self._slot(invocation.accept.key)
        data = slot.promises.get(name)
        if data is not None:
            self._spawn(self.wake([(invocation.id, idx, Completion(invocation.id, idx, data))]))
        elif (invocation.id, idx) not in slot.watchers.get(name, []):
            slot.watchers.setdefault(name, []).append((invocation.id, idx))
