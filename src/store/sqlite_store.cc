#include "sqlite_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "acked_batch.h"
#include "common/private_files.h"
#include "key_hash.h"

namespace fastchat {

namespace {

// ---- schema

// Migration N takes the schema from version N-1 to N. Append new entries;
// never edit one that has shipped. Plain types only (INTEGER, TEXT, BLOB) so
// the same layout maps onto PostgreSQL.
struct Migration {
  int version;
  const char* sql;
};

constexpr Migration kMigrations[] = {
    {1, R"sql(
CREATE TABLE users (
  id             INTEGER PRIMARY KEY AUTOINCREMENT,
  name           TEXT NOT NULL UNIQUE,
  password_hash  TEXT NOT NULL,
  x25519_public  BLOB NOT NULL,
  ed25519_public BLOB NOT NULL
);
CREATE TABLE friend_requests (
  id        INTEGER PRIMARY KEY AUTOINCREMENT,
  from_user INTEGER NOT NULL REFERENCES users (id),
  to_user   INTEGER NOT NULL REFERENCES users (id),
  UNIQUE (from_user, to_user)
);
CREATE INDEX friend_requests_by_to ON friend_requests (to_user, id);
CREATE TABLE friendships (
  user_id   INTEGER NOT NULL REFERENCES users (id),
  friend_id INTEGER NOT NULL REFERENCES users (id),
  PRIMARY KEY (user_id, friend_id)
);
CREATE TABLE chat_groups (
  id       INTEGER PRIMARY KEY AUTOINCREMENT,
  name     TEXT NOT NULL,
  admin_id INTEGER NOT NULL REFERENCES users (id),
  epoch    INTEGER NOT NULL
);
CREATE TABLE group_members (
  id       INTEGER PRIMARY KEY AUTOINCREMENT,
  group_id INTEGER NOT NULL REFERENCES chat_groups (id) ON DELETE CASCADE,
  user_id  INTEGER NOT NULL REFERENCES users (id),
  UNIQUE (group_id, user_id)
);
CREATE INDEX group_members_by_user ON group_members (user_id, group_id);
CREATE TABLE pending (
  seq        INTEGER PRIMARY KEY AUTOINCREMENT,
  recipient  INTEGER NOT NULL REFERENCES users (id),
  dedupe_key TEXT NOT NULL,
  payload    BLOB NOT NULL,
  UNIQUE (recipient, dedupe_key)
);
CREATE INDEX pending_by_recipient ON pending (recipient, seq);
)sql"},
    {2, R"sql(
CREATE TABLE servers (
  id           TEXT PRIMARY KEY,
  mesh_address TEXT NOT NULL,
  heartbeat_ms INTEGER NOT NULL
);
)sql"},
    // Group messages stored once per group; members read them after their
    // cursor. Seqs share one counter with pending (SqliteStore::next_seq_).
    {3, R"sql(
CREATE TABLE group_log (
  seq        INTEGER PRIMARY KEY,
  group_id   INTEGER NOT NULL,
  sender     INTEGER NOT NULL,
  dedupe_key TEXT NOT NULL,
  payload    BLOB NOT NULL,
  UNIQUE (group_id, dedupe_key)
);
CREATE INDEX group_log_by_group ON group_log (group_id, seq);
CREATE TABLE group_cursors (
  group_id  INTEGER NOT NULL,
  user_id   INTEGER NOT NULL,
  acked_seq INTEGER NOT NULL,
  until_seq INTEGER,
  PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_cursors_by_user ON group_cursors (user_id, group_id);
INSERT INTO group_cursors (group_id, user_id, acked_seq) SELECT group_id, user_id, 0 FROM group_members;
)sql"},
    // Session tokens, by hash.
    {4, R"sql(
CREATE TABLE session_tokens (
  token_hash BLOB PRIMARY KEY,
  user_id    INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL
);
CREATE INDEX session_tokens_by_user ON session_tokens (user_id, expires_ms);
)sql"},
    // Seqs are drawn from seq_reservation, written once per kSeqReserve
    // seqs (SqliteStore::ReserveSeq), instead of AUTOINCREMENT's
    // sqlite_sequence row, which every insert rewrote. (A WITHOUT ROWID
    // table clustered by (recipient, seq) was tried and measured 2x slower
    // with a standing backlog: every batch then moves whole payloads around
    // pages spread over all recipients; docs/performance.md.)
    {5, R"sql(
CREATE TABLE seq_reservation (last_seq INTEGER NOT NULL);
INSERT INTO seq_reservation (last_seq) SELECT max(
  COALESCE((SELECT MAX(seq) FROM pending), 0),
  COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'pending'), 0),
  COALESCE((SELECT MAX(seq) FROM group_log), 0));
CREATE TABLE pending_v5 (
  seq        INTEGER PRIMARY KEY,
  recipient  INTEGER NOT NULL REFERENCES users (id),
  dedupe_key TEXT NOT NULL,
  payload    BLOB NOT NULL,
  UNIQUE (recipient, dedupe_key)
);
INSERT INTO pending_v5 (recipient, seq, dedupe_key, payload)
  SELECT recipient, seq, dedupe_key, payload FROM pending;
DROP TABLE pending;
ALTER TABLE pending_v5 RENAME TO pending;
CREATE INDEX pending_by_recipient ON pending (recipient, seq);
)sql"},
    // Each log entry names the entry before it in its group's log, so a
    // receiving session can tell it missed one (server/session.h). Entries
    // stored before this version name none (0).
    {6, R"sql(
ALTER TABLE group_log ADD COLUMN prev_seq INTEGER NOT NULL DEFAULT 0;
)sql"},
    // Dedupe keys outlive their rows for kDedupeRetentionMs, so a resend
    // after that is not stored (delivered) again: a pending row's from its
    // acknowledgement, appended to acked_keys in acknowledgement order with
    // no index but the rowid (version 9 moved them to acked_batches, one row
    // per acknowledgement; found through SqliteStore::acked_, an index in
    // memory rebuilt at open; acked_keys.h says why); a group-log entry's
    // from its trimming, in group_dedupe_keys (one row per group message,
    // not per recipient). Dropped once expired (TrimDedupeKeys).
    {7, R"sql(
CREATE TABLE acked_keys (
  id         INTEGER PRIMARY KEY,
  recipient  INTEGER NOT NULL,
  dedupe_key TEXT NOT NULL,
  seq        INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL
);
CREATE TABLE group_dedupe_keys (
  group_id   INTEGER NOT NULL,
  dedupe_key TEXT NOT NULL,
  seq        INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL,
  PRIMARY KEY (group_id, dedupe_key)
) WITHOUT ROWID;
CREATE INDEX group_dedupe_keys_by_expiry ON group_dedupe_keys (expires_ms);
)sql"},
    // pending without indexes on disk but its rowid: SqliteStore keeps
    // each recipient's seqs and each row's dedupe key in memory
    // (pending_index.h says why), so no insert or delete touches a B-tree
    // keyed by recipient.
    {8, R"sql(
CREATE TABLE pending_v8 (
  seq        INTEGER PRIMARY KEY,
  recipient  INTEGER NOT NULL REFERENCES users (id),
  dedupe_key TEXT NOT NULL,
  payload    BLOB NOT NULL
);
INSERT INTO pending_v8 (seq, recipient, dedupe_key, payload)
  SELECT seq, recipient, dedupe_key, payload FROM pending ORDER BY seq;
DROP TABLE pending;
ALTER TABLE pending_v8 RENAME TO pending;
)sql"},
    // The dedupe keys of acknowledged rows: one row per acknowledgement
    // (an AckMany naming many rows) instead of one per key, the keys in
    // one text (acked_batch.h); each old row becomes a batch of one.
    {9, R"sql(
CREATE TABLE acked_batches (
  id         INTEGER PRIMARY KEY,
  expires_ms INTEGER NOT NULL,
  keys       BLOB NOT NULL
);
INSERT INTO acked_batches (id, expires_ms, keys)
  SELECT id, expires_ms,
         CAST(recipient || ' ' || seq || ' ' || length(CAST(dedupe_key AS BLOB)) || ':' || dedupe_key AS BLOB)
  FROM acked_keys ORDER BY id;
DROP TABLE acked_keys;
)sql"},
    // Pending rows in two tables, `pending` and `pending_b`: one takes every
    // insert (the head), the other holds the rows at or below `boundary`
    // (the old one). An acknowledgement may leave its rows in the head (dead:
    // named in acked_batches), and a rotation clears the old table whole
    // in one statement instead of row by row as they are acknowledged
    // (sqlite_store.h says how).
    // acked_batches rows above `safe_batch` may name dead rows and are kept;
    // `last_batch` is the newest acked_batches id at the latest rotation.
    {10, R"sql(
CREATE TABLE pending_b (
  seq        INTEGER PRIMARY KEY,
  recipient  INTEGER NOT NULL REFERENCES users (id),
  dedupe_key TEXT NOT NULL,
  payload    BLOB NOT NULL
);
CREATE TABLE pending_layout (
  head       INTEGER NOT NULL,
  boundary   INTEGER NOT NULL,
  safe_batch INTEGER NOT NULL,
  last_batch INTEGER NOT NULL
);
INSERT INTO pending_layout (head, boundary, safe_batch, last_batch)
  SELECT 0, 0, COALESCE(MAX(id), 0), COALESCE(MAX(id), 0) FROM acked_batches;
)sql"},
    // The pending tables without their foreign key to users: SQLite
    // empties a table page by page (a rotation's DELETE with no WHERE) only
    // if no foreign key names it, and deletes row by row otherwise.
    // Enqueue checks the recipient itself (kUserExists); no user is ever
    // deleted.
    {11, R"sql(
CREATE TABLE pending_v11 (
  seq        INTEGER PRIMARY KEY,
  recipient  INTEGER NOT NULL,
  dedupe_key TEXT NOT NULL,
  payload    BLOB NOT NULL
);
INSERT INTO pending_v11 (seq, recipient, dedupe_key, payload)
  SELECT seq, recipient, dedupe_key, payload FROM pending ORDER BY seq;
DROP TABLE pending;
ALTER TABLE pending_v11 RENAME TO pending;
CREATE TABLE pending_b_v11 (
  seq        INTEGER PRIMARY KEY,
  recipient  INTEGER NOT NULL,
  dedupe_key TEXT NOT NULL,
  payload    BLOB NOT NULL
);
INSERT INTO pending_b_v11 (seq, recipient, dedupe_key, payload)
  SELECT seq, recipient, dedupe_key, payload FROM pending_b ORDER BY seq;
DROP TABLE pending_b;
ALTER TABLE pending_b_v11 RENAME TO pending_b;
)sql"},
    // The group log without an index on its dedupe keys, and the keys of
    // trimmed entries in one row per trim instead of one per key: both
    // indexes took each group message's key at a random place of a B-tree,
    // a page written per key (docs/performance.md, "Group dedupe keys
    // off the disk's indexes"). SqliteStore finds keys by hash in memory
    // (group_keys_, group_kept_). Each old kept key becomes a row of one.
    // A trigger moves a sender's cursor past its own entry if it had
    // acknowledged everything before (AppendGroup did that in a statement
    // of its own), so an append is one statement.
    {12, R"sql(
CREATE TABLE group_log_v12 (
  seq        INTEGER PRIMARY KEY,
  group_id   INTEGER NOT NULL,
  sender     INTEGER NOT NULL,
  dedupe_key TEXT NOT NULL,
  payload    BLOB NOT NULL,
  prev_seq   INTEGER NOT NULL DEFAULT 0
);
INSERT INTO group_log_v12 (seq, group_id, sender, dedupe_key, payload, prev_seq)
  SELECT seq, group_id, sender, dedupe_key, payload, prev_seq FROM group_log ORDER BY seq;
DROP TABLE group_log;
ALTER TABLE group_log_v12 RENAME TO group_log;
CREATE INDEX group_log_by_group ON group_log (group_id, seq);
CREATE TABLE group_kept_keys (
  id         INTEGER PRIMARY KEY,
  expires_ms INTEGER NOT NULL,
  keys       BLOB NOT NULL
);
INSERT INTO group_kept_keys (expires_ms, keys)
  SELECT expires_ms,
         CAST(group_id || ' ' || seq || ' ' || length(CAST(dedupe_key AS BLOB)) || ':' || dedupe_key AS BLOB)
  FROM group_dedupe_keys ORDER BY expires_ms;
DROP TABLE group_dedupe_keys;
CREATE TRIGGER group_log_advances_sender AFTER INSERT ON group_log BEGIN
  UPDATE group_cursors SET acked_seq = NEW.seq
    WHERE group_id = NEW.group_id AND user_id = NEW.sender AND until_seq IS NULL AND acked_seq >= NEW.prev_seq;
END;
)sql"},
    // An append is two plain statements again, the row and the sender's
    // cursor (kAdvanceSender), with the entry's predecessor from memory
    // (group_keys_). SQLite runs a trigger, and a RETURNING clause (itself a
    // trigger), under a statement journal, and collects RETURNING's rows in
    // a temporary B-tree opened and closed per statement: the store thread
    // cost 0.99-1.18 us per delivery in 100 x 10 groups with them, 0.80
    // without (docs/performance.md, "An append without a trigger").
    {13, R"sql(
DROP TRIGGER group_log_advances_sender;
)sql"},
};

constexpr int kLatestVersion = kMigrations[std::size(kMigrations) - 1].version;

// ---- statements, indexed by SqliteStore::Sql

constexpr const char* kSql[] = {
    // kBegin, kCommit, kRollback
    "BEGIN IMMEDIATE",
    "COMMIT",
    "ROLLBACK",
    // kSavepoint, kRelease, kRollbackTo (one name: savepoints nest as a stack)
    "SAVEPOINT sp",
    "RELEASE sp",
    "ROLLBACK TO sp",
    // kInsertUser
    "INSERT INTO users (name, password_hash, x25519_public, ed25519_public) VALUES (?1, ?2, ?3, ?4)"
    " ON CONFLICT (name) DO NOTHING RETURNING id",
    // kUserById, kUserByName
    "SELECT id, name, password_hash, x25519_public, ed25519_public FROM users WHERE id = ?1",
    "SELECT id, name, password_hash, x25519_public, ed25519_public FROM users WHERE name = ?1",
    // kInsertFriendRequest
    "INSERT INTO friend_requests (from_user, to_user) VALUES (?1, ?2)"
    " ON CONFLICT (from_user, to_user) DO NOTHING",
    // kDeleteFriendRequest
    "DELETE FROM friend_requests WHERE from_user = ?1 AND to_user = ?2",
    // kFriendRequestsTo
    "SELECT from_user FROM friend_requests WHERE to_user = ?1 ORDER BY id",
    // kInsertFriendship
    "INSERT INTO friendships (user_id, friend_id) VALUES (?1, ?2)"
    " ON CONFLICT (user_id, friend_id) DO NOTHING",
    // kFriendshipExists
    "SELECT 1 FROM friendships WHERE user_id = ?1 AND friend_id = ?2",
    // kFriendsOf
    "SELECT friend_id FROM friendships WHERE user_id = ?1 ORDER BY friend_id",
    // kInsertGroup
    "INSERT INTO chat_groups (name, admin_id, epoch) VALUES (?1, ?2, 1) RETURNING id",
    // kGroupById
    "SELECT id, name, admin_id, epoch FROM chat_groups WHERE id = ?1",
    // kInsertMember
    "INSERT INTO group_members (group_id, user_id) VALUES (?1, ?2)"
    " ON CONFLICT (group_id, user_id) DO NOTHING",
    // kDeleteMember
    "DELETE FROM group_members WHERE group_id = ?1 AND user_id = ?2",
    // kBumpEpoch
    "UPDATE chat_groups SET epoch = epoch + 1 WHERE id = ?1 RETURNING epoch",
    // kMemberExists
    "SELECT 1 FROM group_members WHERE group_id = ?1 AND user_id = ?2",
    // kMembersOf
    "SELECT user_id FROM group_members WHERE group_id = ?1 ORDER BY id",
    // kGroupsOf
    "SELECT group_id FROM group_members WHERE user_id = ?1 ORDER BY group_id",
    // kDeleteMembersOf
    "DELETE FROM group_members WHERE group_id = ?1",
    // kDeleteGroup
    "DELETE FROM chat_groups WHERE id = ?1",
    // kInsertPending (the caller looked for the key among the pending rows,
    // pending_, and the acknowledged ones, acked_, first)
    "INSERT INTO pending (recipient, dedupe_key, payload, seq) VALUES (?1, ?2, ?3, ?4)",
    // kPendingHasKey: the seq of row ?1 if it is ?2's and holds key ?3
    "SELECT seq FROM pending WHERE seq = ?1 AND recipient = ?2 AND dedupe_key = ?3",
    // kAckedBatch: the keys of acknowledgement ?1
    "SELECT keys FROM acked_batches WHERE id = ?1",
    // kFetchGroupRows: the entries of the recipient's group logs after ?2
    // (FetchPending merges them with its own rows, found through pending_)
    "SELECT l.seq, l.payload, l.group_id, l.prev_seq FROM group_cursors c"
    " JOIN group_log l ON l.group_id = c.group_id AND l.seq > max(c.acked_seq, ?2)"
    "  AND (c.until_seq IS NULL OR l.seq <= c.until_seq)"
    " WHERE c.user_id = ?1 AND l.sender != ?1"
    " ORDER BY 1 LIMIT ?3",
    // kDeletePending: ?1 is a JSON array of seqs, the rows to acknowledge,
    // each checked against the index in memory first (it is the
    // acknowledging recipient's). One statement for a whole acknowledgement,
    // not one per row, and one B-tree search per row: the rows it returns
    // give their keys (kept in acked_batches rows) as they are deleted.
    "DELETE FROM pending WHERE seq IN (SELECT value FROM json_each(?1))"
    " RETURNING seq, recipient, dedupe_key, length(payload)",
    // kPendingPayloads: ?1 is a JSON array of seqs (the index's, of
    // recipient ?2); one statement for a whole page of rows, in seq order
    // (the IN list is walked in order: no sort); their keys for recent_
    "SELECT seq, payload, dedupe_key FROM pending WHERE seq IN (SELECT value FROM json_each(?1)) AND recipient = ?2"
    " ORDER BY seq",
    // kPendingRows: for the index in memory
    "SELECT seq, recipient, dedupe_key, length(payload) FROM pending ORDER BY seq",
    // kInsertAckedBatch
    "INSERT INTO acked_batches (id, expires_ms, keys) VALUES (?1, ?2, ?3)",
    // kAckedBatches: those from id ?1 on, for the index in memory
    "SELECT id, expires_ms, keys FROM acked_batches WHERE id >= ?1 ORDER BY id",
    // kLastAckedKey
    "SELECT COALESCE(MAX(id), 0) FROM acked_batches",
    // kTrimAckedKeys: those of rowids ?1..?2 expired at ?3
    "DELETE FROM acked_batches WHERE id BETWEEN ?1 AND ?2 AND expires_ms <= ?3",
    // kDataVersion: changes when another connection commits
    "PRAGMA data_version",
    // kInsertGroupLog: prev_seq ?6 is the group's newest entry before it (the
    // key was looked for first: FindGroupKey; both from group_keys_)
    "INSERT INTO group_log (seq, group_id, sender, dedupe_key, payload, prev_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    // kAdvanceSender: the sender's cursor past its own entry ?3, if it had
    // acknowledged everything before it (up to ?4, the entry's predecessor)
    "UPDATE group_cursors SET acked_seq = ?3"
    " WHERE group_id = ?1 AND user_id = ?2 AND until_seq IS NULL AND acked_seq >= ?4",
    // kGroupLogHasKey: whether entry ?1 is group ?2's with key ?3
    "SELECT 1 FROM group_log WHERE seq = ?1 AND group_id = ?2 AND dedupe_key = ?3",
    // kStartCursor
    "INSERT INTO group_cursors (group_id, user_id, acked_seq, until_seq) VALUES (?1, ?2, ?3, NULL)"
    " ON CONFLICT (group_id, user_id) DO UPDATE SET acked_seq = excluded.acked_seq, until_seq = NULL",
    // kEndCursor
    "UPDATE group_cursors SET until_seq = ?3 WHERE group_id = ?1 AND user_id = ?2",
    // kAckGroup
    "UPDATE group_cursors SET acked_seq = max(acked_seq, ?3) WHERE group_id = ?1 AND user_id = ?2",
    // kTrimCursors
    "DELETE FROM group_cursors WHERE group_id = ?1 AND until_seq IS NOT NULL AND acked_seq >= until_seq",
    // kTrimmedGroupKeys: the entries kTrimLog deletes, their keys and sizes
    "SELECT seq, dedupe_key, length(payload) FROM group_log WHERE group_id = ?1"
    " AND seq <= (SELECT MIN(acked_seq) FROM group_cursors WHERE group_id = ?1)",
    // kTrimLog
    "DELETE FROM group_log WHERE group_id = ?1"
    " AND seq <= (SELECT MIN(acked_seq) FROM group_cursors WHERE group_id = ?1)",
    // kDeleteKeptGroupKeys: rows ?1..?2
    "DELETE FROM group_kept_keys WHERE id BETWEEN ?1 AND ?2",
    // kDeleteCursorsOf, kDeleteLogOf
    "DELETE FROM group_cursors WHERE group_id = ?1",
    "DELETE FROM group_log WHERE group_id = ?1",
    // kGroupReaders
    "SELECT user_id FROM group_cursors WHERE group_id = ?1 AND until_seq IS NULL AND user_id != ?2",
    // kCountGroupLog
    "SELECT COUNT(*) FROM group_log WHERE group_id = ?1",
    // kGroupLogSizes: group ?1's entries from the oldest, and their sizes
    "SELECT seq, length(payload) FROM group_log WHERE group_id = ?1 ORDER BY seq",
    // kLapsedReaders: the cursors of group ?1 below ?2, and how many entries
    // of others each had not acknowledged up to ?2 (or to its end)
    "SELECT c.user_id, (SELECT COUNT(*) FROM group_log l WHERE l.group_id = ?1 AND l.seq > c.acked_seq"
    "                   AND l.seq <= min(?2, COALESCE(c.until_seq, ?2)) AND l.sender != c.user_id)"
    " FROM group_cursors c WHERE c.group_id = ?1 AND c.acked_seq < ?2",
    // kMoveLaggingCursors
    "UPDATE group_cursors SET acked_seq = ?2 WHERE group_id = ?1 AND acked_seq < ?2",
    // kGroupHeads
    "SELECT c.group_id, max(c.acked_seq, COALESCE((SELECT MAX(l.seq) FROM group_log l"
    "                                              WHERE l.group_id = c.group_id), 0))"
    " FROM group_cursors c WHERE c.user_id = ?1",
    // kLastSeq: no seq drawn so far is above it (ReserveSeq)
    "SELECT max((SELECT last_seq FROM seq_reservation), COALESCE((SELECT MAX(seq) FROM pending), 0),"
    " COALESCE((SELECT MAX(seq) FROM pending_b), 0), COALESCE((SELECT MAX(seq) FROM group_log), 0))",
    // kReserveSeqs
    "UPDATE seq_reservation SET last_seq = ?1",
    // kUpsertServer
    "INSERT INTO servers (id, mesh_address, heartbeat_ms) VALUES (?1, ?2, ?3)"
    " ON CONFLICT (id) DO UPDATE SET mesh_address = excluded.mesh_address, heartbeat_ms = excluded.heartbeat_ms",
    // kListServers
    "SELECT id, mesh_address, heartbeat_ms FROM servers ORDER BY id",
    // kInsertToken
    "INSERT INTO session_tokens (token_hash, user_id, expires_ms) VALUES (?1, ?2, ?3)",
    // kPruneTokens: expired ones, and all but the newest ?3
    "DELETE FROM session_tokens WHERE user_id = ?1 AND (expires_ms <= ?2 OR token_hash NOT IN"
    " (SELECT token_hash FROM session_tokens WHERE user_id = ?1 ORDER BY expires_ms DESC LIMIT ?3))",
    // kCheckToken
    "SELECT user_id FROM session_tokens WHERE token_hash = ?1 AND expires_ms > ?2",
    // kRevokeToken
    "DELETE FROM session_tokens WHERE token_hash = ?1",
    // kRevokeUserTokens
    "DELETE FROM session_tokens WHERE user_id = ?1",
    // kSetPassword
    "UPDATE users SET password_hash = ?2 WHERE id = ?1 RETURNING id",
    // kInsertPendingB, kPendingHasKeyB, kDeletePendingB, kPendingPayloadsB,
    // kPendingRowsB: as those without B, on pending_b
    "INSERT INTO pending_b (recipient, dedupe_key, payload, seq) VALUES (?1, ?2, ?3, ?4)",
    "SELECT seq FROM pending_b WHERE seq = ?1 AND recipient = ?2 AND dedupe_key = ?3",
    "DELETE FROM pending_b WHERE seq IN (SELECT value FROM json_each(?1))"
    " RETURNING seq, recipient, dedupe_key, length(payload)",
    "SELECT seq, payload, dedupe_key FROM pending_b WHERE seq IN (SELECT value FROM json_each(?1)) AND recipient = ?2"
    " ORDER BY seq",
    "SELECT seq, recipient, dedupe_key, length(payload) FROM pending_b ORDER BY seq",
    // kAckedRowKeys, kAckedRowKeysB: an acknowledgement that leaves its rows
    // where they are reads their keys
    "SELECT seq, recipient, dedupe_key, length(payload) FROM pending WHERE seq IN (SELECT value FROM json_each(?1))",
    "SELECT seq, recipient, dedupe_key, length(payload) FROM pending_b WHERE seq IN (SELECT value FROM json_each(?1))",
    // kCopyToPending, kCopyToPendingB: a rotation's copy of the old table's
    // pending rows (?1, a JSON array of seqs) into the head
    "INSERT INTO pending (seq, recipient, dedupe_key, payload)"
    " SELECT seq, recipient, dedupe_key, payload FROM pending_b WHERE seq IN (SELECT value FROM json_each(?1))",
    "INSERT INTO pending_b (seq, recipient, dedupe_key, payload)"
    " SELECT seq, recipient, dedupe_key, payload FROM pending WHERE seq IN (SELECT value FROM json_each(?1))",
    // kClearPending, kClearPendingB: a whole table, its pages freed whole
    // without visiting rows (no foreign key names either table, no trigger:
    // SqliteStoreTest.ARotationEmptiesItsOldTablePageByPage)
    "DELETE FROM pending",
    "DELETE FROM pending_b",
    // kLayout, kSetLayout
    "SELECT head, boundary, safe_batch, last_batch FROM pending_layout",
    "UPDATE pending_layout SET head = ?1, boundary = ?2, safe_batch = ?3, last_batch = ?4",
    // kUserExists: an Enqueue's recipient (the pending tables have no
    // foreign key to users since version 11)
    "SELECT 1 FROM users WHERE id = ?1",
    // kInsertKeptGroupKeys, kKeptGroupKeysRow, kKeptGroupKeysAll: the keys
    // of trimmed group log entries (acked_batch.h's records, the group as
    // the recipient), kept until expires_ms
    "INSERT INTO group_kept_keys (id, expires_ms, keys) VALUES (?1, ?2, ?3)",
    "SELECT keys FROM group_kept_keys WHERE id = ?1",
    "SELECT id, expires_ms, keys FROM group_kept_keys ORDER BY id",
    // kGroupLogKeysAll, kGroupLogKeysOf: the entries' keys, for group_keys_
    "SELECT seq, group_id, dedupe_key, length(payload) FROM group_log ORDER BY seq",
    "SELECT seq, dedupe_key, length(payload) FROM group_log WHERE group_id = ?1",
};
static_assert(std::size(kSql) == SqliteStore::kNumSql, "kSql must match SqliteStore::Sql");

constexpr std::uint64_t kMaxInt64 = static_cast<std::uint64_t>(std::numeric_limits<sqlite3_int64>::max());

// One use of a cached prepared statement: binds parameters, steps, reads
// columns, and on destruction resets it and clears its bindings so it is
// ready for the next use and holds no read snapshot open.
//
// Text and blob parameters are bound SQLITE_STATIC: the caller's strings
// must outlive the Statement.
class Statement {
 public:
  explicit Statement(sqlite3_stmt* stmt) : stmt_(stmt) {}
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

