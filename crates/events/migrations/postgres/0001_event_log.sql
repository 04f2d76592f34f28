-- The event log (production). Writers serialise on a transaction-scoped advisory lock taken
-- before anything is read or allocated, and assign global positions as max + 1 under it. The lock
-- is released only after the commit is visible, so a reader can never see position n+1 before n:
-- the global order has no holes and nothing commits behind a reader (ARCHITECTURE.md).
CREATE TABLE streams (
    stream_id TEXT PRIMARY KEY,
    tenant_id UUID NOT NULL,
    version   BIGINT NOT NULL CHECK (version > 0)
);

CREATE TABLE events (
    global_position BIGINT PRIMARY KEY CHECK (global_position > 0),
    event_id        UUID NOT NULL UNIQUE,
    tenant_id       UUID NOT NULL,
    stream_id       TEXT NOT NULL,
    stream_version  BIGINT NOT NULL CHECK (stream_version > 0),
    event_type      TEXT NOT NULL,
    schema_version  INTEGER NOT NULL,
    recorded_at_us  BIGINT NOT NULL,
    correlation_id  TEXT,
    causation_id    UUID,
    traceparent     TEXT,
    tracestate      TEXT,
    payload         BYTEA NOT NULL,
    UNIQUE (stream_id, stream_version)
);

CREATE INDEX events_by_tenant ON events (tenant_id, global_position);

CREATE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only';
END;
$$;

CREATE TRIGGER events_are_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_append_only();

CREATE TABLE snapshots (
    stream_id      TEXT PRIMARY KEY,
    version        BIGINT NOT NULL,
    schema_version INTEGER NOT NULL,
    payload        BYTEA NOT NULL,
    saved_at_us    BIGINT NOT NULL
);
