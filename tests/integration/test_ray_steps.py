"""Ray-native steps through ``ctx.run`` on a running runtime (issue 21): Ray tasks and actor
methods as durable steps, results by value, blob and reference, and what happens when workers,
hosts and the blob store fail. Kills are real; side effects are counted in ledger files."""

from __future__ import annotations

import os
import threading
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import ray

from actors import Runtime, TerminalError
from tests.conftest import assert_eventually, ledger_lines
from tests.integration import ray_steps_apps as apps
from tests.integration import test_metrics as metrics_test
from tests.integration.helpers import host_of, host_pid, kill_and_restart

MB = 1 << 20


@pytest.fixture
def srt(start_runtime) -> Runtime:
    return start_runtime([apps.ray_steps], pool_size=1)


def _journal(rt: Runtime, inv_id: str) -> list[dict]:
    return rt.sql(
        "SELECT index AS idx, entry_type, name, result FROM sys_journal"
        f" WHERE invocation_id = '{inv_id}' ORDER BY idx"
    ).to_pylist()


def test_remote_functions_options_and_actor_methods_are_steps(srt: Runtime, ledger) -> None:
    model = apps.Model.options(name=f"model-{os.getpid()}", namespace=srt.namespace).remote()
    job = apps.Job(ledger=ledger, actor=f"model-{os.getpid()}", namespace=srt.namespace)
    out = srt.call(apps.options_and_actor, key="k", arg=job)
    assert out["a"] == {"x": 1, "task": "RaySteps/options_and_actor/plain", "cpus": 0.5}
    assert out["b"] == {"x": 2, "task": "RaySteps/options_and_actor/opts", "cpus": 0.25}
    assert out["c"] == [10.0, 20.0]
    ray.kill(model)


def test_a_worker_that_exits_is_retried_and_its_result_journaled_once(
    srt: Runtime, ledger, tmp_path
) -> None:
    job = apps.Job(ledger=ledger, marker=str(tmp_path / "exited"))
    handle = srt.send(apps.worker_exits, key="w", arg=job)
    assert handle.result(timeout=120) == "survived"
    assert Path(job.marker).exists(), "the worker never exited"
    assert ledger_lines(ledger) == ["try", "try", "done", "journaled:survived"]
    runs = [e for e in _journal(srt, handle.id) if e["entry_type"] == "run"]
    assert runs == [{"idx": 0, "entry_type": "run", "name": "exits", "result": '"survived"'}]


def test_a_host_killed_while_its_remote_step_runs_completes_the_invocation(
    srt: Runtime, ledger, tmp_path
) -> None:
    """The host dies while the step's task runs. Ray ends a task whose owner died, so the
    replay runs the step again: it started twice, finished once, is journaled once."""
    gate = tmp_path / "gate"
    handle = srt.send(apps.wait_gate, key="h", arg=apps.Job(ledger=ledger, gate=str(gate)))
    assert_eventually(
        lambda: "start" in ledger_lines(ledger), timeout=60, message="the step started"
    )
    kill_and_restart(host_of(srt, "RaySteps", "h"))
    assert_eventually(
        lambda: ledger_lines(ledger).count("start") == 2,
        timeout=120,
        message="the replay started the step again",
    )
    gate.touch()
    assert handle.result(timeout=120) == 42
    lines = ledger_lines(ledger)
    assert lines.count("body") == 2
    assert lines.count("start") == 2, "the step ran twice: once per host life"
    assert lines.count("done") == 1, "the first run's task ended with its owner"
    assert [e["name"] for e in _journal(srt, handle.id) if e["entry_type"] == "run"] == ["gated"]


def test_the_host_keeps_running_other_keys_while_a_remote_step_computes(
    srt: Runtime, ledger, tmp_path
) -> None:
    gate = tmp_path / "gate"
    slow = srt.send(apps.wait_gate, key="slow", arg=apps.Job(ledger=ledger, gate=str(gate)))
    assert_eventually(
        lambda: "start" in ledger_lines(ledger), timeout=60, message="the step started"
    )
    for i in range(5):  # pool_size=1: the same host
        assert srt.call(apps.quick, key=f"other-{i}", arg=apps.Job(ledger=ledger)) == "quick"
    assert "done" not in ledger_lines(ledger)
    gate.touch()
    assert slow.result(timeout=60) == 42


