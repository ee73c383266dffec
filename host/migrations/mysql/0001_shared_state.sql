-- Shared state of STORAGE_MODE=mysql (MySQL 8 / MariaDB 10.6+). Keys are binary strings: token ids, proxy
-- URLs, hashes and client addresses are compared byte for byte, and binary keys stay within InnoDB's
-- index-length limit whatever the server's default character set.

-- Meta counters: `ver` (bumped by every token/proxy/binding change; instances poll it), `logepoch` (bumped
-- when call-log entries are deleted), `logseq` (a lock row that serialises call-log appends), `init`
-- (present once the store was started on or imported into).
CREATE TABLE g2a_meta (
  k VARBINARY(32) NOT NULL PRIMARY KEY,
  v BIGINT NOT NULL
) ENGINE = InnoDB;

INSERT INTO g2a_meta (k, v) VALUES ('ver', 0), ('logepoch', 0), ('logseq', 0);

-- Token and proxy rows (tbl 0 = tokens, 1 = proxies); a row exists while its g2a_rows entry does.
CREATE TABLE g2a_rows (
  tbl TINYINT UNSIGNED NOT NULL,
  rkey VARBINARY(1024) NOT NULL,
  PRIMARY KEY (tbl, rkey)
) ENGINE = InnoDB;

-- A row's groups: small JSON documents that change together (see storage/shared.rs).
CREATE TABLE g2a_groups (
  tbl TINYINT UNSIGNED NOT NULL,
  rkey VARBINARY(1024) NOT NULL,
  grp VARBINARY(32) NOT NULL,
  val MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  PRIMARY KEY (tbl, rkey, grp)
) ENGINE = InnoDB;

-- Token id -> proxy URL. The primary key makes a token's binding unique across instances.
CREATE TABLE g2a_bindings (
  token_id VARBINARY(255) NOT NULL PRIMARY KEY,
  proxy VARBINARY(1024) NOT NULL
) ENGINE = InnoDB;

-- Admin sessions: only the SHA-256 of the session token.
CREATE TABLE g2a_sessions (
  token_hash VARBINARY(128) NOT NULL PRIMARY KEY,
  expires_at_ms BIGINT NOT NULL,
  KEY idx_sessions_expiry (expires_at_ms)
) ENGINE = InnoDB;

-- Login throttling per client address.
CREATE TABLE g2a_login (
  client VARBINARY(255) NOT NULL PRIMARY KEY,
  failures INT NOT NULL,
  window_until_ms BIGINT NOT NULL,
  locked_until_ms BIGINT NOT NULL
) ENGINE = InnoDB;

-- The call log. `seq` orders entries by commit (appends are serialised), `entry_id` makes appends
-- idempotent, `entry` is the whole entry as JSON; the other columns are copies for the admin filters.
CREATE TABLE g2a_call_logs (
  seq BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  entry_id VARBINARY(255) NOT NULL,
  ts BIGINT NOT NULL,
  token_id VARBINARY(64) NOT NULL,
  model VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  success TINYINT(1) NOT NULL,
  status_code SMALLINT UNSIGNED NOT NULL,
  entry MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  UNIQUE KEY uq_call_logs_entry (entry_id),
  KEY idx_call_logs_ts (ts),
  KEY idx_call_logs_token (token_id, ts),
  KEY idx_call_logs_model (model, ts),
  KEY idx_call_logs_success (success, ts)
) ENGINE = InnoDB;
