"""The client's failures you can see: ``timeout=`` on calls and results names the invocation and
its last failure; a closed client raises RuntimeError at once instead of blocking forever."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from actors import Context, RetryPolicy, Runtime, Service
from actors.client.waiting import InvocationTimeoutError
from tests.conftest import assert_eventually
from tests.integration import apps

buggy = Service("Buggy")


@buggy.handler(
    retry_policy=RetryPolicy(
        initial_interval=timedelta(milliseconds=200), max_interval=timedelta(seconds=1)
    )
)
async def broken(ctx: Context, x: int) -> int:
    """A handler with a bug: retried for ever, never finishes."""
    raise ValueError(f"bad input {x}")


@pytest.fixture(scope="module")
def runtime(ray_session: None, tmp_path_factory) -> Iterator[Runtime]:
    rt = Runtime.start(
        [*apps.ALL, buggy],
        data_dir=tmp_path_factory.mktemp("client") / "data",
        namespace=f"client-{os.getpid()}",
        pool_size=1,
    )
    yield rt
    rt.shutdown()


def last_failure(rt: Runtime, invocation_id: str) -> str | None:
    rows = rt.sql(f"SELECT last_failure FROM sys_invocation WHERE id = '{invocation_id}'")
    return rows.to_pylist()[0]["last_failure"] if rows.num_rows else None


def failing(rt: Runtime, x: int, key: str) -> str:
    """Send ``broken(x)`` under idempotency ``key`` and wait until its first failure is
    journaled; its id (a call with the same key attaches to it)."""
    h = rt.send(broken, arg=x, idempotency_key=key)
    assert_eventually(lambda: last_failure(rt, h.id), message="the first failure is journaled")
    return h.id


def check_timeout(error: TimeoutError, invocation_id: str, x: int) -> None:
    assert isinstance(error, InvocationTimeoutError)
    assert error.invocation_id == invocation_id
    assert invocation_id in str(error) and f"ValueError: bad input {x}" in str(error)
    assert error.last_failure is not None and "ValueError" in error.last_failure
    assert error.status in ("running", "backing-off", "pending")


def test_call_timeout_names_the_invocation_and_its_failure(runtime: Runtime) -> None:
    inv = failing(runtime, 1, "call-timeout")
    with pytest.raises(TimeoutError) as caught:
        runtime.call(broken, arg=1, idempotency_key="call-timeout", timeout=0.5)
    check_timeout(caught.value, inv, 1)

    async def call_async() -> Any:
        return await runtime.call_async(broken, arg=1, idempotency_key="call-timeout", timeout=0.5)

    with pytest.raises(TimeoutError) as caught:
        asyncio.run(call_async())
    check_timeout(caught.value, inv, 1)


def test_result_timeout_names_the_invocation_and_its_failure(runtime: Runtime) -> None:
    inv = failing(runtime, 2, "result-timeout")
    h = runtime.attach(inv)
    with pytest.raises(TimeoutError) as caught:
        h.result(timeout=0.2)
    check_timeout(caught.value, inv, 2)

    async def result_async() -> Any:
        return await h.result_async(timeout=0.2)

    with pytest.raises(TimeoutError) as caught:
        asyncio.run(result_async())
    check_timeout(caught.value, inv, 2)
    assert runtime.cancel(inv) == "cancelled"  # stop retrying it


def test_a_timeout_that_is_not_reached_changes_nothing(runtime: Runtime) -> None:
    assert runtime.call(apps.add, key="timely", arg=2, timeout=60) == 2
    assert runtime.send(apps.add, key="timely", arg=3).result(timeout=60) == 5
    with pytest.raises(ValueError, match="negative"):
        runtime.call(apps.add, key="timely", arg=1, timeout=-1)


# -- a closed client ----------------------------------------------------------------------------


def raises_closed(fn: Callable[[], Any]) -> None:
    """``fn()`` raises RuntimeError (run in a thread, so a regression fails instead of hanging
    the suite)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(fn)
        with pytest.raises(RuntimeError, match="closed"):
            future.result(timeout=60)


def test_every_method_raises_after_close(runtime: Runtime) -> None:
    client = Runtime.connect(namespace=runtime.namespace)
    h = client.send(apps.add, key="closing", arg=1)
    assert h.result(timeout=60) == 1
    proxy = client.object(apps.counter, "closing")
    client.close()
    client.close()  # a second close does nothing
    for fn in (
        lambda: client.call(apps.add, key="closing", arg=1),
        lambda: client.send(apps.add, key="closing", arg=1),
        lambda: client.sql("SELECT 1"),
        lambda: client.attach(h.id),
        lambda: client.cancel(h.id),
        lambda: client.kill(h.id),
        lambda: client.resolve_awakeable("awk_x", 1),
        lambda: client.reject_awakeable("awk_x", "no"),
        lambda: client.object(apps.counter, "closing"),
        lambda: client.resolve(apps.add),
        lambda: client.shutdown(),
        lambda: h.result(),
        lambda: proxy.add(1),
        lambda: asyncio.run(client.call_async(apps.add, key="closing", arg=1)),
        lambda: asyncio.run(client.send_async(apps.add, key="closing", arg=1)),
        lambda: asyncio.run(client.sql_async("SELECT 1")),
        lambda: asyncio.run(h.result_async()),
    ):
        raises_closed(fn)
    assert runtime.call(apps.get, key="closing") == 1  # the runtime itself runs on


def test_close_ends_a_call_waiting_in_another_thread(runtime: Runtime, tmp_path: Path) -> None:
    client = Runtime.connect(namespace=runtime.namespace)
    ledger, gate = str(tmp_path / "ledger"), str(tmp_path / "gate")
    job = apps.Job(ledger=ledger, gate=gate, tag="t")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(client.call, apps.gated, "closing-wait", job)
        assert_eventually(
            lambda: Path(ledger).exists() and "b:closing-wait:t" in Path(ledger).read_text(),
            message="the handler waits at its gate",
        )
        client.close()
        with pytest.raises(RuntimeError, match="closed"):
            waiting.result(timeout=60)
    Path(gate).touch()


def test_every_method_raises_after_shutdown(start_runtime) -> None:
    rt = start_runtime([apps.counter])
    assert rt.call(apps.add, key="k", arg=1) == 1
    rt.shutdown()
    rt.shutdown()  # a second shutdown does nothing
    raises_closed(lambda: rt.call(apps.add, key="k", arg=1))
    raises_closed(lambda: rt.sql("SELECT 1"))
    raises_closed(lambda: rt.send(apps.add, key="k", arg=1))


SCRIPT_WITHOUT_CLOSE = """
import os, sys
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
import ray
from actors import Runtime
from tests.integration import apps
rt = Runtime.start(apps.ALL, data_dir=sys.argv[1], namespace=sys.argv[2], pool_size=1,
                   address=sys.argv[3])
print(sum(rt.call(apps.add, key=f"k{i % 3}", arg=1) for i in range(20)), flush=True)
"""


def test_a_script_that_never_closes_its_client_exits_quietly(
    ray_session: None, tmp_path: Path
) -> None:
    """A driver that joins a cluster and ends without ``close()``: its client's socket tasks
    are closed at exit, so Python prints no "Task was destroyed but it is pending!" (it did
    before the client closed itself at exit)."""
    import subprocess
    import sys

    import ray

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    address = ray.get_runtime_context().gcs_address
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT_WITHOUT_CLOSE,
            str(tmp_path / "data"),
            f"no-close-{os.getpid()}",
            address,
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=root,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == str(sum(i // 3 + 1 for i in range(20)))
    assert "Task was destroyed" not in out.stderr, out.stderr