  // IDs above INT64_MAX cannot exist in the database; they bind as negative
  // numbers and so match no row.
  void BindId(int index, std::uint64_t value) {
    Check(sqlite3_bind_int64(stmt_, index, static_cast<sqlite3_int64>(value)));
  }
  void BindInt64(int index, sqlite3_int64 value) { Check(sqlite3_bind_int64(stmt_, index, value)); }
  void BindText(int index, const std::string& value) {
    Check(sqlite3_bind_text64(stmt_, index, value.data(), value.size(), SQLITE_STATIC, SQLITE_UTF8));
  }
  // value.data() is never null, so an empty string binds as an empty blob,
  // not as NULL.
  void BindBlob(int index, std::string_view value) {
    Check(sqlite3_bind_blob64(stmt_, index, value.data(), value.size(), SQLITE_STATIC));
  }

  // SQLITE_ROW, SQLITE_DONE, or an (extended) error code. A failed bind is
  // reported here.
  int Step() {
    if (bind_rc_ != SQLITE_OK) return bind_rc_;
    return sqlite3_step(stmt_);
  }

  std::uint64_t ColumnId(int column) const {
    return static_cast<std::uint64_t>(sqlite3_column_int64(stmt_, column));
  }
  std::string ColumnText(int column) const { return std::string(ColumnTextView(column)); }
  std::string ColumnBlob(int column) const { return std::string(ColumnBlobView(column)); }
  // The same without a copy: valid until the next Step or the end of this
  // use (for the hot paths that only hash or scan a value).
  std::string_view ColumnTextView(int column) const {
    const unsigned char* p = sqlite3_column_text(stmt_, column);
    const int n = sqlite3_column_bytes(stmt_, column);
    if (p == nullptr) return std::string_view();
    return std::string_view(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
  }
  std::string_view ColumnBlobView(int column) const {
    const void* p = sqlite3_column_blob(stmt_, column);
    const int n = sqlite3_column_bytes(stmt_, column);
    if (p == nullptr) return std::string_view();  // zero-length blob
    return std::string_view(static_cast<const char*>(p), static_cast<std::size_t>(n));
  }

 private:
  void Check(int rc) {
    if (bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  }

  sqlite3_stmt* stmt_;
  int bind_rc_ = SQLITE_OK;
};

void ReadUserRow(const Statement& st, UserRecord* out) {
  out->id = st.ColumnId(0);
  out->name = st.ColumnText(1);
  out->password_hash = st.ColumnText(2);
  out->x25519_public = st.ColumnBlob(3);
  out->ed25519_public = st.ColumnBlob(4);
}

Status NoSuchUser(const char* context) {
  return Status(Code::kNoSuchUser, std::string(context) + ": no such user");
}

// `seqs` as a JSON array, for a statement's json_each (the index's seqs are
// all below 2^63).
std::string SeqsAsJson(std::span<const std::uint64_t> seqs) {
  std::string json = "[";
  for (std::uint64_t seq : seqs) {
    if (json.size() > 1) json += ',';
    json += std::to_string(seq);
  }
  json += ']';
  return json;
}

}  // namespace

// ---- lifecycle

Status SqliteStore::Open(const std::string& path, std::unique_ptr<SqliteStore>* out, bool exclusive) {
  // No global memory statistics: they take a process-wide mutex on every
  // allocation. Only possible before SQLite initialises; harmless after.
  static const int no_memstatus = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
  (void)no_memstatus;
  // A new database file is made here, owner-only; SQLite gives its -wal,
  // -shm and -journal files the database file's mode.
  if (!path.empty() && path != ":memory:") {
    bool created = false;
    Status s = CreatePrivateFile(path, &created);
    if (!s.ok()) return s;
  }
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = "open " + path + ": " + (db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close(db);  // harmless on nullptr
    return Status(Code::kIOError, std::move(msg));
  }
  // SQLite falls back to read-only when it may not write the file; the
  // server must write, so say so now rather than fail on a later statement.
  if (sqlite3_db_readonly(db, "main") == 1) {
    sqlite3_close(db);
    return Status(Code::kIOError, "open " + path + ": the database is read-only (its permissions or its file system "
                                  "refuse writes)");
  }
  std::unique_ptr<SqliteStore> store(new SqliteStore(db));
  Status s = store->Init(exclusive);
  if (!s.ok()) return s;
  *out = std::move(store);
  return Status::OK();
}

SqliteStore::SqliteStore(sqlite3* db) : db_(db) {}


SqliteStore::~SqliteStore() {
  for (sqlite3_stmt* stmt : stmts_) sqlite3_finalize(stmt);  // harmless on nullptr
  sqlite3_close(db_);
}

Status SqliteStore::Init(bool exclusive) {
  sqlite3_extended_result_codes(db_, 1);
  if (sqlite3_busy_timeout(db_, 5000) != SQLITE_OK) return IOError("busy_timeout");
  // Set before WAL so the WAL index lives in heap memory, not a -shm file.
  if (exclusive && sqlite3_exec(db_, "PRAGMA locking_mode=EXCLUSIVE", nullptr, nullptr, nullptr) != SQLITE_OK) {
    return IOError("locking_mode");
  }
  // Savepoint journals in memory: a batch's large savepoints (merged
  // enqueues) otherwise spill to a temporary file, write by write.
  if (sqlite3_exec(db_, "PRAGMA temp_store=MEMORY", nullptr, nullptr, nullptr) != SQLITE_OK) {
    return IOError("temp_store");
  }
  // 64 MiB of page cache: the pending tables' hot pages stay in memory.
  if (sqlite3_exec(db_, "PRAGMA cache_size=-65536", nullptr, nullptr, nullptr) != SQLITE_OK) {
    return IOError("cache_size");
  }

  // Deleted content is zeroed only in pages written anyway. Debian builds
  // SQLite with SECURE_DELETE on, which also rewrites every page a delete
  // frees (as zeros, through the WAL and then the checkpoint): 7-18% of
  // SQLite's CPU per drained row (scripts/sqlite-drain-layouts.py with
  // PRAGMAS). The rows hold only ciphertext, and the WAL keeps old page
  // images until it wraps in any mode (docs/security.md).
  if (sqlite3_exec(db_, "PRAGMA secure_delete=FAST", nullptr, nullptr, nullptr) != SQLITE_OK) {
    return IOError("secure_delete");
  }

  // journal_mode answers with the mode actually in effect.
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db_, "PRAGMA journal_mode=WAL", -1, &raw, nullptr) != SQLITE_OK) {
    return IOError("journal_mode");
  }
  std::string mode;
  int rc = sqlite3_step(raw);
  if (rc == SQLITE_ROW) {
    const unsigned char* p = sqlite3_column_text(raw, 0);
    if (p != nullptr) mode = reinterpret_cast<const char*>(p);
    rc = sqlite3_step(raw);
  }
  sqlite3_finalize(raw);
  if (rc != SQLITE_DONE) return IOError("journal_mode");
  if (mode != "wal" && mode != "memory") {
    return Status(Code::kIOError, "journal_mode: cannot enable WAL (mode is '" + mode + "')");
  }

