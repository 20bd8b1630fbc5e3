"""Unit-test fixtures. Nothing here starts Ray."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from journal.store import JournalStore
from tests.unit.federation_data import LAYOUT, SERVICES, invocations


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir migrated once per session; copying it is much cheaper than migrating again
    (most of a fresh store's cost is the migration's commits)."""
    template = tmp_path_factory.mktemp("journal-template")
    JournalStore(template).close()
    return template


@pytest.fixture
def data_dir(tmp_path: Path, migrated_template: Path) -> Path:
    """A data dir of this test's own, holding an empty, already migrated journal.

    Tests of a brand-new data dir (migrations, creating the dir) use ``tmp_path`` directly.
    """
    target = tmp_path / "data"
    shutil.copytree(migrated_template, target)
    return target


@pytest.fixture(scope="module")
def journals(
    tmp_path_factory: pytest.TempPathFactory, migrated_template: Path
) -> Iterator[tuple[list[JournalStore], JournalStore]]:
    """Four partitions' journals, and one journal holding every row of them."""
    root = tmp_path_factory.mktemp("federated")
    parts, whole = [], None
    try:
        for p in LAYOUT:
            shutil.copytree(migrated_template, root / f"partition-{p}")
            parts.append(JournalStore(root / f"partition-{p}"))
        shutil.copytree(migrated_template, root / "whole")
        whole = JournalStore(root / "whole")
        for p, batches in invocations().items():
            parts[p].write(batches)
            whole.write(batches)
        for store in [*parts, whole]:
            store.set_services(SERVICES)
        yield parts, whole
    finally:
        for store in [*parts, *([whole] if whole else [])]:
            store.close()
