#include "pg_store.h"

#include <libpq-fe.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace fastchat {

namespace {

// ---- schema

// Migration N takes the schema from version N-1 to N. Append new entries;
// never edit one that has shipped. Tables are created unqualified, so they
// land in the connection's current schema (see pg_store.h). The layout
// mirrors SqliteStore's; constraints are named because error mapping
// (ErrorCode below) reads the names.
struct Migration {
  int version;
  const char* sql;
};

constexpr Migration kMigrations[] = {
    {1, R"sql(
CREATE TABLE users (
  id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name           TEXT NOT NULL CONSTRAINT users_name_key UNIQUE,
  password_hash  TEXT NOT NULL,
  x25519_public  BYTEA NOT NULL,
  ed25519_public BYTEA NOT NULL
);
CREATE TABLE friend_requests (
  id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  from_user BIGINT NOT NULL CONSTRAINT friend_requests_from_fk REFERENCES users (id),
  to_user   BIGINT NOT NULL CONSTRAINT friend_requests_to_fk REFERENCES users (id),
  CONSTRAINT friend_requests_pair_key UNIQUE (from_user, to_user)
);
CREATE INDEX friend_requests_by_to ON friend_requests (to_user, id);
CREATE TABLE friendships (
  user_id   BIGINT NOT NULL CONSTRAINT friendships_user_fk REFERENCES users (id),
  friend_id BIGINT NOT NULL CONSTRAINT friendships_friend_fk REFERENCES users (id),
  CONSTRAINT friendships_pkey PRIMARY KEY (user_id, friend_id)
);
CREATE TABLE chat_groups (
  id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name     TEXT NOT NULL,
  admin_id BIGINT NOT NULL CONSTRAINT chat_groups_admin_fk REFERENCES users (id),
  epoch    BIGINT NOT NULL
);
CREATE TABLE group_members (
  id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  group_id BIGINT NOT NULL
           CONSTRAINT group_members_group_fk REFERENCES chat_groups (id) ON DELETE CASCADE,
  user_id  BIGINT NOT NULL CONSTRAINT group_members_user_fk REFERENCES users (id),
  CONSTRAINT group_members_pair_key UNIQUE (group_id, user_id)
);
CREATE INDEX group_members_by_user ON group_members (user_id, group_id);
CREATE TABLE pending (
  seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  recipient  BIGINT NOT NULL CONSTRAINT pending_recipient_fk REFERENCES users (id),
  dedupe_key TEXT NOT NULL,
  payload    BYTEA NOT NULL,
  CONSTRAINT pending_key_key UNIQUE (recipient, dedupe_key)
);
CREATE INDEX pending_by_recipient ON pending (recipient, seq);
-- Payloads are ciphertext: trying to compress them only wastes CPU.
ALTER TABLE pending ALTER COLUMN payload SET STORAGE EXTERNAL;
)sql"},
    {2, R"sql(
CREATE TABLE servers (
  id           TEXT PRIMARY KEY,
  mesh_address TEXT NOT NULL,
  heartbeat_ms BIGINT NOT NULL
);
)sql"},
    // Group messages stored once per group; members read them after their
    // cursor. group_log.seq draws from pending.seq's identity sequence, so
    // both share one counter (named through pg_get_serial_sequence, which
    // qualifies it with this schema).
    {3, R"sql(
CREATE TABLE group_log (
  seq        BIGINT PRIMARY KEY,
  group_id   BIGINT NOT NULL,
  sender     BIGINT NOT NULL,
  dedupe_key TEXT NOT NULL,
  payload    BYTEA NOT NULL,
  CONSTRAINT group_log_key_key UNIQUE (group_id, dedupe_key)
);
CREATE INDEX group_log_by_group ON group_log (group_id, seq);
ALTER TABLE group_log ALTER COLUMN payload SET STORAGE EXTERNAL;
DO $$
BEGIN
  EXECUTE format('ALTER TABLE group_log ALTER COLUMN seq SET DEFAULT nextval(%L::regclass)',
                 pg_get_serial_sequence('pending', 'seq'));
END
$$;
CREATE TABLE group_cursors (
  group_id  BIGINT NOT NULL,
  user_id   BIGINT NOT NULL,
  acked_seq BIGINT NOT NULL,
  until_seq BIGINT,
  CONSTRAINT group_cursors_pkey PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_cursors_by_user ON group_cursors (user_id, group_id);
INSERT INTO group_cursors (group_id, user_id, acked_seq) SELECT group_id, user_id, 0 FROM group_members;
)sql"},
    // Session tokens, by hash.
    {4, R"sql(
CREATE TABLE session_tokens (
  token_hash BYTEA PRIMARY KEY,
  user_id    BIGINT NOT NULL,
  expires_ms BIGINT NOT NULL
);
CREATE INDEX session_tokens_by_user ON session_tokens (user_id, expires_ms);
)sql"},
    // Each log entry names the entry before it in its group's log, so a
    // receiving session can tell it missed one (server/session.h). Entries
    // stored before this version name none (0).
    {5, R"sql(
ALTER TABLE group_log ADD COLUMN prev_seq BIGINT NOT NULL DEFAULT 0;
)sql"},
    // Dedupe keys outlive their rows for kDedupeRetentionMs: a pending row's
    // when it is acknowledged, a group-log entry's when it is trimmed, so a
    // resend after that is not stored (delivered) again. Dropped once
    // expired (TrimDedupeKeys).
    {6, R"sql(
CREATE TABLE dedupe_keys (
  recipient  BIGINT NOT NULL,
  dedupe_key TEXT NOT NULL,
  seq        BIGINT NOT NULL,
  expires_ms BIGINT NOT NULL,
  CONSTRAINT dedupe_keys_pkey PRIMARY KEY (recipient, dedupe_key)
);
CREATE INDEX dedupe_keys_by_expiry ON dedupe_keys (expires_ms);
CREATE TABLE group_dedupe_keys (
  group_id   BIGINT NOT NULL,
  dedupe_key TEXT NOT NULL,
  seq        BIGINT NOT NULL,
  expires_ms BIGINT NOT NULL,
  CONSTRAINT group_dedupe_keys_pkey PRIMARY KEY (group_id, dedupe_key)
);
CREATE INDEX group_dedupe_keys_by_expiry ON group_dedupe_keys (expires_ms);
)sql"},
    // No foreign key from pending to users: checking it ran a SELECT ...
    // FOR KEY SHARE of the recipient's users row per inserted row, ~18% of
    // the backend's CPU per DM (docs/performance.md). Enqueue checks that
    // every recipient exists before it inserts (unknown_recipient); users
    // are never deleted.
    {7, R"sql(
ALTER TABLE pending DROP CONSTRAINT IF EXISTS pending_recipient_fk;
)sql"},
    // Each log entry's payload size, in the index by group, so a group's
    // entries and bytes are counted from the index alone (CapGroupLog:
    // ~7 ms for 100,000 entries, against ~130 ms reading every payload's
    // size from the table).
    {8, R"sql(
ALTER TABLE group_log ADD COLUMN bytes INTEGER GENERATED ALWAYS AS (octet_length(payload)) STORED;
CREATE INDEX group_log_by_group_sized ON group_log (group_id, seq) INCLUDE (bytes);
DROP INDEX group_log_by_group;
ALTER INDEX group_log_by_group_sized RENAME TO group_log_by_group;
)sql"},
};

constexpr int kLatestVersion = kMigrations[std::size(kMigrations) - 1].version;

// ---- prepared statements
//
// Every parameter carries an explicit cast so its type never depends on
// inference: values are sent in binary and must match the type exactly.

enum Sql : int {
  kInsertUser,
  kUserById,
  kUserByName,
  kInsertFriendRequest,
  kDeleteFriendRequest,
  kFriendRequestsTo,
  kInsertFriendship,
  kFriendshipExists,
  kFriendsOf,
  kCreateGroup,
  kGroupById,
  kAddMember,
  kRemoveMember,
  kIsMember,
  kMembersOf,
  kGroupsOf,
  kDeleteGroup,
  kLockRecipients,
  kUnknownRecipient,
  kInsertPending,
  kFetchPending,
  kDeletePending,
  kDeletePendingMany,
  kCountPending,
  kCountWaiting,
  kFindPendingKeys,
  kTrimDedupeKeys,
  kAppendGroup,
  kLockGroupRowShared,
  kLockGroupRow,
  kLockGroupRowSharedSkip,
  kLockGroupRowSkip,
  kLockGroup,
  kGroupLogSeqByKey,
  kAckGroup,
  kAckGroups,
  kTrimCursors,
  kTrimLog,
  kCountGroupLog,
  kGroupLogSize,
  kGroupLogOldest,
  kCapCursors,
  kGroupHeads,
  kUpsertServer,
  kListServers,
  kInsertToken,
  kPruneTokens,
  kCheckToken,
  kRevokeToken,
  kSetPassword,
  kNumSql,
};

struct Statement {
  const char* name;  // server-side name, visible in pg_prepared_statements
  const char* sql;
};

// The newest seq drawn so far, by any session (pending rows and group-log
// entries share pending.seq's sequence): a cursor set to it covers exactly
// what is sent from now on. pg_sequence_last_value is NULL while the
// sequence has never been drawn from (its last_value column would then
// claim 1).
#define FASTCHAT_NEWEST_SEQ "COALESCE(pg_sequence_last_value(pg_get_serial_sequence('pending', 'seq')::regclass), 0)"

// Takes the stream lock keys `keys` (a query of one column k) selects, in
// ascending order: a key above the parameter `held` is waited for, one at
// or below it only tried (see lock_recipients). One row: (every key
// taken, the highest key or -1).
#define FASTCHAT_STREAM_LOCK "hashtext('fastchat.pending:' || current_schema()), k::integer"
#define FASTCHAT_TAKE_KEYS(held, keys)                                                    \
  "SELECT COALESCE(bool_and(got), true), COALESCE(max(k), -1) FROM ("                     \
  "  SELECT k, CASE WHEN k > " held "::bigint"                                              \
  "    THEN (SELECT true FROM pg_advisory_xact_lock(" FASTCHAT_STREAM_LOCK "))"              \
  "    ELSE pg_try_advisory_xact_lock(" FASTCHAT_STREAM_LOCK ") END AS got"                  \
  "  FROM (" keys " ORDER BY k) AS o) AS l"

constexpr Statement kStatements[] = {
    {"insert_user",
     "INSERT INTO users (name, password_hash, x25519_public, ed25519_public)"
     " VALUES ($1::text, $2::text, $3::bytea, $4::bytea)"
     " ON CONFLICT (name) DO NOTHING RETURNING id"},
    {"user_by_id",
     "SELECT id, name, password_hash, x25519_public, ed25519_public FROM users WHERE id = $1::bigint"},
    {"user_by_name",
     "SELECT id, name, password_hash, x25519_public, ed25519_public FROM users WHERE name = $1::text"},
    {"insert_friend_request",
     "INSERT INTO friend_requests (from_user, to_user) VALUES ($1::bigint, $2::bigint)"
     " ON CONFLICT (from_user, to_user) DO NOTHING"},
    {"delete_friend_request",
     "DELETE FROM friend_requests WHERE from_user = $1::bigint AND to_user = $2::bigint RETURNING id"},
    {"friend_requests_to",
     "SELECT from_user FROM friend_requests WHERE to_user = $1::bigint ORDER BY id"},
    // Both directions in one statement.
    {"insert_friendship",
     "INSERT INTO friendships (user_id, friend_id) VALUES ($1::bigint, $2::bigint), ($2::bigint, $1::bigint)"
     " ON CONFLICT (user_id, friend_id) DO NOTHING"},
    {"friendship_exists",
     "SELECT 1 FROM friendships WHERE user_id = $1::bigint AND friend_id = $2::bigint"},
    {"friends_of",
     "SELECT friend_id FROM friendships WHERE user_id = $1::bigint ORDER BY friend_id"},
    // The group, its admin as only member, and the admin's cursor starting
    // at the newest seq: one statement. Row: the group's id.
    {"create_group",
     "WITH g AS ("
     "  INSERT INTO chat_groups (name, admin_id, epoch) VALUES ($1::text, $2::bigint, 1) RETURNING id"
     "), m AS ("
     "  INSERT INTO group_members (group_id, user_id) SELECT id, $2::bigint FROM g"
     "), c AS ("
     "  INSERT INTO group_cursors (group_id, user_id, acked_seq, until_seq)"
     "  SELECT id, $2::bigint, " FASTCHAT_NEWEST_SEQ ", NULL FROM g"
     ")"
     " SELECT id FROM g"},
    {"group_by_id",
     "SELECT id, name, admin_id, epoch FROM chat_groups WHERE id = $1::bigint"},
    // Row: (group exists, member added). A new member's cursor starts at the
    // newest seq; a returning member's (it still has a cursor from before
    // its removal) restarts there. A group deleted concurrently fails on
    // group_members_group_fk (kNoSuchGroup).
    // The group's row is locked as lock_group_row does (appends wait).
    {"add_member",
     "WITH g AS ("
     "  SELECT id FROM chat_groups WHERE id = $1::bigint FOR NO KEY UPDATE"
     "), m AS ("
     "  INSERT INTO group_members (group_id, user_id) SELECT id, $2::bigint FROM g"
     "  ON CONFLICT (group_id, user_id) DO NOTHING RETURNING group_id"
     "), c AS ("
     "  INSERT INTO group_cursors (group_id, user_id, acked_seq, until_seq)"
     "  SELECT group_id, $2::bigint, " FASTCHAT_NEWEST_SEQ ", NULL FROM m"
     "  ON CONFLICT (group_id, user_id) DO UPDATE SET acked_seq = excluded.acked_seq, until_seq = NULL"
     ")"
     " SELECT EXISTS (SELECT 1 FROM g), EXISTS (SELECT 1 FROM m)"},
    // Row: (group exists, member removed, new epoch or NULL). The cursor
    // ends at the newest seq: still owed what was sent before, nothing
    // after. A NULL epoch after a removal: the group was deleted meanwhile.
    // The group's row is locked first, as lock_group_row does (appends wait).
    {"remove_member",
     "WITH g AS ("
     "  SELECT id FROM chat_groups WHERE id = $1::bigint FOR NO KEY UPDATE"
     "), d AS ("
     "  DELETE FROM group_members WHERE group_id = (SELECT id FROM g) AND user_id = $2::bigint RETURNING id"
     "), c AS ("
     "  UPDATE group_cursors SET until_seq = " FASTCHAT_NEWEST_SEQ
     "  WHERE group_id = $1::bigint AND user_id = $2::bigint AND EXISTS (SELECT 1 FROM d)"
     "), e AS ("
     "  UPDATE chat_groups SET epoch = epoch + 1 WHERE id = $1::bigint AND EXISTS (SELECT 1 FROM d)"
     "  RETURNING epoch"
     ")"
     " SELECT EXISTS (SELECT 1 FROM g), EXISTS (SELECT 1 FROM d), (SELECT epoch FROM e)"},
    // No row: no such group. Otherwise one boolean.
    {"is_member",
     "SELECT EXISTS (SELECT 1 FROM group_members m WHERE m.group_id = g.id AND m.user_id = $2::bigint)"
     " FROM chat_groups g WHERE g.id = $1::bigint"},
    // No row: no such group. A group without members yields one NULL.
    {"members_of",
     "SELECT m.user_id FROM chat_groups g LEFT JOIN group_members m ON m.group_id = g.id"
     " WHERE g.id = $1::bigint ORDER BY m.id"},
    {"groups_of",
     "SELECT group_id FROM group_members WHERE user_id = $1::bigint ORDER BY group_id"},
    // Memberships go with it (ON DELETE CASCADE); its cursors and log are
    // deleted here. No row: no such group.
    {"delete_group",
     "WITH g AS ("
     "  DELETE FROM chat_groups WHERE id = $1::bigint RETURNING id"
     "), c AS ("
     "  DELETE FROM group_cursors WHERE group_id = $1::bigint AND EXISTS (SELECT 1 FROM g)"
     "), l AS ("
     "  DELETE FROM group_log WHERE group_id = $1::bigint AND EXISTS (SELECT 1 FROM g)"
     ")"
     " SELECT id FROM g"},
    // $1: the lock keys of the users whose streams a write touches,
    // ascending and distinct (see LockKeys), taken in ascending order; $2:
    // the highest key the transaction may hold already (-1: none). A key
    // above $2 is waited for; a key at or below it is only tried (held
    // already, or free now), since waiting for it while holding a higher
    // one could close a cycle with another writer. So a transaction only
    // ever waits for a key above every key it holds, and no two writers
    // wait on each other in a cycle, however many lock statements a batch
    // runs. Row: (every key taken, the highest key).
    {"lock_recipients",
     FASTCHAT_TAKE_KEYS("$2", "SELECT k FROM unnest($1::bigint[]) AS u (k)")},
    // One recipient of the batch that is not a user, if any (Enqueue runs
    // it first: pending has no foreign key to users).
    {"unknown_recipient",
     "SELECT u.k FROM unnest($1::bigint[]) AS u (k) WHERE NOT EXISTS (SELECT 1 FROM users WHERE id = u.k) LIMIT 1"},
    // One row per batch item, in batch order: its seq. Only the first
    // occurrence of a (recipient, dedupe_key) in the batch is inserted, in
    // batch order so seqs increase along the batch; an existing row (visible
    // to this statement's snapshot) keeps its seq, and a key whose row was
    // acknowledged (dedupe_keys) stores nothing and yields that row's seq.
    // First occurrences are found once, by one sort (row_number), not by a
    // search of the batch per item, and an existing row or kept key is
    // looked up only for items this statement did not insert (COALESCE
    // evaluates an argument only when the ones before it are NULL).
    {"insert_pending",
     "WITH batch AS ("
     "  SELECT b.recipient, b.dedupe_key, b.payload, b.ord,"
     "         row_number() OVER (PARTITION BY b.recipient, b.dedupe_key ORDER BY b.ord) = 1 AS first"
     "  FROM unnest($1::bigint[], $2::text[], $3::bytea[]) WITH ORDINALITY AS b (recipient, dedupe_key, payload, ord)"
     "), inserted AS ("
     "  INSERT INTO pending (recipient, dedupe_key, payload)"
     "  SELECT b.recipient, b.dedupe_key, b.payload FROM batch b WHERE b.first"
     "    AND NOT EXISTS (SELECT 1 FROM dedupe_keys k WHERE k.recipient = b.recipient AND k.dedupe_key = b.dedupe_key)"
     "  ORDER BY b.ord"
     "  ON CONFLICT (recipient, dedupe_key) DO NOTHING"
     "  RETURNING seq, recipient, dedupe_key"
     ")"
     // stored: this call stored it, and this is the key's first occurrence
     // in the batch; delivered: not stored and no row queued (so its key was kept).
     " SELECT COALESCE(i.seq, (SELECT p.seq FROM pending p"
     "                         WHERE p.recipient = b.recipient AND p.dedupe_key = b.dedupe_key),"
     "                        (SELECT k.seq FROM dedupe_keys k"
     "                         WHERE k.recipient = b.recipient AND k.dedupe_key = b.dedupe_key)),"
     "        i.seq IS NOT NULL AND b.first,"
     "        i.seq IS NULL AND NOT EXISTS (SELECT 1 FROM pending p"
     "                                      WHERE p.recipient = b.recipient AND p.dedupe_key = b.dedupe_key)"
     " FROM batch b"
     " LEFT JOIN inserted i ON i.recipient = b.recipient AND i.dedupe_key = b.dedupe_key"
     " ORDER BY b.ord"},
    // The recipient's own rows (group_id 0) merged with the entries of the
    // logs of the groups it has a cursor in: after the cursor, up to its end,
    // not its own messages.
    {"fetch_pending",
     "SELECT seq, payload, 0::bigint AS group_id, 0::bigint AS prev_seq FROM pending"
     " WHERE recipient = $1::bigint AND seq > $2::bigint"
     " UNION ALL"
     " SELECT l.seq, l.payload, l.group_id, l.prev_seq FROM group_cursors c"
     " JOIN group_log l ON l.group_id = c.group_id AND l.seq > GREATEST(c.acked_seq, $2::bigint)"
     "  AND (c.until_seq IS NULL OR l.seq <= c.until_seq)"
     " WHERE c.user_id = $1::bigint AND l.sender <> $1::bigint"
     " ORDER BY seq LIMIT $3::bigint"},
    // Both keep each deleted row's dedupe key until $3 (dedupe_keys).
    {"delete_pending",
     "WITH d AS ("
     "  DELETE FROM pending WHERE recipient = $1::bigint AND seq = ANY ($2::bigint[])"
     "  RETURNING recipient, dedupe_key, seq"
     ")"
     " INSERT INTO dedupe_keys (recipient, dedupe_key, seq, expires_ms) SELECT recipient, dedupe_key, seq, $3::bigint"
     " FROM d ON CONFLICT (recipient, dedupe_key) DO NOTHING"},
    {"delete_pending_many",
     "WITH d AS ("
     "  DELETE FROM pending p USING unnest($1::bigint[], $2::bigint[]) AS a (recipient, seq)"
     "  WHERE p.recipient = a.recipient AND p.seq = a.seq RETURNING p.recipient, p.dedupe_key, p.seq"
     ")"
     " INSERT INTO dedupe_keys (recipient, dedupe_key, seq, expires_ms) SELECT recipient, dedupe_key, seq, $3::bigint"
     " FROM d ON CONFLICT (recipient, dedupe_key) DO NOTHING"},
    {"count_pending",
     "SELECT count(*) FROM pending WHERE recipient = $1::bigint"},
    // Waiting rows and payload bytes of each of $1's recipients that has any
    // (PendingItem::max_waiting(_bytes)).
    {"count_waiting",
     "SELECT recipient, count(*), COALESCE(sum(octet_length(payload)), 0)::bigint FROM pending"
     " WHERE recipient = ANY($1::bigint[]) GROUP BY recipient"},
    // For refused items: the seq of a waiting row with the same key, else of
    // an acknowledged one (dedupe_keys), else NULL; in the items' order.
    {"find_pending_keys",
     "SELECT (SELECT p.seq FROM pending p WHERE p.recipient = b.recipient AND p.dedupe_key = b.dedupe_key),"
     "       (SELECT k.seq FROM dedupe_keys k WHERE k.recipient = b.recipient AND k.dedupe_key = b.dedupe_key)"
     " FROM unnest($1::bigint[], $2::text[]) WITH ORDINALITY AS b (recipient, dedupe_key, ord)"
     " ORDER BY b.ord"},
    {"trim_dedupe_keys",
     "WITH d AS (DELETE FROM dedupe_keys WHERE expires_ms <= $1::bigint)"
     " DELETE FROM group_dedupe_keys WHERE expires_ms <= $1::bigint"},
    // $1 group, $2 sender, $3 dedupe key, $4 payload. One row: (seq, fresh,
    // readers, group exists, sender may send, prev_seq).
    // A new entry is stored only if the group exists and the sender (0: a
    // notice from no member) is a member, as the store has it now. It draws
    // its seq from the shared sequence (the column
    // default) and moves the sender's cursor past it if the sender had
    // acknowledged every earlier entry of the log (all subqueries read the
    // snapshot from before the insert). The entry records prev_seq, the
    // log's newest entry before it: appends to one group hold its members'
    // stream locks (lock_group) before this statement's snapshot and seq are
    // taken, so the newest entry committed is the one just before. A key already in the log (or kept after its entry was trimmed) yields its
    // seq with fresh = false; a refused new entry a NULL seq; no row at all
    // if it was inserted by a transaction that committed after this
    // statement's snapshot was taken (then ask group_log_seq_by_key).
    {"append_group",
     "WITH ok AS ("
     "  SELECT EXISTS (SELECT 1 FROM chat_groups WHERE id = $1::bigint) AS grp,"
     "         ($2::bigint = 0 OR EXISTS (SELECT 1 FROM group_members"
     "                                    WHERE group_id = $1::bigint AND user_id = $2::bigint)) AS mem"
     "), prev AS ("
     "  SELECT COALESCE(max(seq), 0) AS p FROM group_log WHERE group_id = $1::bigint"
     "), ins AS ("
     "  INSERT INTO group_log (group_id, sender, dedupe_key, payload, prev_seq)"
     "  SELECT $1::bigint, $2::bigint, $3::text, $4::bytea, prev.p FROM ok, prev WHERE grp AND mem"
     "    AND NOT EXISTS (SELECT 1 FROM group_dedupe_keys WHERE group_id = $1::bigint AND dedupe_key = $3::text)"
     "  ON CONFLICT (group_id, dedupe_key) DO NOTHING RETURNING seq, prev_seq"
     "), adv AS ("
     "  UPDATE group_cursors c SET acked_seq = i.seq FROM ins i"
     "  WHERE c.group_id = $1::bigint AND c.user_id = $2::bigint AND c.until_seq IS NULL"
     "    AND c.acked_seq >= i.prev_seq"
     "), known AS ("  // the key's entry, or its trimmed entry's kept key
     "  SELECT seq, prev_seq FROM group_log WHERE group_id = $1::bigint AND dedupe_key = $3::text"
     "  UNION ALL SELECT seq, 0::bigint FROM group_dedupe_keys WHERE group_id = $1::bigint AND dedupe_key = $3::text"
     "), readers AS ("
     "  SELECT COALESCE(string_agg(user_id::text, ','), '') AS ids FROM group_cursors"
     "  WHERE group_id = $1::bigint AND until_seq IS NULL AND user_id <> $2::bigint"
     ")"
     " SELECT seq, true, (SELECT ids FROM readers), true, true, prev_seq FROM ins"
     " UNION ALL"
     " SELECT seq, false, (SELECT ids FROM readers), true, true, prev_seq FROM known"
     " WHERE NOT EXISTS (SELECT 1 FROM ins)"
     " UNION ALL"
     " SELECT NULL::bigint, false, '', grp, mem, 0::bigint FROM ok WHERE NOT (grp AND mem)"
     "  AND NOT EXISTS (SELECT 1 FROM known)"},
    // Taken before lock_group, in a statement of its own: a member's
    // message shares the group's row with other messages, and waits for
    // (and holds off) changes of its members (add_member, remove_member and
    // delete_group lock the row exclusively), so lock_group's fresh snapshot
    // sees every member who joined before, and a member who joins after
    // this append commits starts after its entry. A notice (sender 0) comes
    // with a membership change in the same transaction and takes the row
    // exclusively at once, so that change never waits on a share it holds.
    {"lock_group_row_shared",
     "SELECT 1 FROM chat_groups WHERE id = $1::bigint FOR SHARE"},
    {"lock_group_row",
     "SELECT 1 FROM chat_groups WHERE id = $1::bigint FOR NO KEY UPDATE"},
    // The same without waiting, for a transaction that holds stream locks
    // already (a later write of a batch): no row if another transaction
    // holds the row (or there is no such group).
    {"lock_group_row_shared_skip",
     "SELECT 1 FROM chat_groups WHERE id = $1::bigint FOR SHARE SKIP LOCKED"},
    {"lock_group_row_skip",
     "SELECT 1 FROM chat_groups WHERE id = $1::bigint FOR NO KEY UPDATE SKIP LOCKED"},
    // Locks the streams of every current member of group $1 and of the
    // users in $2 (lock keys, ascending), in ascending key order, as
    // lock_recipients does ($3: the highest key held already, -1: none).
    // Row: (every key taken, the highest key).
    {"lock_group",
     FASTCHAT_TAKE_KEYS("$3", "SELECT k FROM (SELECT user_id % 2147483647 AS k FROM group_cursors"
                              "                 WHERE group_id = $1::bigint AND until_seq IS NULL"
                              "                 UNION SELECT unnest($2::bigint[])) AS u")},
    {"group_log_seq_by_key",
     "SELECT seq FROM group_log WHERE group_id = $1::bigint AND dedupe_key = $2::text"
     " UNION ALL SELECT seq FROM group_dedupe_keys WHERE group_id = $1::bigint AND dedupe_key = $2::text"},
    // $1 group, $2 user, $3 seq: cumulative, never moves back.
    {"ack_group",
     "UPDATE group_cursors SET acked_seq = GREATEST(acked_seq, $3::bigint)"
     " WHERE group_id = $1::bigint AND user_id = $2::bigint"},
    // ack_group for each ($1[i], $2[i], $3[i]): distinct cursors (AckGroups
    // keeps the highest seq of each), cumulative.
    {"ack_groups",
     "UPDATE group_cursors c SET acked_seq = GREATEST(c.acked_seq, a.seq)"
     " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS a(group_id, user_id, seq)"
     " WHERE c.group_id = a.group_id AND c.user_id = a.user_id"},
    // Removed members' cursors that have collected all they were owed.
    // (Not those another transaction holds: an acknowledgement in flight,
    // as in cap_cursors; the next trim takes them.)
    {"trim_cursors",
     "DELETE FROM group_cursors c USING ("
     "  SELECT user_id FROM group_cursors"
     "  WHERE group_id = $1::bigint AND until_seq IS NOT NULL AND acked_seq >= until_seq FOR UPDATE SKIP LOCKED"
     ") AS done WHERE c.group_id = $1::bigint AND c.user_id = done.user_id"},
    // Entries every remaining cursor has passed (none while no cursor is
    // left); their dedupe keys are kept until $2 (group_dedupe_keys).
    {"trim_log",
     "WITH d AS ("
     "  DELETE FROM group_log WHERE group_id = $1::bigint"
     "  AND seq <= (SELECT min(acked_seq) FROM group_cursors WHERE group_id = $1::bigint)"
     "  RETURNING group_id, dedupe_key, seq"
     ")"
     " INSERT INTO group_dedupe_keys (group_id, dedupe_key, seq, expires_ms)"
     " SELECT group_id, dedupe_key, seq, $2::bigint FROM d ON CONFLICT (group_id, dedupe_key) DO NOTHING"},
    {"count_group_log",
     "SELECT count(*) FROM group_log WHERE group_id = $1::bigint"},
    // Group $1's entries and their payload bytes (from the index alone).
    {"group_log_size",
     "SELECT count(*), COALESCE(sum(bytes), 0)::bigint FROM group_log WHERE group_id = $1::bigint"},
    // Up to $3 of group $1's entries after seq $2, oldest first, and their sizes.
    {"group_log_oldest",
     "SELECT seq, bytes::bigint FROM group_log WHERE group_id = $1::bigint AND seq > $2::bigint"
     " ORDER BY seq LIMIT $3::bigint"},
    // Moves every cursor of group $1 below $2 to $2, except those another
    // transaction holds (an acknowledgement in flight: its reader is here,
    // and the next check sees it again); waiting for one could deadlock
    // with a batch that acknowledged and then appends to the group. One row
    // per cursor moved: its user and the entries of others it had not
    // acknowledged up to $2 (or to its end).
    {"cap_cursors",
     "WITH behind AS ("
     "  SELECT user_id, acked_seq, until_seq FROM group_cursors"
     "  WHERE group_id = $1::bigint AND acked_seq < $2::bigint FOR UPDATE SKIP LOCKED"
     "), moved AS ("
     "  UPDATE group_cursors c SET acked_seq = $2::bigint FROM behind b"
     "  WHERE c.group_id = $1::bigint AND c.user_id = b.user_id"
     ")"
     " SELECT b.user_id, (SELECT count(*) FROM group_log l WHERE l.group_id = $1::bigint AND l.seq > b.acked_seq"
     "                    AND l.seq <= LEAST($2::bigint, COALESCE(b.until_seq, $2::bigint))"
     "                    AND l.sender <> b.user_id)"
     " FROM behind b"},
    // (group, head) for each group $1 has a cursor in: the newest entry of
    // its log, or the cursor if that is higher.
    {"group_heads",
     "SELECT c.group_id, GREATEST(c.acked_seq, COALESCE((SELECT max(l.seq) FROM group_log l"
     "                                                   WHERE l.group_id = c.group_id), 0))"
     " FROM group_cursors c WHERE c.user_id = $1::bigint"},
    {"upsert_server",
     "INSERT INTO servers (id, mesh_address, heartbeat_ms) VALUES ($1::text, $2::text, $3::bigint)"
     " ON CONFLICT (id) DO UPDATE SET mesh_address = excluded.mesh_address, heartbeat_ms = excluded.heartbeat_ms"},
    {"list_servers",
     "SELECT id, mesh_address, heartbeat_ms FROM servers ORDER BY id"},
    {"insert_token",
     "INSERT INTO session_tokens (token_hash, user_id, expires_ms) VALUES ($1::bytea, $2::bigint, $3::bigint)"},
    // Expired tokens, and all but the newest $3.
    {"prune_tokens",
     "DELETE FROM session_tokens WHERE user_id = $1::bigint AND (expires_ms <= $2::bigint OR token_hash NOT IN"
     " (SELECT token_hash FROM session_tokens WHERE user_id = $1::bigint ORDER BY expires_ms DESC LIMIT $3::bigint))"},
    {"check_token",
     "SELECT user_id FROM session_tokens WHERE token_hash = $1::bytea AND expires_ms > $2::bigint"},
    {"revoke_token",
     "DELETE FROM session_tokens WHERE token_hash = $1::bytea"},
    // One statement: the new hash and no tokens, together.
    {"set_password",
     "WITH u AS (UPDATE users SET password_hash = $2::text WHERE id = $1::bigint RETURNING id),"
     " d AS (DELETE FROM session_tokens WHERE user_id IN (SELECT id FROM u))"
     " SELECT id FROM u"},
};
static_assert(std::size(kStatements) == kNumSql, "kStatements must match Sql");

#undef FASTCHAT_NEWEST_SEQ
#undef FASTCHAT_TAKE_KEYS
#undef FASTCHAT_STREAM_LOCK

// Type OIDs of array elements (fixed in PostgreSQL's catalog, pg_type.dat).
constexpr std::uint32_t kByteaOid = 17;
constexpr std::uint32_t kInt8Oid = 20;
constexpr std::uint32_t kTextOid = 25;

// PostgreSQL refuses any single value of 1 GiB or more.
constexpr std::size_t kMaxValueBytes = (std::size_t{1} << 30) - 1;

constexpr std::uint64_t kMaxInt64 = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());

// Advisory lock keys for recipients are int4; ids are folded into range.
constexpr std::uint64_t kLockKeyModulus = 2147483647;

void AppendInt32(std::string* out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<char>((v >> shift) & 0xff));
}

