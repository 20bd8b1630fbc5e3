"""The ``raystate`` command line, run in-process with typer's CliRunner: against a live runtime
(found through the session's Ray), against a stopped runtime's data dir (``--db``), and with
nothing to read from."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from actors import Context, RetryPolicy, Runtime, Service
from actors.client.cli import app, invocations_query, sql_literal
from journal.store import DB_FILE
from tests.conftest import assert_eventually
from tests.integration import apps

runner = CliRunner()
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

cli_buggy = Service("CliBuggy")


@cli_buggy.handler(
    retry_policy=RetryPolicy(
        initial_interval=timedelta(milliseconds=200), max_interval=timedelta(seconds=1)
    )
)
async def broken(ctx: Context) -> None:
    """A bug: retried for ever, with a long failure of several lines."""
    raise ValueError("bad state " + "x" * 200 + "\nsecond line")


def cli(*args: str, code: int = 0):
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (
        result.exit_code,
        result.stdout,
        result.stderr,
        result.exception,
    )
    return result


def json_rows(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def only_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def invocation_id(rt: Runtime, where: str) -> str:
    return rt.sql(f"SELECT id FROM sys_invocation WHERE {where}").column("id")[0].as_py()


# -- query building ---------------------------------------------------------------------------


def test_literals_are_quoted() -> None:
    assert sql_literal("it's") == "'it''s'"
    query = invocations_query(status="completed", service="Counter", key="x' OR '1'='1", limit=3)
    assert "target_service_key = 'x'' OR ''1''=''1'" in query
    assert query.endswith("LIMIT 3")
    assert duckdb.extract_statements(query)[0].type == duckdb.StatementType.SELECT


# -- a live runtime -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(ray_session, tmp_path_factory) -> Iterator[tuple[Runtime, list[str]]]:
    """One runtime for the read-only tests of this module (each start costs seconds)."""
    data = tmp_path_factory.mktemp("live")
    rt = Runtime.start([*apps.ALL, cli_buggy], data_dir=data, namespace=f"cli-{os.getpid()}")
    try:
        rt.call(apps.add, key="alice", arg=2)
        rt.call(apps.add, key="alice", arg=3)
        rt.call(apps.add, key="o'brien", arg=7)
        assert rt.call(apps.three_steps, arg=4) == 9
        rt.call(apps.nap, key="cli", arg=apps.Nap(ledger=str(data / "naps"), seconds=0.05))
        h = rt.send(broken)
        assert_eventually(
            lambda: (
                rt.sql(f"SELECT last_failure FROM sys_invocation WHERE id = '{h.id}'")
                .column(0)[0]
                .as_py()
            ),
            message="the bug's first failure is journaled",
        )
        yield rt, ["--namespace", rt.namespace]
    finally:
        rt.shutdown()


def test_sql_formats(live) -> None:
    _, ns = live
    query = (
        "SELECT target, status FROM sys_invocation"
        " WHERE target_service_name IN ('Counter', 'Pipeline') ORDER BY target, id"
    )
    expected = [
        {"target": "Counter/alice/add", "status": "completed"},
        {"target": "Counter/alice/add", "status": "completed"},
        {"target": "Counter/o'brien/add", "status": "completed"},
        {"target": "Pipeline/three_steps", "status": "completed"},
    ]
    assert json_rows(cli("sql", query, "--format", "json", *ns).stdout) == expected
    assert list(csv.DictReader(io.StringIO(cli("sql", query, "-f", "csv", *ns).stdout))) == expected
    table = cli("sql", query, *ns).stdout
    assert "Pipeline/three_steps" in table and "Counter/o'brien/add" in table


def test_invocations_filters(live) -> None:
    _, ns = live
    rows = json_rows(cli("invocations", "-f", "json", *ns).stdout)
    assert len(rows) == 6 and rows[0]["target"] == "CliBuggy/broken"  # unfinished first
    assert {r["status"] for r in rows[1:]} == {"completed"}
    assert [
        r["target"]
        for r in json_rows(
            cli("invocations", "--service", "Counter", "--key", "o'brien", "-f", "json", *ns).stdout
        )
    ] == ["Counter/o'brien/add"]
    assert (
        len(
            json_rows(
                cli(
                    "invocations",
                    "--service",
                    "Counter",
                    "--status",
                    "completed",
                    "--limit",
                    "2",
                    "-f",
                    "json",
                    *ns,
                ).stdout
            )
        )
        == 2
    )
    assert json_rows(cli("invocations", "--key", "x' OR '1'='1", "-f", "json", *ns).stdout) == []
    assert json_rows(cli("invocations", "--status", "suspended", "-f", "json", *ns).stdout) == []
    assert "Pipeline/three_steps" in cli("invocations", *ns).stdout


def test_describe_timeline(live) -> None:
    rt, ns = live
    inv = invocation_id(rt, "target_service_name = 'Pipeline'")
    doc = json.loads(cli("describe", inv, "-f", "json", *ns).stdout)
    assert doc["invocation"]["id"] == inv
    assert doc["invocation"]["output"] == 9 and doc["invocation"]["input"] == 4
    assert [(e["index"], e["name"], e["completed"]) for e in doc["journal"]] == [
        (0, "one", True),
        (1, "two", True),
        (2, "three", True),
    ]
    assert [e["result"] for e in doc["journal"]] == [5, 10, 9]
    assert all(e["at_ms"] >= 0 for e in doc["journal"])
    table = cli("describe", inv, *ns).stdout
    assert inv in table and "journal (3 entries)" in table and "three" in table
    sections = cli("describe", inv, "-f", "csv", *ns).stdout.split("\n\n")
    assert len(sections) == 2
    assert [r["name"] for r in csv.DictReader(io.StringIO(sections[1]))] == ["one", "two", "three"]


def test_state(live) -> None:
    _, ns = live
    assert json_rows(cli("state", "Counter", "alice", "-f", "json", *ns).stdout) == [
        {"key": "count", "value": 5}
    ]
    assert json_rows(cli("state", "Counter", "o'brien", "-f", "json", *ns).stdout) == [
        {"key": "count", "value": 7}
    ]
    nobody = cli("state", "Counter", "nobody", "-f", "json", *ns, code=1)
    assert only_line(nobody.stderr) == "raystate: Counter has no state for key 'nobody'"
    assert nobody.stdout == ""
    unknown = only_line(cli("state", "Nope", "nokey", *ns, code=1).stderr)
    assert unknown.startswith("raystate: unknown service 'Nope'") and "Counter" in unknown


def test_bad_sql_write_and_unknown_id(live) -> None:
    _, ns = live
    bad = cli("sql", "SELEC nonsense", *ns, code=1)
    assert "query failed" in only_line(bad.stderr) and bad.stdout == ""
    missing = cli("sql", "SELECT nope FROM sys_invocation", *ns, code=1)
    assert "nope" in only_line(missing.stderr)
    write = cli("sql", "DELETE FROM journal", *ns, code=1)
    assert "read-only" in only_line(write.stderr)
    files = cli("sql", "SELECT * FROM read_csv('/etc/passwd')", *ns, code=1)
    assert "read_csv() is not allowed" in only_line(files.stderr)
    unknown = cli("describe", "inv_doesnotexist", *ns, code=1)
    assert only_line(unknown.stderr) == "raystate: unknown invocation 'inv_doesnotexist'"


def test_resolve_reject_cancel_kill(live, tmp_path) -> None:
    rt, ns = live
    ledger = str(tmp_path / "ledger")
    waiting = [
        rt.send(apps.await_approval, key=k, arg=apps.Wait(ledger=ledger))
        for k in ("cli-yes", "cli-no")
    ]

    def awakeables() -> dict[str, str]:
        lines = Path(ledger).read_text().splitlines() if Path(ledger).exists() else []
        return {
            line.split(":")[1]: line.split(":", 2)[2] for line in lines if line.startswith("awk:")
        }

    awk = assert_eventually(lambda: len(awakeables()) == 2 and awakeables())
    assert cli("resolve", awk["cli-yes"], '"yes"', *ns).stdout.strip().endswith("resolved")
    assert waiting[0].result(timeout=30) == "yes"
    again = cli("resolve", awk["cli-yes"], '"again"', *ns, code=1)
    assert "already completed" in only_line(again.stderr)
    not_json = cli("resolve", awk["cli-no"], "yes", *ns, code=1)
    assert "not JSON" in only_line(not_json.stderr)
    cli("reject", awk["cli-no"], "declined", *ns)
    assert waiting[1].result(timeout=30) == "rejected:declined"
    malformed = cli("reject", "awk_nope", "x", *ns, code=1)
    assert "malformed awakeable id" in only_line(malformed.stderr)

    holders = [rt.send(apps.hold, key=k, arg=apps.Nest(ledger=ledger)) for k in ("c1", "c2")]
    assert_eventually(
        lambda: {"enter:hold:c1", "enter:hold:c2"} <= set(Path(ledger).read_text().splitlines())
    )
    assert cli("cancel", holders[0].id, *ns).stdout.strip() == f"{holders[0].id}: cancelled"
    assert cli("kill", holders[1].id, *ns).stdout.strip() == f"{holders[1].id}: killed"
    for h, failure in zip(holders, ["cancelled", "killed"], strict=True):
        with pytest.raises(Exception, match=failure):
            h.result(timeout=30)
    for command in ("cancel", "kill"):
        unknown = cli(command, "inv_doesnotexist", *ns, code=1)
        assert only_line(unknown.stderr) == "raystate: unknown invocation 'inv_doesnotexist'"


def test_invocations_reads_well(live) -> None:
    rt, ns = live
    bug = invocation_id(rt, "target_service_name = 'CliBuggy'")
    table = cli("invocations", *ns).stdout
    assert "last_failure" in table and "ValueError: bad state xxx" in table
    assert "second line" not in table and "x" * 100 not in table  # shortened
    rows = json_rows(cli("invocations", "-f", "json", *ns).stdout)
    assert rows[0]["id"] == bug and rows[0]["last_failure"].endswith("second line")  # all of it
    assert all(TIMESTAMP.match(r["created_at"]) and TIMESTAMP.match(r["modified_at"]) for r in rows)
    assert isinstance(rows[0]["retry_count"], int)

    total = rt.sql("SELECT count(*) FROM sys_invocation").column(0)[0].as_py()
    limited = cli("invocations", "-n", "2", "-f", "json", *ns)
    assert len(json_rows(limited.stdout)) == 2
    assert (
        only_line(limited.stderr)
        == f"({total - 2} more not shown: --limit {total} or --all shows them)"
    )
    everything = cli("invocations", "--all", "-n", "2", "-f", "json", *ns)
    assert len(json_rows(everything.stdout)) == total and everything.stderr == ""

    bogus = cli("invocations", "--status", "bogus", *ns, code=2)
    assert "'bogus' is not one of" in bogus.stderr
    assert all(s in bogus.stderr for s in ("'pending'", "'backing-off'", "'completed'"))


def test_ids_do_not_wrap_in_a_narrow_terminal(live) -> None:
    from rich.console import Console

    from actors.client.tables import rich_table

    rt, _ = live
    table = rt.sql(invocations_query())
    out = io.StringIO()
    Console(file=out, width=80).print(rich_table(table, widths={"last_failure": 60}))
    text = out.getvalue()
    assert all(i in text for i in table.column("id").to_pylist()), text


def test_partitions_of_a_one_partition_runtime(live) -> None:
    rt, ns = live
    total = rt.sql("SELECT count(*) FROM sys_invocation").column(0)[0].as_py()
    [row] = json_rows(cli("partitions", "-f", "json", *ns).stdout)
    assert (row["partition"], row["journal"], row["epoch"]) == (0, "journal", None)
    assert row["invocations"] == total and row["pid"] > 0 and row["node"]


def test_json_is_json_and_numbers_are_numbers(live) -> None:
    rt, ns = live
    total = rt.sql("SELECT count(*) FROM sys_invocation").column(0)[0].as_py()
    rows = json_rows(
        cli(
            "sql",
            "SELECT sum(retry_count) AS retries, count(*) AS n,"
            " max(created_at) AS newest FROM sys_invocation",
            "-f",
            "json",
            *ns,
        ).stdout
    )
    assert isinstance(rows[0]["retries"], int) and rows[0]["n"] == total
    assert TIMESTAMP.match(rows[0]["newest"])
    state = json_rows(
        cli(
            "sql",
            "SELECT value, 'not json' AS name FROM state WHERE service_key = 'alice'",
            "-f",
            "json",
            *ns,
        ).stdout
    )
    assert state == [{"value": 5, "name": "not json"}]
    csv_rows = list(
        csv.DictReader(io.StringIO(cli("state", "Counter", "alice", "-f", "csv", *ns).stdout))
    )
    assert csv_rows == [{"key": "count", "value": "5"}]  # CSV keeps the JSON text


def test_describe_shows_a_sleep_as_a_time(live) -> None:
    rt, ns = live
    inv = invocation_id(rt, "target_service_name = 'Sleeper'")
    doc = json.loads(cli("describe", inv, "-f", "json", *ns).stdout)
    sleeps = [e for e in doc["journal"] if e["entry_type"] == "sleep"]
    assert len(sleeps) == 1 and TIMESTAMP.match(sleeps[0]["result"])
    assert sleeps[0]["result"] >= sleeps[0]["created_at"]
    assert doc["invocation"]["input"]["seconds"] == 0.05
    assert sleeps[0]["result"][:4] in cli("describe", inv, *ns).stdout


@pytest.mark.parametrize(
    "command", [[], ["invocations"], ["describe"], ["state"], ["sql"], ["resolve"], ["partitions"]]
)
def test_help_shows_no_placeholders(command: list[str]) -> None:
    text = cli(*command, "--help").stdout
    assert "<bool>" not in text and "{" not in text and "<str>" not in text, text


def test_a_shell_command_attaches_and_leaves(live, tmp_path) -> None:
    """As a shell runs it: the process attaches to Ray, prints, and ends with its exit code
    (without waiting in Ray's exit hook)."""
    import ray

    rt, ns = live
    where = ["--address", ray.get_runtime_context().gcs_address, *ns]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "actors.client.cli", *args, *where],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )

    listed = run("invocations", "--all", "-f", "json")
    assert listed.returncode == 0, listed
    assert (
        len(json_rows(listed.stdout))
        == rt.sql("SELECT count(*) FROM sys_invocation").column(0)[0].as_py()
    )
    unknown = run("state", "Nope", "nokey")
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert only_line(unknown.stderr).startswith("raystate: unknown service 'Nope'")


