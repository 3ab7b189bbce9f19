-- The server whose call claimed a key: at its start a server lets go of its own running keys
-- only (another server's call may still be running), and a server that takes over a stopped
-- one lets go of that one's. Keys from before servers were named have none ('').
ALTER TABLE request_keys ADD COLUMN host TEXT NOT NULL DEFAULT '';
CREATE INDEX request_keys_host ON request_keys (host, state);