  if (sqlite3_exec(db_, "PRAGMA synchronous=FULL", nullptr, nullptr, nullptr) != SQLITE_OK) {
    return IOError("synchronous");
  }
  if (sqlite3_exec(db_, "PRAGMA foreign_keys=ON", nullptr, nullptr, nullptr) != SQLITE_OK) {
    return IOError("foreign_keys");
  }

  Status s = Migrate();
  if (!s.ok()) return s;

  for (int i = 0; i < kNumSql; ++i) {
    if (sqlite3_prepare_v3(db_, kSql[i], -1, SQLITE_PREPARE_PERSISTENT, &stmts_[i], nullptr) != SQLITE_OK) {
      return IOError(kSql[i]);
    }
  }
  exclusive_ = exclusive;
  if (Status ls = LoadIndexes(); !ls.ok()) return ls;
  reserved_seq_ = next_seq_;
  return Status::OK();
}

Status SqliteStore::DataVersion(std::uint64_t* v) {
  Statement st(stmts_[kDataVersion]);
  if (st.Step() != SQLITE_ROW) return IOError("data_version");
  *v = st.ColumnId(0);
  return Status::OK();
}

Status SqliteStore::LoadIndexes() {
  acked_.Clear();
  pending_.Clear();
  recent_.Clear();
  if (Status s = DataVersion(&data_version_); !s.ok()) return s;
  {
    Statement st(stmts_[kLastAckedKey]);
    if (st.Step() != SQLITE_ROW) return IOError("last acked key");
    next_acked_id_ = std::max(next_acked_id_, st.ColumnId(0));
  }
  {
    // Past every seq drawn through another connection too (a row left dead
    // in a pending table still holds its seq).
    Statement st(stmts_[kLastSeq]);
    if (st.Step() != SQLITE_ROW) return IOError("last seq");
    next_seq_ = std::max(next_seq_, st.ColumnId(0));
  }
  {
    Statement st(stmts_[kLayout]);
    if (st.Step() != SQLITE_ROW) return IOError("pending layout");
    layout_ = Layout();
    layout_.head = st.ColumnId(0) == 0 ? 0 : 1;
    layout_.boundary = st.ColumnId(1);
    layout_.safe_batch = st.ColumnId(2);
    layout_.last_batch = st.ColumnId(3);
    // acked_batches ids never go back below the rotation's (safe_batch
    // says which ids are old enough), also once every row was trimmed.
    next_acked_id_ = std::max(next_acked_id_, layout_.last_batch);
  }
  // The rows acked_batches names above safe_batch, where dead rows may be:
  // seq -> its acked_batches id.
  std::unordered_map<std::uint64_t, std::uint64_t> acked_seqs;
  if (Status s = IndexAckedKeys(0, &acked_seqs); !s.ok()) return s;
  pinned_.clear();
  for (int t = 0; t < 2; ++t) {
    // Not journalled: the index is rebuilt to what this connection sees,
    // which already holds the open transaction's changes (if any), so the
    // journal's undo still applies to it.
    Statement st(stmts_[OnTable(kPendingRows, t)]);
    int rc;
    while ((rc = st.Step()) == SQLITE_ROW) {
      const std::uint64_t seq = st.ColumnId(0);
      if (t == layout_.head) ++layout_.head_inserts;
      if (auto it = acked_seqs.find(seq); it != acked_seqs.end()) {
        pinned_.push_back(it->second);  // a dead row
        continue;
      }
      const std::uint64_t recipient = st.ColumnId(1);
      pending_.Add(recipient, seq, DedupeKeyHash(recipient, st.ColumnTextView(2)), st.ColumnId(3));
      if (seq <= layout_.boundary) ++layout_.old_live;
    }
    if (rc != SQLITE_DONE) return IOError("index pending rows");
  }
  std::sort(pinned_.begin(), pinned_.end());
  pinned_.erase(std::unique(pinned_.begin(), pinned_.end()), pinned_.end());
  return LoadGroupIndexes();
}

