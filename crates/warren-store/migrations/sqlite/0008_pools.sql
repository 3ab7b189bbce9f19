-- Warm pools: `doc` is the pool as asked for (name, size, what its sandboxes are).
CREATE TABLE pools (
    name TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    doc TEXT NOT NULL
);
