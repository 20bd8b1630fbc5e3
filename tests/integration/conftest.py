"""One Ray instance per test session; each test gets its own namespace and data dir."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator

import pytest

from actors import Runtime

_ids = itertools.count()
# Two hosts per service (the default on the session's 2 CPUs is one): tests of routing,
# placement and calls between hosts need more than one.
TEST_POOL_SIZE = 2


@pytest.fixture
def start_runtime(ray_session: None, tmp_path) -> Iterator[Callable[..., Runtime]]:
    """Start runtimes on fresh namespaces (and by default a fresh data dir); shut them down."""
    started: list[Runtime] = []

    def start(services=None, data_dir=None, namespace=None, **kw) -> Runtime:
        from tests.integration.apps import ALL

        kw.setdefault("pool_size", TEST_POOL_SIZE)
        rt = Runtime.start(
            services or ALL,
            data_dir=data_dir or tmp_path / "data",
            namespace=namespace or f"t{os.getpid()}-{next(_ids)}",
            **kw,
        )
        started.append(rt)
        return rt

    yield start
    for rt in started:
        rt.shutdown()


@pytest.fixture
def rt(start_runtime) -> Runtime:
    return start_runtime()


@pytest.fixture(scope="module")
def shared_rt(ray_session: None, tmp_path_factory) -> Iterator[Runtime]:
    """One runtime for a module's tests that break nothing; they isolate by fresh keys."""
    from tests.integration.apps import ALL

    rt = Runtime.start(
        ALL,
        data_dir=tmp_path_factory.mktemp("shared") / "data",
        namespace=f"m{os.getpid()}-{next(_ids)}",
        pool_size=TEST_POOL_SIZE,
    )
    yield rt
    rt.shutdown()


@pytest.fixture
def ledger(tmp_path) -> str:
    return str(tmp_path / "ledger.txt")
