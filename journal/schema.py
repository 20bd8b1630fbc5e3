"""DuckDB schema: an append-only list of migrations plus the read views.

Every durable fact is one row of one append-only table, ``log``, so a group commit is one
appender flush (one statement, one transaction; the figures are in docs/performance.md).
Rows are never updated; they are deleted only by retention (``journal.retention``).
Columns, by ``kind``:

    kind    id                      name                  data (JSON text)  meta (JSON object)
    accept  invocation id           'service/key', or     input             handler, route_hash,
                                    'service' (no key)                      created_at_ms,
                                                                            host_order,
                                                                            idempotency_key?,
                                                                            invoked_by?
    entry   invocation id           step name             result            idx, entry_type,
                                                                            created_at_ms,
                                                                            completed, failure?,
                                                                            failure_code?
    state   'service/key'           state entry name      value (NULL:      NULL
                                                          cleared)
    status  invocation id           status                NULL              retry_count, at_ms,
                                                                            failure?
    output  invocation id           NULL                  output            ok, completed_at_ms,
                                                                            failure?,
                                                                            failure_code?
    timer   invocation id           timer id              NULL              idx, timer_kind,
                                                                            fire_at_ms, host
    fired   invocation id           timer id              NULL              at_ms
    completion invocation id        NULL                  result            idx, at_ms, failure?,
                                                                            failure_code?, by?
    event   invocation id           event type            event JSON        at_ms
            ('TransientError': a    (failure, stacktrace,
            failed attempt)         retry_count,
                                    related_entry_*,
                                    next_retry_at_ms)
    wait    invocation id           NULL                  reason (NULL:     at_ms
                                                          waits no more)
    admit   invocation id           limit name            NULL              at_ms
    batch   batch id                NULL                  NULL              NULL
    mark    journal clock, epoch    NULL                  NULL              NULL
            ms as text (retention)

``seq`` numbers every row in write order (a later row wins: state, status). ``meta`` keys are
the record's field names; keys marked ``?`` are left out when None. Service names never
contain '/' (definitions refuse it), so 'service/key' splits at its first '/'. The one index,
on ``id``, serves every hot look-up: an invocation's rows, an object's state rows, batch ids.
The views give the documented SQL surface with the column names and types of Restate's
introspection tables; payload columns are stored as text and cast to JSON there.

The views select a kind with ``kind = '...' OR id IS NULL``. ``id`` is NOT NULL, so that is
just the kind test; but written so it refers to two columns, DuckDB cannot push it into the
table scan, and ``WHERE id = ...`` on a view (``raystate describe``) then remains the scan's
only filter, which is what DuckDB needs to use the index for one invocation's row in
sys_invocation and its entries in the log, instead of scanning (docs/performance.md).

Each migration runs in its own transaction and bumps ``schema_version``.
"""

from __future__ import annotations

import duckdb

from journal.schedules import MIGRATION_SCHEDULES

