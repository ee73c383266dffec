-- The process that appended an entry from its own traffic (a random tag per process; empty for imports),
-- so an instance tailing the shared log can leave out the entries it already holds in memory.
ALTER TABLE g2a_call_logs ADD COLUMN origin VARBINARY(40) NOT NULL DEFAULT '';
