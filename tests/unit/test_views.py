"""The views over what the journal holds, without Ray: completions in ``sys_journal``,
uncompleted promises in ``sys_promise``, each key's holder and queue, the registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from journal.records import (
    Accept,
    Batch,
    Completion,
    Entry,
    Output,
    StateWrite,
    Timer,
    TimerFired,
)
from journal.store import JournalStore

REGISTRY = [
    ("Obj", "virtual_object", "run", "exclusive", '{"retry_policy": {}}'),
    ("Obj", "virtual_object", "peek", "shared", "{}"),
    ("Wf", "workflow", "main", "workflow", "{}"),
    ("Svc", "service", "go", None, "{}"),
]


@pytest.fixture
def store(data_dir: Path) -> Iterator[JournalStore]:
    s = JournalStore(data_dir)
    s.set_services(REGISTRY)
    yield s
    s.close()


def rows(store: JournalStore, query: str) -> list[dict[str, Any]]:
    return store.sql(query).to_pylist()


def accept(
    inv: str, handler: str = "run", key: str = "k", order: int = 0, service: str = "Obj"
) -> Accept:
    return Accept(inv, service, handler, key, 0, "null", host_order=order)


def test_sys_service_is_the_registry(store: JournalStore) -> None:
    assert rows(store, "SELECT name, handler, kind FROM sys_service ORDER BY ALL") == [
        {"name": n, "handler": h, "kind": k}
        for n, _, h, k, _ in sorted(REGISTRY, key=lambda r: (r[0], r[2]))
    ]
    store.set_services(REGISTRY[:1])  # replaced whole
    assert rows(store, "SELECT count(*) AS n FROM sys_service") == [{"n": 1}]
    assert rows(store, "SELECT options->'retry_policy' AS p FROM sys_service") == [{"p": "{}"}]


def test_sys_journal_shows_completions(store: JournalStore) -> None:
    store.write(
        [
            Batch(
                "b1",
                [
                    accept("inv_a"),
                    Entry("inv_a", 0, "run", "step", '"ran"'),
                    Entry("inv_a", 1, "awakeable", None, None, completed=False),
                    Entry("inv_a", 2, "call", "Svc/go", '"inv_callee"', completed=False),
                    Entry("inv_a", 3, "sleep", None, "1700000000000", completed=False),
                    Entry("inv_a", 4, "awakeable", None, None, completed=False),
                    Completion("inv_a", 1, '"granted"'),
                    Completion("inv_a", 2, None, "callee failed", 500),
                    Completion("inv_a", 3),
                    Completion("inv_a", 1, '"second wins nothing"'),
                ],
            )
        ]
    )
    got = rows(store, "SELECT index, completed, result FROM sys_journal ORDER BY index")
    assert got == [
        {"index": 0, "completed": True, "result": '"ran"'},
        {"index": 1, "completed": True, "result": '"granted"'},
        {"index": 2, "completed": True, "result": '{"failure":"callee failed","code":500}'},
        {"index": 3, "completed": True, "result": "1700000000000"},  # a sleep keeps its time
        {"index": 4, "completed": False, "result": None},
    ]


def test_sys_promise_lists_promises_not_completed(store: JournalStore) -> None:
    store.write(
        [
            Batch(
                "b1",
                [
                    accept("inv_w", "main", "w1", service="Wf"),
                    Entry("inv_w", 0, "promise", "approved", None, completed=False),
                    Entry("inv_w", 1, "promise", "paid", None, completed=False),
                    StateWrite("Wf", "w1", "$promise:paid", '{"value": 12}'),
                ],
            )
        ]
    )
    got = rows(
        store, "SELECT key, completed, completion_success_value AS v FROM sys_promise ORDER BY key"
    )
    assert got == [
        {"key": "approved", "completed": False, "v": None},
        {"key": "paid", "completed": True, "v": "12"},
    ]


def test_each_key_has_its_holder_and_its_queue(store: JournalStore) -> None:
    store.write(
        [
            Batch(
                "b1",
                [
                    accept(
                        "inv_started", order=5
                    ),  # running (it has a journal), though accepted later
                    Entry("inv_started", 0, "run", "a", '"x"'),
                    accept("inv_first", order=1),
                    accept("inv_second", order=7),
                    accept("inv_shared", "peek", order=2),  # a shared handler holds nothing
                    accept("inv_done", order=0),
                    Output("inv_done", True, "null"),
                    accept("inv_delayed", order=3),  # waits for its start timer: not queued yet
                    Timer("inv_delayed:start", "inv_delayed", -1, "start", 10**13, "host"),
                    accept("inv_fired", order=8),  # its start timer fired: queued
                    Timer("inv_fired:start", "inv_fired", -1, "start", 1, "host"),
                    TimerFired("inv_fired:start", "inv_fired"),
                    accept("inv_other", key="k2", order=4),
                    accept("inv_svc", "go", key=None, service="Svc"),  # a service has no keys
                ],
            )
        ]
    )
    assert rows(store, "SELECT * FROM sys_keyed_service_status ORDER BY ALL") == [
        {"service_name": "Obj", "service_key": "k", "invocation_id": "inv_started"},
        {"service_name": "Obj", "service_key": "k2", "invocation_id": "inv_other"},
    ]
    assert rows(
        store,
        "SELECT service_key, id, sequence_number FROM sys_inbox "
        "ORDER BY service_key, sequence_number",
    ) == [
        {"service_key": "k", "id": "inv_first", "sequence_number": 1},
        {"service_key": "k", "id": "inv_second", "sequence_number": 2},
        {"service_key": "k", "id": "inv_fired", "sequence_number": 3},
    ]
