-- Sandboxes in columns, one per field of the API's view (lists and maps as JSON text),
-- instead of a JSON document of the wire type; `log_offsets.offset` renamed (a reserved word
-- in PostgreSQL, whose schema is the same).
CREATE TABLE sandboxes_columns (
    id            TEXT PRIMARY KEY,
    state         TEXT NOT NULL,
    image         TEXT NOT NULL,
    image_digest  TEXT NOT NULL,
    runtime       TEXT NOT NULL,
    cpu           REAL NOT NULL,
    memory_mb     INTEGER NOT NULL,
    disk_mb       INTEGER NOT NULL,
    pids          INTEGER NOT NULL,
    env           TEXT NOT NULL,
    cmd           TEXT NOT NULL,
    cwd           TEXT NOT NULL,
    user_name     TEXT NOT NULL,
    metadata      TEXT NOT NULL,
    volumes       TEXT NOT NULL,
    egress        TEXT NOT NULL,
    public        INTEGER NOT NULL,
    traffic_token TEXT,
    request_host  TEXT,
    ip            TEXT,
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    expires_at    TEXT,
    on_timeout    TEXT NOT NULL,
    auto_resume   INTEGER NOT NULL,
    error         TEXT,
    urls          TEXT NOT NULL,
    exposed_ports TEXT NOT NULL,
    ports         TEXT NOT NULL,
    pause         TEXT,
    pool          TEXT,
    token         TEXT NOT NULL,
    net_index     INTEGER
);
INSERT INTO sandboxes_columns
SELECT id, state, image,
       doc ->> '$.image_digest',
       doc ->> '$.runtime',
       doc ->> '$.cpu',
       doc ->> '$.memory_mb',
       doc ->> '$.disk_mb',
       doc ->> '$.pids',
       COALESCE(doc -> '$.env', '{}'),
       COALESCE(doc -> '$.cmd', '[]'),
       doc ->> '$.cwd',
       COALESCE(doc ->> '$.user', 'root'),
       COALESCE(doc -> '$.metadata', '{}'),
       COALESCE(doc -> '$.volumes', '[]'),
       COALESCE(doc -> '$.egress', '"allow"'),
       COALESCE(doc ->> '$.public', 0),
       doc ->> '$.traffic_token',
       doc ->> '$.request_host',
       doc ->> '$.ip',
       COALESCE(doc ->> '$.created_at', created_at),
       doc ->> '$.started_at',
       doc ->> '$.expires_at',
       COALESCE(doc ->> '$.on_timeout', 'delete'),
       COALESCE(doc ->> '$.auto_resume', 0),
       doc ->> '$.error',
       COALESCE(doc -> '$.urls', '{}'),
       COALESCE(doc -> '$.exposed_ports', '[]'),
       COALESCE(doc -> '$.ports', '[]'),
       doc -> '$.pause',
       doc ->> '$.pool',
       token,
       net_index
FROM sandboxes;
DROP TABLE sandboxes;
ALTER TABLE sandboxes_columns RENAME TO sandboxes;
CREATE INDEX sandboxes_state ON sandboxes (state);
CREATE INDEX sandboxes_image ON sandboxes (image);
CREATE INDEX sandboxes_image_digest ON sandboxes (image_digest);

ALTER TABLE log_offsets RENAME COLUMN offset TO bytes_read;