void AppendInt64(std::string* out, std::uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out->push_back(static_cast<char>((v >> shift) & 0xff));
}

// Builds a one-dimensional array without NULLs in PostgreSQL's binary array
// format: header, then each element as a length and its binary value.
class ArrayBuilder {
 public:
  ArrayBuilder(std::uint32_t element_oid, std::size_t count) {
    AppendInt32(&buf_, 1);  // dimensions
    AppendInt32(&buf_, 0);  // has NULLs
    AppendInt32(&buf_, element_oid);
    AppendInt32(&buf_, static_cast<std::uint32_t>(count));
    AppendInt32(&buf_, 1);  // lower bound
  }

  void AddInt64(std::uint64_t v) {
    AppendInt32(&buf_, 8);
    AppendInt64(&buf_, v);
  }
  // Text and bytea elements are their raw bytes.
  void AddBytes(const std::string& v) {
    AppendInt32(&buf_, static_cast<std::uint32_t>(std::min(v.size(), kMaxValueBytes + 1)));
    buf_.append(v);
  }

  std::string Finish() { return std::move(buf_); }

 private:
  std::string buf_;
};

// lock_recipients' parameter: the advisory lock keys of `users` (ids folded
// into int4 range), ascending and distinct, as a bigint[].
std::string LockKeys(const std::vector<std::uint64_t>& users) {
  std::vector<std::uint64_t> keys;
  keys.reserve(users.size());
  for (std::uint64_t user : users) keys.push_back(user % kLockKeyModulus);
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  ArrayBuilder key_array(kInt8Oid, keys.size());
  for (std::uint64_t k : keys) key_array.AddInt64(k);
  return key_array.Finish();
}

