"""Input limits and parsing without Ray: NaN/Infinity, bad text, awakeable ids in one canonical
form, outputs checked against the return annotation, state values capped, and state reads that
journal a reference instead of a second copy; ``@handler`` with or without parentheses."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from actors.engine.awakeable_ids import AwakeableIds
from actors.engine.statereads import REF_PREFIX, StateReads
from actors.sdk.contexts import ObjectContext, WorkflowContext, WorkflowSharedContext
from actors.sdk.definitions import VirtualObject, Workflow, spec_of
from actors.sdk.errors import JournalMismatch, TerminalError
from actors.sdk.serde import MAX_PAYLOAD_BYTES, NonFiniteFloat, Serde, check_text
from journal.records import Entry
from tests.unit.engine_apps import FAST, World, request

# -- NaN and Infinity ---------------------------------------------------------------------------


class Reading(BaseModel):
    value: float


@dataclass
class Sample:
    values: list[float]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(
    ("tp", "wrap"),
    [
        (float, lambda x: x),
        (Any, lambda x: {"a": [1, x]}),
        (Reading, lambda x: Reading(value=x)),
        (Sample, lambda x: Sample([1.0, x])),
        (float | None, lambda x: x),
    ],
)
def test_non_finite_floats_are_refused_as_input(bad: float, tp: Any, wrap: Any) -> None:
    with pytest.raises(TerminalError, match="NaN and Infinity") as err:
        Serde(tp).to_json(wrap(bad), "input of T/h")
    assert err.value.status_code == 400
    with pytest.raises(NonFiniteFloat):
        Serde(Any).dump(wrap(bad))


def test_null_and_finite_floats_still_pass() -> None:
    assert Serde(float | None).to_json(None, "x") == "null"
    assert (
        Serde(Any).to_json({"a": None, "b": 1.5, "c": "null"}, "x")
        == '{"a":null,"b":1.5,"c":"null"}'
    )
    assert Serde(Reading).to_json(Reading(value=2.0), "x") == '{"value":2.0}'


# -- text that cannot be encoded ----------------------------------------------------------------


def test_lone_surrogates_are_400() -> None:
    assert check_text("naïve ✓ 🦊", "key") == "naïve ✓ 🦊"
    with pytest.raises(TerminalError, match="key 'a\\\\ud800' is not valid text") as err:
        check_text("a\ud800", "key")
    assert err.value.status_code == 400


# -- awakeable ids ------------------------------------------------------------------------------


IDS = AwakeableIds("secret")
INV = "inv_0123456789abcdef0123456789abcdef"


def test_an_id_we_made_parses() -> None:
    for idx in (0, 7, 12, 2**31 - 1):
        assert IDS.parse(IDS.make(INV, idx)) == (INV, idx)


def _variants() -> list[object]:
    good = IDS.make(INV, 0)
    check = good.rsplit("_", 1)[1]
    arabic = "\u0660"  # Arabic-Indic zero: int() reads it as 0
    return [
        f"awk_{INV}_00_{check}",  # a leading zero: the same index, another spelling
        f"awk_{INV}_{arabic}_{check}",
        f"awk_{INV}_\uff10_{check}",  # fullwidth zero
        f"awk_{INV}_²_{check}",  # isdigit() but int() fails
        f"awk_{INV}_0_{check[:-1]}é",  # a non-ASCII check character (compare_digest: TypeError)
        f"awk_{INV}_0_{check.upper()}",
        f"awk_{INV}_{'9' * 4301}_{check}",  # int() refuses more than 4,300 digits: ValueError
        f"awk_{INV}_{2**31}_{check}",
        f"awk_{INV}_0_{check}" + "x" * 300,
        good + " ",
        " " + good,
        good.replace("awk_", "AWK_"),
        "awk__0_" + check,
        "awk_",
        "",
        42,
        None,
        b"awk_",
        ["awk"],
    ]


@pytest.mark.parametrize("text", _variants())
def test_anything_else_is_400_and_nothing_else(text: object) -> None:
    with pytest.raises(TerminalError) as err:
        IDS.parse(text)
    assert err.value.status_code == 400
    assert "malformed awakeable id" in err.value.message
    assert len(err.value.message) < 300, "a huge id is not echoed whole"


# -- outputs checked against the return annotation ----------------------------------------------


def test_output_mismatch_is_500_naming_handler_and_type() -> None:
    with pytest.raises(TerminalError) as err:
        Serde(int).output_json("abc", "Limits/wrong")
    assert err.value.status_code == 500
    assert (
        "the output of Limits/wrong does not match its return annotation int (got str)"
        in err.value.message
    )
    assert Serde(int).output_json(3, "x") == "3"
    with pytest.raises(TerminalError, match="NaN and Infinity") as nan:
        Serde(float).output_json(math.nan, "Limits/nan")
    assert nan.value.status_code == 500
    with pytest.raises(TerminalError, match="not JSON-serializable"):
        Serde(Any).output_json(object(), "Limits/opaque")


# -- @handler with or without parentheses -------------------------------------------------------


def test_handler_decorator_without_parentheses_registers() -> None:
    obj = VirtualObject("Bare")

    @obj.handler
    async def plain(ctx: ObjectContext, n: int) -> int:
        return n

    @obj.handler()
    async def called(ctx: ObjectContext) -> None:
        return None

    assert set(obj.handlers) == {"plain", "called"}
    spec = spec_of(plain)
    assert spec is not None and spec.kind == "exclusive" and spec.takes_arg
    assert plain.__name__ == "plain", "the function itself is returned"

    wf = Workflow("BareFlow")

    @wf.main
    async def run(ctx: WorkflowContext) -> str:
        return "done"

    @wf.handler
    async def status(ctx: WorkflowSharedContext) -> str:
        return "?"

    assert wf.main_handler == "run" and set(wf.handlers) == {"run", "status"}
    assert wf.handlers["status"].kind == "shared"


# -- state reads journal references -------------------------------------------------------------


BIG = '"' + "x" * 100 + '"'


def _entry(idx: int, entry_type: str, name: str, result: str | None) -> Entry:
    return Entry("inv_1", idx, entry_type, name, result)


def test_a_read_of_a_value_this_invocation_set_is_a_reference() -> None:
    reads = StateReads()
    reads.wrote("a", 0, BIG)  # set_state at 0
    assert reads.journal("a", 1, BIG) == REF_PREFIX + "0}"
    assert reads.journal("a", 2, BIG) == REF_PREFIX + "0}"
    assert reads.journal("small", 3, "1") == "1"
    assert reads.journal("small", 4, "1") == "1", "small values are copied: nothing to save"
    other = '"' + "y" * 100 + '"'
    assert reads.journal("b", 5, other) == other, "first read of another's value: a copy"
    assert reads.journal("b", 6, other) == REF_PREFIX + "5}", "the second refers to the first"
    changed = '"' + "z" * 100 + '"'
    assert reads.journal("b", 7, changed) == changed, "a changed value is copied again"
    reads.wrote("a", 8, None)
    assert reads.journal("a", 9, None) is None


def test_references_resolve_on_replay() -> None:
    escaped_value = REF_PREFIX + "3}"  # a user's dict that looks like a reference
    recorder = StateReads()
    recorder.wrote("a", 0, BIG)
    results = [
        BIG,
        recorder.journal("a", 1, BIG),
        recorder.journal("c", 2, escaped_value),
        recorder.journal("c", 3, escaped_value),
    ]
    assert results[2] == REF_PREFIX + 'null,"value":' + escaped_value + "}"
    entries = [
        _entry(0, "set_state", "a", BIG),
        _entry(1, "get_state", "a", results[1]),
        _entry(2, "get_state", "c", results[2]),
        _entry(3, "get_state", "c", results[3]),
    ]
    replayer = StateReads()
    replayer.wrote("a", 0, BIG)
    assert replayer.resolve(entries[1], entries) == BIG
    assert replayer.resolve(entries[2], entries) == escaped_value
    assert replayer.resolve(entries[3], entries) == escaped_value


@pytest.mark.parametrize("ref", ["5", "1", "-1", "x", "0x"])
def test_a_dangling_reference_is_a_journal_mismatch(ref: str) -> None:
    entries = [_entry(0, "run", "a", BIG), _entry(1, "get_state", "a", REF_PREFIX + ref + "}")]
    with pytest.raises(JournalMismatch):
        StateReads().resolve(entries[1], entries)


limits = VirtualObject("Limits", retry_policy=FAST)
TRIES: Counter[str] = Counter()


@limits.handler()
async def big_state(ctx: ObjectContext, n: int) -> int:
    ctx.set("blob", "x" * n)
    first = await ctx.get("blob")
    again = await ctx.get("blob")
    TRIES["big_state"] += 1
    if TRIES["big_state"] == 1:
        raise RuntimeError("fail once, so that the retry replays the references")
    return len(first) + len(again)


@limits.handler()
async def wrong_output(ctx: ObjectContext) -> int:
    return "abc"  # type: ignore[return-value]


@limits.handler()
async def set_value(ctx: ObjectContext, what: str) -> None:
    ctx.set("v", math.nan if what == "nan" else "x" * (MAX_PAYLOAD_BYTES + 1))


@limits.handler()
async def non_finite(ctx: ObjectContext, where: str) -> None:
    if where == "run":
        await ctx.run("measure", lambda: math.inf)
    else:
        await ctx.resolve_awakeable(IDS.make(INV, 0), {"score": math.nan})


@pytest.fixture
def world(data_dir: Path) -> Iterator[World]:
    TRIES.clear()
    w = World(data_dir)
    yield w
    w.store.close()


def test_reads_of_a_set_value_journal_references_and_replay(world: World) -> None:
    req = request("Limits", "big_state", "k", 1000)

    async def body() -> Any:
        return await world.host(limits).invoke(req)

    out = world.run(body)
    assert out is not None and out.ok and out.output == "2000"
    assert TRIES["big_state"] == 2, "the second attempt replayed through the references"
    rows = world.sql(
        f'SELECT "index", entry_type, result::VARCHAR AS r FROM sys_journal '
        f"WHERE invocation_id = '{req.id}' ORDER BY 1"
    )
    assert [(r["index"], r["entry_type"]) for r in rows] == [
        (0, "set_state"),
        (1, "get_state"),
        (2, "get_state"),
    ]
    assert len(rows[0]["r"]) > 1000
    assert [r["r"] for r in rows[1:]] == ['{"$raystate_ref":0}'] * 2


def test_an_output_that_does_not_match_is_a_recorded_500(world: World) -> None:
    req = request("Limits", "wrong_output", "k")

    async def body() -> Any:
        return await world.host(limits).invoke(req)

    out = world.run(body)
    assert out is not None and (out.ok, out.failure_code) == (False, 500)
    assert "Limits/wrong_output" in (out.failure or "") and "int" in (out.failure or "")
    assert world.store.outcome(req.id) == out, "recorded as the invocation's failure"


@pytest.mark.parametrize(
    ("what", "code", "message"), [("nan", 500, "NaN and Infinity"), ("big", 413, "the limit is")]
)
def test_state_values_are_refused_clearly(world: World, what: str, code: int, message: str) -> None:
    req = request("Limits", "set_value", "k", what)

    async def body() -> Any:
        return await world.host(limits).invoke(req)

    out = world.run(body)
    assert out is not None and (out.ok, out.failure_code) == (False, code)
    assert message in (out.failure or "")
    assert world.store.load_state("Limits", "k") == {}


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("run", "ctx.run('measure') returned a value that is not JSON-serializable"),
        ("awakeable", "awakeable value is not JSON-serializable"),
    ],
)
def test_non_finite_results_and_awakeable_values_are_refused(
    world: World, where: str, message: str
) -> None:
    req = request("Limits", "non_finite", "k", where)

    async def body() -> Any:
        return await world.host(limits).invoke(req)

    out = world.run(body)
    assert out is not None and not out.ok, "a terminal failure: never retried"
    assert message in (out.failure or "") and "NaN and Infinity" in (out.failure or "")
    assert world.invocation(req.id)["retry_count"] == 0
