"""Steps run as Ray tasks and actor methods (actors.steps.remote), against the session's Ray.

These call ``run_remote`` directly, as ``ctx.run`` will: the engine's journaling is tested
where it is wired in. Side effects are counted in ledger files outside Ray's processes.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
import ray

from actors.sdk.errors import TerminalError
from actors.steps import results
from actors.steps.blobs import BlobCorrupted, BlobStore
from actors.steps.refs import DurableRef
from actors.steps.remote import (
    RemoteStepError,
    StepSpec,
    adopt,
    is_remote,
    run_remote,
    submit,
)
from tests.conftest import assert_eventually, ledger_lines

np = pytest.importorskip("numpy")

MB = 1 << 20


@ray.remote(num_cpus=1)
def where(x: int) -> dict[str, Any]:
    ctx = ray.get_runtime_context()
    return {"x": x, "task": ctx.get_task_name(), "cpus": ctx.get_assigned_resources().get("CPU")}


@ray.remote(num_cpus=0.5, runtime_env={"env_vars": {"STEP_ENV": "decorator"}})
def env() -> str | None:
    return os.environ.get("STEP_ENV")


@ray.remote(num_cpus=0.5)
def fail(kind: str, ledger: str) -> None:
    with open(ledger, "a") as f:
        f.write(f"{kind}\n")
    if kind == "terminal":
        raise TerminalError("no such customer", 404)
    raise ValueError("flaky")


@ray.remote(num_cpus=0.5)
def crash_once(marker: str, ledger: str) -> str:
    with open(ledger, "a") as f:
        f.write("try\n")
    if not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)
    return "survived"


@ray.remote(num_cpus=0.5)
def make_array(megabytes: int) -> Any:
    return np.full(megabytes * MB // 8, 1.5)


@ray.remote(num_cpus=0.5)
def double(arr: Any) -> Any:
    return arr * 2


@ray.remote(num_cpus=0.5)
def total(arr: Any) -> float:
    return float(arr.sum())


@ray.remote(num_cpus=0)
class Model:
    def predict(self, x: Any) -> Any:
        if isinstance(x, str):
            raise TerminalError(f"bad input {x}", 400)
        return (np.asarray(x) * 10).tolist()

    def size(self, arr: Any) -> int:
        return int(arr.size)


def _spec(tmp_path: Path, step: str, idx: int = 0, **kw: Any) -> StepSpec:
    return StepSpec(
        "Svc", "handle", step, f"inv-{tmp_path.name}", idx, store_uri=str(tmp_path / "blobs"), **kw
    )


def _run(fn: Any, *args: Any, spec: StepSpec, **kwargs: Any) -> Any:
    return asyncio.run(run_remote(fn, args, kwargs, spec))


def _host_step(fn: Any, *args: Any, spec: StepSpec, **kwargs: Any) -> tuple[Any, str]:
    """What ``ctx.run`` does with a remote step: run it, then make its journal text."""
    out = _run(fn, *args, spec=spec, **kwargs)
    store = BlobStore(spec.store_uri)
    text = out.journal_text() or asyncio.run(
        results.save(
            out.value,
            step=spec.step,
            store=store,
            invocation_id=spec.invocation_id,
            idx=spec.idx,
            inline_limit=spec.inline_limit,
        )
    )
    return out.value, text


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_remote_functions_run_with_their_options_under_a_step_name(ray_session, tmp_path) -> None:
    assert is_remote(where) and is_remote(where.options(num_cpus=0.5))
    assert not is_remote(lambda: 1) and not is_remote(_run)
    out = _run(where, 3, spec=_spec(tmp_path, "locate"))
    assert out.value == {"x": 3, "task": "Svc/handle/locate", "cpus": 1.0}
    assert out.blob is None and out.journal_text() is None
    out = _run(where.options(num_cpus=0.5), x=4, spec=_spec(tmp_path, "half"))
    assert out.value == {"x": 4, "task": "Svc/handle/half", "cpus": 0.5}
    assert _run(env, spec=_spec(tmp_path, "env")).value == "decorator"
    per_call = env.options(
        runtime_env={"env_vars": {"STEP_ENV": "options"}}, scheduling_strategy="SPREAD"
    )
    assert _run(per_call, spec=_spec(tmp_path, "env")).value == "options"


def test_an_actor_method_runs_on_its_actor(ray_session, tmp_path) -> None:
    model = Model.remote()
    assert is_remote(model.predict)
    assert _run(model.predict, [1, 2], spec=_spec(tmp_path, "predict")).value == [10, 20]
    with pytest.raises(TerminalError) as e:
        _run(model.predict, "x", spec=_spec(tmp_path, "predict"))
    assert type(e.value) is TerminalError and e.value.status_code == 400
    ray.kill(model)  # asynchronous: wait until calls meet a dead actor, then step through it

    def dead() -> bool:
        try:
            ray.get(model.predict.remote([1]), timeout=30)
        except ray.exceptions.RayActorError:
            return True
        return False

    assert_eventually(dead, timeout=60, message="the killed actor refuses calls")
    with pytest.raises(RemoteStepError):
        _run(model.predict, [1], spec=_spec(tmp_path, "predict"))


def test_terminal_errors_come_back_as_data_and_others_retry(ray_session, tmp_path) -> None:
    ledger = str(tmp_path / "ledger")
    with pytest.raises(TerminalError) as e:
        _run(fail, "terminal", ledger, spec=_spec(tmp_path, "lookup"))
    assert type(e.value) is TerminalError
    assert (e.value.message, e.value.status_code) == ("no such customer", 404)
    with pytest.raises(RemoteStepError) as r:
        _run(fail, "value", ledger, spec=_spec(tmp_path, "lookup"))
    assert "ValueError" in r.value.reason and "flaky" in r.value.reason
    assert ledger_lines(ledger) == ["terminal", "value"]  # Ray did not retry either


def test_a_worker_that_dies_is_retried_and_its_result_returned_once(ray_session, tmp_path) -> None:
    ledger, marker = str(tmp_path / "ledger"), str(tmp_path / "crashed")
    out = _run(crash_once, marker, ledger, spec=_spec(tmp_path, "flaky"))
    assert out.value == "survived"
    assert Path(marker).exists() and ledger_lines(ledger) == ["try", "try"]
    # without Ray's own retries the death surfaces as retryable, and a retry succeeds
    os.remove(marker)
    once = crash_once.options(max_retries=0)
    with pytest.raises(RemoteStepError, match="WorkerCrashedError"):
        _run(once, marker, ledger, spec=_spec(tmp_path, "flaky"))
    assert _run(once, marker, ledger, spec=_spec(tmp_path, "flaky")).value == "survived"
    assert ledger_lines(ledger) == ["try"] * 4


def test_large_results_are_written_by_the_worker(ray_session, tmp_path) -> None:
    spec = _spec(tmp_path, "arr", idx=5, inline_limit=64 * 1024)
    out = _run(make_array, 1, spec=spec)
    assert out.value.shape == (MB // 8,) and out.blob is not None and out.blob.size > MB
    doc = json.loads(out.journal_text())
    assert doc["$raystate"] == "blob" and doc["uri"] == out.blob.uri
    back = asyncio.run(results.load(out.journal_text(), BlobStore(spec.store_uri)))
    assert np.array_equal(back, out.value)
    adopted = asyncio.run(adopt(spec))  # what a replay after the host's death finds
    assert adopted.blob == out.blob and np.array_equal(adopted.value, out.value)
    assert asyncio.run(adopt(_spec(tmp_path, "arr", idx=6))) is None


def test_a_durable_result_never_comes_back_to_the_host(ray_session, tmp_path) -> None:
    spec = _spec(tmp_path, "load", idx=1, durable_ref=True)
    raw = ray.get(submit(make_array, (1,), {}, spec))  # what the host receives from Ray
    assert raw.value is None and raw.blob is not None and raw.blob.size > MB
    adopted = asyncio.run(adopt(spec))
    assert adopted.value == DurableRef(raw.blob, spec.store_uri)
    assert json.loads(adopted.journal_text())["$raystate"] == "ref"


def test_a_durable_ref_flows_through_steps_without_passing_the_host(ray_session, tmp_path) -> None:
    size_mb = 100
    rss_before = _rss()
    ref, text = _host_step(make_array, size_mb, spec=_spec(tmp_path, "load", 0, durable_ref=True))
    assert isinstance(ref, DurableRef) and ref.size > size_mb * MB
    assert json.loads(text)["$raystate"] == "ref" and len(text) < 1024
    doubled, text = _host_step(double, ref, spec=_spec(tmp_path, "double", 1, durable_ref=True))
    assert isinstance(doubled, DurableRef) and doubled.blob.sha256 != ref.blob.sha256
    assert len(text) < 1024
    total_value, text = _host_step(total, arr=doubled, spec=_spec(tmp_path, "sum", 2))
    assert total_value == size_mb * MB / 8 * 3 and json.loads(text) == total_value
    grown = _rss() - rss_before
    assert grown < 50 * MB, f"the driver's RSS grew by {grown / MB:.0f} MB"
    model = Model.remote()
    assert _run(model.size, ref, spec=_spec(tmp_path, "count", 3)).value == size_mb * MB // 8
    sized = _run(model.size, doubled, spec=_spec(tmp_path, "count", 4, durable_ref=True)).value
    assert asyncio.run(sized.get()) == size_mb * MB // 8


def test_a_corrupted_durable_ref_is_a_clear_failure(ray_session, tmp_path) -> None:
    ref = _run(make_array, 1, spec=_spec(tmp_path, "load", durable_ref=True)).value
    path = Path(ref.blob.uri.removeprefix("file://"))
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(TerminalError, match="sha256"):
        _run(total, ref, spec=_spec(tmp_path, "sum", 1))
    with pytest.raises(BlobCorrupted, match="sha256"):
        asyncio.run(ref.get())


def test_an_unreachable_blob_store_is_retryable(ray_session, tmp_path) -> None:
    (tmp_path / "file").write_text("not a directory")
    spec = StepSpec(
        "Svc", "handle", "load", "inv", 0, store_uri=str(tmp_path / "file" / "b"), durable_ref=True
    )
    with pytest.raises(RemoteStepError, match="BlobStoreUnavailable"):
        _run(make_array, 1, spec=spec)


def test_bad_uses_are_terminal(ray_session, tmp_path) -> None:
    with pytest.raises(TerminalError, match="blob store"):
        _run(where, 1, spec=StepSpec("S", "h", "s", "inv", 0, durable_ref=True))
    with pytest.raises(TerminalError, match="one value"):
        _run(where.options(num_returns=2), 1, spec=_spec(tmp_path, "two"))
