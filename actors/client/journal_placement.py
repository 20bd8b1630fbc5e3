"""Where a spread partition's journal actor starts: on its preferred node.

A partition spread over the cluster (``Placement.SPREAD``) asks for its node with a soft node
affinity, so that Ray can restart it elsewhere when that node is lost. Soft also means that Ray
may start it elsewhere when asked: right after a node joins, the head does not yet offer it, and
two partitions would share one node from their first start. ``Runtime.start`` therefore
starts a journal that it has just created and that landed elsewhere again, until it runs where
it should (the journal had no caller yet; its successor takes the next epoch, and waits for the
DuckDB file that the killed one lets go of: ``journal.takeover``).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import ray

from actors.cluster.remote import UNAVAILABLE

PLACE_TIMEOUT_S = 30.0
POLL_S = 0.1


def node_of(actor: Any) -> str:
    """The node an actor runs on (once its constructor has returned)."""
    return str(
        ray.get(actor.__ray_call__.remote(lambda _self: ray.get_runtime_context().get_node_id()))
    )


def place_new_journal(
    journal: Any, node: str, create: Callable[[], Any], name: str, namespace: str
) -> Any:
    """``journal`` (just created by ``create``), or a journal created again on ``node``: until
    one runs there, for ``PLACE_TIMEOUT_S`` (then a warning, and it stays where Ray put it)."""
    deadline = time.monotonic() + PLACE_TIMEOUT_S
    while True:
        try:
            if ray.get(journal.start_error.remote()) is not None or node_of(journal) == node:
                return journal  # placed, or failed (``Runtime.start`` reports why)
        except UNAVAILABLE:
            return journal  # died starting: reported by the caller too
        if time.monotonic() > deadline:
            warnings.warn(
                f"raystate: journal {name!r} runs off its preferred node {node} "
                "(Ray placed it elsewhere)",
                stacklevel=3,
            )
            return journal
        ray.kill(journal, no_restart=True)
        while _exists(name, namespace):  # ray.kill is asynchronous: free the name first
            if time.monotonic() > deadline:
                return journal
            time.sleep(POLL_S)
        journal = create()


def _exists(name: str, namespace: str) -> bool:
    try:
        ray.get_actor(name, namespace=namespace)
    except ValueError:
        return False
    return True
