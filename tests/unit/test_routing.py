"""Routing: stable key hashing across processes, and the default host pool size."""

from __future__ import annotations

import pytest

from actors.cluster.names import default_pool_size, route_hash


def test_route_hash_is_stable_and_keys_calls_by_service_and_key() -> None:
    assert route_hash("Counter", "alice", "inv_1") == route_hash("Counter", "alice", "inv_2")
    assert route_hash("Svc", None, "inv_1") != route_hash("Svc", None, "inv_2")
    assert route_hash("Counter", "alice", "") == 1_280_017_233  # crc32: the same in every process


@pytest.mark.parametrize(
    ("cpus", "pool"), [(0, 1), (0.5, 1), (1, 1), (2, 1), (3, 1), (4, 2), (16, 8)]
)
def test_one_host_per_two_cpus_and_at_least_one(cpus: float, pool: int) -> None:
    assert default_pool_size(cpus) == pool
