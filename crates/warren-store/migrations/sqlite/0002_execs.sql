-- Command history: every exec through the API (kind 'user') and the steps Warren runs while
-- provisioning (kind 'system'), output truncated to 64 KiB per stream.
CREATE TABLE execs (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    sandbox_id  TEXT NOT NULL,
    cmd         TEXT NOT NULL,
    label       TEXT,
    kind        TEXT NOT NULL,
    exit_code   INTEGER,
    stdout      TEXT NOT NULL,
    stderr      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    duration_ms INTEGER NOT NULL
);
CREATE INDEX execs_sandbox ON execs (sandbox_id, seq);
CREATE INDEX execs_started ON execs (started_at);
