from __future__ import annotations

import pytest

from actors import Runtime, TerminalError
from tests.integration import apps


def test_counter_add_and_get(rt: Runtime) -> None:
    assert rt.call(apps.add, key="a", arg=2) == 2
    assert rt.call("Counter/add", key="a", arg=3) == 5
    assert rt.object(apps.counter, "a").get() == 5
    assert rt.call(apps.get, key="other") == 0


def test_service_three_steps(rt: Runtime) -> None:
    assert rt.call(apps.three_steps, arg=4) == 9
    rows = rt.sql("SELECT entry_type, name FROM sys_journal ORDER BY invocation_id, index")
    assert rows.column("name").to_pylist() == ["one", "two", "three"]