def test_db_of_a_running_runtime_is_refused(live) -> None:
    rt, _ = live
    result = cli("sql", "SELECT 1", "--db", rt.data_dir, code=2)
    assert "in use by a running runtime" in only_line(result.stderr)


# -- a stopped runtime's data dir ---------------------------------------------------------------


def _opens_read_only(path: Path) -> bool:
    try:
        duckdb.connect(str(path), read_only=True).close()
    except duckdb.IOException:
        return False
    return True


def test_offline_db(start_runtime, tmp_path) -> None:
    data = tmp_path / "offline"
    rt = start_runtime(data_dir=data)
    rt.call(apps.add, key="bob", arg=4)
    rt.call(apps.add, key="bob", arg=1)
    assert rt.call(apps.three_steps, arg=1) == 3
    inv = invocation_id(rt, "target_service_name = 'Pipeline'")
    rt.shutdown()
    assert_eventually(
        lambda: _opens_read_only(data / DB_FILE),
        timeout=60,
        message="the journal actor released the DuckDB file",
    )

    db = ["--db", str(data)]
    rows = json_rows(
        cli(
            "sql",
            "SELECT target, output FROM sys_invocation ORDER BY created_at, id",
            "-f",
            "json",
            *db,
        ).stdout
    )
    assert rows == [
        {"target": "Counter/bob/add", "output": 4},
        {"target": "Counter/bob/add", "output": 5},
        {"target": "Pipeline/three_steps", "output": 3},
    ]
    assert (
        len(
            list(
                csv.DictReader(
                    io.StringIO(cli("invocations", "--service", "Counter", "-f", "csv", *db).stdout)
                )
            )
        )
        == 2
    )
    doc = json.loads(cli("describe", inv, "-f", "json", *db).stdout)
    assert [e["name"] for e in doc["journal"]] == ["one", "two", "three"]
    assert json_rows(cli("state", "Counter", "bob", "-f", "json", *db).stdout) == [
        {"key": "count", "value": 5}
    ]
    assert "Counter/bob/add" in cli("invocations", *db).stdout

    assert "query failed" in only_line(cli("sql", "SELEC 1", *db, code=1).stderr)
    assert "read-only" in only_line(cli("sql", "DROP VIEW state", *db, code=1).stderr)
    files = cli("sql", "SELECT * FROM glob('/*')", *db, code=1)
    assert "glob() is not allowed" in only_line(files.stderr)
    assert "unknown invocation" in only_line(cli("describe", "inv_' OR 1=1 --", *db, code=1).stderr)
    from_stdin = runner.invoke(
        app,
        ["sql", "-", "-f", "json", "--db", str(data / DB_FILE)],
        input="SELECT count(*) AS n FROM sys_invocation",
    )
    assert from_stdin.exit_code == 0 and json_rows(from_stdin.stdout) == [{"n": 3}]
    # the refused write really did nothing
    assert cli("state", "Counter", "bob", "-f", "json", *db).stdout.strip()
    for command in (
        ["cancel", inv],
        ["kill", inv],
        ["resolve", "awk_x", "1"],
        ["reject", "awk_x", "no"],
    ):
        refused = cli(*command, *db, code=2)
        assert "acts on a running runtime" in only_line(refused.stderr)


# -- nothing to read from ---------------------------------------------------------------------


def test_nothing_reachable(ray_session, tmp_path) -> None:
    result = cli("invocations", "--namespace", "no-runtime-here", code=2)
    assert "no raystate runtime runs in namespace 'no-runtime-here'" in only_line(result.stderr)
    result = cli("sql", "SELECT 1", "--db", str(tmp_path / "empty"), code=2)
    assert "no raystate journal" in only_line(result.stderr)


def test_nothing_reachable_from_a_shell(tmp_path) -> None:
    """A fresh process (no Ray yet) pointed at an address nobody listens on exits at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "actors.client.cli",
            "sql",
            "SELECT 1",
            "--address",
            f"127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc
    assert f"no Ray cluster at 127.0.0.1:{port}" in only_line(proc.stderr)
