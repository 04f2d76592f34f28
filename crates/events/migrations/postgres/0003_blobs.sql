-- Blobs: bytes kept beside the log, not in it, so they can be deleted (a tenant's captured
-- prompts and answers). Keyed by tenant and content hash; an expiry lets retention sweep them.
CREATE TABLE blobs (
    tenant_id     UUID NOT NULL,
    hash          TEXT NOT NULL,
    body          BYTEA NOT NULL,
    created_at_us BIGINT NOT NULL,
    expires_at_us BIGINT,
    PRIMARY KEY (tenant_id, hash)
);
CREATE INDEX blobs_by_age ON blobs (tenant_id, created_at_us);
CREATE INDEX blobs_by_expiry ON blobs (expires_at_us) WHERE expires_at_us IS NOT NULL;