def _rss(pid: int) -> int:
    """A process's resident set size in bytes (Linux: /proc; the host runs on this node)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _rss_sampler(pid: int) -> tuple[threading.Event, list[int]]:
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(_rss(pid))
            stop.wait(0.01)

    threading.Thread(target=sample, daemon=True).start()
    return stop, samples


def test_a_200mb_durable_ref_flows_through_three_steps_outside_the_host(
    srt: Runtime, ledger, tmp_path
) -> None:
    srt.call(apps.quick, key="big", arg=apps.Job(ledger=ledger))  # the host is up and warm
    pid = host_pid(srt, "RaySteps", "big")
    before = _rss(pid)
    stop, samples = _rss_sampler(pid)
    handle = srt.send(apps.big_ref, key="big", arg=apps.Job(ledger=ledger, megabytes=200))
    try:
        assert handle.result(timeout=240) == 200 * MB // 8 * 3.0
    finally:
        stop.set()
    growth = max(samples) - before
    assert growth < 50 * MB, f"the host grew by {growth / MB:.0f} MB"
    refs = [e for e in _journal(srt, handle.id) if e["entry_type"] == "run"][:2]
    assert all('"$raystate":"ref"' in e["result"] and '"size":' in e["result"] for e in refs)
    assert len(apps.blobs_of(tmp_path / "data", handle.id)) == 2


def test_a_result_that_is_neither_json_nor_supported_is_terminal(srt: Runtime, ledger) -> None:
    with pytest.raises(TerminalError) as e:
        srt.call(apps.unsupported, key="u", arg=apps.Job(ledger=ledger))
    assert "'opaque'" in str(e.value) and "Opaque" in str(e.value)
    with pytest.raises(TerminalError) as e:
        srt.call(apps.object_array, key="u", arg=apps.Job(ledger=ledger))
    assert "'objects'" in str(e.value) and "numpy.ndarray" in str(e.value)


def test_blob_results_replay_verified_and_a_corrupted_blob_fails_clearly(
    srt: Runtime, ledger, tmp_path
) -> None:
    # a clean replay: the blob is read back and the inline array keeps its dtype
    job = apps.Job(ledger=ledger, megabytes=1, marker=str(tmp_path / "crashed"))
    out = srt.send(apps.blob_then_crash, key="ok", arg=job).result(timeout=120)
    assert Path(job.marker).exists()
    assert out == {"size": MB, "head": [0, 1, 2], "small": list(range(10)), "dtype": "int32"}
    assert ledger_lines(ledger).count("blob") == 1, "the blob step ran once"
    # a corrupted blob: the replay refuses it
    gate = tmp_path / "gate"
    job = apps.Job(ledger=ledger, megabytes=1, marker=str(tmp_path / "crashed2"), gate=str(gate))
    handle = srt.send(apps.blob_then_crash, key="bad", arg=job)
    blobs = assert_eventually(
        lambda: apps.blobs_of(tmp_path / "data", handle.id),
        timeout=60,
        message="the blob was written",
    )
    data = bytearray(blobs[0].read_bytes())
    data[100] ^= 0xFF
    blobs[0].write_bytes(bytes(data))
    gate.touch()
    with pytest.raises(TerminalError) as e:
        handle.result(timeout=120)
    assert "does not match its sha256" in str(e.value)
    assert ledger_lines(ledger).count("blob") == 2, "never run again to paper over it"


def test_an_unreachable_blob_store_backs_off_and_retries(start_runtime, ledger, tmp_path) -> None:
    store = tmp_path / "store"
    store.write_text("a file where the store's directory should be")
    rt = start_runtime([apps.ray_steps], pool_size=1, blob_store=str(store))
    handle = rt.send(apps.blob_store_down, key="d", arg=apps.Job(ledger=ledger))

    def backing_off() -> bool:
        rows = rt.sql(
            f"SELECT status, retry_count, last_failure FROM sys_invocation WHERE id = '{handle.id}'"
        ).to_pylist()
        return (
            bool(rows)
            and rows[0]["retry_count"] >= 2
            and "blob store" in (rows[0]["last_failure"] or "")
        )

    assert_eventually(backing_off, timeout=120, interval=0.2, message="the invocation backed off")
    store.unlink()  # the store is back
    assert handle.result(timeout=120) == MB
    assert list(store.rglob("*.bytes"))


def test_a_replay_adopts_the_result_a_step_wrote_before_its_host_died(
    srt: Runtime, ledger, tmp_path
) -> None:
    """What a remote worker leaves when its host dies after the worker wrote the result and
    before the journal held it: a blob under the invocation and the step's journal index.
    Planted here (the window is too short to hit with a kill), the replay adopts it instead of
    running the step."""
    from actors.steps.blobs import BlobStore
    from actors.steps.codec import encode

    gate = tmp_path / "gate"
    job = apps.Job(ledger=ledger, gate=str(gate), marker=str(tmp_path / "crashed"))
    handle = srt.send(apps.adopts, key="a", arg=job)
    assert_eventually(lambda: "body" in ledger_lines(ledger), timeout=60, message="started")
    written = encode(np.full(1000, 2.0), "make")
    BlobStore(tmp_path / "data" / "blobs").put(handle.id, 0, written.payload, written.kind)
    gate.touch()
    assert handle.result(timeout=120) == 2000.0
    assert Path(job.marker).exists()
    assert "make" not in ledger_lines(ledger), "the step was adopted, not run"


def test_retention_deletes_blobs_with_their_invocation(start_runtime, ledger, tmp_path) -> None:
    rt = start_runtime([apps.ray_steps], pool_size=1, retention=timedelta(seconds=1))
    handle = rt.send(apps.blob_then_crash, key="r", arg=apps.Job(ledger=ledger))
    assert handle.result(timeout=120)["size"] == MB
    assert apps.blobs_of(tmp_path / "data", handle.id)
    assert_eventually(
        lambda: not apps.blobs_of(tmp_path / "data", handle.id),
        timeout=120,
        message="the blobs were deleted with the invocation",
    )
    assert rt.sql(
        f"SELECT count(*) AS n FROM sys_journal WHERE invocation_id = '{handle.id}'"
    ).to_pylist() == [{"n": 0}]


def test_an_invocation_with_a_remote_step_shows_on_rays_metrics_endpoint(
    srt: Runtime, ledger
) -> None:
    url = metrics_test._endpoint()
    model = apps.Model.options(name=f"model-m{os.getpid()}", namespace=srt.namespace).remote()
    job = apps.Job(ledger=ledger, actor=f"model-m{os.getpid()}", namespace=srt.namespace)
    for i in range(3):
        srt.call(apps.options_and_actor, key=f"m{i}", arg=job)
    ray.kill(model)

    def seen():
        s = metrics_test._series(url)
        done = metrics_test._value(
            s,
            "ray_raystate_invocations_total",
            service="RaySteps",
            handler="options_and_actor",
            status="succeeded",
        )
        return s if done is not None and done >= 3 else None

    s = assert_eventually(seen, timeout=60, interval=0.5, message="raystate_ series")
    steps = metrics_test._value(
        s,
        "ray_raystate_step_latency_seconds_count",
        service="RaySteps",
        handler="options_and_actor",
        kind="remote",
    )
    assert steps is not None and steps >= 9  # three remote steps per invocation
    assert (
        metrics_test._value(s, "ray_raystate_attempt_latency_seconds_count", service="RaySteps")
        or 0
    ) >= 3
    assert (metrics_test._value(s, "ray_raystate_journal_commit_batch_size_count") or 0) >= 1
    assert metrics_test._value(s, "ray_raystate_queued_invocations") is not None


def test_killing_an_invocation_cancels_its_running_remote_step(srt: Runtime, ledger) -> None:
    handle = srt.send(apps.long_step, key="kill", arg=apps.Job(ledger=ledger))
    assert_eventually(
        lambda: "start" in ledger_lines(ledger), timeout=60, message="the step started"
    )
    srt.kill(handle.id)
    with pytest.raises(TerminalError, match="killed"):
        handle.result(timeout=60)
    assert_eventually(
        lambda: "cancelled" in ledger_lines(ledger),
        timeout=60,
        message="the step's task was cancelled",
    )
