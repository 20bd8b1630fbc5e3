"""Four partitions' journals with the rows a partitioned runtime writes, and one journal
holding every row of them (``journals``, in ``conftest``): the federation's answers over the
first must be the second's (``test_federated``, ``test_sqltopn``)."""

from __future__ import annotations

import json

from journal.partitions import Partitions
from journal.records import Accept, Batch, Entry, Output, StateWrite, StatusChange

LAYOUT = Partitions(4)
T0 = 1_700_000_000_000
SERVICES = [
    ("Obj", "VirtualObject", "add", "exclusive", None),
    ("Obj", "VirtualObject", "get", "shared", None),
    ("Svc", "Service", "run", None, '{"timeout_s": 5}'),
]


def invocations(count: int = 80) -> dict[int, list[Batch]]:
    """Batches of ``count`` invocations, by partition: keyed ones in their key's partition,
    keyless ones spread, each id naming its partition (as a partitioned runtime writes)."""
    out: dict[int, list[Batch]] = {p: [] for p in LAYOUT}
    for i in range(count):
        key = None if i % 3 == 2 else f"k{i % 13}"
        p = i % LAYOUT.count if key is None else LAYOUT.of_key("Obj", key)
        inv = LAYOUT.place(f"inv_{i:06x}", p)
        service, handler = ("Svc", "run") if key is None else ("Obj", "add" if i % 4 else "get")
        records: list = [
            Accept(inv, service, handler, key, 0, json.dumps({"i": i}), created_at_ms=T0 + i)
        ]
        records += [
            Entry(inv, j, "run", f"step{j}", json.dumps(j), created_at_ms=T0 + i + j)
            for j in range(i % 4)
        ]
        if key is not None:
            records.append(StateWrite("Obj", key, "count", str(i)))
            if i % 7 == 0:
                records.append(StateWrite("Obj", key, "$promise:done", json.dumps({"value": i})))
        if i % 5 == 0:
            records.append(StatusChange(inv, "backing-off", 1 + i % 3, f"boom {i}", T0 + i))
        if i % 2 == 0:
            records.append(Output(inv, True, json.dumps({"y": i}), completed_at_ms=T0 + i + 9))
        out[p].append(Batch(f"b{i}", records))
    return out