// The parameters of one statement, all in binary format. Bytes() points
// into the caller's string, which must outlive the statement; integers and
// arrays are kept here.
class Params {
 public:
  // IDs above INT64_MAX cannot exist in the database; they go out as
  // negative numbers and so match no row.
  void Id(std::uint64_t v) {
    std::string& s = owned_.emplace_back();
    AppendInt64(&s, v);
    Add(s);
  }
  // Text and bytea values: their raw bytes.
  void Bytes(const std::string& v) { Add(v); }
  void Owned(std::string v) { Add(owned_.emplace_back(std::move(v))); }

  int count() const { return static_cast<int>(values_.size()); }
  const char* const* values() const { return values_.data(); }
  const int* lengths() const { return lengths_.data(); }
  const int* formats() const { return formats_.data(); }
  bool too_large() const { return too_large_; }

 private:
  void Add(const std::string& v) {
    if (v.size() > kMaxValueBytes) too_large_ = true;
    values_.push_back(v.data());
    lengths_.push_back(static_cast<int>(std::min(v.size(), kMaxValueBytes)));
    formats_.push_back(1);
  }

  std::deque<std::string> owned_;  // a deque never moves its elements
  std::vector<const char*> values_;
  std::vector<int> lengths_;
  std::vector<int> formats_;
  bool too_large_ = false;
};

