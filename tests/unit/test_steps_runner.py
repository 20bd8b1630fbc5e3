"""``actors.steps.runner``: what ``ctx.run`` calls, without Ray (Ray callables are tested in
tests/integration/test_ray_steps.py)."""

from __future__ import annotations

import asyncio
import functools
import json

import pytest

from actors.sdk.errors import TerminalError
from actors.sdk.serde import ANY, MAX_PAYLOAD_BYTES
from actors.steps import runner
from actors.steps.blobs import BlobCorrupted
from actors.steps.codec import is_marked
from actors.steps.refs import DurableRef

np = pytest.importorskip("numpy")


def _journal(value, config, durable_ref=False, name="s"):
    return asyncio.run(runner.journal(value, ANY, name, "inv-1", 3, config, durable_ref))


def test_plain_callables_are_not_remote_without_importing_ray() -> None:
    for fn in (len, print, lambda: 1, functools.partial(len), "x".upper, object()):
        assert runner.is_remote(fn) is False


def test_json_results_are_journaled_as_json_text() -> None:
    text, value = _journal({"a": [1, 2]}, runner.NO_STORE)
    assert (json.loads(text), value) == ({"a": [1, 2]}, {"a": [1, 2]})
    text, value = _journal({"$raystate": "x"}, runner.NO_STORE)  # looks like ours: escaped
    assert is_marked(text) and value == {"$raystate": "x"}


def test_binary_results_inline_and_in_the_blob_store(tmp_path) -> None:
    config = runner.StepsConfig(str(tmp_path / "blobs"), inline_limit=1024)
    small, big = np.arange(10, dtype=np.int16), np.ones(1000)
    for value, form in ((small, '"inline"'), (big, '"blob"'), (b"x" * 2000, '"blob"')):
        text, out = _journal(value, config)
        assert form in text and out is value
        back = asyncio.run(runner.replayed(text, ANY, config))
        assert type(back) is type(value) and bytes(memoryview(back)) == bytes(memoryview(value))
    big_json = ["y" * 100] * 100  # JSON over the inline limit goes to the blob store too
    text, _ = _journal(big_json, config)
    assert '"blob"' in text and asyncio.run(runner.replayed(text, ANY, config)) == big_json


def test_without_a_blob_store_the_old_payload_limit_holds() -> None:
    with pytest.raises(TerminalError, match="bytes of JSON; the limit is"):
        _journal("x" * (MAX_PAYLOAD_BYTES + 1), runner.NO_STORE)


def test_unsupported_results_name_the_step_and_the_type() -> None:
    class Opaque:
        pass

    with pytest.raises(TerminalError, match=r"ctx.run\('s'\) .*not JSON-serializable \(Opaque\)"):
        _journal(Opaque(), runner.NO_STORE)
    with pytest.raises(TerminalError, match=r"step 'objs' is a numpy.ndarray"):
        _journal(np.array([object()]), runner.StepsConfig("/nonexistent"), name="objs")


def test_a_local_durable_ref_and_a_corrupted_blob(tmp_path) -> None:
    config = runner.StepsConfig(str(tmp_path / "blobs"))
    text, ref = _journal(np.arange(5.0), config, durable_ref=True)
    assert isinstance(ref, DurableRef) and '"ref"' in text
    assert asyncio.run(runner.replayed(text, ANY, config)) == ref
    [blob] = [p for p in (tmp_path / "blobs").rglob("*.npy")]
    blob.write_bytes(blob.read_bytes()[:-1] + b"\x00")
    with pytest.raises(BlobCorrupted, match="sha256"):
        asyncio.run(ref.get())


def test_the_runtime_config_and_retention_hook(tmp_path) -> None:
    entries = runner.steps_config(str(tmp_path), None, 1000)
    config = runner.StepsConfig.from_config(entries)
    assert config.store_uri == (tmp_path / "blobs").as_uri() and config.inline_limit == 1000
    assert runner.StepsConfig.from_config({}) == runner.NO_STORE
    with pytest.raises(ValueError):
        runner.steps_config(str(tmp_path), None, -1)
    asyncio.run(runner.journal(b"z" * 2000, ANY, "s", "inv-9", 0, config))
    assert list((tmp_path / "blobs" / "inv-9").rglob("*.bytes"))
    runner.delete_blobs(["inv-9", "never-existed"], entries)
    assert not (tmp_path / "blobs" / "inv-9").exists()