Status SqliteStore::LoadGroupIndexes() {
  // Not journalled, as pending_ in LoadIndexes.
  group_keys_.Clear();
  group_kept_.Clear();
  {
    Statement st(stmts_[kGroupLogKeysAll]);
    int rc;
    while ((rc = st.Step()) == SQLITE_ROW) {
      const std::uint64_t group = st.ColumnId(1);
      group_keys_.Add(group, st.ColumnId(0), DedupeKeyHash(group, st.ColumnTextView(2)), st.ColumnId(3));
    }
    if (rc != SQLITE_DONE) return IOError("index group log keys");
  }
  Statement st(stmts_[kKeptGroupKeysAll]);
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) {
    const std::uint64_t id = st.ColumnId(0);
    const std::uint64_t expires_ms = st.ColumnId(1);
    next_kept_id_ = std::max(next_kept_id_, id);
    const bool whole = ForEachAckedRecord(st.ColumnBlobView(2), [&](const AckedRecord& r) {
      group_kept_.Add(DedupeKeyHash(r.recipient, r.key), id, expires_ms);
      return true;
    });
    if (!whole) return Status(Code::kIOError, "kept group keys " + std::to_string(id) + " are malformed");
  }
  if (rc != SQLITE_DONE) return IOError("index kept group keys");
  return Status::OK();
}

Status SqliteStore::FindGroupKey(std::uint64_t group, const std::string& key, std::uint64_t hash, std::uint64_t* seq,
                                 bool* found) {
  *found = false;
  candidates_.clear();
  group_keys_.Candidates(hash, &candidates_);
  for (std::uint64_t candidate : candidates_) {
    Statement st(stmts_[kGroupLogHasKey]);
    st.BindId(1, candidate);
    st.BindId(2, group);
    st.BindText(3, key);
    const int rc = st.Step();
    if (rc == SQLITE_DONE) continue;  // another key's entry
    if (rc != SQLITE_ROW) return IOError("AppendGroup: log key");
    *seq = candidate;
    *found = true;
    return Status::OK();
  }
  candidates_.clear();
  group_kept_.Candidates(hash, &candidates_);
  for (std::uint64_t id : candidates_) {
    Statement st(stmts_[kKeptGroupKeysRow]);
    st.BindId(1, id);
    const int rc = st.Step();
    if (rc == SQLITE_DONE) continue;  // a rolled-back trim's
    if (rc != SQLITE_ROW) return IOError("AppendGroup: kept key");
    const bool whole = ForEachAckedRecord(st.ColumnBlobView(0), [&](const AckedRecord& r) {
      if (r.recipient != group || r.key != key) return true;
      *seq = r.seq;
      *found = true;
      return false;
    });
    if (*found) return Status::OK();
    if (!whole) return Status(Code::kIOError, "kept group keys " + std::to_string(id) + " are malformed");
  }
  return Status::OK();
}

void SqliteStore::GroupIndexAdd(std::uint64_t group, std::uint64_t seq, std::uint64_t hash, std::uint64_t bytes) {
  group_keys_.Add(group, seq, hash, bytes);
  IndexChange c{true, group, seq, hash, bytes};
  c.group = true;
  journal_.push_back(c);
}

void SqliteStore::GroupIndexRemove(std::uint64_t group, std::uint64_t seq, std::uint64_t hash, std::uint64_t bytes) {
  if (!group_keys_.Remove(group, seq, hash, bytes)) return;
  IndexChange c{false, group, seq, hash, bytes};
  c.group = true;
  journal_.push_back(c);
}

Status SqliteStore::SyncIndexes() {
  if (exclusive_) return Status::OK();  // no other connection writes
  std::uint64_t v = 0;
  if (Status s = DataVersion(&v); !s.ok()) return s;
  if (v == data_version_) return Status::OK();
  return LoadIndexes();
}

Status SqliteStore::FindPendingKey(const PendingItem& item, std::uint64_t hash, std::uint64_t* seq, bool* found) {
  *found = false;
  candidates_.clear();
  pending_.Candidates(hash, &candidates_);
  for (std::uint64_t candidate : candidates_) {
    Statement st(stmts_[OnTable(kPendingHasKey, TableOf(candidate))]);
    st.BindId(1, candidate);
    st.BindId(2, item.recipient);
    st.BindText(3, item.dedupe_key);
    const int rc = st.Step();
    if (rc == SQLITE_DONE) continue;  // another key's row
    if (rc != SQLITE_ROW) return IOError("Enqueue: pending key");
    *seq = candidate;
    *found = true;
    return Status::OK();
  }
  return Status::OK();
}

void SqliteStore::IndexAdd(std::uint64_t recipient, std::uint64_t seq, std::uint64_t hash, std::uint64_t bytes) {
  pending_.Add(recipient, seq, hash, bytes);
  if (seq <= layout_.boundary) ++layout_.old_live;
  journal_.push_back(IndexChange{true, recipient, seq, hash, bytes});
}

bool SqliteStore::IndexRemove(std::uint64_t recipient, std::uint64_t seq, std::uint64_t hash, std::uint64_t bytes) {
  if (!pending_.Remove(recipient, seq, hash, bytes)) return false;
  if (seq <= layout_.boundary) --layout_.old_live;
  journal_.push_back(IndexChange{false, recipient, seq, hash, bytes});
  return true;
}

SqliteStore::Sql SqliteStore::OnTable(Sql sql, int t) {
  if (t == 0) return sql;
  switch (sql) {
    case kInsertPending: return kInsertPendingB;
    case kPendingHasKey: return kPendingHasKeyB;
    case kDeletePending: return kDeletePendingB;
    case kPendingPayloads: return kPendingPayloadsB;
    case kPendingRows: return kPendingRowsB;
    case kAckedRowKeys: return kAckedRowKeysB;
    case kCopyToPending: return kCopyToPendingB;
    case kClearPending: return kClearPendingB;
    default: return sql;
  }
}

Status SqliteStore::MaybeRotate() {
  if (!RotationDue()) return Status::OK();
  const int old = 1 - layout_.head;
  if (layout_.old_live > 0) {
    pending_seqs_.clear();
    pending_.SeqsAtOrBelow(layout_.boundary, &pending_seqs_);
    const std::string seqs = SeqsAsJson(pending_seqs_);
    Statement st(stmts_[OnTable(kCopyToPending, layout_.head)]);
    st.BindText(1, seqs);
    if (st.Step() != SQLITE_DONE) return IOError("rotate: copy");
    if (static_cast<std::uint64_t>(sqlite3_changes(db_)) != pending_seqs_.size()) {
      return Status(Code::kIOError, "rotate: a pending row the index names is missing");
    }
  }
  {
    Statement st(stmts_[OnTable(kClearPending, old)]);
    if (st.Step() != SQLITE_DONE) return IOError("rotate: clear");
  }
  Layout next;
  next.head = old;
  next.boundary = next_seq_;
  next.safe_batch = layout_.last_batch;
  next.last_batch = next_acked_id_;
  next.old_live = pending_.size();
  {
    Statement st(stmts_[kSetLayout]);
    st.BindInt64(1, next.head);
    st.BindId(2, next.boundary);
    st.BindId(3, next.safe_batch);
    st.BindId(4, next.last_batch);
    if (st.Step() != SQLITE_DONE) return IOError("rotate: layout");
  }
  rotations_.push_back(layout_);
  layout_ = next;
  IndexChange c{};
  c.rotated = true;
  journal_.push_back(c);
  return Status::OK();
}

void SqliteStore::ReleaseMark() {
  if (!marks_.empty()) marks_.pop_back();
  if (marks_.empty() && !in_batch_) {  // committed
    journal_.clear();
    rotations_.clear();
  }
}

void SqliteStore::UndoToMark() {
  const std::size_t mark = marks_.empty() ? 0 : marks_.back();
  while (journal_.size() > mark) {
    const IndexChange& c = journal_.back();
    if (c.rotated) {
      layout_ = rotations_.back();
      rotations_.pop_back();
    } else if (c.group) {
      if (c.added) {
        group_keys_.Remove(c.recipient, c.seq, c.hash, c.bytes);
      } else {
        group_keys_.Add(c.recipient, c.seq, c.hash, c.bytes);
      }
    } else if (c.added) {
      pending_.Remove(c.recipient, c.seq, c.hash, c.bytes);
      if (c.seq <= layout_.boundary) {
        --layout_.old_live;
      } else if (layout_.head_inserts > 0) {
        --layout_.head_inserts;  // the insert is undone
      }
    } else {
      pending_.Add(c.recipient, c.seq, c.hash, c.bytes);
      if (c.seq <= layout_.boundary) ++layout_.old_live;
    }
    journal_.pop_back();
  }
  if (!marks_.empty()) marks_.pop_back();
}

void SqliteStore::UndoAll() {
  marks_.clear();
  UndoToMark();  // to the journal's start
}

Status SqliteStore::FindAckedKey(const PendingItem& item, std::uint64_t hash, std::uint64_t* seq, bool* found) {
  *found = false;
  candidates_.clear();
  acked_.Candidates(hash, &candidates_);
  for (std::uint64_t batch : candidates_) {
    Statement st(stmts_[kAckedBatch]);
    st.BindId(1, batch);
    const int rc = st.Step();
    if (rc == SQLITE_DONE) continue;  // a rolled-back acknowledgement's
    if (rc != SQLITE_ROW) return IOError("Enqueue: acknowledged key");
    const std::string_view keys = st.ColumnBlobView(0);
    const bool whole = ForEachAckedRecord(keys, [&](const AckedRecord& r) {
      if (r.recipient != item.recipient || r.key != item.dedupe_key) return true;
      *seq = r.seq;
      *found = true;
      return false;
    });
    if (*found) return Status::OK();
    if (!whole) return Status(Code::kIOError, "Enqueue: acknowledged keys " + std::to_string(batch) + " are malformed");
  }
  return Status::OK();
}

