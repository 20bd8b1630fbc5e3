"""The blob store: atomic, owner-only, verified writes and reads; the journal's marked documents."""

from __future__ import annotations

import asyncio
import io
import json
import os
import pickle
import stat
from pathlib import Path

import pyarrow as pa
import pytest

from actors.sdk.errors import TerminalError
from actors.steps import results
from actors.steps.blobs import BlobCorrupted, BlobRef, BlobStore, BlobStoreUnavailable
from actors.steps.codec import Kind, encode, writer
from actors.steps.refs import DurableRef, resolve_args
from actors.steps.results import Form, from_journal, to_journal


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "data" / "blobs")


def _file(ref: BlobRef) -> Path:
    return Path(ref.uri.removeprefix("file://"))


def test_put_get_round_trip_with_owner_only_modes(store: BlobStore) -> None:
    ref = store.put("inv-1", 3, b"hello", Kind.BYTES)
    assert ref.size == 5 and ref.kind is Kind.BYTES
    assert ref.uri.startswith("file://") and ref.uri.endswith(f"/inv-1/3/{ref.sha256}.bytes")
    assert store.get(ref).payload == b"hello"
    path = _file(ref)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for d in (path.parent, path.parent.parent, path.parent.parent.parent):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left


def test_put_streams_and_writers(store: BlobStore) -> None:
    a = store.put("inv", 1, io.BytesIO(b"x" * 3_000_000), Kind.BYTES)
    assert a.size == 3_000_000 and store.get(a).payload == b"x" * 3_000_000
    table = pa.table({"v": list(range(1000))})
    kind, write = writer(table, "s")
    b = store.put("inv", 2, write, kind)
    assert store.get(b).payload == encode(table, "s").payload


def test_a_corrupted_or_missing_blob_is_never_returned(store: BlobStore) -> None:
    ref = store.put("inv", 0, b"abcdef", Kind.BYTES)
    _file(ref).write_bytes(b"abcdeX")
    with pytest.raises(BlobCorrupted, match="sha256"):
        store.get(ref)
    _file(ref).write_bytes(b"abc")
    with pytest.raises(BlobCorrupted, match="3 bytes"):
        store.get(ref)
    _file(ref).unlink()
    with pytest.raises(BlobCorrupted, match="missing"):
        store.get(ref)
    assert isinstance(BlobCorrupted("x"), TerminalError)


def test_find_adopts_what_a_step_wrote(store: BlobStore) -> None:
    assert store.find("inv", 4) is None
    ref = store.put("inv", 4, b"result", Kind.BYTES)
    (_file(ref).parent / ".tmp-abandoned").write_bytes(b"half")
    assert store.find("inv", 4) == ref
    assert store.find("inv", 5) is None and store.find("other", 4) is None


def test_two_attempts_never_overwrite_a_journaled_blob(store: BlobStore) -> None:
    first = store.put("inv", 1, b"first", Kind.BYTES)
    second = store.put("inv", 1, b"second", Kind.BYTES)
    assert store.get(first).payload == b"first" and store.get(second).payload == b"second"


def test_delete_invocation(store: BlobStore) -> None:
    keep = store.put("keep", 0, b"k", Kind.BYTES)
    gone = [store.put("gone", i, b"g%d" % i, Kind.BYTES) for i in range(3)]
    store.delete_invocation("gone")
    store.delete_invocation("gone")  # twice, or never written: not an error
    store.delete_invocation("never")
    assert all(store.find("gone", i) is None for i in range(3))
    with pytest.raises(BlobCorrupted):
        store.get(gone[0])
    assert store.get(keep).payload == b"k"


def test_odd_invocation_ids_stay_one_path_component(store: BlobStore) -> None:
    ref = store.put("../../etc/x", 0, b"v", Kind.BYTES)
    assert _file(ref).is_relative_to(Path(store.root))
    assert store.find("../../etc/x", 0) == ref


def test_an_unreachable_store_is_retryable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = BlobStore(blocker / "blobs")
    with pytest.raises(BlobStoreUnavailable) as e:
        store.put("inv", 0, b"x", Kind.BYTES)
    assert not isinstance(e.value, TerminalError)
    again = pickle.loads(pickle.dumps(e.value))
    assert (again.uri, again.reason) == (e.value.uri, e.value.reason)
    with pytest.raises(BlobStoreUnavailable):
        BlobStore("nosuchscheme://x/y")


# -- the journal's documents ------------------------------------------------------------------


@pytest.mark.parametrize("value", [1, "s", None, [1, 2], {"a": 1}, {"x": {"$raystate": "blob"}}])
def test_json_results_stay_plain_json_text(value) -> None:
    text = to_journal(value)
    assert json.loads(text) == value
    assert from_journal(text).form is Form.JSON


