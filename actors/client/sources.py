"""Where the CLI reads from: the journal actor of a running runtime (live), or a stopped
runtime's journal file opened read-only (offline), behind one ``Source`` protocol."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import duckdb
import pyarrow as pa

from actors.client import partitionstatus
from actors.client.partsql import LiveJournals
from journal.config import RuntimeConfig
from journal.errors import DataDirError, RaystateError, StatusCode
from journal.federated import run, run_guarded
from journal.partitions import Partitions, directories, stored_count
from journal.private import owner_only_files
from journal.store import DB_FILE, JournalStore
from journal.usersql import DEFAULT_SQL_TIMEOUT_S, MAX_RESULT_BYTES
from journal.wal import WriteAheadLog

ATTACHED: list[bool] = []  # the command line itself attached this process to Ray


class Unreachable(RaystateError, Exception):
    """Nothing to read from: no runtime reachable, no journal at --db (exit code 2)."""

    code = StatusCode.UNAVAILABLE


class NotFound(RaystateError, Exception):
    """The thing asked for does not exist (exit code 1)."""

    code = StatusCode.NOT_FOUND


class Source(Protocol):
    def sql(self, query: str) -> pa.Table: ...

    def partitions(self) -> pa.Table: ...

    def close(self) -> None: ...


class LiveJournal:
    """The journal actors of the runtime running in ``namespace``, for reads: one Ray call a
    query and partition it reads (what ``Runtime.sql`` does, without building a whole
    client; ``actors.client.partsql``)."""

    def __init__(self, namespace: str, hint: str) -> None:
        handles, config = _journal_actors(namespace, hint)
        self._handles = handles
        self._journals = LiveJournals(handles, config)

    def sql(self, query: str) -> pa.Table:
        from journal.transport.remote import UNAVAILABLE

        try:
            return self._journals.sql(query)
        except UNAVAILABLE as e:
            raise Unreachable(
                f"the journal actor is not available ({first_line(e)}); "
                "try again once it has restarted"
            ) from None

    def partitions(self) -> pa.Table:
        """``raystate partitions``: where each partition's journal runs, what it holds."""
        from journal.transport.remote import UNAVAILABLE

        try:
            return partitionstatus.to_table(partitionstatus.live(self._handles))
        except UNAVAILABLE as e:
            raise Unreachable(
                f"a journal actor is not available ({first_line(e)}); "
                "try again once it has restarted"
            ) from None

    def close(self) -> None:
        pass


def _journal_actors(namespace: str, hint: str) -> tuple[list[Any], RuntimeConfig]:
    """The runtime's journal actors, partition 0 first: ``journal`` (one partition), else
    ``journal:0`` and as many more as its config says."""
    import ray

    try:
        return [ray.get_actor(Partitions(1).journal(0), namespace=namespace)], RuntimeConfig()
    except ValueError:
        pass
    try:
        first = ray.get_actor(Partitions(2).journal(0), namespace=namespace)
    except ValueError:
        raise Unreachable(f"no raystate runtime runs in namespace {namespace!r}; {hint}") from None
    raw: dict[str, Any] = dict(ray.get(first.config.remote()) or {})
    if not raw:
        raise Unreachable(f"the runtime in namespace {namespace!r} is still starting")
    config = RuntimeConfig.from_dict(raw)
    layout = Partitions(config.partitions)
    try:
        rest = [
            ray.get_actor(layout.journal(p), namespace=namespace) for p in range(1, layout.count)
        ]
    except ValueError as e:
        raise Unreachable(f"a journal of the runtime in {namespace!r} is missing ({e})") from None
    return [first, *rest], config


