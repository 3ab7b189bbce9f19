-- Named snapshots of sandboxes; `doc` is the whole record (the source sandbox's record, the
-- receipt), `image_digest` keeps the image's layers alive while the snapshot is.
CREATE TABLE snapshots (
    name TEXT PRIMARY KEY,
    image_digest TEXT NOT NULL,
    created_at TEXT NOT NULL,
    doc TEXT NOT NULL
);