@pytest.mark.parametrize(
    "value",
    [
        {"$raystate": "blob", "uri": "file:///etc/passwd"},
        {"$raystate": 1},
        {"$raystate": "json", "value": 2},
    ],
)
def test_user_json_that_looks_like_a_marker_is_escaped(value) -> None:
    text = to_journal(value)
    assert json.loads(text) == {"$raystate": "json", "value": value}
    assert asyncio.run(results.load(text, None)) == value


def test_small_binary_results_are_inline_and_large_ones_spill(store: BlobStore) -> None:
    text = to_journal(b"\x00\x01")
    assert json.loads(text)["$raystate"] == "inline"
    assert asyncio.run(results.load(text, None)) == b"\x00\x01"
    with pytest.raises(TerminalError) as e:
        to_journal(b"x" * 100, inline_limit=10, step="big")
    assert e.value.status_code == 413 and "'big'" in e.value.message
    text = asyncio.run(
        results.save(
            b"y" * 100, step="big", store=store, invocation_id="inv", idx=7, inline_limit=10
        )
    )
    doc = json.loads(text)
    assert doc["$raystate"] == "blob" and doc["size"] == 100 and len(doc["sha256"]) == 64
    assert asyncio.run(results.load(text, store)) == b"y" * 100
    assert asyncio.run(results.load(text, None)) == b"y" * 100  # opened from the URI
    big = {"k": "v" * 100}
    text = asyncio.run(
        results.save(big, step="j", store=store, invocation_id="inv", idx=8, inline_limit=10)
    )
    assert json.loads(text)["kind"] == "json"
    assert asyncio.run(results.load(text, store)) == big


def test_a_replay_of_a_corrupted_blob_fails_clearly(store: BlobStore) -> None:
    text = asyncio.run(
        results.save(b"z" * 50, step="s", store=store, invocation_id="inv", idx=0, inline_limit=10)
    )
    _file(from_journal(text).blob).write_bytes(b"q" * 50)
    with pytest.raises(BlobCorrupted, match="sha256"):
        asyncio.run(results.load(text, store))


def test_durable_refs_are_journaled_as_references(store: BlobStore) -> None:
    ref = DurableRef(store.put("inv", 2, b"payload", Kind.BYTES), store.uri)
    text = results.blob_to_journal(ref.blob, durable_ref=True)
    back = asyncio.run(results.load(text, store, make_ref=lambda blob: DurableRef(blob, store.uri)))
    assert back == ref
    assert to_journal(ref) == text  # a step that returns a reference it was given
    assert asyncio.run(back.get()) == b"payload"
    assert pickle.loads(pickle.dumps(ref)) == ref
    args, kwargs = resolve_args((1, ref), {"r": ref, "n": 2})
    assert args == (1, b"payload") and kwargs == {"r": b"payload", "n": 2}


def test_local_blob_dir_mode_does_not_depend_on_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        ref = BlobStore(tmp_path / "b").put("inv", 0, b"v", Kind.BYTES)
    finally:
        os.umask(old)
    assert stat.S_IMODE(_file(ref).parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(_file(ref).stat().st_mode) == 0o600


def test_object_stores_write_the_final_name_directly() -> None:
    """The S3/GCS path (no rename: an upload is atomic there), on pyarrow's mock filesystem."""
    from pyarrow.fs import FileSelector, _MockFileSystem

    fs = _MockFileSystem()
    store = BlobStore("mock://bucket/prefix", filesystem=fs)
    assert not store.local
    table = pa.table({"v": [1, 2]})
    kind, write = writer(table, "s")
    ref = store.put("inv", 2, write, kind)
    assert ref.uri == f"mock://bucket/prefix/inv/2/{ref.sha256}.arrow"
    listed = fs.get_file_info(FileSelector("bucket/prefix/inv/2"))
    assert [i.base_name for i in listed] == [f"{ref.sha256}.arrow"]
    assert store.get(ref).payload == encode(table, "s").payload
    assert store.find("inv", 2) == ref
    store.delete_invocation("inv")
    assert store.find("inv", 2) is None


def _remote_step_error() -> Exception:
    from actors.steps.remote import RemoteStepError  # imports Ray (does not start it)

    return RemoteStepError("embed", "WorkerCrashedError: the worker died")


@pytest.mark.parametrize(
    "make",
    [
        lambda: BlobCorrupted("blob x does not match", 500),
        lambda: BlobStoreUnavailable("s3://b/p", "timed out"),
        _remote_step_error,
    ],
    ids=["BlobCorrupted", "BlobStoreUnavailable", "RemoteStepError"],
)
def test_errors_survive_pickle(make) -> None:
    error = make()
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error) and str(again) == str(error)
    assert vars(again) == vars(error)
