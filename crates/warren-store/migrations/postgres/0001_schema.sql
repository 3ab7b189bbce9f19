-- The whole schema, as SQLite's migrations leave it, in PostgreSQL's types: every integer a
-- BIGINT (the store binds i64), times as RFC 3339 text (the same text on both databases),
-- lists and maps as JSON text.
CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    hash       TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE images (
    name       TEXT PRIMARY KEY,
    digest     TEXT NOT NULL,
    size       BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    source     TEXT,
    layers     TEXT NOT NULL DEFAULT '[]',
    config     TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE manifests (
    digest TEXT PRIMARY KEY,
    layers TEXT NOT NULL
);

CREATE TABLE sandboxes (
    id            TEXT PRIMARY KEY,
    state         TEXT NOT NULL,
    image         TEXT NOT NULL,
    image_digest  TEXT NOT NULL,
    runtime       TEXT NOT NULL,
    cpu           DOUBLE PRECISION NOT NULL,
    memory_mb     BIGINT NOT NULL,
    disk_mb       BIGINT NOT NULL,
    pids          BIGINT NOT NULL,
    env           TEXT NOT NULL,
    cmd           TEXT NOT NULL,
    cwd           TEXT NOT NULL,
    user_name     TEXT NOT NULL,
    metadata      TEXT NOT NULL,
    volumes       TEXT NOT NULL,
    egress        TEXT NOT NULL,
    public        BIGINT NOT NULL,
    traffic_token TEXT,
    request_host  TEXT,
    ip            TEXT,
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    expires_at    TEXT,
    on_timeout    TEXT NOT NULL,
    auto_resume   BIGINT NOT NULL,
    error         TEXT,
    urls          TEXT NOT NULL,
    exposed_ports TEXT NOT NULL,
    ports         TEXT NOT NULL,
    pause         TEXT,
    pool          TEXT,
    token         TEXT NOT NULL,
    net_index     BIGINT
);
CREATE INDEX sandboxes_state ON sandboxes (state);
CREATE INDEX sandboxes_image ON sandboxes (image);
CREATE INDEX sandboxes_image_digest ON sandboxes (image_digest);

CREATE TABLE execs (
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    sandbox_id  TEXT NOT NULL,
    cmd         TEXT NOT NULL,
    label       TEXT,
    kind        TEXT NOT NULL,
    exit_code   BIGINT,
    stdout      TEXT NOT NULL,
    stderr      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    duration_ms BIGINT NOT NULL
);
CREATE INDEX execs_sandbox ON execs (sandbox_id, seq);
CREATE INDEX execs_started ON execs (started_at);

CREATE TABLE logs (
    sandbox_id TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    ts         TEXT NOT NULL,
    stream     TEXT NOT NULL,
    text       TEXT NOT NULL,
    PRIMARY KEY (sandbox_id, seq)
);

CREATE TABLE log_offsets (
    sandbox_id TEXT NOT NULL,
    stream     TEXT NOT NULL,
    bytes_read BIGINT NOT NULL,
    PRIMARY KEY (sandbox_id, stream)
);

CREATE TABLE idempotency_keys (
    key        TEXT PRIMARY KEY,
    sandbox_id TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE volumes (
    name       TEXT PRIMARY KEY,
    size_mb    BIGINT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE snapshots (
    name         TEXT PRIMARY KEY,
    image_digest TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    doc          TEXT NOT NULL
);

CREATE TABLE pools (
    name       TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    doc        TEXT NOT NULL
);

CREATE TABLE secrets (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    version    BIGINT NOT NULL,
    metadata   TEXT NOT NULL,
    sealed     BYTEA NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE operations (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    target          TEXT NOT NULL,
    state           TEXT NOT NULL,
    priority        BIGINT NOT NULL,
    attempts        BIGINT NOT NULL,
    error_code      TEXT,
    error_message   TEXT,
    result          TEXT,
    request         TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    created_at      TEXT NOT NULL,
    started_at      TEXT,
    ended_at        TEXT
);
CREATE INDEX operations_by_target ON operations (target, created_at);
CREATE INDEX operations_by_state ON operations (state, created_at);
