"""Journal retention on a running runtime: finished invocations are pruned, state survives."""

from __future__ import annotations

from datetime import timedelta

import pytest
import ray

from actors import TerminalError
from actors.cluster.names import JOURNAL
from tests.conftest import assert_eventually
from tests.integration import apps


def test_a_tiny_retention_prunes_finished_invocations_and_keeps_state(start_runtime) -> None:
    rt = start_runtime(retention=timedelta(seconds=1))
    handle = rt.send(apps.add, key="pruned", arg=1)
    assert handle.result(timeout=60) == 1
    assert [rt.call(apps.add, key="pruned", arg=1) for _ in range(4)] == [2, 3, 4, 5]

    def left() -> int:
        return rt.sql(
            "SELECT count(*) AS n FROM sys_invocation WHERE target = 'Counter/pruned/add'"
        ).to_pylist()[0]["n"]

    assert left() == 5
    assert_eventually(
        lambda: left() == 0, timeout=60, message="the finished invocations were pruned"
    )
    assert rt.sql(
        f"SELECT count(*) AS n FROM sys_journal WHERE invocation_id = '{handle.id}'"
    ).to_pylist() == [{"n": 0}]
    assert rt.sql(
        "SELECT value::INTEGER AS n FROM state WHERE service_key = 'pruned'"
    ).to_pylist() == [{"n": 5}]
    assert rt.call(apps.add, key="pruned", arg=1) == 6, "the state survived and is used"
    with pytest.raises(TerminalError) as e:  # its result is gone with it: no waiting forever
        handle.result(timeout=60)
    assert e.value.status_code == 404

    info = ray.get(ray.get_actor(JOURNAL, namespace=rt.namespace).info.remote())
    assert info["retention_s"] == 1.0 and info["prunes"] >= 1
