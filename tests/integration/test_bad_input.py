"""Bad input gets a clear error, and nothing is journaled or lost."""

from __future__ import annotations

import pytest

from actors import (
    DataDirError,
    Runtime,
    SqlRefused,
    TerminalError,
    Workflow,
    WorkflowSharedContext,
)
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
    from actors.serde import MAX_PAYLOAD_BYTES

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
    entries = rt.sql("SELECT j.entry_type FROM sys_journal j JOIN sys_invocation i "
                     "ON i.id = j.invocation_id WHERE i.target = 'Counter/sneaky/sneaky_set'")
    assert entries.column("entry_type").to_pylist() == []


def test_unserializable_run_result_is_terminal(shared_rt: Runtime) -> None:
    with pytest.raises(TerminalError, match="not JSON-serializable"):
        shared_rt.call(apps.unserializable, key="unserializable")
    assert shared_rt.sql("SELECT * FROM sys_journal WHERE name = 'obj'").num_rows == 0


def test_sql_writes_and_files_are_refused(shared_rt: Runtime) -> None:
    rt = shared_rt
    for query in ["DELETE FROM sys_invocation", "ATTACH 'x.db'", "COPY sys_invocation TO 'x'",
                  "SELECT 1; SELECT 2", "EXPLAIN ANALYZE DELETE FROM sys_journal"]:
        with pytest.raises(SqlRefused):
            rt.sql(query)
    with pytest.raises(SqlRefused, match=r"read_text\(\) is not allowed"):
        rt.sql("SELECT * FROM read_text('/etc/passwd')")


def test_data_dir_that_cannot_be_created(start_runtime, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    with pytest.raises(DataDirError, match="cannot create data dir"):
        start_runtime(data_dir=blocker / "data")


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
        Runtime.start([apps.counter, apps.counter, "Counter", headless], data_dir=tmp_path,
                      namespace="never-started")
    message = str(err.value)
    assert "service 'Counter' is given twice" in message
    assert "'Counter' is not a Service or VirtualObject" in message
    assert "workflow 'Headless' has no @main() handler" in message
    assert not (tmp_path / "journal.duckdb").exists()