Status SqliteStore::Migrate() {
  // Statements here run once per Open, so they are not cached.
  if (sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) {
    return IOError("migrate: begin");
  }
  Status s = [this]() -> Status {
    if (sqlite3_exec(db_, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
                     nullptr, nullptr, nullptr) != SQLITE_OK) {
      return IOError("migrate: schema_version");
    }

    sqlite3_stmt* raw = nullptr;
    if (sqlite3_prepare_v2(db_, "SELECT version FROM schema_version", -1, &raw, nullptr) != SQLITE_OK) {
      return IOError("migrate: read version");
    }
    sqlite3_int64 version = 0;
    bool have_row = false;
    int rc = sqlite3_step(raw);
    if (rc == SQLITE_ROW) {
      version = sqlite3_column_int64(raw, 0);
      have_row = true;
      rc = sqlite3_step(raw);
    }
    sqlite3_finalize(raw);
    if (rc != SQLITE_DONE) return IOError("migrate: read version");
    if (version > kLatestVersion) {
      return Status(Code::kIOError, "migrate: database schema version " + std::to_string(version) +
                                        " is newer than this binary's " + std::to_string(kLatestVersion));
    }
    if (!have_row && sqlite3_exec(db_, "INSERT INTO schema_version (version) VALUES (0)",
                                  nullptr, nullptr, nullptr) != SQLITE_OK) {
      return IOError("migrate: init version");
    }

    for (const Migration& m : kMigrations) {
      if (m.version <= version) continue;
      if (sqlite3_exec(db_, m.sql, nullptr, nullptr, nullptr) != SQLITE_OK) {
        return IOError(("migrate: to version " + std::to_string(m.version)).c_str());
      }
      if (sqlite3_prepare_v2(db_, "UPDATE schema_version SET version = ?1", -1, &raw, nullptr) != SQLITE_OK) {
        return IOError("migrate: write version");
      }
      sqlite3_bind_int64(raw, 1, m.version);
      rc = sqlite3_step(raw);
      sqlite3_finalize(raw);
      if (rc != SQLITE_DONE) return IOError("migrate: write version");
    }
    return Status::OK();
  }();

  if (s.ok() && sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
    s = IOError("migrate: commit");
  }
  if (!s.ok() && sqlite3_get_autocommit(db_) == 0) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  return s;
}

// ---- helpers

Status SqliteStore::IOError(const char* context) const {
  std::string msg = std::string(context) + ": " + sqlite3_errmsg(db_);
  // Which file operation failed, for an I/O error: e.g. "disk I/O error (a
  // sync to stable storage failed)".
  switch (sqlite3_extended_errcode(db_)) {
    case SQLITE_IOERR_WRITE: msg += " (a write failed)"; break;
    case SQLITE_IOERR_FSYNC:
    case SQLITE_IOERR_DIR_FSYNC: msg += " (a sync to stable storage failed)"; break;
    case SQLITE_IOERR_TRUNCATE: msg += " (a truncate failed)"; break;
    case SQLITE_IOERR_READ:
    case SQLITE_IOERR_SHORT_READ: msg += " (a read failed)"; break;
    default: break;
  }
  return Status(Code::kIOError, std::move(msg));
}

Status SqliteStore::Run(Sql sql, const char* context) {
  Statement st(stmts_[sql]);
  if (st.Step() != SQLITE_DONE) return IOError(context);
  return Status::OK();
}

Status SqliteStore::InTransaction(const std::function<Status()>& body) {
  Status s = Run(kSavepoint, "savepoint");
  if (!s.ok()) return s;
  MarkSavepoint();
  s = body();
  if (s.ok()) {
    s = Run(kRelease, "release");
    if (s.ok()) ReleaseMark();
  }
  if (!s.ok()) RollbackSavepoint();
  return s;
}

void SqliteStore::RollbackSavepoint() {
  reserved_seq_ = 0;  // a reservation written inside may be undone
  // SQLite may already have rolled the whole transaction back on some errors
  // (e.g. SQLITE_FULL); then there is no savepoint left.
  if (sqlite3_get_autocommit(db_) != 0) {
    UndoAll();
    return;
  }
  UndoToMark();
  {
    Statement st(stmts_[kRollbackTo]);
    st.Step();
  }
  Statement st(stmts_[kRelease]);
  st.Step();
}

// ---- batches

Status SqliteStore::BeginBatch() {
  if (in_batch_) return Status(Code::kIOError, "BeginBatch: a batch is already open");
  Status s = Run(kBegin, "BeginBatch");
  if (s.ok()) {
    in_batch_ = true;
    journal_.clear();
    rotations_.clear();
    marks_.clear();
  }
  return s;
}

Status SqliteStore::CommitBatch() {
  if (!in_batch_) return Status(Code::kIOError, "CommitBatch: no batch is open");
  in_batch_ = false;
  if (sqlite3_get_autocommit(db_) != 0) {
    reserved_seq_ = 0;
    UndoAll();
    return Status(Code::kIOError, "CommitBatch: the batch was rolled back");
  }
  Status s = Run(kCommit, "CommitBatch");
  if (!s.ok()) reserved_seq_ = 0;
  if (!s.ok() && sqlite3_get_autocommit(db_) == 0) {
    Statement st(stmts_[kRollback]);
    st.Step();
  }
  if (s.ok()) {
    journal_.clear();
    rotations_.clear();
    marks_.clear();
  } else {
    UndoAll();
  }
  return s;
}

void SqliteStore::RollbackBatch() {
  if (!in_batch_) return;
  in_batch_ = false;
  reserved_seq_ = 0;
  UndoAll();
  if (sqlite3_get_autocommit(db_) != 0) return;
  Statement st(stmts_[kRollback]);
  st.Step();
}

Status SqliteStore::BeginUnit() {
  Status s = Run(kSavepoint, "BeginUnit");
  if (s.ok()) MarkSavepoint();
  return s;
}

void SqliteStore::EndUnit(bool keep) {
  if (keep) {
    if (sqlite3_get_autocommit(db_) != 0) {
      UndoAll();  // SQLite dropped the whole transaction
      return;
    }
    if (Run(kRelease, "EndUnit").ok()) {
      ReleaseMark();
      return;
    }
  }
  RollbackSavepoint();
}

Status SqliteStore::LoadDirectory(DirectoryState* out) {
  *out = DirectoryState();
  // Run once at start: the statements are not cached.
  auto each = [this](const char* sql, const std::function<void(const Statement&)>& row) -> Status {
    sqlite3_stmt* raw = nullptr;
    if (sqlite3_prepare_v2(db_, sql, -1, &raw, nullptr) != SQLITE_OK) return IOError("LoadDirectory");
    int rc;
    {
      Statement st(raw);
      while ((rc = st.Step()) == SQLITE_ROW) row(st);
    }
    sqlite3_finalize(raw);
    return rc == SQLITE_DONE ? Status::OK() : IOError("LoadDirectory");
  };
  Status s = each("SELECT id, name, password_hash, x25519_public, ed25519_public FROM users ORDER BY id",
                  [out](const Statement& st) {
                    UserRecord u;
                    ReadUserRow(st, &u);
                    out->users.push_back(std::move(u));
                  });
  if (s.ok()) {
    s = each("SELECT user_id, friend_id FROM friendships", [out](const Statement& st) {
      out->friendships.emplace_back(st.ColumnId(0), st.ColumnId(1));
    });
  }
  if (s.ok()) {
    s = each("SELECT from_user, to_user FROM friend_requests ORDER BY id", [out](const Statement& st) {
      out->requests.emplace_back(st.ColumnId(0), st.ColumnId(1));
    });
  }
  if (s.ok()) {
    s = each("SELECT id, name, admin_id, epoch FROM chat_groups ORDER BY id", [out](const Statement& st) {
      out->groups.push_back(GroupRecord{st.ColumnId(0), st.ColumnText(1), st.ColumnId(2), st.ColumnId(3)});
    });
  }
  if (s.ok()) {
    s = each("SELECT group_id, user_id FROM group_members ORDER BY id", [out](const Statement& st) {
      out->members.emplace_back(st.ColumnId(0), st.ColumnId(1));
    });
  }
  return s;
}

Status SqliteStore::CheckGroup(std::uint64_t group, const char* context) {
  Statement st(stmts_[kGroupById]);
  st.BindId(1, group);
  const int rc = st.Step();
  if (rc == SQLITE_ROW) return Status::OK();
  if (rc == SQLITE_DONE) return Status(Code::kNoSuchGroup, std::string(context) + ": no such group");
  return IOError(context);
}

Status SqliteStore::ListIds(Sql sql, std::uint64_t key, const char* context,
                            std::vector<std::uint64_t>* ids) {
  ids->clear();
  Statement st(stmts_[sql]);
  st.BindId(1, key);
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) ids->push_back(st.ColumnId(0));
  if (rc != SQLITE_DONE) {
    ids->clear();
    return IOError(context);
  }
  return Status::OK();
}

// ---- users

Status SqliteStore::CreateUser(const UserRecord& user, std::uint64_t* id) {
  Statement st(stmts_[kInsertUser]);
  st.BindText(1, user.name);
  st.BindText(2, user.password_hash);
  st.BindBlob(3, user.x25519_public);
  st.BindBlob(4, user.ed25519_public);
  int rc = st.Step();
  bool inserted = false;
  std::uint64_t new_id = 0;
  if (rc == SQLITE_ROW) {
    inserted = true;
    new_id = st.ColumnId(0);
    rc = st.Step();
  }
  if (rc != SQLITE_DONE) return IOError("CreateUser");
  if (!inserted) return Status(Code::kNameTaken, "CreateUser: name taken: " + user.name);
  *id = new_id;
  return Status::OK();
}

Status SqliteStore::GetUserById(std::uint64_t id, UserRecord* out) {
  Statement st(stmts_[kUserById]);
  st.BindId(1, id);
  const int rc = st.Step();
  if (rc == SQLITE_DONE) return NoSuchUser("GetUserById");
  if (rc != SQLITE_ROW) return IOError("GetUserById");
  ReadUserRow(st, out);
  return Status::OK();
}

Status SqliteStore::GetUserByName(const std::string& name, UserRecord* out) {
  Statement st(stmts_[kUserByName]);
  st.BindText(1, name);
  const int rc = st.Step();
  if (rc == SQLITE_DONE) return NoSuchUser("GetUserByName");
  if (rc != SQLITE_ROW) return IOError("GetUserByName");
  ReadUserRow(st, out);
  return Status::OK();
}

// ---- friends
//
// A friendship is stored as two rows, (a, b) and (b, a), written together.

Status SqliteStore::AddFriendRequest(std::uint64_t from, std::uint64_t to) {
  Statement st(stmts_[kInsertFriendRequest]);
  st.BindId(1, from);
  st.BindId(2, to);
  const int rc = st.Step();
  if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) return NoSuchUser("AddFriendRequest");
  if (rc != SQLITE_DONE) return IOError("AddFriendRequest");
  return Status::OK();
}

Status SqliteStore::TakeFriendRequest(std::uint64_t from, std::uint64_t to) {
  Statement st(stmts_[kDeleteFriendRequest]);
  st.BindId(1, from);
  st.BindId(2, to);
  if (st.Step() != SQLITE_DONE) return IOError("TakeFriendRequest");
  if (sqlite3_changes(db_) == 0) {
    return Status(Code::kNoSuchRequest, "TakeFriendRequest: no such request");
  }
  return Status::OK();
}

Status SqliteStore::ListFriendRequestsTo(std::uint64_t to, std::vector<std::uint64_t>* from) {
  return ListIds(kFriendRequestsTo, to, "ListFriendRequestsTo", from);
}

