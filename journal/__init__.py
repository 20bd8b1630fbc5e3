"""The durable journal: DuckDB schema, the single-writer store and its group-commit actor."""
