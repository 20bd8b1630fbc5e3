"""NumPy arrays as ``.npy`` without pickle (numpy is a test dependency, not a runtime one)."""

from __future__ import annotations

import io

import pytest

from actors.sdk.errors import TerminalError
from actors.steps.codec import Encoded, Kind, binary_size, decode, encode

np = pytest.importorskip("numpy")


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3)),
        np.zeros((0, 5)),
        np.array(["a", "bc"]),
        np.array([(1, 2.0)], dtype=[("i", "i4"), ("f", "f8")]),
    ],
)
def test_ndarray_round_trips_as_npy(arr) -> None:
    enc = encode(arr, "s")
    assert enc.kind is Kind.NDARRAY
    assert enc.payload.startswith(b"\x93NUMPY")
    back = decode(enc)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    assert np.array_equal(back, arr)
    assert binary_size(arr) == arr.nbytes


def test_object_arrays_are_refused_not_pickled() -> None:
    arr = np.array([{"a": 1}, None], dtype=object)
    with pytest.raises(TerminalError) as e:
        encode(arr, "embed")
    assert "'embed'" in e.value.message and "numpy.ndarray" in e.value.message


def test_npy_with_pickled_objects_is_not_loaded() -> None:
    buf = io.BytesIO()
    np.save(buf, np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        decode(Encoded(Kind.NDARRAY, buf.getvalue()))