MIGRATION_VIEWS_3 = """
    CREATE TABLE service_registry(
        name VARCHAR NOT NULL, ty VARCHAR NOT NULL, handler VARCHAR NOT NULL,
        kind VARCHAR, options VARCHAR);
    COMMENT ON TABLE service_registry IS
        'raystate: the registered services and handlers (Runtime.start); query sys_service';

    CREATE VIEW sys_service AS
    SELECT name, ty, handler, kind, options::JSON AS options FROM service_registry;

    CREATE OR REPLACE VIEW sys_journal AS
    WITH entries AS (
        SELECT id, name, data, meta, (meta->>'idx')::INTEGER AS idx
        FROM log WHERE kind = 'entry' OR id IS NULL),
    completions AS (
        SELECT id, (meta->>'idx')::INTEGER AS idx,
               arg_min_null(data, seq) AS data,
               arg_min_null(meta->>'failure', seq) AS failure,
               arg_min_null((meta->>'failure_code')::INTEGER, seq) AS failure_code
        FROM log WHERE kind = 'completion' OR id IS NULL
        GROUP BY id, (meta->>'idx')::INTEGER)
    SELECT e.id AS invocation_id,
           e.idx AS "index",
           e.meta->>'entry_type' AS entry_type,
           e.name,
           coalesce((e.meta->>'completed')::BOOLEAN, false) OR c.id IS NOT NULL AS completed,
           CASE WHEN e.meta->>'failure' IS NOT NULL
                THEN json_object('failure', e.meta->>'failure',
                                 'code', (e.meta->>'failure_code')::INTEGER)::JSON
                WHEN c.failure IS NOT NULL
                THEN json_object('failure', c.failure, 'code', c.failure_code)::JSON
                ELSE coalesce(c.data, e.data)::JSON END AS result,
           make_timestamp((e.meta->>'created_at_ms')::BIGINT * 1000) AS created_at
    FROM entries e
    LEFT JOIN completions c ON c.id = e.id AND c.idx = e.idx;

    CREATE OR REPLACE VIEW sys_promise AS
    SELECT service_name, service_key, substr(key, 10) AS key,
           true AS completed,
           CASE WHEN value->>'failure' IS NULL THEN value->'value' END AS completion_success_value,
           value->>'failure' AS completion_failure
    FROM state_current WHERE starts_with(key, '$promise:')
    UNION ALL
    SELECT DISTINCT split_part(a.name, '/', 1) AS service_name,
           substr(a.name, strpos(a.name, '/') + 1) AS service_key,
           w.name AS key,
           false AS completed,
           NULL::JSON AS completion_success_value,
           NULL::VARCHAR AS completion_failure
    FROM (SELECT invocation_id AS id, name FROM sys_journal
          WHERE entry_type = 'promise' AND NOT completed) w
    JOIN (SELECT id, name FROM log WHERE kind = 'accept') a ON a.id = w.id
    WHERE NOT EXISTS (
        SELECT 1 FROM state_current s
        WHERE s.service_name = split_part(a.name, '/', 1)
          AND s.service_key = substr(a.name, strpos(a.name, '/') + 1)
          AND s.key = '$promise:' || w.name);

    CREATE VIEW key_queue AS
    WITH open AS (
        SELECT a.id, a.seq,
               split_part(a.name, '/', 1) AS service_name,
               substr(a.name, strpos(a.name, '/') + 1) AS service_key,
               (a.meta->>'host_order')::BIGINT AS host_order,
               (a.meta->>'created_at_ms')::BIGINT AS created_at_ms
        FROM log a
        LEFT JOIN service_registry r
               ON r.name = split_part(a.name, '/', 1) AND r.handler = a.meta->>'handler'
        WHERE a.kind = 'accept' AND contains(a.name, '/')
          AND coalesce(r.kind, 'exclusive') <> 'shared'
          AND a.id NOT IN (SELECT id FROM log WHERE kind = 'output')
          AND a.id NOT IN (
              SELECT t.id FROM log t WHERE t.kind = 'timer' AND t.meta->>'timer_kind' = 'start'
              AND t.name NOT IN (SELECT name FROM log WHERE kind = 'fired'))),
    started AS (
        SELECT DISTINCT id FROM log
        WHERE (kind = 'entry' OR (kind = 'status' AND name <> 'scheduled'))
          AND id IN (SELECT id FROM open))
    SELECT o.service_name, o.service_key, o.id, o.created_at_ms,
           row_number() OVER (PARTITION BY o.service_name, o.service_key
                              ORDER BY s.id IS NOT NULL DESC, o.host_order, o.seq) - 1
               AS position
    FROM open o LEFT JOIN started s ON s.id = o.id;

    CREATE VIEW sys_keyed_service_status AS
    SELECT service_name, service_key, id AS invocation_id
    FROM key_queue WHERE position = 0;

    CREATE VIEW sys_inbox AS
    SELECT service_name, service_key, id, position AS sequence_number,
           make_timestamp(created_at_ms * 1000) AS created_at
    FROM key_queue WHERE position > 0;
"""