Status SqliteStore::AddFriendship(std::uint64_t a, std::uint64_t b) {
  return InTransaction([&]() -> Status {
    const std::uint64_t pairs[2][2] = {{a, b}, {b, a}};
    for (const auto& pair : pairs) {
      Statement st(stmts_[kInsertFriendship]);
      st.BindId(1, pair[0]);
      st.BindId(2, pair[1]);
      const int rc = st.Step();
      if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) return NoSuchUser("AddFriendship");
      if (rc != SQLITE_DONE) return IOError("AddFriendship");
    }
    return Status::OK();
  });
}

Status SqliteStore::AreFriends(std::uint64_t a, std::uint64_t b, bool* yes) {
  Statement st(stmts_[kFriendshipExists]);
  st.BindId(1, a);
  st.BindId(2, b);
  const int rc = st.Step();
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return IOError("AreFriends");
  *yes = (rc == SQLITE_ROW);
  return Status::OK();
}

Status SqliteStore::ListFriends(std::uint64_t user, std::vector<std::uint64_t>* friends) {
  return ListIds(kFriendsOf, user, "ListFriends", friends);
}

// ---- groups

Status SqliteStore::CreateGroup(const std::string& name, std::uint64_t admin, std::uint64_t* id) {
  std::uint64_t new_id = 0;
  Status s = InTransaction([&]() -> Status {
    {
      Statement st(stmts_[kInsertGroup]);
      st.BindText(1, name);
      st.BindId(2, admin);
      int rc = st.Step();
      if (rc == SQLITE_ROW) {
        new_id = st.ColumnId(0);
        rc = st.Step();
      }
      if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) return NoSuchUser("CreateGroup");
      if (rc != SQLITE_DONE) return IOError("CreateGroup");
    }
    Status ms = InsertMember(new_id, admin, "CreateGroup");
    if (!ms.ok()) return ms;
    return StartCursor(new_id, admin, "CreateGroup");
  });
  if (s.ok()) *id = new_id;
  return s;
}

Status SqliteStore::GetGroup(std::uint64_t id, GroupRecord* out) {
  Statement st(stmts_[kGroupById]);
  st.BindId(1, id);
  const int rc = st.Step();
  if (rc == SQLITE_DONE) return Status(Code::kNoSuchGroup, "GetGroup: no such group");
  if (rc != SQLITE_ROW) return IOError("GetGroup");
  out->id = st.ColumnId(0);
  out->name = st.ColumnText(1);
  out->admin_id = st.ColumnId(2);
  out->epoch = st.ColumnId(3);
  return Status::OK();
}

Status SqliteStore::StartCursor(std::uint64_t group, std::uint64_t user, const char* context) {
  Statement st(stmts_[kStartCursor]);
  st.BindId(1, group);
  st.BindId(2, user);
  st.BindId(3, next_seq_);
  if (st.Step() != SQLITE_DONE) return IOError(context);
  return Status::OK();
}

Status SqliteStore::InsertMember(std::uint64_t group, std::uint64_t user, const char* context) {
  Statement st(stmts_[kInsertMember]);
  st.BindId(1, group);
  st.BindId(2, user);
  const int rc = st.Step();
  if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) return NoSuchUser(context);
  if (rc != SQLITE_DONE) return IOError(context);
  if (sqlite3_changes(db_) == 0) {
    return Status(Code::kAlreadyMember, std::string(context) + ": already a member");
  }
  return Status::OK();
}

Status SqliteStore::AddMember(std::uint64_t group, std::uint64_t user) {
  return InTransaction([&]() -> Status {
    Status s = CheckGroup(group, "AddMember");
    if (!s.ok()) return s;
    s = InsertMember(group, user, "AddMember");
    if (!s.ok()) return s;
    return StartCursor(group, user, "AddMember");
  });
}

Status SqliteStore::RemoveMember(std::uint64_t group, std::uint64_t user, std::uint64_t* new_epoch) {
  std::uint64_t epoch = 0;
  Status s = InTransaction([&]() -> Status {
    Status cs = CheckGroup(group, "RemoveMember");
    if (!cs.ok()) return cs;
    {
      Statement st(stmts_[kDeleteMember]);
      st.BindId(1, group);
      st.BindId(2, user);
      if (st.Step() != SQLITE_DONE) return IOError("RemoveMember");
      if (sqlite3_changes(db_) == 0) return Status(Code::kNotMember, "RemoveMember: not a member");
    }
    {
      // Still owed what was sent before now; nothing after.
      Statement st(stmts_[kEndCursor]);
      st.BindId(1, group);
      st.BindId(2, user);
      st.BindId(3, next_seq_);
      if (st.Step() != SQLITE_DONE) return IOError("RemoveMember: cursor");
    }
    Statement st(stmts_[kBumpEpoch]);
    st.BindId(1, group);
    int rc = st.Step();
    if (rc != SQLITE_ROW) return IOError("RemoveMember: bump epoch");
    epoch = st.ColumnId(0);
    rc = st.Step();
    if (rc != SQLITE_DONE) return IOError("RemoveMember: bump epoch");
    return Status::OK();
  });
  if (s.ok()) *new_epoch = epoch;
  return s;
}

Status SqliteStore::IsMember(std::uint64_t group, std::uint64_t user, bool* yes) {
  Status s = CheckGroup(group, "IsMember");
  if (!s.ok()) return s;
  Statement st(stmts_[kMemberExists]);
  st.BindId(1, group);
  st.BindId(2, user);
  const int rc = st.Step();
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return IOError("IsMember");
  *yes = (rc == SQLITE_ROW);
  return Status::OK();
}

Status SqliteStore::ListMembers(std::uint64_t group, std::vector<std::uint64_t>* members) {
  members->clear();
  Status s = CheckGroup(group, "ListMembers");
  if (!s.ok()) return s;
  return ListIds(kMembersOf, group, "ListMembers", members);
}

Status SqliteStore::ListGroupsOf(std::uint64_t user, std::vector<std::uint64_t>* groups) {
  return ListIds(kGroupsOf, user, "ListGroupsOf", groups);
}

Status SqliteStore::DeleteGroup(std::uint64_t group) {
  return InTransaction([&]() -> Status {
    Status s = CheckGroup(group, "DeleteGroup");
    if (!s.ok()) return s;
    {
      Statement st(stmts_[kDeleteMembersOf]);
      st.BindId(1, group);
      if (st.Step() != SQLITE_DONE) return IOError("DeleteGroup: members");
    }
    if (Status ss = SyncIndexes(); !ss.ok()) return ss;
    std::vector<GroupEntryKey> entries;
    {
      Statement st(stmts_[kGroupLogKeysOf]);
      st.BindId(1, group);
      int rc;
      while ((rc = st.Step()) == SQLITE_ROW) {
        entries.push_back({st.ColumnId(0), DedupeKeyHash(group, st.ColumnTextView(1)), st.ColumnId(2)});
      }
      if (rc != SQLITE_DONE) return IOError("DeleteGroup: log keys");
    }
    if (Status ds = RunEach({kDeleteCursorsOf, kDeleteLogOf, kDeleteGroup}, group, "DeleteGroup"); !ds.ok()) return ds;
    for (const GroupEntryKey& e : entries) GroupIndexRemove(group, e.seq, e.hash, e.bytes);
    return Status::OK();
  });
}

// ---- pending deliveries

Status SqliteStore::ReserveSeq() {
  if (next_seq_ < reserved_seq_) return Status::OK();
  const std::uint64_t last = next_seq_ + kSeqReserve;
  Statement st(stmts_[kReserveSeqs]);
  st.BindId(1, last);
  if (st.Step() != SQLITE_DONE) return IOError("reserve seqs");
  reserved_seq_ = last;
  return Status::OK();
}

Status SqliteStore::EnqueueOne(const PendingItem& item, std::uint64_t* seq, Enqueued* how) {
  const std::uint64_t hash = DedupeKeyHash(item.recipient, item.dedupe_key);
  bool acked = false;
  if (Status as = FindAckedKey(item, hash, seq, &acked); !as.ok()) return as;
  if (acked) {
    *how = Enqueued::kDelivered;
    return Status::OK();
  }
  // Already queued under this (recipient, dedupe_key): report its seq.
  bool queued = false;
  if (Status ps = FindPendingKey(item, hash, seq, &queued); !ps.ok()) return ps;
  if (queued) {
    *how = Enqueued::kQueued;
    return Status::OK();
  }
  // A full mailbox: nothing stored (a resend of a row it holds was answered above).
  if ((item.max_waiting != 0 && pending_.CountOf(item.recipient) >= item.max_waiting) ||
      (item.max_waiting_bytes != 0 &&
       pending_.BytesOf(item.recipient) + item.payload.size() > item.max_waiting_bytes)) {
    *seq = 0;
    *how = Enqueued::kRefused;
    return Status::OK();
  }
  {
    Statement st(stmts_[kUserExists]);
    st.BindId(1, item.recipient);
    const int rc = st.Step();
    if (rc == SQLITE_DONE) return NoSuchUser("Enqueue");
    if (rc != SQLITE_ROW) return IOError("Enqueue: recipient");
  }
  if (Status rs = ReserveSeq(); !rs.ok()) return rs;
  if (Status rs = MaybeRotate(); !rs.ok()) return rs;
  Statement st(stmts_[OnTable(kInsertPending, layout_.head)]);
  st.BindId(1, item.recipient);
  st.BindText(2, item.dedupe_key);
  st.BindBlob(3, item.payload);
  st.BindId(4, next_seq_ + 1);
  if (st.Step() != SQLITE_DONE) return IOError("Enqueue");
  *seq = ++next_seq_;
  ++layout_.head_inserts;
  IndexAdd(item.recipient, *seq, hash, item.payload.size());
  *how = Enqueued::kStored;
  return Status::OK();
}

Status SqliteStore::Enqueue(const std::vector<PendingItem>& items, std::vector<std::uint64_t>* seqs,
                            std::vector<Enqueued>* how) {
  seqs->clear();
  if (how) how->clear();
  if (items.empty()) return Status::OK();
  std::vector<std::uint64_t> result(items.size());
  std::vector<Enqueued> done(items.size());
  Status s = InTransaction([&]() -> Status {
    if (Status ss = SyncIndexes(); !ss.ok()) return ss;
    for (std::size_t i = 0; i < items.size(); ++i) {
      Status es = EnqueueOne(items[i], &result[i], &done[i]);
      if (!es.ok()) return es;
    }
    return Status::OK();
  });
  if (s.ok()) {
    seqs->swap(result);
    if (how) how->swap(done);
  }
  return s;
}

Status SqliteStore::FetchPending(std::uint64_t recipient, std::uint64_t after_seq, std::size_t limit,
                                 std::vector<PendingRow>* rows) {
  rows->clear();
  if (Status ss = SyncIndexes(); !ss.ok()) return ss;
  // Clamp so neither value turns negative (a negative LIMIT means "no limit").
  const std::uint64_t after = after_seq < kMaxInt64 ? after_seq : kMaxInt64;
  const std::uint64_t max_rows = limit < kMaxInt64 ? limit : kMaxInt64;
  // The recipient's own rows after `after`, by seq, from the index; merged
  // with its group-log entries (read first, at most `limit` of them).
  std::vector<PendingRow> group_rows;
  {
    Statement st(stmts_[kFetchGroupRows]);
    st.BindId(1, recipient);
    st.BindInt64(2, static_cast<sqlite3_int64>(after));
    st.BindInt64(3, static_cast<sqlite3_int64>(max_rows));
    int rc;
    while ((rc = st.Step()) == SQLITE_ROW) {
      PendingRow row;
      row.seq = st.ColumnId(0);
      row.payload = st.ColumnBlob(1);
      row.group_id = st.ColumnId(2);
      row.prev_seq = st.ColumnId(3);
      group_rows.push_back(std::move(row));
    }
    if (rc != SQLITE_DONE) return IOError("FetchPending: group logs");
  }
  pending_seqs_.clear();
  pending_.SeqsAfter(recipient, after, static_cast<std::size_t>(max_rows), &pending_seqs_);
  // How many of them the page holds beside the group rows before them.
  std::size_t own = 0;
  for (std::size_t g = 0; own < pending_seqs_.size() && g + own < max_rows;) {
    if (g < group_rows.size() && group_rows[g].seq < pending_seqs_[own]) {
      ++g;
    } else {
      ++own;
    }
  }
  std::vector<PendingRow> own_rows;
  // The rows at or below the boundary are in the old table, the rest in the head.
  const std::span<const std::uint64_t> page = std::span(pending_seqs_).first(own);
  const std::size_t in_old = InOld(page);
  for (const auto& [part, table] : {std::pair{page.first(in_old), 1 - layout_.head},
                                    std::pair{page.subspan(in_old), layout_.head}}) {
    if (part.empty()) continue;
    // The keys of head rows an acknowledgement may leave dead, for it.
    const bool keep_keys = table == layout_.head && MayLeaveDead();
    const std::string seqs = SeqsAsJson(part);
    Statement st(stmts_[OnTable(kPendingPayloads, table)]);
    st.BindText(1, seqs);
    st.BindId(2, recipient);
    int rc;
    while ((rc = st.Step()) == SQLITE_ROW) {
      PendingRow row;
      row.seq = st.ColumnId(0);
      row.payload = st.ColumnBlob(1);
      if (keep_keys) recent_.Put(row.seq, recipient, st.ColumnTextView(2), row.payload.size());
      own_rows.push_back(std::move(row));
    }
    if (rc != SQLITE_DONE) return IOError("FetchPending");
  }
  // The index names only rows that are there (SyncIndexes).
  if (own_rows.size() != own) return Status(Code::kIOError, "FetchPending: a pending row the index names is missing");
  std::size_t g = 0;
  std::size_t p = 0;
  while (rows->size() < max_rows && (g < group_rows.size() || p < own_rows.size())) {
    if (p == own_rows.size() || (g < group_rows.size() && group_rows[g].seq < own_rows[p].seq)) {
      rows->push_back(std::move(group_rows[g++]));
    } else {
      rows->push_back(std::move(own_rows[p++]));
    }
  }
  return Status::OK();
}

