-- Named volumes: what a volume is (its files live in the data dir's volumes/).
CREATE TABLE volumes (
    name TEXT PRIMARY KEY,
    size_mb INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
