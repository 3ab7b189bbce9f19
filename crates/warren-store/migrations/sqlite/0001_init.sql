CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    hash       TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE images (
    name       TEXT PRIMARY KEY,
    digest     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    created_at TEXT NOT NULL
);

-- `doc` holds the API's view of the sandbox as JSON; the other columns are what queries need.
CREATE TABLE sandboxes (
    id         TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    image      TEXT NOT NULL,
    net_index  INTEGER,
    token      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    doc        TEXT NOT NULL
);
CREATE INDEX sandboxes_state ON sandboxes (state);
CREATE INDEX sandboxes_image ON sandboxes (image);