class OfflineJournal:
    """A stopped runtime's journal, opened read-only in this process, with file and network
    access off and the configuration locked (as in ``JournalStore``); every partition's
    journal, for a data dir of several, federated as ``Runtime.sql`` does.

    DuckDB allows one process per file, so this fails while a runtime has the file open; the
    message then says to query the runtime live instead.
    """

    def __init__(self, data_dir: str | Path) -> None:
        path = Path(data_dir)
        try:
            count = (stored_count(path) or 1) if path.is_dir() else 1
        except DataDirError as e:
            raise Unreachable(str(e)) from None
        self.layout = Partitions(count)
        self._path = path
        files = [d / DB_FILE for d in directories(path)] if count > 1 else [path]
        self._cons: list[duckdb.DuckDBPyConnection] = []
        try:
            for file in files:
                self._cons.append(_open(file))
        except BaseException:
            self.close()
            raise

    def sql(self, query: str) -> pa.Table:
        """As the journal runs users' queries: checked, read-only, capped, time-limited."""
        if self.layout.count == 1:
            return self._read([(0, query)])[0]
        return run(query, self.layout, self._read, timeout_s=DEFAULT_SQL_TIMEOUT_S)

    def partitions(self) -> pa.Table:
        """``raystate partitions`` of the stopped data dir (counts; no node or process)."""
        directory = self._path if self._path.is_dir() else self._path.parent
        return partitionstatus.to_table(partitionstatus.offline(directory, self._read))

    def _read(self, requests: Sequence[tuple[int, str]]) -> list[pa.Table]:
        out = []
        for p, query in requests:
            with self._cons[p].cursor() as cur:
                out.append(run_guarded(cur, query, DEFAULT_SQL_TIMEOUT_S, MAX_RESULT_BYTES))
        return out

    def close(self) -> None:
        for con in self._cons:
            con.close()


def _open(path: Path) -> duckdb.DuckDBPyConnection:
    """One journal file (or the data dir holding it), read-only, its write-ahead log
    recovered first."""
    if not path.is_file():  # a data dir, or the journal file itself
        path = path / DB_FILE
    if not path.is_file():
        raise Unreachable(f"no raystate journal at {path}")
    if WriteAheadLog(path.parent).segments():
        _recover(path.parent)
    try:
        return duckdb.connect(
            str(path),
            read_only=True,
            config={"enable_external_access": False, "lock_configuration": True},
        )
    except duckdb.IOException as e:
        if "lock" in str(e).lower():
            raise _in_use(path) from None
        raise Unreachable(f"cannot open {path}: {first_line(e)}") from None


def _recover(data_dir: Path) -> None:
    """A journal that died before it moved its write-ahead log into DuckDB (``journal.wal``)
    left rows only there: opening the store once replays them into the file."""
    try:
        with owner_only_files():
            JournalStore(data_dir).close()
    except DataDirError as e:
        if "in use" in str(e):
            raise _in_use(data_dir / DB_FILE) from None
        raise Unreachable(
            f"{e}; query it live with --namespace (and --address) instead of --db"
        ) from None


def _in_use(path: Path) -> Unreachable:
    return Unreachable(
        f"{path} is in use by a running runtime; query it live with --namespace "
        "(and --address) instead of --db"
    )


HINT = "start one, pass --namespace/--address, or read a stopped data dir with --db DATA_DIR"


@contextlib.contextmanager
def open_source(db: Path | None, address: str | None, namespace: str) -> Iterator[Source]:
    """The journal to query: the data dir at ``db``, else the runtime running in ``namespace``."""
    if db is not None:
        source: Source = OfflineJournal(db)
        try:
            yield source
        finally:
            source.close()
        return
    with attach_ray(address, namespace):
        yield LiveJournal(namespace, HINT)


@contextlib.contextmanager
def attach_ray(address: str | None, namespace: str) -> Iterator[None]:
    """Ray, attached to the running cluster if this process is not attached yet (it stays
    attached until the process ends: see ``actors.client.cli``)."""
    import ray

    if not ray.is_initialized():  # (in-process, as in tests and notebooks, it is)
        _probe(address)
        try:
            ray.init(
                address=address or "auto",
                namespace=namespace,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
            )
        except (ConnectionError, RuntimeError) as e:
            raise Unreachable(f"no Ray cluster reachable ({first_line(e)}); {HINT}") from None
        ATTACHED.append(True)
    yield


def connect(address: str | None, namespace: str) -> Any:
    """A ``Runtime`` client of the runtime in ``namespace`` (Ray attached already)."""
    from actors.client.runtime import Runtime

    try:
        return Runtime.connect(namespace=namespace, address=address)
    except RuntimeError as e:
        raise Unreachable(f"{e}; {HINT}") from None


def _probe(address: str | None) -> None:
    """Fail fast on an explicit ``host:port`` nobody listens on (``ray.init`` would retry for
    minutes)."""
    if not address or address in ("auto", "local") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=3).close()
    except OSError as e:
        raise Unreachable(f"no Ray cluster at {address} ({e.strerror or e})") from None


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