// Owns one PGresult with binary columns.
class Result {
 public:
  Result() = default;
  explicit Result(PGresult* res) : res_(res) {}
  Result(const Result&) = delete;
  Result& operator=(const Result&) = delete;
  Result& operator=(Result&& other) noexcept {
    std::swap(res_, other.res_);
    return *this;
  }
  ~Result() { PQclear(res_); }  // harmless on nullptr

  int rows() const { return res_ != nullptr ? PQntuples(res_) : 0; }
  bool IsNull(int row, int col) const { return PQgetisnull(res_, row, col) != 0; }

  // A binary int2/int4/int8 column.
  std::int64_t Int(int row, int col) const {
    const char* p = PQgetvalue(res_, row, col);
    const int n = PQgetlength(res_, row, col);
    std::uint64_t v = (n > 0 && (static_cast<unsigned char>(p[0]) & 0x80) != 0) ? ~std::uint64_t{0} : 0;
    for (int i = 0; i < n; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
    return static_cast<std::int64_t>(v);
  }
  std::uint64_t Id(int row, int col) const { return static_cast<std::uint64_t>(Int(row, col)); }
  bool Bool(int row, int col) const { return PQgetlength(res_, row, col) == 1 && PQgetvalue(res_, row, col)[0] != 0; }
  // A text, name or bytea column: its raw bytes.
  std::string Bytes(int row, int col) const {
    return std::string(PQgetvalue(res_, row, col), static_cast<std::size_t>(PQgetlength(res_, row, col)));
  }

 private:
  PGresult* res_ = nullptr;
};

void ReadUserRow(const Result& r, UserRecord* out) {
  out->id = r.Id(0, 0);
  out->name = r.Bytes(0, 1);
  out->password_hash = r.Bytes(0, 2);
  out->x25519_public = r.Bytes(0, 3);
  out->ed25519_public = r.Bytes(0, 4);
}

std::string TrimmedMessage(const char* msg) {
  std::string s = msg != nullptr ? msg : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

bool Equals(const char* a, const char* b) { return a != nullptr && std::string(a) == b; }

void IgnoreNotice(void* /*arg*/, const char* /*message*/) {}

Status LockOrder(const char* context) {
  return Status(Code::kLockOrder, std::string(context) +
                                      ": a stream lock below one this batch holds is taken by another writer");
}

}  // namespace

// ---- one connection

// A libpq connection with this store's statements prepared on it. Used by
// one thread at a time: the pool hands it out to one call at a time.
class PgStore::Conn {
 public:
  Conn() = default;
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;
  ~Conn() { Close(); }

  // True if the connection is open, healthy and outside any transaction.
  bool Usable() const {
    return pg_ != nullptr && !broken_ && PQstatus(pg_) == CONNECTION_OK &&
           PQtransactionStatus(pg_) == PQTRANS_IDLE && PQpipelineStatus(pg_) == PQ_PIPELINE_OFF;
  }

  // (Re)opens the connection. Statements are not prepared yet.
  Status Connect(const std::string& conninfo) {
    Close();
    pg_ = PQconnectdb(conninfo.c_str());
    if (pg_ == nullptr) return Status(Code::kIOError, "connect: out of memory");
    if (PQstatus(pg_) != CONNECTION_OK) {
      Status s(Code::kIOError, "connect: " + TrimmedMessage(PQerrorMessage(pg_)));
      Close();
      return s;
    }
    PQsetNoticeProcessor(pg_, &IgnoreNotice, nullptr);
    if (PQsetClientEncoding(pg_, "UTF8") != 0) {
      Status s(Code::kIOError, "connect: client_encoding: " + TrimmedMessage(PQerrorMessage(pg_)));
      Close();
      return s;
    }
    return Status::OK();
  }

  Status PrepareAll() {
    for (const Statement& st : kStatements) {
      Status s = Check(PQprepare(pg_, st.name, st.sql, 0, nullptr), st.name, nullptr);
      if (!s.ok()) return s;
    }
    return Status::OK();
  }

  void Close() {
    PQfinish(pg_);  // harmless on nullptr
    pg_ = nullptr;
    broken_ = false;
  }

  // Called when a call is done with the connection: rolls back a leftover
  // transaction, and closes the connection if it is not cleanly idle after
  // that (the next user reconnects).
  void Tidy() {
    if (pg_ == nullptr) return;
    if (!broken_ && PQstatus(pg_) == CONNECTION_OK && PQpipelineStatus(pg_) == PQ_PIPELINE_OFF) {
      const PGTransactionStatusType ts = PQtransactionStatus(pg_);
      if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) PQclear(PQexec(pg_, "ROLLBACK"));
    }
    if (!Usable()) Close();
  }

  // Runs constant SQL without parameters (BEGIN, COMMIT, DDL).
  Status Command(const char* sql, const char* context) { return Check(PQexec(pg_, sql), context, nullptr); }

  // Runs one-off SQL with parameters; binary results into *out (if given).
  Status Query(const char* sql, const Params& params, const char* context, Result* out) {
    if (params.too_large()) return TooLarge(context);
    return Check(PQexecParams(pg_, sql, params.count(), nullptr, params.values(), params.lengths(),
                              params.formats(), 1),
                 context, out);
  }

  // Runs a prepared statement; binary results into *out (if given).
  Status Exec(Sql sql, const Params& params, const char* context, Result* out) {
    if (params.too_large()) return TooLarge(context);
    return Check(PQexecPrepared(pg_, kStatements[sql].name, params.count(), params.values(),
                                params.lengths(), params.formats(), 1),
                 context, out);
  }

  struct Step {
    Sql sql;
    const Params* params;
    Result* out = nullptr;  // this step's result, if wanted (besides `last`)
  };

  // Sends `steps` as one pipeline closed by a single Sync: one network
  // round trip, and outside an explicit transaction they form one implicit
  // transaction (all or nothing). *last gets the last step's result.
  Status ExecPipelined(const std::vector<Step>& steps, const char* context, Result* last) {
    for (const Step& step : steps) {
      if (step.params->too_large()) return TooLarge(context);
    }
    if (PQenterPipelineMode(pg_) != 1) return Check(nullptr, context, nullptr);
    bool sent = true;
    for (const Step& step : steps) {
      const Params& p = *step.params;
      if (PQsendQueryPrepared(pg_, kStatements[step.sql].name, p.count(), p.values(), p.lengths(),
                              p.formats(), 1) != 1) {
        sent = false;
        break;
      }
    }
    if (sent && PQpipelineSync(pg_) != 1) sent = false;
    if (!sent) {
      broken_ = true;  // the pipeline is in an unknown state: start afresh
      return Check(nullptr, context, nullptr);
    }

    // Per step: its result (or PIPELINE_ABORTED after an earlier error),
    // then a null. Then the Sync's result.
    Status status;
    for (std::size_t i = 0; i < steps.size(); ++i) {
      PGresult* res = PQgetResult(pg_);
      if (res == nullptr) return Broken(context);
      if (PQresultStatus(res) == PGRES_PIPELINE_ABORTED) {
        PQclear(res);
      } else {
        Result* out = steps[i].out != nullptr ? steps[i].out : i + 1 == steps.size() ? last : nullptr;
        Status s = Check(res, context, out);
        if (status.ok()) status = s;
      }
      if (PQstatus(pg_) != CONNECTION_OK) return Broken(context);
      res = PQgetResult(pg_);
      if (res != nullptr) {
        PQclear(res);
        return Broken(context);
      }
    }
    PGresult* sync = PQgetResult(pg_);
    const bool synced = sync != nullptr && PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
    PQclear(sync);
    if (!synced || PQexitPipelineMode(pg_) != 1) return Broken(context);
    return status;
  }

  bool InTransaction() const { return PQtransactionStatus(pg_) != PQTRANS_IDLE; }

  // COMMIT, which PostgreSQL turns into a ROLLBACK without an error when an
  // earlier statement failed: that is reported as the failure it is.
  Status Commit(const char* context) {
    if (PQtransactionStatus(pg_) == PQTRANS_INERROR) {
      PQclear(PQexec(pg_, "ROLLBACK"));
      return Status(Code::kIOError, std::string(context) + ": the transaction failed and was rolled back");
    }
    return Command("COMMIT", context);
  }

  // Runs `body` between BEGIN and COMMIT; rolls back if `body` or the
  // commit fails. Inside a transaction already (a batch), it runs inside a
  // savepoint instead.
  Status Transaction(const char* context, const std::function<Status()>& body) {
    if (InTransaction()) {
      Status s = Command("SAVEPOINT tx", context);
      if (!s.ok()) return s;
      s = body();
      if (s.ok()) s = Command("RELEASE SAVEPOINT tx", context);
      if (!s.ok()) {
        PQclear(PQexec(pg_, "ROLLBACK TO SAVEPOINT tx"));
        PQclear(PQexec(pg_, "RELEASE SAVEPOINT tx"));
      }
      return s;
    }
    Status s = Command("BEGIN", context);
    if (!s.ok()) return s;
    s = body();
    if (s.ok()) s = Commit(context);
    if (!s.ok() && PQstatus(pg_) == CONNECTION_OK && PQtransactionStatus(pg_) != PQTRANS_IDLE) {
      PQclear(PQexec(pg_, "ROLLBACK"));
    }
    return s;
  }

  // Collects column 0 of every row of `sql` with $1 = `key`.
  Status ListIds(Sql sql, std::uint64_t key, const char* context, std::vector<std::uint64_t>* ids) {
    ids->clear();
    Params p;
    p.Id(key);
    Result r;
    Status s = Exec(sql, p, context, &r);
    if (!s.ok()) return s;
    for (int i = 0; i < r.rows(); ++i) ids->push_back(r.Id(i, 0));
    return Status::OK();
  }

 private:
  // Takes ownership of `res`. OK (result moved to *out, if given) for a
  // successful command or query; otherwise the error as a Status: foreign
  // key and unique violations map to the codes SqliteStore returns, the
  // rest is kIOError with the server's message.
  Status Check(PGresult* res, const char* context, Result* out) {
    Result owned(res);
    const ExecStatusType st = res != nullptr ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
      if (out != nullptr) *out = std::move(owned);
      return Status::OK();
    }
    if (PQstatus(pg_) != CONNECTION_OK) broken_ = true;
    const char* state = res != nullptr ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
    const char* constraint = res != nullptr ? PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME) : nullptr;
    const std::string where = std::string(context) + ": ";
    if (Equals(state, "23503")) {  // foreign_key_violation
      if (Equals(constraint, "group_members_group_fk")) return Status(Code::kNoSuchGroup, where + "no such group");
      return Status(Code::kNoSuchUser, where + "no such user");
    }
    if (Equals(state, "23505")) {  // unique_violation
      if (Equals(constraint, "users_name_key")) return Status(Code::kNameTaken, where + "name taken");
      if (Equals(constraint, "group_members_pair_key")) return Status(Code::kAlreadyMember, where + "already a member");
    }
    const char* msg = res != nullptr ? PQresultErrorMessage(res) : PQerrorMessage(pg_);
    return Status(Code::kIOError, where + TrimmedMessage(msg));
  }

  // The connection's protocol state is unknown: fail, and reconnect next time.
  Status Broken(const char* context) {
    broken_ = true;
    return Status(Code::kIOError, std::string(context) + ": " + TrimmedMessage(PQerrorMessage(pg_)));
  }

  static Status TooLarge(const char* context) {
    return Status(Code::kIOError, std::string(context) + ": value of 1 GiB or more");
  }

  PGconn* pg_ = nullptr;
  bool broken_ = false;
};

