-- Idempotency keys of sandbox creates (E2B's `Idempotency-Key`): a repeated create with the
-- same key answers with the sandbox the first one made.
CREATE TABLE idempotency_keys (
    key TEXT PRIMARY KEY,
    sandbox_id TEXT NOT NULL,
    created_at TEXT NOT NULL
);
