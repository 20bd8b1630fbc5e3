"""The benchmark's partition comparison (``python -m benchmarks --partitions 1,2,4``) without
Ray: the run order, how rounds combine, the comparison and model tables from made-up cells, the
per-journal CPU and the options' checks."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest

from actors.client.tables import console
from benchmarks import compare, report
from benchmarks.procs import Proc, Snapshot, journal_cpu_between
from benchmarks.runner import drive
from benchmarks.suite import parse_args, pool_for


def cell(
    partitions: int,
    inv_per_s: float,
    round_: int = 0,
    workload: str = "keys1k",
    concurrency: int = 64,
    journal_s: float = 1.0,
    journals: dict[str, float] | None = None,
    check: str = "OK",
) -> dict[str, Any]:
    """A cell's JSON line as ``report.row`` and ``report.partition_fields`` make it: a 2 s
    window, CPU seconds per kind over it."""
    calls = round(inv_per_s * 2)
    return {
        "workload": workload,
        "concurrency": concurrency,
        "calls": calls,
        "window_s": 2.0,
        "inv_per_s": inv_per_s,
        "p50_ms": 1000 / inv_per_s,
        "p90_ms": 2000 / inv_per_s,
        "p99_ms": 4000 / inv_per_s,
        "check": check,
        "cpu_window_s": 2.0,
        "cpu_s": {
            "journal": journal_s,
            "scheduler": 0.1,
            "hosts": 1.0,
            "driver": 0.5,
            "ray": 0.2,
            "bench": 0.0,
        },
        "partitions": partitions,
        "round": round_,
        "rounds": 2,
        "cpu_invocations": calls,
        "cpu_s_journals": journals or {"journal": journal_s},
        "host_procs": partitions,
    }


def test_run_order_alternates_so_drift_falls_on_every_count() -> None:
    assert compare.run_order([1, 2, 4], 2) == [(0, 1), (0, 2), (0, 4), (1, 4), (1, 2), (1, 1)]
    assert compare.run_order([1], 1) == [(0, 1)]


def test_combine_pools_rounds_and_orders_counts() -> None:
    rows = [
        cell(4, 300, journals={f"journal:{p}": 0.25 for p in range(4)}),
        cell(1, 200),
        cell(1, 100, round_=1),
        cell(4, 300, round_=1, journals={"journal:0": 0.7, "journal:1": 0.1}, check="FAIL: x"),
        {"workload": "food", "concurrency": None, "skipped": "not here"},
    ]
    one, four = compare.combine(rows)
    assert (one.partitions, one.rounds, four.partitions) == (1, 2, 4)
    assert one.inv_per_s == pytest.approx(150)  # all calls over all windows
    assert one.p50_ms == pytest.approx((5 + 10) / 2)  # the median of the rounds'
    # CPU per invocation: all rounds' seconds over all rounds' invocations
    assert one.cpu_ms_per_inv["journal"] == pytest.approx(2 * 1000 / 600)
    assert one.cpu_ms_per_inv["driver"] == pytest.approx(2 * 500 / 600)
    assert one.server_ms_per_inv == pytest.approx(2 * 2300 / 600)
    assert four.journal_ms_per_partition == pytest.approx(four.cpu_ms_per_inv["journal"] / 4)
    # 1.0 + 0.8 journal seconds over 4 s of windows, shared by 4 journals; journal:0 the busiest
    assert four.journal_busy == pytest.approx(1.8 / 4 / 4)
    assert four.journal_busy_max == pytest.approx(0.95 / 4)
    assert four.host_procs == 4
    assert one.check == "OK" and four.check == "FAIL: x"


def test_combine_keeps_the_cells_order_and_ignores_rows_of_a_plain_run() -> None:
    rows = [cell(2, 10, workload="hot", concurrency=1), cell(1, 10, workload="hot")]
    rows += [cell(1, 10, workload="three_step", concurrency=1)]
    rows += [{k: v for k, v in cell(1, 5).items() if k != "partitions"}]
    got = [(c.workload, c.concurrency, c.partitions) for c in compare.combine(rows)]
    assert got == [("hot", 1, 2), ("hot", 64, 1), ("three_step", 1, 1)]


def render(table: Any) -> str:
    out = io.StringIO()
    console(out).print(table)
    return out.getvalue()


def test_table_gives_ratios_to_the_smallest_count() -> None:
    compared = compare.combine([cell(1, 200), cell(2, 180, journal_s=1.2), cell(4, 400)])
    text = render(compare.table(compared, "smoke"))
    lines = [line for line in text.splitlines() if "keys1k" in line]
    assert len(lines) == 3
    assert "1.00x" in lines[0]
    assert "0.90x" in lines[1] and "1.11x" in lines[1]  # 180/200 inv/s; p50 200/180
    assert "2.00x" in lines[2] and "0.50x" in lines[2]


def test_model_from_the_smallest_count_at_the_highest_concurrency() -> None:
    rows = [cell(1, 100, concurrency=1, journal_s=9.0), cell(1, 200), cell(2, 400)]
    (m,) = compare.models(compare.combine(rows))
    assert (m.workload, m.concurrency) == ("keys1k", 64)
    assert m.journal_ms == pytest.approx(2.5)  # 1 s over 400 invocations
    assert m.server_ms == pytest.approx(2.3 * 1000 / 400)
    assert m.partition_ceiling == pytest.approx(400)
    assert m.ceiling(1, 64) == pytest.approx(400)  # journal-bound
    assert m.ceiling(100, 4) == pytest.approx(4 * 1000 / m.server_ms)  # core-bound
    assert m.useful_partitions(4) == pytest.approx(4 * 2.5 / m.server_ms)
    text = render(compare.model_table([m], [2, 16], 1))
    assert "min(N / j, C / s)" in text and "C=16" in text and "400" in text


def snap(at: float, **journals: float) -> Snapshot:
    s = Snapshot(at=at)
    for i, (name, cpu) in enumerate(journals.items()):
        s.procs[(i, 0.0)] = Proc("journal", name.replace("_", ":"), cpu, 0)
    s.procs[(99, 0.0)] = Proc("hosts", "hosts", 5.0, 0)
    s.procs[(98, 0.0)] = Proc("hosts", "hosts", 5.0, 0)
    return s


def test_journal_cpu_by_partition_and_host_count() -> None:
    start, end = snap(0, journal_0=1.0, journal_1=2.0), snap(1, journal_0=1.5, journal_1=4.0)
    assert journal_cpu_between(start, end) == {"journal:0": 0.5, "journal:1": 2.0}
    result = {"invocations": 10, "cpu_invocations": 8}
    fields = report.partition_fields(result, {"start": start, "end": end}, 2, 1, 2)
    assert fields["host_procs"] == 2 and fields["cpu_s_journals"]["journal:1"] == 2.0
    assert (fields["partitions"], fields["round"], fields["cpu_invocations"]) == (2, 1, 8)


def test_tables_have_a_partition_column_only_when_comparing() -> None:
    plain = {k: v for k, v in cell(1, 100).items() if k not in ("partitions", "round")}
    header = render(report.tables([plain], "t")[0]).splitlines()
    assert not any(" P " in line for line in header)
    text = render(report.tables([cell(4, 100, round_=1)], "t")[0])
    assert " P " in text and "4 r2" in text


def test_options() -> None:
    args = parse_args(["--partitions", "1,2,4,2", "--rounds", "2", "--workloads", "hot"])
    assert args.partitions == [1, 2, 4] and args.rounds == 2 and args.comparing
    assert not parse_args(["--workloads", "hot"]).comparing
    assert parse_args(["--rounds", "2"]).comparing
    for bad in (["--partitions", "0"], ["--partitions", "x"], ["--rounds", "0"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_pool_per_partition_or_split() -> None:
    def pool(*argv: str, count: int = 4, cpus: float = 8) -> int | None:
        return pool_for(parse_args(["--partitions", "1,4", *argv]), count, cpus)

    assert pool() is None  # the runtime's own default
    assert pool("--pool-size", "3") == 3  # per service in each partition, as Runtime.start
    assert pool("--pool-per-partition") == 4  # one host per two CPUs, in every partition
    assert pool("--split-pool") == 1
    assert pool("--split-pool", "--pool-size", "2", count=2) == 1
    assert pool("--split-pool", "--pool-size", "2", count=4) == 1  # at least one
    assert pool("--split-pool", "--pool-size", "12", count=4) == 3
    with pytest.raises(SystemExit):
        parse_args(["--split-pool", "--pool-per-partition"])


def test_drive_counts_the_calls_its_samples_span() -> None:
    """The CPU samples at the window's edges take a while: the calls completed meanwhile are
    in the window but not in the span the CPU figures cover (``Samples.sampled``)."""
    done = 0
    seen: dict[str, int] = {}

    async def call(n: int) -> int:
        nonlocal done
        await asyncio.sleep(0)
        done += 1
        return n

    async def slow_sample(label: str) -> None:
        seen[label] = done
        if label == "start":  # a sample during which 20 calls complete
            while done < seen["start"] + 20:
                await asyncio.sleep(0)
            seen["started"] = done

    s = asyncio.run(drive(call, concurrency=2, warmup_s=0, seconds=0.3, on_window=slow_sample))
    assert s.sampled == seen["end"] - seen["started"]
    assert s.sampled is not None and s.sampled <= s.completed_in_window - 20 + 2
