"""The blob store: step results too large for the journal, on any ``pyarrow.fs`` filesystem.

A blob lives at ``<root>/<invocation>/<journal index>/<sha256>.<kind>``. The name is the
content's hash, so two attempts of a step that both got to write (a retry racing a slow first
try, a host that died after its worker wrote) never overwrite each other with different bytes
under a reference the journal already holds; the directory is keyed by invocation and journal
index, so a replay can adopt what a step wrote before its host died (``find``), and retention
removes an invocation's blobs in one call (``delete_invocation``).

Writes are atomic: on a local filesystem to a temporary name then renamed; on object stores
(S3, GCS) an object appears only once its upload completes, so the final name is written
directly (a rename there is a copy). Local directories are 0700 and files 0600: results may
hold anything the steps computed.

A read checks size and sha256 before anything is decoded: a blob that does not match raises
``BlobCorrupted`` (a ``TerminalError``: retrying cannot make the bytes right), never wrong
data. A store that cannot be reached raises ``BlobStoreUnavailable``, which is retried like
any other failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from actors.sdk.errors import TerminalError
from actors.steps.codec import Encoded, Kind, Writer

_CHUNK = 1 << 20
_SAFE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_TMP = ".tmp-"


@dataclass(frozen=True)
class BlobRef:
    """Where a blob is and what it must hash to. ``uri`` has no query string (a store's
    options, which may hold credentials, are never journaled)."""

    uri: str
    size: int
    sha256: str
    kind: Kind


class BlobCorrupted(TerminalError):
    """A blob's bytes do not match its reference (or it is gone): never returned as data."""

    def __init__(self, message: str, status_code: int = 500) -> None:
        super().__init__(message, status_code)


class BlobStoreUnavailable(Exception):
    """The blob store could not be reached; the step or replay is retried."""

    def __init__(self, uri: str, reason: str) -> None:
        super().__init__(f"blob store {uri} unavailable: {reason}")
        self.uri = uri
        self.reason = reason

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.uri, self.reason))


class _Hashing:
    """A binary sink that counts and hashes what goes through it."""

    def __init__(self, out: Any) -> None:
        self._out = out
        self.size = 0
        self.sha = hashlib.sha256()

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._out.write(view)
        self.sha.update(view)
        self.size += view.nbytes
        return view.nbytes

    # the rest of a file's interface, which numpy and Arrow look for
    closed = False

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        pass


def _component(invocation_id: str) -> str:
    """An invocation id as one path component (ids are plain; anything else is hashed)."""
    if _SAFE.fullmatch(invocation_id) and invocation_id not in (".", ".."):
        return invocation_id
    return "h-" + hashlib.sha256(invocation_id.encode()).hexdigest()[:32]


