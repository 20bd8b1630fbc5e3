"""One Ray instance per test session; each test gets its own namespace and data dir."""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def module_runtime(tmp_path_factory, services, name: str, **kw) -> Iterator[Runtime]:
    """A runtime for one module's tests (each start costs seconds), on a fresh namespace and
    data dir, shut down after them."""
    rt = Runtime.start(
        services,
        data_dir=tmp_path_factory.mktemp(name) / "data",
        namespace=f"{name}{os.getpid()}-{next(_ids)}",
        **kw,
    )
    try:
        yield rt
    finally:
        rt.shutdown()


@pytest.fixture(scope="module")
def shared_rt(ray_session: None, tmp_path_factory) -> Iterator[Runtime]:
    """One runtime for a module's tests that break nothing; they isolate by fresh keys."""
    from tests.integration.apps import ALL

    with module_runtime(tmp_path_factory, ALL, "shared", pool_size=TEST_POOL_SIZE) as rt:
        yield rt


@pytest.fixture
def ledger(tmp_path) -> str:
    return str(tmp_path / "ledger.txt")
