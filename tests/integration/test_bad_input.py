"""Bad input gets a clear error, and nothing is journaled or lost."""

from __future__ import annotations

import math

import pytest

from actors import (
    DataDirError,
    Runtime,
    SqlRefused,
    TerminalError,
    Workflow,
    WorkflowSharedContext,
)
from tests.conftest import assert_eventually, ledger_lines
from tests.integration import apps


def invocation_count(rt: Runtime, key: str) -> int:
    query = f"SELECT count(*) AS n FROM sys_invocation WHERE target_service_key = '{key}'"
    return rt.sql(query).column("n").to_pylist()[0]


@pytest.mark.parametrize("arg", ["abc", [1], {"x": 1}, None])
def test_wrong_argument_type_is_400_and_not_journaled(shared_rt: Runtime, arg) -> None:
    with pytest.raises(TerminalError) as err:
        shared_rt.call(apps.add, key="wrong-arg", arg=arg)
    assert err.value.status_code == 400
    assert "input of Counter/add" in err.value.message
    assert invocation_count(shared_rt, "wrong-arg") == 0


def test_oversize_payloads_are_413_and_not_journaled(shared_rt: Runtime) -> None:
    from actors.sdk.serde import MAX_PAYLOAD_BYTES

    big = "x" * (MAX_PAYLOAD_BYTES + 1)
    job = apps.Job(ledger="/dev/null", tag=big)
    with pytest.raises(TerminalError, match="the limit is") as err:
        shared_rt.call(apps.exclusive, key="oversize", arg=job)
    assert err.value.status_code == 413
    assert invocation_count(shared_rt, "oversize") == 0
    with pytest.raises(TerminalError, match="the limit is"):
        shared_rt.resolve_awakeable("awk_inv_x_0_00000000", big)


def test_unknown_targets_are_404(shared_rt: Runtime) -> None:
    with pytest.raises(TerminalError, match="unknown service 'Nope'") as err:
        shared_rt.call("Nope/add", key="unknown", arg=1)
    assert err.value.status_code == 404
    with pytest.raises(TerminalError, match="unknown handler 'Counter/nope'"):
        shared_rt.call("Counter/nope", key="unknown", arg=1)
    with pytest.raises(TerminalError, match="not a raystate handler"):
        shared_rt.call(print, key="unknown")
    assert invocation_count(shared_rt, "unknown") == 0


def test_key_rules(shared_rt: Runtime) -> None:
    with pytest.raises(TerminalError, match="pass key=<str>"):
        shared_rt.call(apps.add, arg=1)
    with pytest.raises(TerminalError, match="takes no key"):
        shared_rt.call(apps.three_steps, key="key-rules", arg=1)
    with pytest.raises(TerminalError, match="takes no input"):
        shared_rt.call(apps.get, key="key-rules", arg=5)
    assert invocation_count(shared_rt, "key-rules") == 0


def test_set_from_shared_handler_is_refused(shared_rt: Runtime) -> None:
    rt = shared_rt
    rt.call(apps.add, key="sneaky", arg=1)
    with pytest.raises(TerminalError, match="shared and may only read state"):
        rt.call(apps.sneaky_set, key="sneaky")
    assert rt.call(apps.get, key="sneaky") == 1
    entries = rt.sql(
        "SELECT j.entry_type FROM sys_journal j JOIN sys_invocation i "
        "ON i.id = j.invocation_id WHERE i.target = 'Counter/sneaky/sneaky_set'"
    )
    assert entries.column("entry_type").to_pylist() == []


def test_unserializable_run_result_is_terminal(shared_rt: Runtime) -> None:
    with pytest.raises(TerminalError, match="not JSON-serializable"):
        shared_rt.call(apps.unserializable, key="unserializable")
    assert shared_rt.sql("SELECT * FROM sys_journal WHERE name = 'obj'").num_rows == 0


def test_sql_writes_and_files_are_refused(shared_rt: Runtime) -> None:
    rt = shared_rt
    for query in [
        "DELETE FROM sys_invocation",
        "ATTACH 'x.db'",
        "COPY sys_invocation TO 'x'",
        "SELECT 1; SELECT 2",
        "EXPLAIN ANALYZE DELETE FROM sys_journal",
    ]:
        with pytest.raises(SqlRefused):
            rt.sql(query)
    with pytest.raises(SqlRefused, match=r"read_text\(\) is not allowed"):
        rt.sql("SELECT * FROM read_text('/etc/passwd')")


