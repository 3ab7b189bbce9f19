-- Sandbox logs: the main command's output, one row per line, and lifecycle events, numbered
-- per sandbox without gaps. `log_offsets` says how far each output file has been read, written
-- in the same transaction as the lines, so a restart neither loses nor repeats a line.
CREATE TABLE logs (
    sandbox_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    ts         TEXT NOT NULL,
    stream     TEXT NOT NULL,
    text       TEXT NOT NULL,
    PRIMARY KEY (sandbox_id, seq)
);

CREATE TABLE log_offsets (
    sandbox_id TEXT NOT NULL,
    stream     TEXT NOT NULL,
    offset     INTEGER NOT NULL,
    PRIMARY KEY (sandbox_id, stream)
);
