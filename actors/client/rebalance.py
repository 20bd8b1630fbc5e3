"""Moving spread partitions to their nodes again (``Runtime.rebalance_partitions``).

A spread partition prefers node p of the alive nodes, sorted, as when the runtime started.
After a node was lost its partitions run elsewhere, and nothing moves them back by itself;
once the node returns (or nodes join), this moves each partition whose journal runs off its
preferred node there: its journal (drained first, so that its successor has little to replay;
the successor takes the next epoch) and its scheduler, both made again until they run there
(``journal_placement.place_new``), and its pool hosts, which the new epoch would make start
again anyway (``StaleHost``), made again preferring that node (idle ones that Ray put
elsewhere are moved, as at start: ``startup.spread_hosts``; busy ones stay where they are). A
partition takes calls again as soon as its new journal runs; calls in flight meanwhile wait
and go on, as after a crash of its journal.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import ray

from actors.client.journal_placement import node_of, stop_for_good
from actors.client.startup import spread_hosts, start_journal, start_scheduler
from actors.cluster.remote import UNAVAILABLE
from actors.cluster.router import Router, preferred_node
from actors.sdk.definitions import VirtualObject
from journal.partitions import Partitions, Placement

STOP_TIMEOUT_S = 60.0  # for an actor's name to be free once it is killed


class PartitionMethods:
    """Mixed into ``Runtime``."""

    namespace: str
    data_dir: str
    partitions: Partitions
    router: Router

    def _check_open(self) -> None:
        raise NotImplementedError

    def rebalance_partitions(self) -> list[int]:
        """Move every spread partition that runs off its preferred node (node p of the alive
        nodes, sorted) there; return the partitions moved. For after a lost node returned, or
        nodes joined. Local partitions never move (``ValueError``)."""
        self._check_open()
        if not self.router.spread:
            raise ValueError(
                "rebalance_partitions: the partitions are local (partition_placement='local'):"
                " they run next to their data dir and never move"
            )
        moved = []
        for p in self.partitions:
            node = preferred_node(p)
            journal = ray.get_actor(self.partitions.journal(p), namespace=self.namespace)
            if node is None or node_of(journal) == node:
                continue
            self._move(p, node, journal)
            moved.append(p)
        return moved

    def _move(self, p: int, node: str, journal: Any) -> None:
        layout, deadline = self.partitions, time.monotonic() + STOP_TIMEOUT_S
        with contextlib.suppress(*UNAVAILABLE):
            ray.get(journal.flush.remote())
        _stop(journal, layout.journal(p), self.namespace, deadline)
        start_journal(self.data_dir, self.namespace, layout, p, Placement.SPREAD, node)
        scheduler = ray.get_actor(layout.scheduler(p), namespace=self.namespace)
        _stop(scheduler, layout.scheduler(p), self.namespace, deadline)
        start_scheduler(self.namespace, layout, p, node)
        for d in self.router.definitions.values():
            if not (isinstance(d, VirtualObject) and d.placement == "dedicated"):
                for i in range(self.router.pool_size):
                    self.router.replace(d, i, p)
                spread_hosts(self.router, d)  # soft affinity: made again where Ray misplaced


def _stop(actor: Any, name: str, namespace: str, deadline: float) -> None:
    if not stop_for_good(actor, name, namespace, deadline):
        raise TimeoutError(f"rebalance_partitions: {name} did not stop")
