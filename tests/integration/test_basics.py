from __future__ import annotations

from actors import Runtime
from tests.integration import apps


def test_counter_add_and_get(shared_rt: Runtime) -> None:
    rt = shared_rt
    assert rt.call(apps.add, key="basics", arg=2) == 2
    assert rt.call("Counter/add", key="basics", arg=3) == 5
    assert rt.object(apps.counter, "basics").get() == 5
    assert rt.call(apps.get, key="basics-other") == 0


def test_service_three_steps(shared_rt: Runtime) -> None:
    h = shared_rt.send(apps.three_steps, arg=4)
    assert h.result(timeout=30) == 9
    rows = shared_rt.sql(
        f"SELECT name FROM sys_journal WHERE invocation_id = '{h.id}' ORDER BY index"
    )
    assert rows.column("name").to_pylist() == ["one", "two", "three"]


def test_state_keys_and_clear_all(shared_rt: Runtime) -> None:
    shared_rt.call(apps.add, key="clearing", arg=1)
    assert shared_rt.call(apps.reset, key="clearing") == ["count"]
    assert shared_rt.call(apps.get, key="clearing") == 0
    assert shared_rt.sql("SELECT * FROM state WHERE service_key = 'clearing'").num_rows == 0


def test_rand_time_and_id_are_journaled_values(shared_rt: Runtime) -> None:
    out = shared_rt.call(apps.deterministic)
    assert out["id"].startswith("inv_") and 0 <= out["rand"] < 1
    row = shared_rt.sql(
        "SELECT result FROM sys_journal WHERE invocation_id = "
        f"'{out['id']}' AND entry_type = 'time'"
    ).to_pylist()
    assert [int(r["result"]) for r in row] == [int(out["time"] * 1000)]


def test_shutdown_then_start_again_at_once(start_runtime, tmp_path) -> None:
    """Regression (found by the chaos long mode, seed 7): a ``Runtime.start`` right after
    ``shutdown`` in the same process found the dying journal actor by name and failed."""
    from tests.integration import apps

    data, ns = tmp_path / "again", f"again-{tmp_path.name}"[:60]
    for n in range(1, 4):
        rt = start_runtime([apps.counter], data_dir=data, namespace=ns)
        assert rt.call(apps.add, key="k", arg=1) == n
        rt.shutdown()
