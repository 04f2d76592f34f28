-- The event log (embedded). One writer per file (BEGIN IMMEDIATE) assigns global positions as
-- max + 1 while it holds the write lock, so positions commit in order and never skip.
CREATE TABLE streams (
    stream_id TEXT PRIMARY KEY NOT NULL,
    tenant_id BLOB NOT NULL,
    version   INTEGER NOT NULL CHECK (version > 0)
);

CREATE TABLE events (
    global_position INTEGER PRIMARY KEY NOT NULL CHECK (global_position > 0),
    event_id        BLOB NOT NULL UNIQUE,
    tenant_id       BLOB NOT NULL,
    stream_id       TEXT NOT NULL,
    stream_version  INTEGER NOT NULL CHECK (stream_version > 0),
    event_type      TEXT NOT NULL,
    schema_version  INTEGER NOT NULL,
    recorded_at_us  INTEGER NOT NULL,
    correlation_id  TEXT,
    causation_id    BLOB,
    traceparent     TEXT,
    tracestate      TEXT,
    payload         BLOB NOT NULL,
    UNIQUE (stream_id, stream_version)
);

CREATE INDEX events_by_tenant ON events (tenant_id, global_position);

CREATE TRIGGER events_are_append_only_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_are_append_only_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;

CREATE TABLE snapshots (
    stream_id      TEXT PRIMARY KEY NOT NULL,
    version        INTEGER NOT NULL,
    schema_version INTEGER NOT NULL,
    payload        BLOB NOT NULL,
    saved_at_us    INTEGER NOT NULL
);
