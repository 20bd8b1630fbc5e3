"""The journal actor: group commit in front of ``JournalStore``, and waiters for outputs.

Hosts call ``commit(batch)``; the batches that arrive in one turn of the event loop go into
one group together (those sent while a group is being written wait in their sockets for the
next turn). A group is durable, and
acknowledged, once it is in the store's write-ahead log (``journal.wal``); a drainer moves the
rows into DuckDB ``DRAIN_DELAY_S`` later, many groups in one DuckDB transaction (reads drain
first, so they see every acknowledged row). ``await_output``
lets any driver wait for an invocation's result after the host that computed it is gone.

Retention: a background task prunes finished invocations older than the runtime's configured
``retention_s`` (``journal.retention``) every ``prune_period`` (a quarter of the retention,
bounded by ``journal.retention``), on a connection of its own in a worker thread, so group
commits go on meanwhile and wait only for the commits of its DELETE chunks. It starts with the
first commit.

Fencing (``fenced=True``, for a partition on storage every node mounts, which Ray may start
again on another node while the old process still runs): the journal takes the directory's next
epoch (``journal.fence``) before it opens the store, checks it after each group's log write and
before acknowledging it, and before each drain into DuckDB. Once a check fails, the group is
refused with ``Fenced``, so is every later call, and the store is closed without a drain, so
the DuckDB file is free for the newer writer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import pickle
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pyarrow as pa

from journal import metrics
from journal.clock import now_ms
from journal.config import RuntimeConfig
from journal.errors import DataDirError, Fenced, StaleHost, StatusCode
from journal.fence import Fence
from journal.fencing import FencedWriter
from journal.private import FILE_MODE, owner_only_umask
from journal.records import Accept, Batch, Completion, Outcome, PendingInvocation, Timer
from journal.retention import MAX_PRUNE_PERIOD_S, PruneStats, prune_period
from journal.schedules import ScheduleJournal
from journal.secret import SECRET, runtime_secret
from journal.sqlguard import SqlRefused
from journal.store import JournalStore
from journal.takeover import FIRST_START_WAIT_S, open_when_free, refuse_if_held
from journal.transport.gctune import tune_gc
from journal.transport.wire import WireServed
from journal.usersql import MAX_RESULT_BYTES, UserQueries

CONFIG_FILE = "runtime-config.pickle"
# How long acknowledged rows may wait for DuckDB: longer means fewer, larger DuckDB
# transactions (each costs milliseconds of CPU, whatever it holds; docs/performance.md).
DRAIN_DELAY_S = 0.1
ROUTES_KEPT = 50_000  # recent invocations whose route ``route`` answers from memory
Route = tuple[str, str | None, int]  # service, key, route hash
log = logging.getLogger("raystate.journal")


class GroupCommitJournal(FencedWriter, ScheduleJournal):
    """Async front of a store: many callers' batches, one transaction at a time."""

    def __init__(
        self,
        data_dir: str,
        *,
        clock: Callable[[], int] = now_ms,
        secret_dir: str | None = None,
        fenced: bool = False,
        lock_wait_s: float | None = 0.0,
    ) -> None:
        """``secret_dir``: where the runtime's secret is (the data dir's root, which every
        partition of a runtime shares; default ``data_dir``). ``fenced``: hold the directory's
        epoch, and stop for good once a newer writer takes it (see the module's docstring);
        then wait up to ``lock_wait_s`` (None: without end) for a process that holds the DuckDB
        file to let go (``journal.takeover``)."""
        # Before the store opens: its recovery must read what every earlier writer acknowledged.
        self.fence = Fence.acquire(data_dir) if fenced else None
        self._fenced_out: Fenced | None = None
        self._abandoned: asyncio.Future[None] | None = None
        fence = self.fence
        self.store = (
            JournalStore(data_dir, clock=clock)
            if fence is None
            else open_when_free(
                lambda: JournalStore(data_dir, clock=clock, fence=fence), fence, lock_wait_s
            )
        )
        self.secret = runtime_secret(secret_dir or data_dir)
        self._queue: list[tuple[Batch, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._drain_thread = ThreadPoolExecutor(1, thread_name_prefix="journal-drainer")
        self._drainer: asyncio.Task[None] | None = None
        self._routes: OrderedDict[str, Route] = OrderedDict()
        self.drains = 0
        self._barriers: list[asyncio.Future[None]] = []
        self._waiters: dict[str, list[asyncio.Future[Outcome]]] = defaultdict(list)
        self._config_file = Path(data_dir) / CONFIG_FILE
        self._config: dict[str, object] = (
            pickle.loads(self._config_file.read_bytes()) if self._config_file.exists() else {}
        )
        self.transactions = 0
        self._pruner: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.prunes = 0
        self.last_prune: PruneStats | None = None
        # called (on a thread) with the ids of pruned invocations and the runtime config
        self.on_pruned: Callable[[list[str], dict[str, object]], None] | None = None
        self.user_queries = UserQueries(self.store.user_cursor)
        self.sql_max_bytes = MAX_RESULT_BYTES

    async def commit(self, batch: Batch) -> None:
        """Return once ``batch`` is durable (with whatever else arrived meanwhile). A host's
        batch from before this writer's epoch is refused (``StaleHost``)."""
        if self._fenced_out is not None:
            raise self._refusal()
        if batch.epoch is not None and self.fence is not None and batch.epoch < self.fence.epoch:
            stale = StaleHost(str(self.store.data_dir), batch.epoch, self.fence.epoch)
            log.warning("refused batch %s: %s", batch.batch_id, stale)
            raise stale
        if self._pruner is None or self._pruner.done():
            self._pruner = asyncio.create_task(self._prune_loop())
            if self.fence is not None and (self._watcher is None or self._watcher.done()):
                self._watcher = asyncio.create_task(self._watch_loop())
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((batch, fut))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_loop())
        await fut

    async def _write_loop(self) -> None:
        while self._queue or self._barriers:
            queued, self._queue = self._queue, []
            barriers, self._barriers = self._barriers, []
            try:
                batches = [b for b, _ in queued]
                # On the event loop: the write is a log append and one fdatasync (the loop
                # waits that long; calls arriving meanwhile queue in their sockets and join
                # the next group). A thread of its own cost two thread hops per commit
                # (measured in CHANGELOG.md).
                started = time.perf_counter()
                outputs = self.store.write(batches) if batches else []
                if batches:
                    if self.fence is not None:  # durable now; acknowledged only if still ours
                        self.fence.check()
                    metrics.journal_commit(
                        time.perf_counter() - started, sum(len(b.records) for b in batches)
                    )
            except Fenced as e:
                await self._fence_lost(e, [fut for _, fut in queued] + barriers)
                return
            except Exception as e:
                for _, fut in queued:
                    if not fut.done():
                        fut.set_exception(e)
                outputs = []
            else:
                for _, fut in queued:
                    if not fut.done():
                        fut.set_result(None)
                self._remember_routes(batches)
            for barrier in barriers:
                if not barrier.done():
                    barrier.set_result(None)
            self.transactions += bool(queued)
            if self.store.undrained and (self._drainer is None or self._drainer.done()):
                self._drainer = asyncio.create_task(self._drain_loop())
            for out in outputs:
                for waiter in self._waiters.pop(out.invocation_id, []):
                    if not waiter.done():
                        waiter.set_result(Outcome.of(out))

    async def _drain_loop(self) -> None:
        while self.store.undrained:
            await asyncio.sleep(DRAIN_DELAY_S)
            try:
                await self.flush()
            except Fenced as e:
                await self._fence_lost(e)
                return
            except Exception:
                log.exception("moving the write-ahead log into DuckDB failed; trying again")

    async def flush(self) -> int:
        """Move every acknowledged row into DuckDB now (``Runtime.shutdown`` calls this before
        it stops the actor, so the DuckDB file alone holds everything); return how many."""
        await self._settled()
        moved = await asyncio.get_running_loop().run_in_executor(
            self._drain_thread, self.store.drain
        )
        self.drains += bool(moved)
        return moved

    async def _settled(self) -> None:
        """Wait until what was queued before this call is written, so reads see it (and, when
        fenced, make sure this journal still holds its directory)."""
        if self.fence is not None:
            await self._check_fence()
        if self._writer is None or self._writer.done():
            return
        barrier = asyncio.get_running_loop().create_future()
        self._barriers.append(barrier)
        await barrier

    async def writer_epoch(self) -> int | None:
        """This writer's epoch of its fenced directory (None: not fenced). A host reads it
        before it recovers and sends it with every batch (``Batch.epoch``)."""
        return None if self.fence is None else self.fence.epoch

    async def outcome(self, invocation_id: str) -> Outcome | None:
        await self._settled()
        return await asyncio.to_thread(self.store.outcome, invocation_id)

    async def accepted(self, invocation_id: str) -> Accept | None:
        await self._settled()
        return await asyncio.to_thread(self.store.accepted, invocation_id)

    def _remember_routes(self, batches: list[Batch]) -> None:
        routes = self._routes
        for batch in batches:
            for r in batch.records:
                if type(r) is Accept:
                    routes[r.id] = (r.service, r.key, r.route_hash)
        while len(routes) > ROUTES_KEPT:
            routes.popitem(last=False)

    async def route(self, invocation_id: str) -> Route | None:
        """(service, key, route hash) of an accepted invocation: what a resolution or a
        cancel needs to find its host. Recent ones come from memory (an awakeable resolved
        moments after it was made would otherwise make every resolution a journal read)."""
        known = self._routes.get(invocation_id)
        if known is not None:
            return known
        accept = await self.accepted(invocation_id)
        return None if accept is None else (accept.service, accept.key, accept.route_hash)

    async def completion(self, invocation_id: str, idx: int) -> Completion | None:
        await self._settled()
        return await asyncio.to_thread(self.store.completion, invocation_id, idx)

    async def await_output(self, invocation_id: str) -> Outcome:
        """The invocation's outcome, waiting for it if it is not there yet; a failure (404)
        if the journal does not know it: never accepted, or pruned after the retention."""
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiters[invocation_id].append(fut)
        done = await self.outcome(invocation_id)
        if done is None and await self.accepted(invocation_id) is None and not fut.done():
            done = Outcome(
                False,
                None,
                f"unknown invocation {invocation_id} (never accepted, "
                "or pruned after the journal's retention)",
                StatusCode.NOT_FOUND,
            )
        if done is not None:
            waiters = self._waiters.get(invocation_id, [])
            if fut in waiters:  # a commit may have resolved and dropped it meanwhile
                waiters.remove(fut)
                if not waiters:
                    del self._waiters[invocation_id]
            return done
        return await fut

    async def pending(
        self,
        services: list[str],
        partition: tuple[int, int] | None = None,
        key: str | None = None,
        ids: list[str] | None = None,
    ) -> list[PendingInvocation]:
        await self._settled()
        return await asyncio.to_thread(
            self.store.pending, services, partition=partition, key=key, ids=ids
        )

    async def pending_timers(self, host: str | None = None) -> list[Timer]:
        await self._settled()
        return await asyncio.to_thread(self.store.pending_timers, host)

    async def load_states(self, service: str, keys: list[str]) -> dict[str, dict[str, str]]:
        await self._settled()
        return await asyncio.to_thread(self.store.load_states, service, keys)

    async def state_key_filter(self, service: str) -> bytes:
        await self._settled()
        return await asyncio.to_thread(self.store.state_key_filter, service)

    def sql_timeout_s(self) -> float | None:
        """Users' queries' time limit (``Runtime.start(..., sql_timeout=...)``)."""
        value = self.runtime_config().sql_timeout_s
        return None if value is None else float(value)

    async def sql(self, query: str, query_id: str | None = None) -> pa.Table:
        """A user's read-only query, on threads of its own, under the time limit and the
        result cap (``journal.usersql``)."""
        await self._settled()
        return await self.user_queries.run(
            query, timeout_s=self.sql_timeout_s(), max_bytes=self.sql_max_bytes, query_id=query_id
        )

    async def sql_or_error(self, query: str, query_id: str | None = None) -> pa.Table | SqlRefused:
        """Like ``sql``, with a refusal or SQL error returned as a ``SqlRefused`` (errors
        cross the Ray boundary as data)."""
        try:
            return await self.sql(query, query_id)
        except SqlRefused as e:
            return e
        except duckdb.Error as e:
            return SqlRefused(str(e))

    async def cancel_sql(self, query_id: str) -> bool:
        """Interrupt the user's query sent with ``query_id`` (its caller gave up)."""
        return self.user_queries.cancel(query_id)

    async def fired_open_timers(self) -> list[Timer]:
        await self._settled()
        return await asyncio.to_thread(self.store.fired_open_timers)

    async def admissions(self, limit: str, since_ms: int) -> list[int]:
        await self._settled()
        return await asyncio.to_thread(self.store.admissions, limit, since_ms)

    async def pending_services(self) -> list[str]:
        await self._settled()
        return await asyncio.to_thread(self.store.pending_services)

    async def pending_keys(self, service: str) -> list[str]:
        await self._settled()
        return await asyncio.to_thread(self.store.pending_keys, service)

    # Retention.
    def retention_s(self) -> float | None:
        """The configured retention in seconds (None: keep everything); a runtime config
        written before retention existed gets the default."""
        value = self.runtime_config().retention_s
        return None if value is None else float(value)

    async def prune(self) -> PruneStats | None:
        """Prune with the configured retention now; None if retention is off."""
        retention_s = self.retention_s()
        if retention_s is None:
            return None
        stats = await asyncio.to_thread(self.store.prune, round(retention_s * 1000))
        if stats.gone and self.on_pruned is not None:  # e.g. their blobs (actors.steps)
            try:
                await asyncio.to_thread(self.on_pruned, list(stats.gone), dict(self._config))
            except Exception:
                log.exception("the hook for pruned invocations failed")
        self._routes.clear()  # some may be pruned: ask the journal again
        self.prunes += 1
        self.last_prune = stats
        if stats.rows:
            log.info(
                "pruned %d finished invocations (%d rows) in %.2f s",
                stats.invocations,
                stats.rows,
                stats.seconds,
            )
        return stats

    async def _prune_loop(self) -> None:
        while True:
            retention_s = self.retention_s()  # read each time: Runtime.start may change it
            await asyncio.sleep(prune_period(retention_s) if retention_s else MAX_PRUNE_PERIOD_S)
            try:
                await self.prune()
            except Fenced as e:
                await self._fence_lost(e)
                return
            except Exception:
                log.exception("pruning the journal failed; trying again next period")

    # Runtime configuration: what Runtime.connect and hosts need to route calls.
    def set_config(self, config: RuntimeConfig | dict[str, object]) -> None:
        """Keep the runtime's layout and definitions (what hosts and ``Runtime.connect`` route
        by) next to the journal, so a restarted journal actor still has them. This file holds
        the operator's own code and settings; journal payloads are never unpickled. It holds
        a plain dict (``RuntimeConfig.to_dict``), as every version wrote it."""
        if self.fence is not None:
            self.fence.check()
        if isinstance(config, RuntimeConfig):
            config = config.to_dict()
        config = {k: v for k, v in config.items() if k != SECRET}  # it has a file of its own
        tmp = self._config_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(pickle.dumps(config))
        os.replace(tmp, self._config_file)
        self._config = config

    async def set_services(self, rows: list[tuple[str | None, ...]]) -> None:
        """Replace the registry of services and handlers ``sys_service`` shows (rows of plain
        strings, the options as JSON: nothing here is unpickled into user classes)."""
        await self._check_fence()
        checked = [tuple(None if v is None else str(v) for v in row) for row in rows]
        if any(len(row) != 5 for row in checked):
            raise ValueError("set_services: each row is (name, ty, handler, kind, options)")
        await asyncio.to_thread(self.store.set_services, checked)

    def config(self) -> dict[str, object]:
        """The runtime config, with the data dir's secret under ``SECRET`` (empty until a
        ``Runtime.start`` set it)."""
        return {**self._config, SECRET: self.secret} if self._config else {}

    def runtime_config(self) -> RuntimeConfig:
        """The runtime config, typed (defaults where a file of an older version is silent or
        no ``Runtime.start`` set one yet), with the data dir's secret."""
        return dataclasses.replace(RuntimeConfig.from_dict(self._config), secret=self.secret)

    def info(self) -> dict[str, object]:
        last = self.last_prune
        return {
            "data_dir": str(self.store.data_dir.resolve()),
            "pid": os.getpid(),
            "epoch": None if self.fence is None else self.fence.epoch,  # journal.fence
            "fenced": self._fenced_out is not None,
            "transactions": self.transactions,
            "drains": self.drains,
            "reads": self.store.reads,
            "user_queries": self.user_queries.admitted,
            "retention_s": self.retention_s(),
            "prunes": self.prunes,
            "last_prune": None
            if last is None
            else {
                "invocations": last.invocations,
                "rows": last.rows,
                "seconds": round(last.seconds, 3),
                "checkpointed": last.checkpointed,
            },
        }


class JournalActor(GroupCommitJournal, WireServed):
    """The remote form (``ray.remote(JournalActor)``): a named, detached, restartable actor."""

    def __init__(
        self,
        data_dir: str,
        on_pruned: Callable[[list[str], dict[str, object]], None] | None = None,
        secret_dir: str | None = None,
        fenced: bool = False,
    ) -> None:
        tune_gc()
        owner_only_umask()  # a process of its own: what DuckDB makes later is owner-only too
        self.start_failure: str | None = None
        import ray

        restarted = ray.get_runtime_context().was_current_actor_reconstructed
        try:
            if fenced and not restarted:  # a first start takes no running writer's place
                refuse_if_held(data_dir)
            super().__init__(
                data_dir,
                secret_dir=secret_dir,
                fenced=fenced,
                # a restart waits for the file as long as it takes: raising here would end
                # the actor for good (Ray does not restart an actor whose constructor raised)
                lock_wait_s=None if restarted else FIRST_START_WAIT_S,
            )
        except DataDirError as e:
            if restarted:
                raise  # a restart that cannot open its data dir: die as before
            # The first start: keep the reason, so ``Runtime.start`` gets it back as data
            # (``start_error``) and raises ``DataDirError``, then kills this actor.
            self.start_failure = str(e)
        self.on_pruned = on_pruned  # after the store's __init__, which sets it to None

    def _on_fenced(self) -> None:
        if self._wire_server is not None:
            self._wire_server.close()

    def start_error(self) -> str | None:
        """Why this actor could not open its data dir (a ``DataDirError``'s message), or None."""
        return self.start_failure
