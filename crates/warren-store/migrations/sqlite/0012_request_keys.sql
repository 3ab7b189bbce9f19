-- Idempotency keys of mutating calls that are not operations (operations keep theirs): the
-- first call's answer, replayed to a retry with the same key and request.
CREATE TABLE request_keys (
    key          TEXT PRIMARY KEY,
    fingerprint  TEXT NOT NULL,
    state        TEXT NOT NULL,
    status       INTEGER,
    content_type TEXT,
    body         BLOB,
    created_at   TEXT NOT NULL
);
CREATE INDEX request_keys_created ON request_keys (created_at);
