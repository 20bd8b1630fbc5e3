"""Unit-test fixtures. Nothing here starts Ray."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from journal.store import JournalStore


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
