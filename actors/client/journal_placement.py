"""Where a spread partition's journal (and scheduler) actor starts: on its preferred node.

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
    return place_new(
        journal,
        node,
        create,
        name,
        namespace,
        failed=lambda j: ray.get(j.start_error.remote()) is not None,  # ``Runtime.start`` says
    )


def place_new(
    actor: Any,
    node: str,
    create: Callable[[], Any],
    name: str,
    namespace: str,
    failed: Callable[[Any], bool] = lambda _actor: False,
) -> Any:
    """``actor`` (just created by ``create``), or one created again on ``node``, as for a
    journal; ``failed``: whether it failed to start (then it stays, for its caller to see)."""
    deadline = time.monotonic() + PLACE_TIMEOUT_S
    while True:
        try:
            if failed(actor) or node_of(actor) == node:
                return actor
        except UNAVAILABLE:
            return actor  # died starting: its caller sees it
        if time.monotonic() > deadline:
            warnings.warn(
                f"raystate: {name!r} runs off its preferred node {node} (Ray placed it elsewhere)",
                stacklevel=3,
            )
            return actor
        if not stop_for_good(actor, name, namespace, deadline):
            return actor
        actor = create()


def stop_for_good(actor: Any, name: str, namespace: str, deadline: float) -> bool:
    """Kill ``actor`` without restart and wait until its name is free (``ray.kill`` is
    asynchronous), until ``deadline`` (``time.monotonic()``); whether it is free."""
    ray.kill(actor, no_restart=True)
    while _exists(name, namespace):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


def _exists(name: str, namespace: str) -> bool:
    try:
        ray.get_actor(name, namespace=namespace)
    except ValueError:
        return False
    return True