class BlobStore:
    """Blobs under one root URI (a local path, ``file://``, ``s3://``, ``gs://`` ...).

    Args:
        uri: the root; a plain path is a local directory.
        filesystem: a ``pyarrow.fs`` client to use instead of one made from ``uri`` (for
            options a URI cannot carry); ``uri`` then gives the scheme and root.

    Example:
        >>> store = BlobStore("/tmp/data/blobs")
        >>> ref = store.put("inv-1", 3, b"hello", Kind.BYTES)
        >>> store.get(ref).payload
        b'hello'
    """

    def __init__(self, uri: str | Path, filesystem: pafs.FileSystem | None = None) -> None:
        text = str(uri)
        if "://" not in text:
            text = Path(text).expanduser().absolute().as_uri()
        self.uri = text
        parts = urlsplit(text)
        if filesystem is not None:  # a configured client (or a test's mock)
            self.fs, root = filesystem, parts.netloc + parts.path
        else:
            try:
                self.fs, root = pafs.FileSystem.from_uri(text)
            except (OSError, ValueError) as e:
                raise BlobStoreUnavailable(text, str(e)) from None
        self.root = root.rstrip("/")
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self._base = Path(self.root).as_uri() if self.local else f"{parts.scheme}://{self.root}"

    # -- paths -------------------------------------------------------------------------------

    def _dir(self, invocation_id: str, idx: int | None = None) -> str:
        path = f"{self.root}/{_component(invocation_id)}"
        return path if idx is None else f"{path}/{int(idx)}"

    def _mkdirs(self, invocation_id: str, idx: int) -> None:
        if not self.local:
            return  # object stores have no directories to make
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        for path in (self._dir(invocation_id), self._dir(invocation_id, idx)):
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o700)

    # -- the operations ----------------------------------------------------------------------

    def put(
        self, invocation_id: str, idx: int, data: bytes | BinaryIO | Writer, kind: Kind
    ) -> BlobRef:
        """Write a blob for the step at journal index ``idx``: ``data`` is bytes, a readable
        binary stream, or a function that writes to a binary sink (``codec.writer``)."""
        directory = self._dir(invocation_id, idx)
        if not self.local:
            return self._put_object(directory, data, kind)
        tmp = f"{directory}/{_TMP}{uuid.uuid4().hex}"
        try:
            self._mkdirs(invocation_id, idx)
            with self.fs.open_output_stream(tmp) as out:
                sink = _Hashing(out)
                _copy(data, sink)
            os.chmod(tmp, 0o600)
            final = f"{directory}/{sink.sha.hexdigest()}.{kind.value}"
            self.fs.move(tmp, final)  # a rename: atomic
        except BaseException as e:
            self._discard(tmp)
            if isinstance(e, OSError):
                raise BlobStoreUnavailable(self.uri, f"writing {directory}: {e}") from None
            raise
        return self._ref(final, sink.size, sink.sha.hexdigest(), kind)

    def _put_object(self, directory: str, data: bytes | BinaryIO | Writer, kind: Kind) -> BlobRef:
        """An object store: the name needs the hash before the upload, which is atomic."""
        if not isinstance(data, bytes | bytearray | memoryview):
            buf = io.BytesIO()
            _copy(data, _Hashing(buf))
            data = buf.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        final = f"{directory}/{sha}.{kind.value}"
        try:
            try:
                self._upload(final, data)
            except FileNotFoundError:  # a filesystem with directories (HDFS ...): make them
                self.fs.create_dir(directory, recursive=True)
                self._upload(final, data)
        except OSError as e:
            raise BlobStoreUnavailable(self.uri, f"writing {final}: {e}") from None
        return self._ref(final, memoryview(data).nbytes, sha, kind)

    def _upload(self, path: str, data: bytes | bytearray | memoryview) -> None:
        with self.fs.open_output_stream(path) as out:
            out.write(data)

    def _ref(self, path: str, size: int, sha: str, kind: Kind) -> BlobRef:
        return BlobRef(self._base + path[len(self.root) :], int(size), sha, kind)

    def put_encoded(self, invocation_id: str, idx: int, encoded: Encoded) -> BlobRef:
        return self.put(invocation_id, idx, encoded.payload, encoded.kind)

    def get(self, ref: BlobRef) -> Encoded:
        """The blob's bytes, after checking their size and sha256."""
        if not ref.uri.startswith(self._base + "/"):
            return store_for(ref).get(ref)  # written under another configuration
        path = self.root + ref.uri[len(self._base) :]
        try:
            with self.fs.open_input_stream(path) as f:
                payload = f.read()
        except FileNotFoundError:
            raise BlobCorrupted(f"blob {ref.uri} is missing") from None
        except OSError as e:
            raise BlobStoreUnavailable(self.uri, f"reading {ref.uri}: {e}") from None
        if len(payload) != ref.size:
            raise BlobCorrupted(
                f"blob {ref.uri} has {len(payload):,} bytes, its reference says {ref.size:,}"
            )
        digest = hashlib.sha256(payload).hexdigest()
        if digest != ref.sha256:
            raise BlobCorrupted(
                f"blob {ref.uri} does not match its sha256 (expected {ref.sha256}, found {digest})"
            )
        return Encoded(ref.kind, payload)

    def find(self, invocation_id: str, idx: int) -> BlobRef | None:
        """A blob the step at ``idx`` wrote (say before its host died), or None. The hash is
        taken from the name and checked again when the blob is read."""
        selector = pafs.FileSelector(self._dir(invocation_id, idx), allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except OSError as e:
            raise BlobStoreUnavailable(self.uri, str(e)) from None
        found = []
        for info in infos:
            sha, _, ext = info.base_name.partition(".")
            if info.type != pafs.FileType.File or info.base_name.startswith(_TMP):
                continue
            try:
                kind = Kind(ext)
            except ValueError:
                continue
            found.append((info.mtime_ns or 0, info.path, info.size, sha, kind))
        if not found:
            return None
        _, path, size, sha, kind = min(found)  # the oldest: the first attempt that finished
        return self._ref(path, size, sha, kind)

    def delete_invocation(self, invocation_id: str) -> None:
        """Remove every blob of an invocation (retention); nothing there is not an error."""
        path = self._dir(invocation_id)
        try:
            if self.fs.get_file_info(path).type != pafs.FileType.NotFound:
                self.fs.delete_dir(path)
        except OSError as e:
            raise BlobStoreUnavailable(self.uri, f"deleting {path}: {e}") from None

    def _discard(self, path: str) -> None:
        with contextlib.suppress(OSError):
            self.fs.delete_file(path)


def _copy(data: bytes | BinaryIO | Writer, sink: _Hashing) -> None:
    if isinstance(data, bytes | bytearray | memoryview):
        sink.write(data)
    elif callable(data):
        data(sink)  # type: ignore[arg-type]
    else:
        while chunk := data.read(_CHUNK):
            sink.write(chunk)


_stores: dict[str, BlobStore] = {}
_stores_lock = threading.Lock()


def open_store(uri: str) -> BlobStore:
    """The process's ``BlobStore`` for ``uri`` (a worker reuses its filesystem client)."""
    with _stores_lock:
        store = _stores.get(uri)
        if store is None:
            store = _stores[uri] = BlobStore(uri)
        return store


def store_for(ref: BlobRef, opener: Callable[[str], BlobStore] = open_store) -> BlobStore:
    """A store that holds ``ref``, opened from its own URI (when no configured store is at
    hand, e.g. a reference loaded in a process that only has the reference)."""
    base = ref.uri.rsplit("/", 3)[0]
    return opener(base)
