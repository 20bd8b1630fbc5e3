"""DuckDB schema: an append-only list of migrations plus the read views.

Tables are append-only (no point updates, no primary keys on the hot path): an invocation's
status is the latest row of ``invocation_events``, a state entry the latest row of
``state_log``. Single-column indexes on the invocation id keep recovery look-ups cheap.
Each migration runs in its own transaction and bumps ``schema_version``.
"""

from __future__ import annotations

import duckdb

MIGRATIONS: list[str] = [
    # 1: base tables and views
    """
    CREATE TABLE invocations(
        id VARCHAR, service VARCHAR, handler VARCHAR, key VARCHAR, route_hash UBIGINT,
        input JSON, idempotency_key VARCHAR, invoked_by VARCHAR, created_at_ms BIGINT,
        host_order BIGINT, seq BIGINT);
    CREATE INDEX invocations_id ON invocations(id);
    CREATE TABLE invocation_events(
        id VARCHAR, status VARCHAR, retry_count INTEGER, failure VARCHAR, at_ms BIGINT, seq BIGINT);
    CREATE TABLE outputs(
        id VARCHAR, ok BOOLEAN, output JSON, failure VARCHAR, failure_code INTEGER,
        completed_at_ms BIGINT);
    CREATE INDEX outputs_id ON outputs(id);
    CREATE TABLE journal(
        invocation_id VARCHAR, idx INTEGER, entry_type VARCHAR, name VARCHAR, result JSON,
        failure VARCHAR, failure_code INTEGER, created_at_ms BIGINT, completed BOOLEAN);
    CREATE INDEX journal_invocation ON journal(invocation_id);
    CREATE TABLE state_log(service VARCHAR, key VARCHAR, name VARCHAR, value JSON, seq BIGINT);
    CREATE TABLE batches(batch_id VARCHAR);

    CREATE VIEW sys_invocation AS
    WITH ev AS (
        SELECT id,
               arg_max(status, seq) AS status,
               max(retry_count) AS retry_count,
               arg_max(failure, seq) FILTER (WHERE failure IS NOT NULL) AS last_failure,
               max(at_ms) AS at_ms
        FROM invocation_events GROUP BY id),
    jn AS (SELECT DISTINCT invocation_id FROM journal)
    SELECT i.id,
           CASE WHEN i.key IS NULL THEN i.service || '/' || i.handler
                ELSE i.service || '/' || i.key || '/' || i.handler END AS target,
           i.service AS target_service_name,
           i.key AS target_service_key,
           i.handler AS target_handler_name,
           CASE WHEN o.id IS NOT NULL THEN 'completed'
                WHEN ev.status IS NOT NULL THEN ev.status
                WHEN jn.invocation_id IS NOT NULL THEN 'running'
                ELSE 'pending' END AS status,
           CASE WHEN o.id IS NULL THEN NULL WHEN o.ok THEN 'success' ELSE 'failure' END
               AS completion_result,
           o.failure AS completion_failure,
           coalesce(ev.retry_count, 0) AS retry_count,
           ev.last_failure,
           i.idempotency_key,
           i.invoked_by AS invoked_by_id,
           i.input,
           o.output,
           make_timestamp(i.created_at_ms * 1000) AS created_at,
           make_timestamp(greatest(i.created_at_ms, coalesce(ev.at_ms, 0),
                                   coalesce(o.completed_at_ms, 0)) * 1000) AS modified_at,
           make_timestamp(o.completed_at_ms * 1000) AS completed_at
    FROM invocations i
    LEFT JOIN outputs o ON o.id = i.id
    LEFT JOIN ev ON ev.id = i.id
    LEFT JOIN jn ON jn.invocation_id = i.id;

    CREATE VIEW sys_journal AS
    SELECT invocation_id, idx AS "index", entry_type, name,
           completed,
           CASE WHEN failure IS NOT NULL
                THEN json_object('failure', failure, 'code', failure_code)::JSON
                ELSE result END AS result,
           make_timestamp(created_at_ms * 1000) AS created_at
    FROM journal;

    CREATE VIEW state AS
    SELECT * FROM (
        SELECT service AS service_name, key AS service_key, name AS key,
               arg_max_null(value, seq) AS value
        FROM state_log GROUP BY ALL)
    WHERE value IS NOT NULL;
    """,
]


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    con.execute("CREATE TABLE IF NOT EXISTS schema_version(version INTEGER)")
    row = con.execute("SELECT max(version) FROM schema_version").fetchall()
    return row[0][0] or 0


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    """Apply the migrations this file has and the database lacks; return the new version."""
    version = current_version(con)
    for number, sql in enumerate(MIGRATIONS[version:], start=version + 1):
        con.execute("BEGIN")
        try:
            con.execute(sql)
            con.execute("INSERT INTO schema_version VALUES (?)", [number])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)