// ---- lifecycle and pool

Status PgStore::Open(const std::string& conninfo, int pool_size, std::unique_ptr<PgStore>* out) {
  if (pool_size < 1) return Status(Code::kIOError, "PgStore: pool_size must be at least 1");
  if (pool_size > 1 && PQisthreadsafe() == 0) {
    return Status(Code::kIOError, "PgStore: this libpq is not thread-safe");
  }
  std::unique_ptr<PgStore> store(new PgStore(conninfo, pool_size));
  // Nobody else can see the store yet: use the first connection directly.
  Conn* conn = store->conns_.front().get();
  Status s = conn->Connect(conninfo);
  if (s.ok()) s = Migrate(conn);
  if (s.ok()) s = conn->PrepareAll();
  if (!s.ok()) return s;
  *out = std::move(store);
  return Status::OK();
}

PgStore::PgStore(std::string conninfo, int pool_size)
    : conninfo_(std::move(conninfo)), lanes_(std::max(1, pool_size / 2)) {
  for (int i = 0; i < pool_size; ++i) conns_.push_back(std::make_unique<Conn>());
  // idle_ is used as a stack: conns_[0], opened by Open, is handed out first
  // and the others are opened only when calls overlap.
  for (auto it = conns_.rbegin(); it != conns_.rend(); ++it) idle_.push_back(it->get());
}

PgStore::~PgStore() = default;

Status PgStore::Acquire(Conn** out) {
  Conn* conn = nullptr;
  {
    std::unique_lock<std::mutex> lock(mu_);
    idle_cv_.wait(lock, [this] { return !idle_.empty(); });
    conn = idle_.back();
    idle_.pop_back();
  }
  if (!conn->Usable()) {
    // Closed, never opened, or broken by an earlier call: open it afresh.
    Status s = conn->Connect(conninfo_);
    if (s.ok()) s = conn->PrepareAll();
    if (!s.ok()) {
      conn->Close();
      Release(conn);
      return s;
    }
  }
  *out = conn;
  return Status::OK();
}

void PgStore::Release(Conn* conn) {
  conn->Tidy();
  {
    std::lock_guard<std::mutex> lock(mu_);
    idle_.push_back(conn);
  }
  idle_cv_.notify_one();
}

namespace {
// The batch this thread has open, if any (a batch belongs to its thread).
thread_local const PgStore* tl_batch_store = nullptr;
thread_local PgStore::Conn* tl_batch_conn = nullptr;
// The highest stream lock key the open batch's transaction may hold (-1:
// none yet). Only ever raised during a batch: a unit rolled back may have
// released some, which only makes later lock statements try more keys.
thread_local std::int64_t tl_batch_max_key = -1;
}  // namespace

std::int64_t PgStore::HeldKeyMax() const { return tl_batch_store == this ? tl_batch_max_key : -1; }

void PgStore::NoteKeysHeld(std::int64_t max_key) {
  if (tl_batch_store == this) tl_batch_max_key = std::max(tl_batch_max_key, max_key);
}

template <typename Body>
Status PgStore::WithConn(Body&& body) {
  if (tl_batch_store == this) return body(*tl_batch_conn);
  Conn* conn = nullptr;
  Status s = Acquire(&conn);
  if (!s.ok()) return s;
  struct Returner {
    PgStore* store;
    Conn* conn;
    ~Returner() { store->Release(conn); }
  } returner{this, conn};
  return body(*conn);
}

Status PgStore::Migrate(Conn* conn) {
  return conn->Transaction("migrate", [conn]() -> Status {
    const Params none;
    Result r;
    Status s = conn->Query("SELECT current_schema()", none, "migrate: current schema", &r);
    if (!s.ok()) return s;
    if (r.rows() != 1 || r.IsNull(0, 0)) {
      return Status(Code::kIOError,
                    "migrate: no schema to create tables in: the search_path names no existing schema");
    }
    // Serializes servers migrating the same schema; released at commit.
    s = conn->Query("SELECT pg_advisory_xact_lock(hashtext('fastchat.migrate'), hashtext(current_schema()))",
                    none, "migrate: lock", nullptr);
    if (!s.ok()) return s;
    s = conn->Command("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)",
                      "migrate: schema_version");
    if (!s.ok()) return s;
    s = conn->Query("SELECT version FROM schema_version", none, "migrate: read version", &r);
    if (!s.ok()) return s;
    std::int64_t version = 0;
    if (r.rows() > 0) {
      version = r.Int(0, 0);
    } else {
      s = conn->Command("INSERT INTO schema_version (version) VALUES (0)", "migrate: init version");
      if (!s.ok()) return s;
    }
    if (version > kLatestVersion) {
      return Status(Code::kIOError, "migrate: database schema version " + std::to_string(version) +
                                        " is newer than this binary's " + std::to_string(kLatestVersion));
    }
    for (const Migration& m : kMigrations) {
      if (m.version <= version) continue;
      const std::string context = "migrate: to version " + std::to_string(m.version);
      s = conn->Command(m.sql, context.c_str());
      if (!s.ok()) return s;
      Params p;
      p.Id(static_cast<std::uint64_t>(m.version));
      s = conn->Query("UPDATE schema_version SET version = $1::bigint", p, "migrate: write version", nullptr);
      if (!s.ok()) return s;
    }
    return Status::OK();
  });
}

// ---- users

Status PgStore::CreateUser(const UserRecord& user, std::uint64_t* id) {
  return WithConn([&](Conn& c) -> Status {
    Params p;
    p.Bytes(user.name);
    p.Bytes(user.password_hash);
    p.Bytes(user.x25519_public);
    p.Bytes(user.ed25519_public);
    Result r;
    Status s = c.Exec(kInsertUser, p, "CreateUser", &r);
    if (!s.ok()) return s;
    if (r.rows() == 0) return Status(Code::kNameTaken, "CreateUser: name taken: " + user.name);
    *id = r.Id(0, 0);
    return Status::OK();
  });
}

Status PgStore::GetUserById(std::uint64_t id, UserRecord* out) {
  return WithConn([&](Conn& c) -> Status {
    Params p;
    p.Id(id);
    Result r;
    Status s = c.Exec(kUserById, p, "GetUserById", &r);
    if (!s.ok()) return s;
    if (r.rows() == 0) return Status(Code::kNoSuchUser, "GetUserById: no such user");
    ReadUserRow(r, out);
    return Status::OK();
  });
}

Status PgStore::GetUserByName(const std::string& name, UserRecord* out) {
  return WithConn([&](Conn& c) -> Status {
    Params p;
    p.Bytes(name);
    Result r;
    Status s = c.Exec(kUserByName, p, "GetUserByName", &r);
    if (!s.ok()) return s;
    if (r.rows() == 0) return Status(Code::kNoSuchUser, "GetUserByName: no such user");
    ReadUserRow(r, out);
    return Status::OK();
  });
}

// ---- friends
//
// A friendship is stored as two rows, (a, b) and (b, a), written by one
// statement.

Status PgStore::AddFriendRequest(std::uint64_t from, std::uint64_t to) {
  return WithConn([&](Conn& c) -> Status {
    Params p;
    p.Id(from);
    p.Id(to);
    return c.Exec(kInsertFriendRequest, p, "AddFriendRequest", nullptr);
  });
}

Status PgStore::TakeFriendRequest(std::uint64_t from, std::uint64_t to) {
  return WithConn([&](Conn& c) -> Status {
    Params p;
    p.Id(from);
    p.Id(to);
    Result r;
    Status s = c.Exec(kDeleteFriendRequest, p, "TakeFriendRequest", &r);
    if (!s.ok()) return s;
    if (r.rows() == 0) return Status(Code::kNoSuchRequest, "TakeFriendRequest: no such request");
    return Status::OK();
  });
}

Status PgStore::ListFriendRequestsTo(std::uint64_t to, std::vector<std::uint64_t>* from) {
  from->clear();
  return WithConn([&](Conn& c) { return c.ListIds(kFriendRequestsTo, to, "ListFriendRequestsTo", from); });
}

Status PgStore::AddFriendship(std::uint64_t a, std::uint64_t b) {
  return WithConn([&](Conn& c) -> Status {
    Params p;
    p.Id(a);
    p.Id(b);
    return c.Exec(kInsertFriendship, p, "AddFriendship", nullptr);
  });
}

Status PgStore::AreFriends(std::uint64_t a, std::uint64_t b, bool* yes) {
  return WithConn([&](Conn& c) -> Status {
    Params p;
    p.Id(a);
    p.Id(b);
    Result r;
    Status s = c.Exec(kFriendshipExists, p, "AreFriends", &r);
    if (!s.ok()) return s;
    *yes = r.rows() > 0;
    return Status::OK();
  });
}

Status PgStore::ListFriends(std::uint64_t user, std::vector<std::uint64_t>* friends) {
  friends->clear();
  return WithConn([&](Conn& c) { return c.ListIds(kFriendsOf, user, "ListFriends", friends); });
}

// ---- groups

Status PgStore::CreateGroup(const std::string& name, std::uint64_t admin, std::uint64_t* id) {
  return WithConn([&](Conn& c) -> Status {
    Params p;
    p.Bytes(name);
    p.Id(admin);
    Result r;
    Status s = c.Exec(kCreateGroup, p, "CreateGroup", &r);
    if (!s.ok()) return s;
    if (r.rows() != 1) return Status(Code::kIOError, "CreateGroup: no id returned");
    *id = r.Id(0, 0);
    return Status::OK();
  });
}

Status PgStore::GetGroup(std::uint64_t id, GroupRecord* out) {
  return WithConn([&](Conn& c) -> Status {
    Params p;
    p.Id(id);
    Result r;
    Status s = c.Exec(kGroupById, p, "GetGroup", &r);
    if (!s.ok()) return s;
    if (r.rows() == 0) return Status(Code::kNoSuchGroup, "GetGroup: no such group");
    out->id = r.Id(0, 0);
    out->name = r.Bytes(0, 1);
    out->admin_id = r.Id(0, 2);
    out->epoch = r.Id(0, 3);
    return Status::OK();
  });
}

Status PgStore::AddMember(std::uint64_t group, std::uint64_t user) {
  return WithConn([&](Conn& c) -> Status {
    Params p;
    p.Id(group);
    p.Id(user);
    Result r;
    Status s = c.Exec(kAddMember, p, "AddMember", &r);
    if (!s.ok()) return s;
    if (r.rows() != 1) return Status(Code::kIOError, "AddMember: no result row");
    if (!r.Bool(0, 0)) return Status(Code::kNoSuchGroup, "AddMember: no such group");
    if (!r.Bool(0, 1)) return Status(Code::kAlreadyMember, "AddMember: already a member");
    return Status::OK();
  });
}

Status PgStore::RemoveMember(std::uint64_t group, std::uint64_t user, std::uint64_t* new_epoch) {
  return WithConn([&](Conn& c) -> Status {
    Params p;
    p.Id(group);
    p.Id(user);
    Result r;
    Status s = c.Exec(kRemoveMember, p, "RemoveMember", &r);
    if (!s.ok()) return s;
    if (r.rows() != 1) return Status(Code::kIOError, "RemoveMember: no result row");
    if (!r.Bool(0, 0)) return Status(Code::kNoSuchGroup, "RemoveMember: no such group");
    if (!r.Bool(0, 1)) return Status(Code::kNotMember, "RemoveMember: not a member");
    // Deleted by someone else since the statement's snapshot.
    if (r.IsNull(0, 2)) return Status(Code::kNoSuchGroup, "RemoveMember: no such group");
    *new_epoch = r.Id(0, 2);
    return Status::OK();
  });
}

Status PgStore::IsMember(std::uint64_t group, std::uint64_t user, bool* yes) {
  return WithConn([&](Conn& c) -> Status {
    Params p;
    p.Id(group);
    p.Id(user);
    Result r;
    Status s = c.Exec(kIsMember, p, "IsMember", &r);
    if (!s.ok()) return s;
    if (r.rows() == 0) return Status(Code::kNoSuchGroup, "IsMember: no such group");
    *yes = r.Bool(0, 0);
    return Status::OK();
  });
}

