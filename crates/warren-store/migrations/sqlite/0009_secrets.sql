-- Secrets (E2B's /secrets): values sealed by the server (ChaCha20-Poly1305, key in the data
-- dir), never stored in the clear. `sealed` is the nonce followed by the ciphertext.
CREATE TABLE secrets (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    version INTEGER NOT NULL,
    metadata TEXT NOT NULL,
    sealed BLOB NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
