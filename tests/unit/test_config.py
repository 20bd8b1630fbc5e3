"""The typed runtime config reads every dict a version of raystate stored or sent (missing keys
get their defaults, unknown ones are ignored) and writes the same dict form back."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest
from ray import cloudpickle

from actors.cluster.router import Router
from journal.actor import CONFIG_FILE, GroupCommitJournal
from journal.config import DEFAULT_RETENTION, DEFAULT_SQL_TIMEOUT_S, RuntimeConfig
from journal.secret import SECRET

# What Runtime.start wrote before retention and the SQL time limit existed.
OLD = {
    "data_dir": "/data",
    "pool_size": 3,
    "suspend_after_s": 5.0,
    "definitions": cloudpickle.dumps([]),
}


def test_an_old_dict_gets_the_defaults_of_what_it_lacks() -> None:
    config = RuntimeConfig.from_dict({**OLD, SECRET: "abc", "from_the_future": 1})
    assert (config.data_dir, config.pool_size, config.suspend_after_s) == ("/data", 3, 5.0)
    assert config.retention_s == DEFAULT_RETENTION.total_seconds()
    assert config.sql_timeout_s == DEFAULT_SQL_TIMEOUT_S
    assert config.secret == "abc" and cloudpickle.loads(config.definitions) == []
    assert RuntimeConfig.from_dict({}) == RuntimeConfig()


def test_round_trip_through_the_dict_form() -> None:
    config = RuntimeConfig("/d", 2, 0.0, None, 1.5, b"defs", "s3cret")
    raw = config.to_dict()
    assert raw[SECRET] == "s3cret" and raw["retention_s"] is None and raw["pool_size"] == 2
    assert RuntimeConfig.from_dict(raw) == config
    assert RuntimeConfig.from_dict(pickle.loads(pickle.dumps(raw))) == config
    assert SECRET not in config.without_secret().to_dict()
    assert RuntimeConfig.of(raw) == RuntimeConfig.of(config) == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.pool_size = 4  # type: ignore[misc]


def test_the_journal_reads_an_old_versions_config_file(data_dir: Path) -> None:
    (data_dir / CONFIG_FILE).write_bytes(pickle.dumps(OLD))
    journal = GroupCommitJournal(str(data_dir))
    try:
        config = journal.runtime_config()
        assert config.pool_size == 3 and config.secret == journal.secret
        assert journal.retention_s() == DEFAULT_RETENTION.total_seconds()
        assert journal.sql_timeout_s() == DEFAULT_SQL_TIMEOUT_S
        assert journal.config() == {**OLD, SECRET: journal.secret}  # the wire form is unchanged
        journal.set_config(dataclasses.replace(config, sql_timeout_s=None))
        stored = pickle.loads((data_dir / CONFIG_FILE).read_bytes())
        assert type(stored) is dict and SECRET not in stored and stored["sql_timeout_s"] is None
        assert journal.sql_timeout_s() is None
    finally:
        journal.store.close()


def test_the_router_takes_either_form() -> None:
    raw = {**OLD, SECRET: "ab" * 16}
    for config in (raw, RuntimeConfig.from_dict(raw)):
        router = Router("ns", config, object)
        assert (router.pool_size, router.suspend_after_s, router.definitions) == (3, 5.0, {})
    with pytest.raises(ValueError, match="secret"):
        Router("ns", OLD, object)