Status PgStore::ListMembers(std::uint64_t group, std::vector<std::uint64_t>* members) {
  members->clear();
  return WithConn([&](Conn& c) -> Status {
    Params p;
    p.Id(group);
    Result r;
    Status s = c.Exec(kMembersOf, p, "ListMembers", &r);
    if (!s.ok()) return s;
    if (r.rows() == 0) return Status(Code::kNoSuchGroup, "ListMembers: no such group");
    for (int i = 0; i < r.rows(); ++i) {
      if (!r.IsNull(i, 0)) members->push_back(r.Id(i, 0));
    }
    return Status::OK();
  });
}

Status PgStore::ListGroupsOf(std::uint64_t user, std::vector<std::uint64_t>* groups) {
  groups->clear();
  return WithConn([&](Conn& c) { return c.ListIds(kGroupsOf, user, "ListGroupsOf", groups); });
}

Status PgStore::DeleteGroup(std::uint64_t group) {
  return WithConn([&](Conn& c) -> Status {
    Params p;
    p.Id(group);
    Result r;
    Status s = c.Exec(kDeleteGroup, p, "DeleteGroup", &r);
    if (!s.ok()) return s;
    if (r.rows() == 0) return Status(Code::kNoSuchGroup, "DeleteGroup: no such group");
    return Status::OK();
  });
}

// ---- pending deliveries

Status PgStore::PrepareStreamLocks(const std::vector<std::uint64_t>& users, const char* context,
                                   StreamLocks* locks) {
  std::uint64_t min_key = kLockKeyModulus;
  std::uint64_t max_key = 0;
  for (std::uint64_t id : users) {
    min_key = std::min(min_key, id % kLockKeyModulus);
    max_key = std::max(max_key, id % kLockKeyModulus);
  }
  locks->keys = LockKeys(users);
  locks->held = HeldKeyMax();
  locks->max_key = static_cast<std::int64_t>(max_key);
  if (locks->held < 0 || static_cast<std::int64_t>(min_key) > locks->held) return Status::OK();
  Params lock;
  lock.Owned(std::string(locks->keys));
  lock.Id(static_cast<std::uint64_t>(locks->held));
  Result locked;
  Status s = WithConn([&](Conn& c) {
    return c.Exec(kLockRecipients, lock, (std::string(context) + ": locks").c_str(), &locked);
  });
  if (!s.ok()) return s;
  NoteKeysHeld(locks->max_key);
  if (!locked.Bool(0, 0)) return LockOrder(context);
  return Status::OK();
}

Status PgStore::CheckUsersExist(std::vector<std::uint64_t> ids, const char* context) {
  // Each once: a batch names most recipients several times.
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  ArrayBuilder array(kInt8Oid, ids.size());
  for (std::uint64_t id : ids) array.AddInt64(id);
  Params p;
  p.Owned(array.Finish());
  Result unknown;
  Status s = WithConn([&](Conn& c) { return c.Exec(kUnknownRecipient, p, context, &unknown); });
  if (!s.ok()) return s;
  if (unknown.rows() > 0) {
    return Status(Code::kNoSuchUser, std::string(context) + ": no such user " + std::to_string(unknown.Id(0, 0)));
  }
  return Status::OK();
}

// One round trip: lock_recipients and insert_pending, pipelined into one
// implicit transaction. The locks are per recipient and held until commit,
// so enqueues to one recipient commit one after another in seq order, and
// insert_pending's snapshot (taken after the locks) sees every earlier
// enqueue to its recipients, so an existing (recipient, dedupe_key) always
// yields its seq. In a batch whose transaction holds a lock key at or above
// one of these already, the locks are taken first, in a round trip of their
// own, without waiting for those keys (see lock_recipients): if one is
// held by another transaction, nothing is written and the call is
// kLockOrder.
void PgStore::SetWaitingRecount(std::uint32_t every, std::uint32_t full_recheck_ms) {
  std::lock_guard<std::mutex> lock(waiting_mu_);
  recount_every_ = std::max<std::uint32_t>(every, 1);
  full_recheck_ = std::chrono::milliseconds(full_recheck_ms);
}

Status PgStore::FindKeys(const std::vector<PendingItem>& items, const std::vector<std::size_t>& at,
                         const char* context, std::vector<std::uint64_t>* waiting,
                         std::vector<std::uint64_t>* acked) {
  ArrayBuilder recipients(kInt8Oid, at.size());
  ArrayBuilder keys(kTextOid, at.size());
  for (std::size_t i : at) {
    recipients.AddInt64(items[i].recipient);
    keys.AddBytes(items[i].dedupe_key);
  }
  Params p;
  p.Owned(recipients.Finish());
  p.Owned(keys.Finish());
  Result r;
  Status s = WithConn([&](Conn& c) { return c.Exec(kFindPendingKeys, p, context, &r); });
  if (!s.ok()) return s;
  if (r.rows() != static_cast<int>(at.size())) {
    return Status(Code::kIOError, std::string(context) + ": expected " + std::to_string(at.size()) +
                                      " answers, got " + std::to_string(r.rows()));
  }
  waiting->assign(at.size(), 0);
  acked->assign(at.size(), 0);
  for (int k = 0; k < r.rows(); ++k) {
    if (!r.IsNull(k, 0)) (*waiting)[static_cast<std::size_t>(k)] = r.Id(k, 0);
    if (!r.IsNull(k, 1)) (*acked)[static_cast<std::size_t>(k)] = r.Id(k, 1);
  }
  return Status::OK();
}

Status PgStore::RefusedItems(const std::vector<PendingItem>& items, std::vector<bool>* refused) {
  refused->assign(items.size(), false);
  auto is_capped = [](const PendingItem& item) { return item.max_waiting != 0 || item.max_waiting_bytes != 0; };
  if (std::none_of(items.begin(), items.end(), is_capped)) return Status::OK();
  // Which recipients to count (due) and which are full, item by item.
  const auto now = std::chrono::steady_clock::now();
  std::vector<std::uint64_t> due;
  std::unordered_map<std::uint64_t, bool> full;  // not due, and full when last counted
  {
    std::lock_guard<std::mutex> lock(waiting_mu_);
    for (const PendingItem& item : items) {
      if (!is_capped(item)) continue;
      Waiting& w = waiting_[item.recipient];
      if (w.full && now - w.counted < full_recheck_) {
        full[item.recipient] = true;
      } else if (w.full || ++w.since_count >= recount_every_) {
        due.push_back(item.recipient);
      }
    }
  }
  std::sort(due.begin(), due.end());
  due.erase(std::unique(due.begin(), due.end()), due.end());
  // Exact rows and bytes waiting for the recipients that are due.
  std::unordered_map<std::uint64_t, std::pair<std::uint64_t, std::uint64_t>> counted;
  if (!due.empty()) {
    ArrayBuilder ids(kInt8Oid, due.size());
    for (std::uint64_t u : due) ids.AddInt64(u);
    Params p;
    p.Owned(ids.Finish());
    Result r;
    Status s = WithConn([&](Conn& c) { return c.Exec(kCountWaiting, p, "Enqueue: count waiting", &r); });
    if (!s.ok()) return s;
    for (std::uint64_t u : due) counted[u] = {0, 0};
    for (int i = 0; i < r.rows(); ++i) counted[r.Id(i, 0)] = {r.Id(i, 1), r.Id(i, 2)};
  }
  // The counted recipients' items whose key is waiting or was acknowledged
  // add no row (the insert finds them): not counted, not refused.
  std::vector<bool> known(items.size(), false);
  if (!counted.empty()) {
    std::vector<std::size_t> at;
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (counted.count(items[i].recipient) != 0) at.push_back(i);
    }
    std::vector<std::uint64_t> waiting, acked;
    if (Status s = FindKeys(items, at, "Enqueue: known keys", &waiting, &acked); !s.ok()) return s;
    for (std::size_t k = 0; k < at.size(); ++k) known[at[k]] = waiting[k] != 0 || acked[k] != 0;
  }
  std::unordered_map<std::uint64_t, bool> now_full;
  // Keys decided earlier in this call: a repeat gets the same answer.
  std::map<std::pair<std::uint64_t, std::string>, bool> decided;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const PendingItem& item = items[i];
    if (item.max_waiting == 0 && item.max_waiting_bytes == 0) continue;
    if (full.count(item.recipient) != 0) {
      (*refused)[i] = true;
      continue;
    }
    auto it = counted.find(item.recipient);
    if (it == counted.end()) continue;  // not due: stored, counted later
    if (known[i]) continue;
    auto [key, first] = decided.try_emplace({item.recipient, item.dedupe_key}, false);
    if (!first) {
      (*refused)[i] = key->second;
      continue;
    }
    auto& [rows, bytes] = it->second;
    if ((item.max_waiting != 0 && rows >= item.max_waiting) ||
        (item.max_waiting_bytes != 0 && bytes + item.payload.size() > item.max_waiting_bytes)) {
      (*refused)[i] = true;
      key->second = true;
      now_full[item.recipient] = true;
      continue;
    }
    ++rows;
    bytes += item.payload.size();
    // At its bound now: full until the next count, like a refusal.
    if ((item.max_waiting != 0 && rows >= item.max_waiting) ||
        (item.max_waiting_bytes != 0 && bytes >= item.max_waiting_bytes)) {
      now_full[item.recipient] = true;
    }
  }
  std::lock_guard<std::mutex> lock(waiting_mu_);
  for (std::uint64_t u : due) {
    Waiting& w = waiting_[u];
    w.since_count = 0;
    w.full = now_full.count(u) != 0;
    w.counted = now;
    if (!w.full) waiting_.erase(u);  // nothing to remember until its next items
  }
  return Status::OK();
}

Status PgStore::Enqueue(const std::vector<PendingItem>& items, std::vector<std::uint64_t>* seqs,
                        std::vector<Enqueued>* how) {
  seqs->clear();
  if (how) how->clear();
  if (items.empty()) return Status::OK();

  std::vector<bool> refused;
  if (Status s = RefusedItems(items, &refused); !s.ok()) return s;
  if (std::find(refused.begin(), refused.end(), true) != refused.end()) {
    // Store the others; then answer each refused item from its key (a
    // waiting or acknowledged resend is found, as on SqliteStore).
    std::vector<PendingItem> kept;
    std::vector<std::size_t> kept_at, refused_at;
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (refused[i]) {
        refused_at.push_back(i);
      } else {
        kept.push_back(items[i]);
        kept_at.push_back(i);
      }
    }
    std::vector<std::uint64_t> all_seqs(items.size(), 0);
    std::vector<Enqueued> all_how(items.size(), Enqueued::kRefused);
    if (!kept.empty()) {
      std::vector<std::uint64_t> kept_seqs;
      std::vector<Enqueued> kept_how;
      if (Status s = StoreItems(kept, &kept_seqs, &kept_how); !s.ok()) return s;
      for (std::size_t k = 0; k < kept.size(); ++k) {
        all_seqs[kept_at[k]] = kept_seqs[k];
        all_how[kept_at[k]] = kept_how[k];
      }
    }
    std::vector<std::uint64_t> waiting, acked;
    if (Status s = FindKeys(items, refused_at, "Enqueue: refused keys", &waiting, &acked); !s.ok()) return s;
    for (std::size_t k = 0; k < refused_at.size(); ++k) {
      const std::size_t i = refused_at[k];
      if (waiting[k] != 0) {
        all_seqs[i] = waiting[k];
        all_how[i] = Enqueued::kQueued;
      } else if (acked[k] != 0) {
        all_seqs[i] = acked[k];
        all_how[i] = Enqueued::kDelivered;
      }
    }
    seqs->swap(all_seqs);
    if (how) how->swap(all_how);
    return Status::OK();
  }
  return StoreItems(items, seqs, how);
}

