"""SQL over a live four-partition runtime (``journal.federated``): ``rt.sql`` and the CLI show
one set of views whose answers are the union of the partitions' own, a query naming one id or
key is answered by its partition, the time limit holds for a federated query, and ``--db``
reads the data dir once the runtime is stopped."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import duckdb
import pytest
import ray
from typer.testing import CliRunner

from actors import Runtime
from actors.client.cli import app
from journal.errors import SqlTimeout
from journal.partitions import Partitions
from journal.store import DB_FILE
from tests.conftest import assert_eventually
from tests.integration import apps
from tests.integration.conftest import _ids, module_runtime
from tests.integration.helpers import partition_rows

LAYOUT = Partitions(4)
KEYS = [f"sql-{i}" for i in range(24)]


@pytest.fixture(scope="module")
def runtime(ray_session: None, tmp_path_factory) -> Iterator[Runtime]:
    services = [apps.counter, apps.workflow_like]
    with module_runtime(
        tmp_path_factory, services, "partsql", pool_size=1, partitions=LAYOUT.count, sql_timeout=2
    ) as rt:
        for i, key in enumerate(KEYS):
            rt.call(apps.add, key=key, arg=i)
        for x in range(6):
            rt.call(apps.three_steps, arg=x)
        yield rt


def canon(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: json.dumps(r, default=str, sort_keys=True))


def union(rt: Runtime, query: str) -> list[dict[str, Any]]:
    return canon([row for p in LAYOUT for row in partition_rows(rt, LAYOUT, p, query)])


def test_rt_sql_counts_are_the_sum_of_the_partitions(runtime: Runtime) -> None:
    per_partition = [
        partition_rows(runtime, LAYOUT, p, "SELECT count(*) AS n FROM sys_invocation")[0]["n"]
        for p in LAYOUT
    ]
    assert sum(1 for n in per_partition if n) > 1, "the invocations spread over the partitions"
    [total] = runtime.sql("SELECT count(*) AS n FROM sys_invocation").to_pylist()
    assert total["n"] == sum(per_partition) == len(KEYS) + 6


def test_rt_sql_shows_the_union_of_the_partitions_views(runtime: Runtime) -> None:
    for query in (
        "SELECT id, target, status, output FROM sys_invocation",
        "SELECT invocation_id, index, entry_type, name, result FROM sys_journal",
        "SELECT * FROM state",
    ):
        assert canon(runtime.sql(query).to_pylist()) == union(runtime, query), query
    # the registry is the same in every partition: shown once
    services = runtime.sql("SELECT DISTINCT name FROM sys_service ORDER BY 1").column(0)
    assert services.to_pylist() == ["Counter", "Pipeline"]
    assert runtime.sql("SELECT count(*) AS n FROM sys_service").to_pylist() == (
        [{"n": len(partition_rows(runtime, LAYOUT, 0, "SELECT * FROM sys_service"))}]
    )


def test_a_query_naming_one_id_or_key_reads_its_partition(runtime: Runtime) -> None:
    [row] = runtime.sql(
        "SELECT id FROM sys_invocation WHERE target_service_key = 'sql-5'"
        " AND target_service_name = 'Counter'"
    ).to_pylist()
    inv = row["id"]
    p = LAYOUT.of_key("Counter", "sql-5")
    assert LAYOUT.of_id(inv) == p, "a keyed invocation lives in its key's partition"
    assert runtime.sql(f"SELECT id, output FROM sys_invocation WHERE id = '{inv}'").to_pylist() == (
        [{"id": inv, "output": "5"}]
    )
    assert runtime.sql(
        "SELECT key, value FROM state WHERE service_name = 'Counter' AND service_key = 'sql-5'"
    ).to_pylist() == [{"key": "count", "value": "5"}]


def test_a_federated_query_has_the_time_limit(runtime: Runtime) -> None:
    with pytest.raises(SqlTimeout, match="time limit of 2 s"):
        runtime.sql(
            "SELECT count(*) FROM sys_invocation a, sys_invocation b, range(1000000000) r"
            " WHERE a.id || r.range::VARCHAR <> b.id"
        )
    assert runtime.sql("SELECT count(*) AS n FROM sys_journal").to_pylist()[0]["n"] > 0


runner = CliRunner()


def cli(*args: str) -> list[dict[str, Any]]:
    result = runner.invoke(app, [*args, "-f", "json"])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_the_cli_reads_every_partition_live_and_then_offline(ray_session: None, tmp_path) -> None:
    data = tmp_path / "data"
    rt = Runtime.start(
        [apps.counter],
        data_dir=data,
        namespace=f"ps{os.getpid()}-{next(_ids)}",
        pool_size=1,
        partitions=LAYOUT.count,
    )
    try:
        for i, key in enumerate(KEYS):
            rt.call(apps.add, key=key, arg=i)
        live = ["--namespace", rt.namespace]
        assert cli("sql", "SELECT count(*) AS n FROM sys_invocation", *live) == [{"n": len(KEYS)}]
        assert len(cli("invocations", "--all", *live)) == len(KEYS)
        assert cli("state", "Counter", "sql-7", *live) == [{"key": "count", "value": 7}]
        parts = cli("partitions", *live)
        here = ray.get_runtime_context().get_node_id()
        assert [r["partition"] for r in parts] == list(LAYOUT)
        assert [r["journal"] for r in parts] == [LAYOUT.journal(p) for p in LAYOUT]
        assert {(r["node_id"], r["epoch"]) for r in parts} == {(here, None)}  # local: no epoch
        assert all(r["pid"] for r in parts) and len({r["pid"] for r in parts}) == LAYOUT.count
        assert sum(r["invocations"] for r in parts) == len(KEYS)
        assert [r["invocations"] for r in parts] == [
            sum(LAYOUT.of_key("Counter", k) == p for k in KEYS) for p in LAYOUT
        ]
    finally:
        rt.shutdown()
    for p in LAYOUT:
        assert_eventually(
            lambda p=p: _opens_read_only(data / f"partition-{p}" / DB_FILE),
            timeout=60,
            message=f"partition {p}'s journal released its file",
        )
    offline = ["--db", str(data)]
    stopped = cli("partitions", *offline)
    assert [(r["invocations"], r["unfinished"]) for r in stopped] == [
        (r["invocations"], 0) for r in parts
    ]
    assert [r["directory"] for r in stopped] == [str(data / f"partition-{p}") for p in LAYOUT]
    assert {(r["node"], r["pid"]) for r in stopped} == {(None, None)}
    assert cli("sql", "SELECT count(*) AS n FROM sys_invocation", *offline) == [{"n": len(KEYS)}]
    rows = cli("invocations", "--all", *offline)
    assert sorted(r["target"] for r in rows) == sorted(f"Counter/{k}/add" for k in KEYS)
    assert cli("state", "Counter", "sql-7", *offline) == [{"key": "count", "value": 7}]
    [one] = cli("invocations", "--service", "Counter", "--key", "sql-9", *offline)
    described = runner.invoke(app, ["describe", one["id"], "-f", "json", *offline])
    assert json.loads(described.stdout)["invocation"]["output"] == 9


def _opens_read_only(path) -> bool:
    try:
        duckdb.connect(str(path), read_only=True).close()
    except duckdb.IOException:
        return False
    return True
