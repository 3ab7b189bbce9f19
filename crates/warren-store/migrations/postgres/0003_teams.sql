-- Teams: each key belongs to one and sees only its sandboxes. Limits absent are unlimited.
CREATE TABLE teams (
    name          TEXT PRIMARY KEY,
    max_sandboxes BIGINT,
    max_cpu       DOUBLE PRECISION,
    max_memory_mb BIGINT,
    max_disk_mb   BIGINT,
    rate_limit    BIGINT,
    created_at    TEXT NOT NULL
);
INSERT INTO teams (name, created_at) VALUES ('default', '1970-01-01T00:00:00.000000Z');

-- Keys made before teams were the operator's: full power, in the operator's team.
ALTER TABLE api_keys ADD COLUMN team TEXT NOT NULL DEFAULT 'default';
ALTER TABLE api_keys ADD COLUMN scope TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE api_keys ADD COLUMN expires_at TEXT;
ALTER TABLE api_keys ADD COLUMN revoked_at TEXT;
ALTER TABLE api_keys ADD COLUMN last_used_at TEXT;
ALTER TABLE api_keys ADD COLUMN rate_limit BIGINT;
CREATE INDEX api_keys_by_team ON api_keys (team);

ALTER TABLE sandboxes ADD COLUMN team TEXT NOT NULL DEFAULT 'default';
CREATE INDEX sandboxes_by_team ON sandboxes (team);
ALTER TABLE operations ADD COLUMN team TEXT NOT NULL DEFAULT 'default';
-- Volume names are the server's; each volume is one team's, invisible to the others.
ALTER TABLE volumes ADD COLUMN team TEXT NOT NULL DEFAULT 'default';
ALTER TABLE secrets ADD COLUMN team TEXT NOT NULL DEFAULT 'default';
-- An image is one team's (imported, built, tagged) or, pulled, every team's (''). Those
-- from before teams stay everyone's.
ALTER TABLE images ADD COLUMN team TEXT NOT NULL DEFAULT '';

-- Every mutating call (and every exec, terminal and file write): who, what, when, how it ended.
CREATE TABLE audit (
    seq BIGSERIAL PRIMARY KEY,
    at         TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    team       TEXT NOT NULL,
    method     TEXT NOT NULL,
    path       TEXT NOT NULL,
    route      TEXT NOT NULL,
    target     TEXT NOT NULL,
    status     BIGINT NOT NULL,
    client     TEXT NOT NULL,
    request_id TEXT NOT NULL
);
CREATE INDEX audit_by_at ON audit (at);
CREATE INDEX audit_by_team ON audit (team, seq);
CREATE INDEX audit_by_target ON audit (target, seq);

-- Several servers on one database: each sandbox (and each operation) is one server's, the one
-- whose host runs it; rows from before are adopted by the first server to start. Servers note
-- themselves alive every few seconds; one that stops is taken over by one other (`reaper`).
ALTER TABLE sandboxes ADD COLUMN host TEXT NOT NULL DEFAULT '';
CREATE INDEX sandboxes_by_host ON sandboxes (host);
ALTER TABLE operations ADD COLUMN host TEXT NOT NULL DEFAULT '';
CREATE TABLE servers (
    name       TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    started_at TEXT NOT NULL,
    seen_at    TEXT NOT NULL,
    reaper     TEXT,
    reaped_at  TEXT
);
