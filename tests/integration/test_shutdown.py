"""``Runtime.shutdown`` while calls are in flight: it stops every actor of the runtime, and the
calls do not bring hosts back (a router makes a host again when it died under a request)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from pathlib import Path

import pytest

from actors import Runtime
from actors.client.stopping import named_actors
from tests.conftest import assert_eventually
from tests.integration import apps


def test_shutdown_with_calls_in_flight_leaves_no_actor_and_the_calls_go_on_after_a_start(
    start_runtime, tmp_path: Path
) -> None:
    """The chaos run's long mode stalled 30 s at each full restart: the calls in flight made
    the killed hosts again (the driver's own client on its own event loop, and other clients),
    ``shutdown`` waited for their names until its deadline and left them running without a
    runtime, and ``Runtime.start`` found them. Now the driver's own call ends with
    RuntimeError (its client is closed), another client's call waits while no runtime runs
    and completes once one runs again on the same data dir."""
    data, ledger, gate = tmp_path / "data", str(tmp_path / "ledger"), str(tmp_path / "gate")
    rt = start_runtime([apps.steps], data_dir=data)
    other = Runtime.connect(namespace=rt.namespace)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    own = asyncio.run_coroutine_threadsafe(
        rt.call_async(apps.gated, "own", apps.Job(ledger=ledger, gate=gate, tag="t")), loop
    )
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        theirs = pool.submit(
            other.call, apps.gated, "theirs", apps.Job(ledger=ledger, gate=gate, tag="t")
        )
        assert_eventually(
            lambda: (
                Path(ledger).exists()
                and {"b:own:t", "b:theirs:t"} <= set(Path(ledger).read_text().splitlines())
            ),
            message="both handlers wait at their gate",
        )
        rt.shutdown()
        assert named_actors(rt.namespace) == []
        with pytest.raises(RuntimeError, match="closed"):
            own.result(timeout=60)
        assert named_actors(rt.namespace) == [], "a call in flight made a host again"
        assert not theirs.done()
        start_runtime([apps.steps], data_dir=data, namespace=rt.namespace)
        Path(gate).touch()
        assert theirs.result(timeout=90) == "opened"
    other.close()
    loop.call_soon_threadsafe(loop.stop)