Status PgStore::StoreItems(const std::vector<PendingItem>& items, std::vector<std::uint64_t>* seqs,
                           std::vector<Enqueued>* how) {

  std::vector<std::uint64_t> recipient_ids;
  recipient_ids.reserve(items.size());
  for (const PendingItem& item : items) recipient_ids.push_back(item.recipient);
  // Before any lock or write: pending has no foreign key to users.
  if (Status known = CheckUsersExist(recipient_ids, "Enqueue"); !known.ok()) return known;
  StreamLocks locks;
  Status locked = PrepareStreamLocks(recipient_ids, "Enqueue", &locks);
  if (!locked.ok()) return locked;
  Params lock;
  lock.Owned(std::move(locks.keys));
  lock.Id(static_cast<std::uint64_t>(locks.held));  // -1 goes out as -1

  ArrayBuilder recipients(kInt8Oid, items.size());
  ArrayBuilder dedupe_keys(kTextOid, items.size());
  ArrayBuilder payloads(kByteaOid, items.size());
  for (const PendingItem& item : items) {
    recipients.AddInt64(item.recipient);
    dedupe_keys.AddBytes(item.dedupe_key);
    payloads.AddBytes(item.payload);
  }
  Params insert;
  insert.Owned(recipients.Finish());
  insert.Owned(dedupe_keys.Finish());
  insert.Owned(payloads.Finish());

  Result r;
  Status s = WithConn([&](Conn& c) {
    return c.ExecPipelined({{kLockRecipients, &lock}, {kInsertPending, &insert}}, "Enqueue", &r);
  });
  if (!s.ok()) return s;
  NoteKeysHeld(locks.max_key);
  if (r.rows() != static_cast<int>(items.size())) {
    return Status(Code::kIOError, "Enqueue: expected " + std::to_string(items.size()) + " seqs, got " +
                                      std::to_string(r.rows()));
  }
  std::vector<std::uint64_t> result(items.size());
  std::vector<Enqueued> done(items.size());
  for (int i = 0; i < r.rows(); ++i) {
    if (r.IsNull(i, 0)) return Status(Code::kIOError, "Enqueue: no seq for item " + std::to_string(i));
    result[i] = r.Id(i, 0);
    done[i] = r.Bool(i, 1) ? Enqueued::kStored : r.Bool(i, 2) ? Enqueued::kDelivered : Enqueued::kQueued;
  }
  seqs->swap(result);
  if (how) how->swap(done);
  return Status::OK();
}

Status PgStore::FetchPending(std::uint64_t recipient, std::uint64_t after_seq, std::size_t limit,
                             std::vector<PendingRow>* rows) {
  rows->clear();
  // Clamp so neither value turns negative (a negative LIMIT is an error).
  const std::uint64_t after = after_seq < kMaxInt64 ? after_seq : kMaxInt64;
  const std::uint64_t max_rows = limit < kMaxInt64 ? limit : kMaxInt64;
  return WithConn([&](Conn& c) -> Status {
    Params p;
    p.Id(recipient);
    p.Id(after);
    p.Id(max_rows);
    Result r;
    Status s = c.Exec(kFetchPending, p, "FetchPending", &r);
    if (!s.ok()) return s;
    rows->reserve(static_cast<std::size_t>(r.rows()));
    for (int i = 0; i < r.rows(); ++i) {
      PendingRow row;
      row.seq = r.Id(i, 0);
      row.payload = r.Bytes(i, 1);
      row.group_id = r.Id(i, 2);
      row.prev_seq = r.Id(i, 3);
      rows->push_back(std::move(row));
    }
    return Status::OK();
  });
}

Status PgStore::Ack(std::uint64_t recipient, const std::vector<std::uint64_t>& seqs) {
  if (seqs.empty()) return Status::OK();
  ArrayBuilder seq_array(kInt8Oid, seqs.size());
  for (std::uint64_t seq : seqs) seq_array.AddInt64(seq);
  Params p;
  p.Id(recipient);
  p.Owned(seq_array.Finish());
  p.Id(DedupeKeyExpiryMs());
  StreamLocks locks;
  Status s = PrepareStreamLocks({recipient}, "Ack", &locks);
  if (!s.ok()) return s;
  Params lock;
  lock.Owned(std::move(locks.keys));
  lock.Id(static_cast<std::uint64_t>(locks.held));
  s = WithConn([&](Conn& c) { return c.ExecPipelined({{kLockRecipients, &lock}, {kDeletePending, &p}}, "Ack", nullptr); });
  if (s.ok()) NoteKeysHeld(locks.max_key);
  return s;
}

Status PgStore::AckMany(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& recipient_seqs) {
  if (recipient_seqs.empty()) return Status::OK();
  ArrayBuilder recipients(kInt8Oid, recipient_seqs.size());
  ArrayBuilder seqs(kInt8Oid, recipient_seqs.size());
  std::vector<std::uint64_t> recipient_ids;
  recipient_ids.reserve(recipient_seqs.size());
  for (const auto& [r, s] : recipient_seqs) {
    recipients.AddInt64(r);
    seqs.AddInt64(s);
    recipient_ids.push_back(r);
  }
  Params p;
  p.Owned(recipients.Finish());
  p.Owned(seqs.Finish());
  p.Id(DedupeKeyExpiryMs());
  StreamLocks locks;
  Status s = PrepareStreamLocks(recipient_ids, "AckMany", &locks);
  if (!s.ok()) return s;
  Params lock;
  lock.Owned(std::move(locks.keys));
  lock.Id(static_cast<std::uint64_t>(locks.held));
  s = WithConn([&](Conn& c) {
    return c.ExecPipelined({{kLockRecipients, &lock}, {kDeletePendingMany, &p}}, "AckMany", nullptr);
  });
  if (s.ok()) NoteKeysHeld(locks.max_key);
  return s;
}

// One statement for the whole batch's group acknowledgements, in (group,
// user) order, one per cursor (an UPDATE ... FROM would move a cursor
// named twice by only one of its rows).
Status PgStore::AckGroups(const std::vector<GroupCursorAck>& acks) {
  if (acks.empty()) return Status::OK();
  if (acks.size() == 1) return AckGroup(acks[0].user, acks[0].group, acks[0].seq);
  std::vector<GroupCursorAck> sorted = acks;
  std::sort(sorted.begin(), sorted.end(), [](const GroupCursorAck& a, const GroupCursorAck& b) {
    return a.group != b.group ? a.group < b.group : a.user != b.user ? a.user < b.user : a.seq > b.seq;
  });
  // The highest seq of each cursor comes first: keep it alone.
  sorted.erase(std::unique(sorted.begin(), sorted.end(),
                           [](const GroupCursorAck& a, const GroupCursorAck& b) {
                             return a.group == b.group && a.user == b.user;
                           }),
               sorted.end());
  ArrayBuilder groups(kInt8Oid, sorted.size());
  ArrayBuilder users(kInt8Oid, sorted.size());
  ArrayBuilder seqs(kInt8Oid, sorted.size());
  for (const GroupCursorAck& a : sorted) {
    groups.AddInt64(a.group);
    users.AddInt64(a.user);
    seqs.AddInt64(a.seq);
  }
  Params p;
  p.Owned(groups.Finish());
  p.Owned(users.Finish());
  p.Owned(seqs.Finish());
  return WithConn([&](Conn& c) { return c.Exec(kAckGroups, p, "AckGroups", nullptr); });
}

Status PgStore::CountPending(std::uint64_t recipient, std::uint64_t* n) {
  return WithConn([&](Conn& c) -> Status {
    Params p;
    p.Id(recipient);
    Result r;
    Status s = c.Exec(kCountPending, p, "CountPending", &r);
    if (!s.ok()) return s;
    *n = r.Id(0, 0);
    return Status::OK();
  });
}

// ---- cluster membership

Status PgStore::UpsertServer(const ServerRecord& server) {
  return WithConn([&](Conn& c) -> Status {
    Params p;
    p.Bytes(server.id);
    p.Bytes(server.mesh_address);
    p.Id(server.heartbeat_ms);
    return c.Exec(kUpsertServer, p, "UpsertServer", nullptr);
  });
}

Status PgStore::ListServers(std::vector<ServerRecord>* out) {
  out->clear();
  return WithConn([&](Conn& c) -> Status {
    const Params none;
    Result r;
    Status s = c.Exec(kListServers, none, "ListServers", &r);
    if (!s.ok()) return s;
    for (int i = 0; i < r.rows(); ++i) out->push_back(ServerRecord{r.Bytes(i, 0), r.Bytes(i, 1), r.Id(i, 2)});
    return Status::OK();
  });
}

// ---- session tokens

Status PgStore::AddSessionToken(const std::string& token_hash, std::uint64_t user, std::uint64_t expires_ms,
                                std::uint64_t now_ms) {
  return WithConn([&](Conn& c) -> Status {
    Params p;
    p.Bytes(token_hash);
    p.Id(user);
    p.Id(expires_ms);
    Status s = c.Exec(kInsertToken, p, "AddSessionToken", nullptr);
    if (!s.ok()) return s;
    Params q;
    q.Id(user);
    q.Id(now_ms);
    q.Id(kMaxTokensPerUser);
    return c.Exec(kPruneTokens, q, "AddSessionToken (prune)", nullptr);
  });
}

Status PgStore::CheckSessionToken(const std::string& token_hash, std::uint64_t now_ms, std::uint64_t* user) {
  return WithConn([&](Conn& c) -> Status {
    Params p;
    p.Bytes(token_hash);
    p.Id(now_ms);
    Result r;
    Status s = c.Exec(kCheckToken, p, "CheckSessionToken", &r);
    if (!s.ok()) return s;
    if (r.rows() == 0) return Status(Code::kNotFound, "no such session token");
    *user = r.Id(0, 0);
    return Status::OK();
  });
}

Status PgStore::RevokeSessionToken(const std::string& token_hash) {
  return WithConn([&](Conn& c) -> Status {
    Params p;
    p.Bytes(token_hash);
    return c.Exec(kRevokeToken, p, "RevokeSessionToken", nullptr);
  });
}

Status PgStore::SetPassword(std::uint64_t user, const std::string& password_hash) {
  return WithConn([&](Conn& c) -> Status {
    Params p;
    p.Id(user);
    p.Bytes(password_hash);
    Result r;
    Status s = c.Exec(kSetPassword, p, "SetPassword", &r);
    if (!s.ok()) return s;
    if (r.rows() == 0) return Status(Code::kNoSuchUser, "SetPassword: no such user");
    return Status::OK();
  });
}

// ---- group logs

// One round trip: the group's row lock, lock_group and append_group,
// pipelined into one implicit transaction, as in Enqueue. In a batch whose
// transaction holds stream locks already, the row and stream locks are
// taken first, in a round trip of their own, without waiting for the row
// or for a key at or below one held (see lock_recipients): if another
// transaction holds one, nothing is written and the call is kLockOrder. The locks cover the members (whose
// streams get the entry) and the sender (whose cursor append_group may move
// past every earlier entry: any earlier entry by another member, which
// holds the sender's lock until it commits, is then visible). So a
// member's own rows and group entries commit in seq order, and a repeated
// (group, dedupe_key) from the same sender finds the first one committed.
Status PgStore::AppendGroup(std::uint64_t group, std::uint64_t sender, const std::vector<std::uint64_t>& members,
                            const std::string& dedupe_key, const std::string& payload, std::uint64_t* seq,
                            bool* fresh, std::vector<std::uint64_t>* readers, std::uint64_t* prev_seq) {
  // The members as the store has them are locked too (this server's list
  // may be a moment old).
  if (readers != nullptr) readers->clear();
  if (prev_seq != nullptr) *prev_seq = 0;
  std::vector<std::uint64_t> users = members;
  users.push_back(sender);
  const std::int64_t held = HeldKeyMax();
  Params row;
  row.Id(group);
  Params lock;
  lock.Id(group);
  lock.Owned(LockKeys(users));
  lock.Id(static_cast<std::uint64_t>(held));  // -1 goes out as -1
  Params append;
  append.Id(group);
  append.Id(sender);
  append.Bytes(dedupe_key);
  append.Bytes(payload);
  return WithConn([&](Conn& c) -> Status {
    Result r;
    Result row_locked;
    Result locked;
    Status s;
    if (held < 0) {
      const Sql row_lock = sender == 0 ? kLockGroupRow : kLockGroupRowShared;
      s = c.ExecPipelined({{row_lock, &row}, {kLockGroup, &lock, &locked}, {kAppendGroup, &append}}, "AppendGroup",
                          &r);
      if (!s.ok()) return s;
      NoteKeysHeld(locked.Int(0, 1));
    } else {
      const Sql row_lock = sender == 0 ? kLockGroupRowSkip : kLockGroupRowSharedSkip;
      s = c.ExecPipelined({{row_lock, &row, &row_locked}, {kLockGroup, &lock}}, "AppendGroup: locks", &locked);
      if (!s.ok()) return s;
      NoteKeysHeld(locked.Int(0, 1));
      if (row_locked.rows() == 0 || !locked.Bool(0, 0)) return LockOrder("AppendGroup");
      s = c.Exec(kAppendGroup, append, "AppendGroup", &r);
      if (!s.ok()) return s;
    }
    if (r.rows() == 1 && r.IsNull(0, 0)) {
      if (!r.Bool(0, 3)) return Status(Code::kNoSuchGroup, "AppendGroup: no such group");
      return Status(Code::kNotMember, "AppendGroup: the sender is not a member");
    }
    if (r.rows() == 1) {
      *seq = r.Id(0, 0);
      *fresh = r.Bool(0, 1);
      if (prev_seq != nullptr) *prev_seq = r.Id(0, 5);
      if (readers != nullptr) {
        readers->clear();
        const std::string ids = r.Bytes(0, 2);
        std::size_t pos = 0;
        while (pos < ids.size()) {
          std::size_t end = ids.find(',', pos);
          if (end == std::string::npos) end = ids.size();
          readers->push_back(std::stoull(ids.substr(pos, end - pos)));
          pos = end + 1;
        }
      }
      return Status::OK();
    }
    // The key was committed by another writer after append_group's snapshot
    // (its insert waited for that writer): read it with a fresh snapshot.
    Params key;
    key.Id(group);
    key.Bytes(dedupe_key);
    s = c.Exec(kGroupLogSeqByKey, key, "AppendGroup: existing seq", &r);
    if (!s.ok()) return s;
    if (r.rows() != 1) return Status(Code::kIOError, "AppendGroup: no seq for the entry");
    *seq = r.Id(0, 0);
    *fresh = false;
    return Status::OK();
  });
}

