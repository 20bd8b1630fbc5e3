"""The runtime's configuration, typed: what ``Runtime.start`` decides once and every host,
driver and the journal actor read (layout, definitions, limits).

On disk (``runtime-config.pickle`` beside the journal) and across Ray it stays a plain dict
with string keys, as every version wrote it: ``RuntimeConfig.from_dict`` reads any such dict
(a key missing from an older version's file gets its default, an unknown one from a newer
version is ignored), ``to_dict`` writes one. So old data dirs keep working and an older
version can still read a newer file. This module imports neither Ray nor DuckDB.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from journal.secret import SECRET

DEFAULT_RETENTION = timedelta(hours=24)
DEFAULT_SQL_TIMEOUT_S = 30.0
DEFAULT_SUSPEND_AFTER_S = 30.0


@dataclass(frozen=True)
class RuntimeConfig:
    """One runtime's settings (``Runtime.start``'s parameters, resolved).

    Attributes:
        data_dir: the journal's directory (absolute).
        pool_size: host actors per pooled service.
        suspend_after_s: how long a waiting invocation stays in memory before it is evicted.
        retention_s: how long finished invocations are kept (None: forever).
        sql_timeout_s: users' queries' time limit (None: no limit).
        definitions: the service definitions, cloudpickled (only the operator's code: the
            journal never unpickles them).
        secret: the data dir's secret (hex), added by the journal actor when it hands the
            config out; never written to the config file.
        blob_store: where ``ctx.run`` results over ``inline_limit`` bytes go (a ``pyarrow.fs``
            URI; None: none, as in a config written before blob stores).
        inline_limit: the largest step result kept in the journal itself, in bytes.
        partitions: how many journals the keys split over (``journal.partitions``).
        partition_placement: ``"local"`` (every partition on the starting node) or
            ``"spread"`` (over the nodes; ``data_dir`` on storage every node mounts).
    """

    data_dir: str = ""
    pool_size: int = 1
    suspend_after_s: float = DEFAULT_SUSPEND_AFTER_S
    retention_s: float | None = DEFAULT_RETENTION.total_seconds()
    sql_timeout_s: float | None = DEFAULT_SQL_TIMEOUT_S
    definitions: bytes = b""
    secret: str | None = None
    blob_store: str | None = None
    inline_limit: int = 256 * 1024
    partitions: int = 1
    partition_placement: str = "local"

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RuntimeConfig:
        """The config in a dict as stored and sent (``SECRET`` is the secret's key)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"secret"}
        given = {k: v for k, v in raw.items() if k in names}
        return cls(**given, secret=raw.get(SECRET))

    @classmethod
    def of(cls, config: RuntimeConfig | Mapping[str, Any]) -> RuntimeConfig:
        """Either form, typed."""
        return config if isinstance(config, RuntimeConfig) else cls.from_dict(config)

    def to_dict(self) -> dict[str, Any]:
        """The stored and sent form (the secret under ``SECRET``, when there is one)."""
        raw = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "secret"
        }
        return raw if self.secret is None else {**raw, SECRET: self.secret}

    def without_secret(self) -> RuntimeConfig:
        return dataclasses.replace(self, secret=None)