MIGRATIONS: list[str] = [
    # 1: the log table and the views
    """
    CREATE TABLE log(
        seq BIGINT NOT NULL, kind VARCHAR NOT NULL, id VARCHAR NOT NULL,
        name VARCHAR, data VARCHAR, meta VARCHAR);
    CREATE INDEX log_id ON log(id);
    COMMENT ON TABLE log IS
        'raystate journal: every durable fact, append-only; query the sys_* and state views';

    CREATE VIEW sys_invocation AS
    WITH accepts AS (
        SELECT id,
               split_part(name, '/', 1) AS service,
               CASE WHEN contains(name, '/') THEN substr(name, strpos(name, '/') + 1) END AS key,
               meta->>'handler' AS handler,
               data AS input,
               meta->>'idempotency_key' AS idempotency_key,
               meta->>'invoked_by' AS invoked_by,
               (meta->>'created_at_ms')::BIGINT AS created_at_ms
        FROM log WHERE kind = 'accept' OR id IS NULL),
    ev AS (
        SELECT id,
               arg_max(status, seq) AS status,
               max(retry_count) AS retry_count,
               arg_max(failure, seq) FILTER (WHERE failure IS NOT NULL) AS last_failure,
               max(at_ms) AS at_ms
        FROM (SELECT id, seq, name AS status,
                     (meta->>'retry_count')::INTEGER AS retry_count,
                     meta->>'failure' AS failure,
                     (meta->>'at_ms')::BIGINT AS at_ms
              FROM log WHERE kind = 'status' OR id IS NULL)
        GROUP BY id),
    outputs AS (
        SELECT id,
               (meta->>'ok')::BOOLEAN AS ok,
               data AS output,
               meta->>'failure' AS failure,
               (meta->>'completed_at_ms')::BIGINT AS completed_at_ms
        FROM log WHERE kind = 'output' OR id IS NULL),
    jn AS (SELECT DISTINCT id FROM log WHERE kind = 'entry' OR id IS NULL)
    SELECT i.id,
           CASE WHEN i.key IS NULL THEN i.service || '/' || i.handler
                ELSE i.service || '/' || i.key || '/' || i.handler END AS target,
           i.service AS target_service_name,
           i.key AS target_service_key,
           i.handler AS target_handler_name,
           CASE WHEN o.id IS NOT NULL THEN 'completed'
                WHEN ev.status IS NOT NULL THEN ev.status
                WHEN jn.id IS NOT NULL THEN 'running'
                ELSE 'pending' END AS status,
           CASE WHEN o.id IS NULL THEN NULL WHEN o.ok THEN 'success' ELSE 'failure' END
               AS completion_result,
           o.failure AS completion_failure,
           coalesce(ev.retry_count, 0) AS retry_count,
           ev.last_failure,
           i.idempotency_key,
           i.invoked_by AS invoked_by_id,
           i.input::JSON AS input,
           o.output::JSON AS output,
           make_timestamp(i.created_at_ms * 1000) AS created_at,
           make_timestamp(greatest(i.created_at_ms, coalesce(ev.at_ms, 0),
                                   coalesce(o.completed_at_ms, 0)) * 1000) AS modified_at,
           make_timestamp(o.completed_at_ms * 1000) AS completed_at
    FROM accepts i
    LEFT JOIN outputs o ON o.id = i.id
    LEFT JOIN ev ON ev.id = i.id
    LEFT JOIN jn ON jn.id = i.id;

    CREATE VIEW sys_journal AS
    SELECT id AS invocation_id,
           (meta->>'idx')::INTEGER AS "index",
           meta->>'entry_type' AS entry_type,
           name,
           (meta->>'completed')::BOOLEAN OR EXISTS (
               SELECT 1 FROM log c WHERE c.kind = 'completion' AND c.id = log.id
               AND (c.meta->>'idx')::INTEGER = (log.meta->>'idx')::INTEGER) AS completed,
           CASE WHEN meta->>'failure' IS NOT NULL
                THEN json_object('failure', meta->>'failure',
                                 'code', (meta->>'failure_code')::INTEGER)::JSON
                ELSE data::JSON END AS result,
           make_timestamp((meta->>'created_at_ms')::BIGINT * 1000) AS created_at
    FROM log WHERE kind = 'entry' OR id IS NULL;

    CREATE VIEW sys_timer AS
    SELECT t.id AS invocation_id,
           CASE WHEN (t.meta->>'idx')::INTEGER >= 0 THEN (t.meta->>'idx')::INTEGER END
               AS "index",
           t.meta->>'timer_kind' AS kind,
           make_timestamp((t.meta->>'fire_at_ms')::BIGINT * 1000) AS fire_at,
           f.name IS NOT NULL AS fired,
           make_timestamp((f.meta->>'at_ms')::BIGINT * 1000) AS fired_at
    FROM (SELECT * FROM log WHERE kind = 'timer') t
    LEFT JOIN (SELECT * FROM log WHERE kind = 'fired') f ON f.name = t.name;

    CREATE VIEW state AS
    SELECT * FROM (
        SELECT split_part(id, '/', 1) AS service_name,
               substr(id, strpos(id, '/') + 1) AS service_key,
               name AS key,
               arg_max_null(data, seq)::JSON AS value
        FROM log WHERE kind = 'state' GROUP BY id, name)
    WHERE value IS NOT NULL;
    """,
    # 2: workflow promises are state entries named '$promise:<name>' (so they load, commit and
    # stay with the workflow's state); 'state' hides them and 'sys_promise' shows them, both
    # over one fold of the state rows (current value per entry).
    """
    CREATE VIEW state_current AS
    SELECT * FROM (
        SELECT split_part(id, '/', 1) AS service_name,
               substr(id, strpos(id, '/') + 1) AS service_key,
               name AS key,
               arg_max_null(data, seq)::JSON AS value
        FROM log WHERE kind = 'state' GROUP BY id, name)
    WHERE value IS NOT NULL;

    CREATE OR REPLACE VIEW state AS
    SELECT * FROM state_current WHERE NOT starts_with(key, '$promise:');

    CREATE VIEW sys_promise AS
    SELECT service_name, service_key, substr(key, 10) AS key,
           true AS completed,
           CASE WHEN value->>'failure' IS NULL THEN value->'value' END AS completion_success_value,
           value->>'failure' AS completion_failure
    FROM state_current WHERE starts_with(key, '$promise:');
    """,
    # 3: what the journal knows, shown. The registry of services and handlers (written by
    # Runtime.start, replaced whole each time); sys_journal shows an entry's completion (an
    # awakeable's value or rejection, a call's result), which is a row of its own, in place of
    # what the entry held until then (a call's callee id; a sleep keeps its time); sys_promise
    # lists promises a workflow waits for that nobody completed yet; a key's queue of exclusive
    # invocations (key_queue, internal) gives sys_keyed_service_status (position 0, the one
    # holding the key) and sys_inbox (the ones waiting, in order).
    MIGRATION_VIEWS_3,
    # 4: failed attempts ('event' rows): sys_journal_events lists them, sys_invocation shows
    # the last one's stacktrace and journal entry, and when its back-off ends
    """
    CREATE OR REPLACE VIEW sys_invocation AS
    WITH accepts AS (
        SELECT id,
               split_part(name, '/', 1) AS service,
               CASE WHEN contains(name, '/') THEN substr(name, strpos(name, '/') + 1) END AS key,
               meta->>'handler' AS handler,
               data AS input,
               meta->>'idempotency_key' AS idempotency_key,
               meta->>'invoked_by' AS invoked_by,
               (meta->>'created_at_ms')::BIGINT AS created_at_ms
        FROM log WHERE kind = 'accept' OR id IS NULL),
    ev AS (
        SELECT id,
               arg_max(status, seq) AS status,
               max(retry_count) AS retry_count,
               arg_max(failure, seq) FILTER (WHERE failure IS NOT NULL) AS last_failure,
               max(at_ms) AS at_ms
        FROM (SELECT id, seq, name AS status,
                     (meta->>'retry_count')::INTEGER AS retry_count,
                     meta->>'failure' AS failure,
                     (meta->>'at_ms')::BIGINT AS at_ms
              FROM log WHERE kind = 'status' OR id IS NULL)
        GROUP BY id),
    outputs AS (
        SELECT id,
               (meta->>'ok')::BOOLEAN AS ok,
               data AS output,
               meta->>'failure' AS failure,
               (meta->>'completed_at_ms')::BIGINT AS completed_at_ms
        FROM log WHERE kind = 'output' OR id IS NULL),
    jn AS (SELECT DISTINCT id FROM log WHERE kind = 'entry' OR id IS NULL),
    fail AS (
        SELECT id, arg_max(data, seq) AS event
        FROM log WHERE kind = 'event' OR id IS NULL GROUP BY id)
    SELECT i.id,
           CASE WHEN i.key IS NULL THEN i.service || '/' || i.handler
                ELSE i.service || '/' || i.key || '/' || i.handler END AS target,
           i.service AS target_service_name,
           i.key AS target_service_key,
           i.handler AS target_handler_name,
           CASE WHEN o.id IS NOT NULL THEN 'completed'
                WHEN ev.status IS NOT NULL THEN ev.status
                WHEN jn.id IS NOT NULL THEN 'running'
                ELSE 'pending' END AS status,
           CASE WHEN o.id IS NULL THEN NULL WHEN o.ok THEN 'success' ELSE 'failure' END
               AS completion_result,
           o.failure AS completion_failure,
           coalesce(ev.retry_count, 0) AS retry_count,
           ev.last_failure,
           fail.event->>'stacktrace' AS last_failure_stacktrace,
           (fail.event->>'related_entry_index')::INTEGER AS last_failure_related_entry_index,
           fail.event->>'related_entry_name' AS last_failure_related_entry_name,
           CASE WHEN o.id IS NULL AND ev.status = 'backing-off'
                THEN make_timestamp((fail.event->>'next_retry_at_ms')::BIGINT * 1000)
                END AS next_retry_at,
           i.idempotency_key,
           i.invoked_by AS invoked_by_id,
           i.input::JSON AS input,
           o.output::JSON AS output,
           make_timestamp(i.created_at_ms * 1000) AS created_at,
           make_timestamp(greatest(i.created_at_ms, coalesce(ev.at_ms, 0),
                                   coalesce(o.completed_at_ms, 0)) * 1000) AS modified_at,
           make_timestamp(o.completed_at_ms * 1000) AS completed_at
    FROM accepts i
    LEFT JOIN outputs o ON o.id = i.id
    LEFT JOIN ev ON ev.id = i.id
    LEFT JOIN jn ON jn.id = i.id
    LEFT JOIN fail ON fail.id = i.id;


    CREATE VIEW sys_journal_events AS
    SELECT id AS invocation_id,
           make_timestamp((meta->>'at_ms')::BIGINT * 1000) AS appended_at,
           name AS event_type,
           data::JSON AS event_json
    FROM log WHERE kind = 'event' OR id IS NULL;
    """,
    # 5: invocations waiting for a slot of a concurrency or rate limit, and why
    """
    CREATE VIEW sys_waiting AS
    WITH latest AS (
        SELECT id, data AS waiting_for, (meta->>'at_ms')::BIGINT AS since_ms
        FROM log WHERE kind = 'wait' OR id IS NULL
        QUALIFY row_number() OVER (PARTITION BY id ORDER BY seq DESC) = 1)
    SELECT w.id AS invocation_id, i.target, i.status, w.waiting_for,
           make_timestamp(w.since_ms * 1000) AS since
    FROM latest w JOIN sys_invocation i ON i.id = w.id
    WHERE w.waiting_for IS NOT NULL AND i.status <> 'completed';
    """,
    # 6: durable schedules (Runtime.schedule): the ``schedule`` table, one row per schedule
    # with its progress, and ``sys_schedule`` over it (``journal.schedules``)
    MIGRATION_SCHEDULES,
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