Status SqliteStore::AckRows(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& recipient_seqs,
                            const char* context) {
  const std::uint64_t expires_ms = DedupeKeyExpiryMs();
  return InTransaction([&]() -> Status {
    if (Status ss = SyncIndexes(); !ss.ok()) return ss;
    // Only rows the index holds as their acknowledger's are deleted: a seq
    // of someone else's row, or of none, is left out here.
    held_seqs_.clear();
    for (const auto& [recipient, seq] : recipient_seqs) {
      if (pending_.Holds(recipient, seq)) held_seqs_.push_back(seq);
    }
    if (held_seqs_.empty()) return Status::OK();
    // The old table's rows are deleted; the head's too while the old table
    // holds more pending rows than a rotation copies (MayLeaveDead), and
    // otherwise left there, dead, until the rotation after next clears
    // them with their table.
    std::sort(held_seqs_.begin(), held_seqs_.end());
    held_seqs_.erase(std::unique(held_seqs_.begin(), held_seqs_.end()), held_seqs_.end());
    const std::size_t in_old = InOld(held_seqs_);
    const bool leave = MayLeaveDead() && in_old < held_seqs_.size();
    // The rows' keys, into acked_batches rows of at most kMaxKeysPerRow
    // (a seq named twice is one row, taken once).
    // acked_ends_[k] is where record k ends in `keys`.
    std::string& keys = acked_keys_;
    keys.clear();
    acked_rows_.clear();
    acked_ends_.clear();
    const auto take = [&](std::uint64_t recipient, std::uint64_t seq, std::string_view key, std::uint64_t bytes) {
      acked_rows_.push_back(AckedRow{recipient, seq, DedupeKeyHash(recipient, key), bytes});
      AppendAckedRecord(&keys, recipient, seq, key);
      acked_ends_.push_back(keys.size());
    };
    std::span<const std::uint64_t> held(held_seqs_);
    if (leave) {
      // Head rows left where they are: those whose keys recent_ holds are
      // not read again (the index holds them, so the entries are theirs).
      unread_seqs_.assign(held.begin(), held.begin() + static_cast<std::ptrdiff_t>(in_old));
      for (const std::uint64_t seq : held.subspan(in_old)) {
        RecentRowKeys::Row row;
        if (recent_.Take(seq, &row)) {
          take(row.recipient, seq, row.key, row.bytes);
        } else {
          unread_seqs_.push_back(seq);
        }
      }
      held = std::span<const std::uint64_t>(unread_seqs_);
    }
    for (const auto& [part, sql] :
         {std::pair{held.first(in_old), OnTable(kDeletePending, 1 - layout_.head)},
          std::pair{held.subspan(in_old), OnTable(leave ? kAckedRowKeys : kDeletePending, layout_.head)}}) {
      if (part.empty()) continue;
      const std::string seqs = SeqsAsJson(part);
      Statement st(stmts_[sql]);
      st.BindText(1, seqs);
      int rc;
      while ((rc = st.Step()) == SQLITE_ROW) {
        take(st.ColumnId(1), st.ColumnId(0), st.ColumnTextView(2), st.ColumnId(3));
      }
      if (rc != SQLITE_DONE) return IOError(context);
    }
    if (keys.empty()) return Status::OK();
    // Out of the index, each row's slot loaded a few rows ahead: the index
    // is too large for the cache, and one miss at a time was a sixth of
    // the store thread's time in a drain (docs/performance.md).
    constexpr std::size_t kAhead = 8;
    for (std::size_t k = 0; k < acked_rows_.size(); ++k) {
      if (k + kAhead < acked_rows_.size()) pending_.Prefetch(acked_rows_[k + kAhead].hash);
      const AckedRow& r = acked_rows_[k];
      if (!IndexRemove(r.recipient, r.seq, r.hash, r.bytes)) {
        return Status(Code::kIOError, std::string(context) + ": a deleted row's key is not the index's");
      }
    }
    const std::uint64_t first_id = next_acked_id_ + 1;
    std::uint64_t id = first_id;
    for (std::size_t from = 0; from < acked_ends_.size(); from += kMaxKeysPerRow, ++id) {
      const std::size_t to = std::min(acked_ends_.size(), from + kMaxKeysPerRow);
      const std::size_t begin = from == 0 ? 0 : acked_ends_[from - 1];
      // `keys` lives until the insert has run: BindBlob does not copy.
      const std::string_view row_keys = std::string_view(keys).substr(begin, acked_ends_[to - 1] - begin);
      Statement st(stmts_[kInsertAckedBatch]);
      st.BindId(1, id);
      st.BindId(2, expires_ms);
      st.BindBlob(3, row_keys);
      if (st.Step() != SQLITE_DONE) return IOError(context);
    }
    next_acked_id_ = id - 1;
    if (leave) {
      for (std::uint64_t pin = first_id; pin <= next_acked_id_; ++pin) pinned_.push_back(pin);
    }
    for (std::size_t k = 0; k < acked_rows_.size(); ++k) {
      if (k + kAhead < acked_rows_.size()) acked_.Prefetch(acked_rows_[k + kAhead].hash);
      acked_.Add(acked_rows_[k].hash, first_id + k / kMaxKeysPerRow, expires_ms);
    }
    return Status::OK();
  });
}

Status SqliteStore::IndexAckedKeys(std::uint64_t from_id,
                                   std::unordered_map<std::uint64_t, std::uint64_t>* acked_seqs) {
  Statement st(stmts_[kAckedBatches]);
  st.BindId(1, from_id);
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) {
    const std::uint64_t id = st.ColumnId(0);
    const std::uint64_t expires_ms = st.ColumnId(1);
    const std::string_view keys = st.ColumnBlobView(2);
    const bool whole = ForEachAckedRecord(keys, [&](const AckedRecord& r) {
      acked_.Add(DedupeKeyHash(r.recipient, r.key), id, expires_ms);
      if (id > layout_.safe_batch) (*acked_seqs)[r.seq] = id;
      return true;
    });
    if (!whole) return Status(Code::kIOError, "acknowledged keys " + std::to_string(id) + " are malformed");
  }
  if (rc != SQLITE_DONE) return IOError("index acked keys");
  return Status::OK();
}

Status SqliteStore::Ack(std::uint64_t recipient, const std::vector<std::uint64_t>& seqs) {
  if (seqs.empty()) return Status::OK();
  std::vector<std::pair<std::uint64_t, std::uint64_t>> rows;
  rows.reserve(seqs.size());
  for (std::uint64_t seq : seqs) rows.emplace_back(recipient, seq);
  return AckRows(rows, "Ack");
}

Status SqliteStore::AckMany(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& recipient_seqs) {
  if (recipient_seqs.empty()) return Status::OK();
  // One savepoint for all (Store::AckMany would take one per recipient).
  return AckRows(recipient_seqs, "AckMany");
}

Status SqliteStore::CountPending(std::uint64_t recipient, std::uint64_t* n) {
  if (Status ss = SyncIndexes(); !ss.ok()) return ss;
  *n = pending_.CountOf(recipient);
  return Status::OK();
}

Status SqliteStore::Count(Sql sql, std::uint64_t key, const char* context, std::uint64_t* n) {
  Statement st(stmts_[sql]);
  st.BindId(1, key);
  if (st.Step() != SQLITE_ROW) return IOError(context);
  *n = st.ColumnId(0);
  return Status::OK();
}

Status SqliteStore::RunEach(std::initializer_list<Sql> sqls, std::uint64_t key, const char* context) {
  for (Sql sql : sqls) {
    Statement st(stmts_[sql]);
    st.BindId(1, key);
    if (st.Step() != SQLITE_DONE) return IOError(context);
  }
  return Status::OK();
}

// ---- group logs

Status SqliteStore::AppendGroup(std::uint64_t group, std::uint64_t sender, const std::vector<std::uint64_t>&,
                                const std::string& dedupe_key, const std::string& payload, std::uint64_t* seq,
                                bool* fresh, std::vector<std::uint64_t>* readers, std::uint64_t* prev_seq) {
  if (readers != nullptr) readers->clear();
  if (prev_seq != nullptr) *prev_seq = 0;
  // Only a member (or no one: sender 0) adds to an existing group's log; a
  // repeat of an entry stored before still yields it.
  Status allowed = CheckGroup(group, "AppendGroup");
  if (allowed.ok() && sender != 0) {
    Statement st(stmts_[kMemberExists]);
    st.BindId(1, group);
    st.BindId(2, sender);
    const int rc = st.Step();
    if (rc == SQLITE_DONE) allowed = Status(Code::kNotMember, "AppendGroup: the sender is not a member");
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return IOError("AppendGroup: membership");
  }
  const std::uint64_t hash = DedupeKeyHash(group, dedupe_key);
  if (!allowed.ok()) {
    if (allowed.code() == Code::kIOError) return allowed;
    bool found = false;
    if (Status ss = SyncIndexes(); !ss.ok()) return ss;
    if (Status s = FindGroupKey(group, dedupe_key, hash, seq, &found); !s.ok()) return s;
    if (!found) return allowed;
    *fresh = false;
    return Status::OK();
  }
  if (readers != nullptr) {
    Statement st(stmts_[kGroupReaders]);
    st.BindId(1, group);
    st.BindId(2, sender);
    int rc;
    while ((rc = st.Step()) == SQLITE_ROW) readers->push_back(st.ColumnId(0));
    if (rc != SQLITE_DONE) return IOError("AppendGroup: readers");
  }
  // The entry, then the sender's cursor past it. Inside a batch its
  // transaction keeps the key's lookup, the insert and the cursor together,
  // so no savepoint is needed (~8% of the store thread in 100 x 10 groups);
  // outside one, a savepoint does. The entry is in group_keys_ before the
  // cursor moves: if that fails the entry stays findable, so a resend of
  // the refused request is answered with it, not appended twice.
  const auto append = [&]() -> Status {
    if (Status ss = SyncIndexes(); !ss.ok()) return ss;
    bool found = false;
    if (Status s = FindGroupKey(group, dedupe_key, hash, seq, &found); !s.ok()) return s;
    if (found) {  // a repeat: the entry stored before
      *fresh = false;
      return Status::OK();
    }
    if (Status rs = ReserveSeq(); !rs.ok()) return rs;
    const std::uint64_t appended = next_seq_ + 1;
    const std::uint64_t prev = group_keys_.LastOf(group);
    {
      Statement st(stmts_[kInsertGroupLog]);
      st.BindId(1, appended);
      st.BindId(2, group);
      st.BindId(3, sender);
      st.BindText(4, dedupe_key);
      st.BindBlob(5, payload);
      st.BindId(6, prev);
      if (st.Step() != SQLITE_DONE) return IOError("AppendGroup");
    }
    next_seq_ = appended;
    GroupIndexAdd(group, appended, hash, payload.size());
    if (sender != 0) {
      Statement st(stmts_[kAdvanceSender]);
      st.BindId(1, group);
      st.BindId(2, sender);
      st.BindId(3, appended);
      st.BindId(4, prev);
      if (st.Step() != SQLITE_DONE) return IOError("AppendGroup: the sender's cursor");
    }
    *seq = appended;
    if (prev_seq != nullptr) *prev_seq = prev;
    *fresh = true;
    return Status::OK();
  };
  return in_batch_ ? append() : InTransaction(append);
}