def test_data_dir_that_cannot_be_created(start_runtime, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    with pytest.raises(DataDirError, match="cannot create data dir"):
        start_runtime(data_dir=blocker / "data")


def test_the_journal_actor_hands_back_why_its_data_dir_is_unusable(ray_session, tmp_path) -> None:
    """The reason crosses Ray as data (``start_error``), not parsed out of a Ray error."""
    import ray

    from journal.actor import JournalActor

    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    actor = ray.remote(JournalActor).options(num_cpus=0).remote(str(blocker / "data"))
    try:
        reason = ray.get(actor.start_error.remote())
        assert reason is not None and reason.startswith("cannot create data dir")
        assert "\n" not in reason and "Traceback" not in reason
    finally:
        ray.kill(actor, no_restart=True)


def test_data_dir_in_use_by_another_runtime(shared_rt: Runtime, start_runtime) -> None:
    with pytest.raises(DataDirError, match="in use"):  # another namespace, the same data dir
        start_runtime(data_dir=shared_rt.data_dir)
    assert shared_rt.call(apps.add, key="still-fine", arg=1) == 1


def test_a_bad_service_list_is_refused_before_anything_starts(ray_session, tmp_path) -> None:
    headless = Workflow("Headless")

    @headless.handler()
    async def peek(ctx: WorkflowSharedContext) -> None:
        return None

    with pytest.raises(ValueError) as err:
        Runtime.start(
            [apps.counter, apps.counter, "Counter", headless],
            data_dir=tmp_path,
            namespace="never-started",
        )
    message = str(err.value)
    assert "service 'Counter' is given twice" in message
    assert "'Counter' is not a Service or VirtualObject" in message
    assert "workflow 'Headless' has no @main() handler" in message
    assert not (tmp_path / "journal.duckdb").exists()


def total_invocations(rt: Runtime) -> int:
    return rt.sql("SELECT count(*) AS n FROM sys_invocation").column("n").to_pylist()[0]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_400_and_not_journaled(shared_rt: Runtime, bad: float) -> None:
    rt = shared_rt
    before = total_invocations(rt)
    for target, key, arg in [
        (apps.stamp, "nan", apps.Nap(ledger="/dev/null", seconds=bad)),  # a float field
        (apps.remember, "nan", {"values": [1.0, bad]}),  # untyped JSON
        (apps.remember, "nan", bad),
    ]:
        with pytest.raises(TerminalError, match="NaN and Infinity") as err:
            rt.call(target, key=key, arg=arg)
        assert err.value.status_code == 400
        with pytest.raises(TerminalError, match="NaN and Infinity"):
            rt.send(target, key=key, arg=arg)
    awk_id = "awk_inv_00000000000000000000000000000000_1_0000000000000000"
    with pytest.raises(TerminalError, match="NaN and Infinity") as err:
        rt.resolve_awakeable(awk_id, {"score": bad})
    assert err.value.status_code == 400
    assert total_invocations(rt) == before, "nothing was journaled"
    assert rt.call(apps.remember, key="nan", arg=[1.5, None]) == [1.5, None]


def test_keys_that_are_not_text_are_400_and_not_journaled(shared_rt: Runtime) -> None:
    rt = shared_rt
    before = total_invocations(rt)
    with pytest.raises(TerminalError, match="is not valid text") as err:
        rt.call(apps.add, key="lone-\ud800", arg=1)
    assert err.value.status_code == 400
    with pytest.raises(TerminalError, match="is not valid text"):
        rt.send(apps.add, key="k", arg=1, idempotency_key="\udfff")
    assert total_invocations(rt) == before, "nothing was journaled"


@pytest.mark.parametrize("suffix", ["_00_", "_\u0660_", "_²_", "_" + "9" * 4301 + "_"])
def test_non_canonical_awakeable_ids_are_400(shared_rt: Runtime, suffix: str) -> None:
    """One canonical form: another spelling of an index never names the same awakeable, and
    nothing raises a raw ValueError (inside a handler that would be retried forever)."""
    rt = shared_rt
    key = f"bad-awk-{sum(map(ord, suffix))}"
    bad = f"awk_inv_0123456789abcdef0123456789abcdef{suffix}0123456789abcdef"
    with pytest.raises(TerminalError, match="malformed awakeable id") as err:
        rt.resolve_awakeable(bad, "x")
    assert err.value.status_code == 400
    with pytest.raises(TerminalError, match="malformed awakeable id") as err:
        rt.call(apps.approve, key=key, arg=bad)  # from inside a handler
    assert err.value.status_code == 400
    [row] = rt.sql(
        f"SELECT retry_count FROM sys_invocation WHERE target_service_key = '{key}'"
    ).to_pylist()
    assert row["retry_count"] == 0, "a bad id fails for good, at once"


def test_an_output_that_does_not_match_its_annotation_is_a_recorded_500(shared_rt: Runtime) -> None:
    rt = shared_rt
    with pytest.raises(TerminalError) as err:
        rt.call(apps.wrong_output, key="wrong-output")
    assert err.value.status_code == 500
    assert (
        "the output of Steps/wrong_output does not match its return annotation int"
        in err.value.message
    )
    [row] = rt.sql(
        "SELECT status, completion_result, completion_failure FROM sys_invocation "
        "WHERE target = 'Steps/wrong-output/wrong_output'"
    ).to_pylist()
    assert (row["status"], row["completion_result"]) == ("completed", "failure")
    assert "Steps/wrong_output" in row["completion_failure"]


def test_another_spelling_of_a_real_awakeable_id_is_400(shared_rt: Runtime, tmp_path) -> None:
    """``_00_`` or Arabic-Indic digits with a valid check once named the same awakeable."""
    rt, ledger = shared_rt, str(tmp_path / "ledger")
    h = rt.send(apps.await_approval, key="spelling", arg=apps.Wait(ledger=ledger))
    awk = assert_eventually(
        lambda: next(
            (
                line.split(":", 2)[2]
                for line in ledger_lines(ledger)
                if line.startswith("awk:spelling:")
            ),
            None,
        )
    )
    head, idx, check = awk.rsplit("_", 2)
    arabic = "".join(chr(0x0660 + int(d)) for d in idx)
    for other in [f"{head}_0{idx}_{check}", f"{head}_{arabic}_{check}"]:
        with pytest.raises(TerminalError, match="malformed awakeable id") as err:
            rt.resolve_awakeable(other, "wrong")
        assert err.value.status_code == 400
    rt.resolve_awakeable(awk, "right")
    assert h.result(timeout=30) == "right"
