-- Operations: every create, start, stop, delete, pause, resume, fork, snapshot and pull the
-- API was asked for, carried out by the server's workers whether or not the client stays.
-- `request` holds what resumes it after a restart; `idempotency_key` makes a retried call
-- the same operation.
CREATE TABLE operations (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    error_code TEXT,
    error_message TEXT,
    result TEXT,
    request TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    created_at TEXT NOT NULL,
    started_at TEXT,
    ended_at TEXT
);
CREATE INDEX operations_by_target ON operations (target, created_at);
CREATE INDEX operations_by_state ON operations (state, created_at);