Status PgStore::GroupHeads(std::uint64_t user, std::vector<std::pair<std::uint64_t, std::uint64_t>>* heads) {
  heads->clear();
  return WithConn([&](Conn& c) -> Status {
    Params p;
    p.Id(user);
    Result r;
    Status s = c.Exec(kGroupHeads, p, "GroupHeads", &r);
    if (!s.ok()) return s;
    for (int i = 0; i < r.rows(); ++i) heads->emplace_back(r.Id(i, 0), r.Id(i, 1));
    return Status::OK();
  });
}

Status PgStore::AckGroup(std::uint64_t user, std::uint64_t group, std::uint64_t seq) {
  return WithConn([&](Conn& c) -> Status {
    Params p;
    p.Id(group);
    p.Id(user);
    p.Id(seq);
    return c.Exec(kAckGroup, p, "AckGroup", nullptr);
  });
}

// trim_cursors then trim_log, pipelined: one round trip, one implicit
// transaction, and trim_log's snapshot sees the cursors left.
// The group's row, exclusively, then trim_cursors and trim_log: an append
// shares the row from before its snapshot until it commits, so a resend of
// an entry being trimmed waits for the trim and then sees the kept key (it
// would otherwise store the entry again). In a batch that holds locks
// already the row is only tried: kLockOrder if another transaction has it.
// Once the row is held, the batch counts as holding locks (NoteKeysHeld),
// so a later row lock of the batch is only tried too.
Status PgStore::TrimGroup(std::uint64_t group) {
  Params row;
  row.Id(group);
  Params p;
  p.Id(group);
  Params log;
  log.Id(group);
  log.Id(DedupeKeyExpiryMs());
  const bool holds_locks = HeldKeyMax() >= 0;
  return WithConn([&](Conn& c) -> Status {
    if (!holds_locks) {
      Status s = c.ExecPipelined({{kLockGroupRow, &row}, {kTrimCursors, &p}, {kTrimLog, &log}}, "TrimGroup", nullptr);
      if (s.ok()) NoteKeysHeld(0);
      return s;
    }
    Result row_locked;
    Status s = c.Exec(kLockGroupRowSkip, row, "TrimGroup: lock", &row_locked);
    if (!s.ok()) return s;
    if (row_locked.rows() == 0) return LockOrder("TrimGroup");
    return c.ExecPipelined({{kTrimCursors, &p}, {kTrimLog, &log}}, "TrimGroup", nullptr);
  });
}

// The group's row first, as TrimGroup takes it: appends (which move their
// senders' cursors) wait, and the count is the log as it stands. The count
// and bytes come from the index (migration 8); past the bound the oldest
// entries are read a page at a time until the rest fit.
Status PgStore::CapGroupLog(std::uint64_t group, const GroupLogBound& bound, std::uint64_t* cut,
                            std::vector<LapsedReader>* lapsed) {
  *cut = 0;
  lapsed->clear();
  if (bound.max_entries == 0 && bound.max_bytes == 0) return Status::OK();
  constexpr std::uint64_t kPage = 1024;
  Params row;
  row.Id(group);
  Params size;
  size.Id(group);
  const bool holds_locks = HeldKeyMax() >= 0;
  return WithConn([&](Conn& c) -> Status { return c.Transaction("CapGroupLog", [&]() -> Status {
    Result sized;
    if (!holds_locks) {
      Status st = c.ExecPipelined({{kLockGroupRow, &row}, {kGroupLogSize, &size}}, "CapGroupLog", &sized);
      if (!st.ok()) return st;
      NoteKeysHeld(0);
    } else {
      Result row_locked;
      Status st = c.Exec(kLockGroupRowSkip, row, "CapGroupLog: lock", &row_locked);
      if (!st.ok()) return st;
      if (row_locked.rows() == 0) return LockOrder("CapGroupLog");
      st = c.Exec(kGroupLogSize, size, "CapGroupLog", &sized);
      if (!st.ok()) return st;
    }
    std::uint64_t entries = sized.Id(0, 0);
    std::uint64_t bytes = sized.Id(0, 1);
    const auto over = [&] {
      return (bound.max_entries != 0 && entries > bound.max_entries) || (bound.max_bytes != 0 && bytes > bound.max_bytes);
    };
    while (over()) {
      Params page;
      page.Id(group);
      page.Id(*cut);
      page.Id(kPage);
      Result r;
      if (Status st = c.Exec(kGroupLogOldest, page, "CapGroupLog: entries", &r); !st.ok()) return st;
      for (int i = 0; i < r.rows() && over(); ++i) {
        *cut = r.Id(i, 0);
        --entries;
        bytes -= std::min(bytes, r.Id(i, 1));
      }
      if (static_cast<std::uint64_t>(r.rows()) < kPage) break;
    }
    if (*cut == 0) return Status::OK();
    Params move;
    move.Id(group);
    move.Id(*cut);
    Result moved;
    if (Status st = c.Exec(kCapCursors, move, "CapGroupLog: cursors", &moved); !st.ok()) return st;
    for (int i = 0; i < moved.rows(); ++i) {
      if (moved.Id(i, 1) > 0) lapsed->push_back({moved.Id(i, 0), moved.Id(i, 1)});
    }
    return Status::OK();
  }); });
}

Status PgStore::TrimDedupeKeys(std::uint64_t now_ms) {
  Params p;
  p.Id(now_ms);
  return WithConn([&](Conn& c) { return c.Exec(kTrimDedupeKeys, p, "TrimDedupeKeys", nullptr); });
}

Status PgStore::CountGroupLog(std::uint64_t group, std::uint64_t* n) {
  return WithConn([&](Conn& c) -> Status {
    Params p;
    p.Id(group);
    Result r;
    Status s = c.Exec(kCountGroupLog, p, "CountGroupLog", &r);
    if (!s.ok()) return s;
    *n = r.Id(0, 0);
    return Status::OK();
  });
}

// ---- batches: one transaction on one connection, one WAL flush at COMMIT

Status PgStore::BeginBatch() {
  if (tl_batch_store == this) return Status(Code::kIOError, "BeginBatch: a batch is already open");
  Conn* conn = nullptr;
  Status s = Acquire(&conn);
  if (!s.ok()) return s;
  s = conn->Command("BEGIN", "BeginBatch");
  if (!s.ok()) {
    Release(conn);
    return s;
  }
  tl_batch_store = this;
  tl_batch_conn = conn;
  tl_batch_max_key = -1;
  return Status::OK();
}

Status PgStore::CommitBatch() {
  if (tl_batch_store != this) return Status(Code::kIOError, "CommitBatch: no batch is open");
  Conn* conn = tl_batch_conn;
  tl_batch_store = nullptr;
  tl_batch_conn = nullptr;
  Status s = conn->Commit("CommitBatch");
  Release(conn);  // rolls back whatever a failed commit left
  return s;
}

void PgStore::RollbackBatch() {
  if (tl_batch_store != this) return;
  Conn* conn = tl_batch_conn;
  tl_batch_store = nullptr;
  tl_batch_conn = nullptr;
  Release(conn);  // Tidy() rolls the open transaction back
}

Status PgStore::BeginUnit() {
  if (tl_batch_store != this) return Status::OK();  // each call is its own transaction
  return tl_batch_conn->Command("SAVEPOINT unit", "BeginUnit");
}

void PgStore::EndUnit(bool keep) {
  if (tl_batch_store != this) return;
  Conn* c = tl_batch_conn;
  if (keep && c->Command("RELEASE SAVEPOINT unit", "EndUnit").ok()) return;
  c->Command("ROLLBACK TO SAVEPOINT unit", "EndUnit");
  c->Command("RELEASE SAVEPOINT unit", "EndUnit");
}

Status PgStore::LoadDirectory(DirectoryState* out) {
  *out = DirectoryState();
  return WithConn([&](Conn& c) -> Status {
    // One snapshot for all five reads (inside a batch, the batch's).
    const bool own = !c.InTransaction();
    return c.Transaction("LoadDirectory", [&]() -> Status {
      Status s = own ? c.Command("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", "LoadDirectory") : Status::OK();
      const Params none;
      Result r;
      if (s.ok()) {
        s = c.Query("SELECT id, name, password_hash, x25519_public, ed25519_public FROM users ORDER BY id", none,
                    "LoadDirectory: users", &r);
      }
      if (!s.ok()) return s;
      for (int i = 0; i < r.rows(); ++i) {
        UserRecord u;
        u.id = r.Id(i, 0);
        u.name = r.Bytes(i, 1);
        u.password_hash = r.Bytes(i, 2);
        u.x25519_public = r.Bytes(i, 3);
        u.ed25519_public = r.Bytes(i, 4);
        out->users.push_back(std::move(u));
      }
      s = c.Query("SELECT user_id, friend_id FROM friendships", none, "LoadDirectory: friendships", &r);
      if (!s.ok()) return s;
      for (int i = 0; i < r.rows(); ++i) out->friendships.emplace_back(r.Id(i, 0), r.Id(i, 1));
      s = c.Query("SELECT from_user, to_user FROM friend_requests ORDER BY id", none, "LoadDirectory: requests", &r);
      if (!s.ok()) return s;
      for (int i = 0; i < r.rows(); ++i) out->requests.emplace_back(r.Id(i, 0), r.Id(i, 1));
      s = c.Query("SELECT id, name, admin_id, epoch FROM chat_groups ORDER BY id", none, "LoadDirectory: groups", &r);
      if (!s.ok()) return s;
      for (int i = 0; i < r.rows(); ++i) {
        out->groups.push_back(GroupRecord{r.Id(i, 0), r.Bytes(i, 1), r.Id(i, 2), r.Id(i, 3)});
      }
      s = c.Query("SELECT group_id, user_id FROM group_members ORDER BY id", none, "LoadDirectory: members", &r);
      if (!s.ok()) return s;
      for (int i = 0; i < r.rows(); ++i) out->members.emplace_back(r.Id(i, 0), r.Id(i, 1));
      return Status::OK();
    });
  });
}

// ---- factory (declared in fastchat/store.h)

Status OpenPgStore(const std::string& conninfo, std::unique_ptr<Store>* out, std::uint32_t waiting_recount_every) {
  std::unique_ptr<PgStore> store;
  Status s = PgStore::Open(conninfo, PgStore::kDefaultPoolSize, &store);
  if (!s.ok()) return s;
  store->SetWaitingRecount(waiting_recount_every, PgStore::kDefaultFullRecheckMs);
  *out = std::move(store);
  return Status::OK();
}

}  // namespace fastchat