Status SqliteStore::GroupHeads(std::uint64_t user, std::vector<std::pair<std::uint64_t, std::uint64_t>>* heads) {
  heads->clear();
  Statement st(stmts_[kGroupHeads]);
  st.BindId(1, user);
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) heads->emplace_back(st.ColumnId(0), st.ColumnId(1));
  if (rc != SQLITE_DONE) {
    heads->clear();
    return IOError("GroupHeads");
  }
  return Status::OK();
}

Status SqliteStore::AckGroup(std::uint64_t user, std::uint64_t group, std::uint64_t seq) {
  Statement st(stmts_[kAckGroup]);
  st.BindId(1, group);
  st.BindId(2, user);
  st.BindId(3, seq);
  if (st.Step() != SQLITE_DONE) return IOError("AckGroup");
  return Status::OK();
}

Status SqliteStore::TrimGroup(std::uint64_t group) {
  const std::uint64_t expires_ms = DedupeKeyExpiryMs();
  return InTransaction([&]() -> Status {
    if (Status ss = SyncIndexes(); !ss.ok()) return ss;
    if (Status s = RunEach({kTrimCursors}, group, "TrimGroup"); !s.ok()) return s;
    // The trimmed entries' keys, kept in rows of at most kMaxKeysPerRow.
    std::vector<GroupEntryKey> trimmed;
    std::string keys;
    const auto keep = [&](std::size_t from) -> Status {
      Statement st(stmts_[kInsertKeptGroupKeys]);
      st.BindId(1, next_kept_id_ + 1);
      st.BindId(2, expires_ms);
      st.BindBlob(3, keys);
      if (st.Step() != SQLITE_DONE) return IOError("TrimGroup: keys");
      ++next_kept_id_;
      for (std::size_t k = from; k < trimmed.size(); ++k) group_kept_.Add(trimmed[k].hash, next_kept_id_, expires_ms);
      keys.clear();
      return Status::OK();
    };
    {
      Statement st(stmts_[kTrimmedGroupKeys]);
      st.BindId(1, group);
      std::size_t row_from = 0;
      int rc;
      while ((rc = st.Step()) == SQLITE_ROW) {
        const std::uint64_t seq = st.ColumnId(0);
        const std::string_view key = st.ColumnTextView(1);
        AppendAckedRecord(&keys, group, seq, key);
        trimmed.push_back({seq, DedupeKeyHash(group, key), st.ColumnId(2)});
        if (trimmed.size() - row_from == kMaxKeysPerRow) {
          if (Status s = keep(row_from); !s.ok()) return s;
          row_from = trimmed.size();
        }
      }
      if (rc != SQLITE_DONE) return IOError("TrimGroup: entries");
      if (row_from < trimmed.size()) {
        if (Status s = keep(row_from); !s.ok()) return s;
      }
    }
    if (trimmed.empty()) return Status::OK();
    if (Status s = RunEach({kTrimLog}, group, "TrimGroup"); !s.ok()) return s;
    for (const GroupEntryKey& e : trimmed) GroupIndexRemove(group, e.seq, e.hash, e.bytes);
    return Status::OK();
  });
}

Status SqliteStore::CapGroupLog(std::uint64_t group, const GroupLogBound& bound, std::uint64_t* cut,
                                std::vector<LapsedReader>* lapsed) {
  *cut = 0;
  lapsed->clear();
  if (bound.max_entries == 0 && bound.max_bytes == 0) return Status::OK();
  return InTransaction([&]() -> Status {
    if (Status ss = SyncIndexes(); !ss.ok()) return ss;
    // The index counts each group's entries and bytes: within the bound
    // costs no read. Past it only the entries to drop are read.
    std::uint64_t entries = group_keys_.CountOf(group);
    std::uint64_t bytes = group_keys_.BytesOf(group);
    const auto over = [&] {
      return (bound.max_entries != 0 && entries > bound.max_entries) || (bound.max_bytes != 0 && bytes > bound.max_bytes);
    };
    if (!over()) return Status::OK();
    {
      Statement st(stmts_[kGroupLogSizes]);
      st.BindId(1, group);
      int rc = SQLITE_ROW;
      while (over() && entries > 0 && (rc = st.Step()) == SQLITE_ROW) {
        *cut = st.ColumnId(0);
        --entries;
        bytes -= std::min(bytes, st.ColumnId(1));
      }
      if (rc != SQLITE_ROW && rc != SQLITE_DONE) return IOError("CapGroupLog: entries");
      if (*cut == 0) return Status::OK();
    }
    {
      Statement st(stmts_[kLapsedReaders]);
      st.BindId(1, group);
      st.BindId(2, *cut);
      int rc;
      while ((rc = st.Step()) == SQLITE_ROW) {
        const std::uint64_t missed = st.ColumnId(1);
        if (missed > 0) lapsed->push_back({st.ColumnId(0), missed});
      }
      if (rc != SQLITE_DONE) return IOError("CapGroupLog: readers");
    }
    Statement st(stmts_[kMoveLaggingCursors]);
    st.BindId(1, group);
    st.BindId(2, *cut);
    if (st.Step() != SQLITE_DONE) return IOError("CapGroupLog: cursors");
    return Status::OK();
  });
}

// Whole generations of acked_ go at once (a key may outlive its expiry by
// up to AckedKeys::kGenerationSpanMs); their rows are a range of rowids.
Status SqliteStore::TrimDedupeKeys(std::uint64_t now_ms) {
  const std::vector<AckedKeys::Range> dropped = acked_.DropExpired(now_ms);
  const std::vector<AckedKeys::Range> kept_dropped = group_kept_.DropExpired(now_ms);
  Status s = InTransaction([&]() -> Status {
    for (const AckedKeys::Range& r : dropped) {
      // A row an expiring acknowledgement left dead goes with its key: a
      // reopened store would take it for pending without the key.
      for (auto it = std::lower_bound(pinned_.begin(), pinned_.end(), r.first);
           it != pinned_.end() && *it <= r.last; ++it) {
        if (*it <= layout_.safe_batch) continue;  // its dead rows went with their table
        Statement batch(stmts_[kAckedBatch]);
        batch.BindId(1, *it);
        const int rc = batch.Step();
        if (rc == SQLITE_DONE) continue;  // a rolled-back acknowledgement's
        if (rc != SQLITE_ROW) return IOError("TrimDedupeKeys");
        std::vector<std::uint64_t> dead[2];
        const bool whole = ForEachAckedRecord(batch.ColumnBlobView(0), [&](const AckedRecord& rec) {
          dead[TableOf(rec.seq)].push_back(rec.seq);
          return true;
        });
        if (!whole) return Status(Code::kIOError, "acknowledged keys " + std::to_string(*it) + " are malformed");
        for (int t = 0; t < 2; ++t) {
          if (dead[t].empty()) continue;
          const std::string seqs = SeqsAsJson(dead[t]);
          Statement st(stmts_[OnTable(kDeletePending, t)]);
          st.BindText(1, seqs);
          int drc;
          while ((drc = st.Step()) == SQLITE_ROW) {
          }
          if (drc != SQLITE_DONE) return IOError("TrimDedupeKeys: dead rows");
        }
      }
      Statement st(stmts_[kTrimAckedKeys]);
      st.BindId(1, r.first);
      st.BindId(2, r.last);
      st.BindId(3, now_ms);
      if (st.Step() != SQLITE_DONE) return IOError("TrimDedupeKeys");
    }
    for (const AckedKeys::Range& r : kept_dropped) {
      Statement st(stmts_[kDeleteKeptGroupKeys]);
      st.BindId(1, r.first);
      st.BindId(2, r.last);
      if (st.Step() != SQLITE_DONE) return IOError("TrimDedupeKeys: group keys");
    }
    return Status::OK();
  });
  if (s.ok() && !dropped.empty()) {
    std::erase_if(pinned_, [&](std::uint64_t id) {
      return std::any_of(dropped.begin(), dropped.end(),
                         [id](const AckedKeys::Range& r) { return r.first <= id && id <= r.last; });
    });
  }
  return s;
}

Status SqliteStore::CountGroupLog(std::uint64_t group, std::uint64_t* n) {
  return Count(kCountGroupLog, group, "CountGroupLog", n);
}

Status SqliteStore::UpsertServer(const ServerRecord& s) {
  Statement st(stmts_[kUpsertServer]);
  st.BindText(1, s.id);
  st.BindText(2, s.mesh_address);
  st.BindId(3, s.heartbeat_ms);
  if (st.Step() != SQLITE_DONE) return IOError("UpsertServer");
  return Status::OK();
}

Status SqliteStore::ListServers(std::vector<ServerRecord>* out) {
  out->clear();
  Statement st(stmts_[kListServers]);
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) {
    out->push_back(ServerRecord{st.ColumnText(0), st.ColumnText(1), st.ColumnId(2)});
  }
  if (rc != SQLITE_DONE) return IOError("ListServers");
  return Status::OK();
}

// ---- session tokens

Status SqliteStore::AddSessionToken(const std::string& token_hash, std::uint64_t user, std::uint64_t expires_ms,
                                    std::uint64_t now_ms) {
  {
    Statement st(stmts_[kInsertToken]);
    st.BindBlob(1, token_hash);
    st.BindId(2, user);
    st.BindId(3, expires_ms);
    if (st.Step() != SQLITE_DONE) return IOError("AddSessionToken");
  }
  Statement prune(stmts_[kPruneTokens]);
  prune.BindId(1, user);
  prune.BindId(2, now_ms);
  prune.BindId(3, kMaxTokensPerUser);
  if (prune.Step() != SQLITE_DONE) return IOError("AddSessionToken (prune)");
  return Status::OK();
}

Status SqliteStore::CheckSessionToken(const std::string& token_hash, std::uint64_t now_ms, std::uint64_t* user) {
  Statement st(stmts_[kCheckToken]);
  st.BindBlob(1, token_hash);
  st.BindId(2, now_ms);
  const int rc = st.Step();
  if (rc == SQLITE_DONE) return Status(Code::kNotFound, "no such session token");
  if (rc != SQLITE_ROW) return IOError("CheckSessionToken");
  *user = st.ColumnId(0);
  return Status::OK();
}

Status SqliteStore::RevokeSessionToken(const std::string& token_hash) {
  Statement st(stmts_[kRevokeToken]);
  st.BindBlob(1, token_hash);
  if (st.Step() != SQLITE_DONE) return IOError("RevokeSessionToken");
  return Status::OK();
}

Status SqliteStore::SetPassword(std::uint64_t user, const std::string& password_hash) {
  {
    Statement st(stmts_[kSetPassword]);
    st.BindId(1, user);
    st.BindText(2, password_hash);
    const int rc = st.Step();
    if (rc == SQLITE_DONE) return NoSuchUser("SetPassword");
    if (rc != SQLITE_ROW) return IOError("SetPassword");
  }
  Statement st(stmts_[kRevokeUserTokens]);
  st.BindId(1, user);
  if (st.Step() != SQLITE_DONE) return IOError("SetPassword (revoke tokens)");
  return Status::OK();
}

// ---- factory (declared in fastchat/store.h)

Status OpenSqliteStore(const std::string& path, std::unique_ptr<Store>* out, bool exclusive) {
  std::unique_ptr<SqliteStore> store;
  Status s = SqliteStore::Open(path, &store, exclusive);
  if (!s.ok()) return s;
  *out = std::move(store);
  return Status::OK();
}

}  // namespace fastchat
