"""Step results encode to (kind, bytes) and back without pickle; other types are refused."""

from __future__ import annotations

import pickle

import pyarrow as pa
import pytest

from actors.sdk.errors import TerminalError
from actors.steps.codec import Kind, decode, encode, writer


@pytest.mark.parametrize("value", [None, 1, 2.5, "ü", [1, {"a": [True, None]}], {"x": "y"}])
def test_json_values_round_trip_as_plain_json_text(value) -> None:
    enc = encode(value, "s")
    assert enc.kind is Kind.JSON
    assert decode(enc) == value
    assert b"\n" not in enc.payload


def test_bytes_round_trip() -> None:
    for data in (b"", b"\x00\xffabc", bytearray(b"xy"), memoryview(b"mv")):
        enc = encode(data, "s")
        assert enc.kind is Kind.BYTES
        assert decode(enc) == bytes(data)


def test_arrow_table_and_batch_round_trip() -> None:
    table = pa.table({"a": [1, 2, 3], "b": ["x", None, "z"]})
    enc = encode(table, "s")
    assert enc.kind is Kind.ARROW_TABLE
    assert decode(enc).equals(table)
    batch = table.to_batches()[0]
    enc = encode(batch, "s")
    assert enc.kind is Kind.ARROW_BATCH
    back = decode(enc)
    assert isinstance(back, pa.RecordBatch) and back.equals(batch)


@pytest.mark.parametrize("value", [float("nan"), [1, float("inf")], {"x": -float("inf")}])
def test_nan_and_infinity_are_refused(value) -> None:
    with pytest.raises(TerminalError) as e:
        encode(value, "stats")
    assert "'stats'" in e.value.message


def test_other_types_name_the_step_and_the_type() -> None:
    class Model:
        pass

    with pytest.raises(TerminalError) as e:
        writer(Model(), "predict")
    assert "'predict'" in e.value.message and "Model" in e.value.message
    with pytest.raises(TerminalError, match="set"):
        encode({1, 2}, "s")
    assert pickle.loads(pickle.dumps(e.value)).message == e.value.message


def test_a_custom_dumper_is_used_for_json() -> None:
    enc = encode({"a": 1}, "s", dump=lambda v: '{"b":2}')
    assert decode(enc) == {"b": 2}
    assert decode(enc, load=lambda text: ("loaded", text)) == ("loaded", '{"b":2}')
