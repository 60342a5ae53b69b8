// SqliteStore: the embedded implementation of Store on one SQLite file.
//
// Promises:
//  - The file is in WAL mode with synchronous=FULL (a committed transaction
//    or batch survives power loss), foreign_keys=ON and a 5 s busy timeout. (An in-memory database, path ":memory:", cannot use
//    WAL and keeps SQLite's "memory" journal instead.)
//  - secure_delete=FAST: a deleted row's content is zeroed in its page (which
//    the delete writes anyway); a page freed whole keeps its old bytes until
//    it is reused, as the WAL keeps old page images until it wraps.
//  - The schema is versioned in the `schema_version` table and upgraded by
//    Open; a file written by a newer binary is refused with kIOError.
//  - Open creates a missing database file with mode 0600 (owner only),
//    whatever the umask; SQLite gives the -wal, -shm and -journal files it
//    makes the database file's mode. An existing file keeps its mode.
//  - Every statement is prepared once, at Open, and uses bound parameters.
//  - Multi-statement operations (Enqueue, Ack, AddFriendship, CreateGroup,
//    AddMember, RemoveMember, DeleteGroup) run in one transaction: either all
//    of their effects are stored or none.
//  - Database failures come back as kIOError carrying sqlite3_errmsg text.
//  - Pending rows are in two tables (`pending`, `pending_b`): the head takes
//    every insert; the other, the old table, holds the rows at or below a
//    boundary seq. An acknowledgement deletes its rows from the old table,
//    and from the head only while the old table holds more than
//    rotation_rows() rows still pending; otherwise it leaves them in the
//    head, dead (its acked_batches row names them). Once the head has
//    rotation_rows() inserts and the old table's pending rows are at most
//    an eighth of that, or at most half the head's dead rows (and at most
//    rotation_rows()), a rotation copies them (seqs kept) into the
//    head, empties the old table in one statement that frees its pages
//    whole without visiting its rows (the pending tables have no foreign
//    key, so Enqueue looks its recipient up in users itself), and swaps
//    the two. Dead rows are never read again: at open, a row an
//    acked_batches row names is not pending, so the trim of an expired
//    acked_batches row deletes the dead rows it names first (those the
//    second rotation since has not cleared with their table): an
//    acknowledged row is gone within kDedupeRetentionMs.
//  - Each pending table has no index on disk but its rowid (the seq): the
//    store keeps each recipient's seqs and each row's dedupe key in memory
//    (PendingIndex, pending_index.h), built at Open from the table, kept in
//    step with every transaction (a rollback undoes its changes), and
//    rebuilt when another connection on the same file has committed. It
//    costs 42-51 bytes of memory per pending row (measured with 2 million
//    rows over 1,000 and 100,000 recipients).
//  - An acknowledgement that leaves its rows dead reads none of them whose
//    key and size it holds from a FetchPending lately (the newest 65,536
//    rows read, RecentRowKeys, recent_row_keys.h: 9 MiB at most); it reads
//    the others.
//
// Beyond the codes documented in store.h: operations that name a user who
// does not exist in a write (friend requests, friendships, group creation,
// AddMember, Enqueue) return kNoSuchUser; operations on a group that does not
// exist (AddMember, RemoveMember, IsMember, ListMembers, DeleteGroup) return
// kNoSuchGroup. Per-user listings of an unknown user are simply empty.
// ListFriends and ListGroupsOf return ids in ascending order.
//
// Not thread-safe: one thread at a time, as store.h requires.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "acked_keys.h"
#include "pending_index.h"
#include "recent_row_keys.h"
#include "fastchat/status.h"
#include "fastchat/store.h"

struct sqlite3;
struct sqlite3_stmt;

namespace fastchat {

class SqliteStore final : public Store {
 public:
  // Opens (creating if needed) the database at `path` and brings its schema
  // up to date.
  static Status Open(const std::string& path, std::unique_ptr<SqliteStore>* out, bool exclusive = false);

  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;
  ~SqliteStore() override;

  Status BeginBatch() override;
  Status CommitBatch() override;
  void RollbackBatch() override;
  Status BeginUnit() override;
  void EndUnit(bool keep) override;
  Status LoadDirectory(DirectoryState* out) override;

  Status CreateUser(const UserRecord& user, std::uint64_t* id) override;
  Status GetUserById(std::uint64_t id, UserRecord* out) override;
  Status GetUserByName(const std::string& name, UserRecord* out) override;

  Status AddFriendRequest(std::uint64_t from, std::uint64_t to) override;
  Status TakeFriendRequest(std::uint64_t from, std::uint64_t to) override;
  Status ListFriendRequestsTo(std::uint64_t to, std::vector<std::uint64_t>* from) override;
  Status AddFriendship(std::uint64_t a, std::uint64_t b) override;
  Status AreFriends(std::uint64_t a, std::uint64_t b, bool* yes) override;
  Status ListFriends(std::uint64_t user, std::vector<std::uint64_t>* friends) override;

  Status CreateGroup(const std::string& name, std::uint64_t admin, std::uint64_t* id) override;
  Status GetGroup(std::uint64_t id, GroupRecord* out) override;
  Status AddMember(std::uint64_t group, std::uint64_t user) override;
  Status RemoveMember(std::uint64_t group, std::uint64_t user, std::uint64_t* new_epoch) override;
  Status IsMember(std::uint64_t group, std::uint64_t user, bool* yes) override;
  Status ListMembers(std::uint64_t group, std::vector<std::uint64_t>* members) override;
  Status ListGroupsOf(std::uint64_t user, std::vector<std::uint64_t>* groups) override;
  Status DeleteGroup(std::uint64_t group) override;

  Status Enqueue(const std::vector<PendingItem>& items, std::vector<std::uint64_t>* seqs,
                 std::vector<Enqueued>* how) override;
  Status FetchPending(std::uint64_t recipient, std::uint64_t after_seq, std::size_t limit,
                      std::vector<PendingRow>* rows) override;
  Status Ack(std::uint64_t recipient, const std::vector<std::uint64_t>& seqs) override;
  Status AckMany(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& recipient_seqs) override;
  // 256: an Enqueue call is one savepoint, and every insert inside it walks
  // the savepoint's in-memory journal from its start when the statement
  // ends, so a call costs the square of its size (4,096 merged DMs per call
  // made the whole server 0.7x as fast; docs/performance.md).
  std::size_t MaxMergedEnqueue() const override { return 256; }
  Status CountPending(std::uint64_t recipient, std::uint64_t* n) override;
  // Keys per acked_batches row: a resend whose key's hash names a row
  // reads and scans at most this many records (~15 KB for DM keys).
  static constexpr std::size_t kMaxKeysPerRow = 256;
  Status AppendGroup(std::uint64_t group, std::uint64_t sender, const std::vector<std::uint64_t>& members,
                     const std::string& dedupe_key, const std::string& payload, std::uint64_t* seq,
                     bool* fresh, std::vector<std::uint64_t>* readers, std::uint64_t* prev_seq) override;
  Status GroupHeads(std::uint64_t user, std::vector<std::pair<std::uint64_t, std::uint64_t>>* heads) override;
  Status AckGroup(std::uint64_t user, std::uint64_t group, std::uint64_t seq) override;
  Status TrimGroup(std::uint64_t group) override;
  Status CapGroupLog(std::uint64_t group, const GroupLogBound& bound, std::uint64_t* cut,
                     std::vector<LapsedReader>* lapsed) override;
  Status TrimDedupeKeys(std::uint64_t now_ms) override;
  Status CountGroupLog(std::uint64_t group, std::uint64_t* n) override;
  Status AddSessionToken(const std::string& token_hash, std::uint64_t user, std::uint64_t expires_ms,
                         std::uint64_t now_ms) override;
  Status CheckSessionToken(const std::string& token_hash, std::uint64_t now_ms, std::uint64_t* user) override;
  Status RevokeSessionToken(const std::string& token_hash) override;
  Status SetPassword(std::uint64_t user, const std::string& password_hash) override;
  Status UpsertServer(const ServerRecord& s) override;
  Status ListServers(std::vector<ServerRecord>* out) override;

  // Inserts into the head between rotations (default 65,536); for tests.
  std::uint64_t rotation_rows() const { return rotation_rows_; }
  void set_rotation_rows(std::uint64_t n) { rotation_rows_ = n; }
  // How many rows' keys the store holds for their acknowledgement; for tests.
  std::size_t recent_row_keys() const { return recent_.size(); }

  // The prepared statements, one per SQL text (see kSql in sqlite_store.cc).
  enum Sql : int {
    kBegin,
    kCommit,
    kRollback,
    kSavepoint,
    kRelease,
    kRollbackTo,
    kInsertUser,
    kUserById,
    kUserByName,
    kInsertFriendRequest,
    kDeleteFriendRequest,
    kFriendRequestsTo,
    kInsertFriendship,
    kFriendshipExists,
    kFriendsOf,
    kInsertGroup,
    kGroupById,
    kInsertMember,
    kDeleteMember,
    kBumpEpoch,
    kMemberExists,
    kMembersOf,
    kGroupsOf,
    kDeleteMembersOf,
    kDeleteGroup,
    kInsertPending,
    kPendingHasKey,
    kAckedBatch,
    kFetchGroupRows,
    kDeletePending,
    kPendingPayloads,
    kPendingRows,
    kInsertAckedBatch,
    kAckedBatches,
    kLastAckedKey,
    kTrimAckedKeys,
    kDataVersion,
    kInsertGroupLog,
    kAdvanceSender,
    kGroupLogHasKey,
    kStartCursor,
    kEndCursor,
    kAckGroup,
    kTrimCursors,
    kTrimmedGroupKeys,
    kTrimLog,
    kDeleteKeptGroupKeys,
    kDeleteCursorsOf,
    kDeleteLogOf,
    kGroupReaders,
    kCountGroupLog,
    kGroupLogSizes,
    kLapsedReaders,
    kMoveLaggingCursors,
    kGroupHeads,
    kLastSeq,
    kReserveSeqs,
    kUpsertServer,
    kListServers,
    kInsertToken,
    kPruneTokens,
    kCheckToken,
    kRevokeToken,
    kRevokeUserTokens,
    kSetPassword,
    kInsertPendingB,
    kPendingHasKeyB,
    kDeletePendingB,
    kPendingPayloadsB,
    kPendingRowsB,
    kAckedRowKeys,
    kAckedRowKeysB,
    kCopyToPending,
    kCopyToPendingB,
    kClearPending,
    kClearPendingB,
    kLayout,
    kSetLayout,
    kUserExists,
    kInsertKeptGroupKeys,
    kKeptGroupKeysRow,
    kKeptGroupKeysAll,
    kGroupLogKeysAll,
    kGroupLogKeysOf,
    kNumSql,
  };

 private:
  explicit SqliteStore(sqlite3* db);

  // Sets the connection pragmas, migrates the schema, prepares statements.
  Status Init(bool exclusive);
  Status Migrate();

  // Runs `body` inside a savepoint (its own transaction outside a batch, a
  // nested one inside); undoes it if `body` fails.
  Status InTransaction(const std::function<Status()>& body);
  // Undoes back to the innermost savepoint and drops it.
  void RollbackSavepoint();
  // Runs a statement that returns no rows (BEGIN, COMMIT, ...).
  Status Run(Sql sql, const char* context);
  // OK if the group exists, kNoSuchGroup if not.
  Status CheckGroup(std::uint64_t group, const char* context);
  Status InsertMember(std::uint64_t group, std::uint64_t user, const char* context);
  // Starts (or restarts) `user`'s cursor in `group` at the newest seq.
  Status StartCursor(std::uint64_t group, std::uint64_t user, const char* context);
  // Makes sure next_seq_ + 1 is covered by the durable reservation: if not,
  // writes seq_reservation = next_seq_ + kSeqReserve in the current
  // transaction. Every committed seq is then at or below the committed
  // reservation, so seqs never repeat after a restart (they jump ahead by
  // at most kSeqReserve instead).
  Status ReserveSeq();
  Status EnqueueOne(const PendingItem& item, std::uint64_t* seq, Enqueued* how);
  // Looks for item's key (whose DedupeKeyHash is `hash`) among the
  // acknowledged rows' (acked_, confirmed against the acked_batches row it
  // names): *found, and its row's seq.
  Status FindAckedKey(const PendingItem& item, std::uint64_t hash, std::uint64_t* seq, bool* found);
  // Looks for item's key (hash as above) among the pending rows (pending_,
  // confirmed against the row): *found, and its seq.
  Status FindPendingKey(const PendingItem& item, std::uint64_t hash, std::uint64_t* seq, bool* found);
  // Looks for a group log entry of `group` with key `key` (DedupeKeyHash
  // `hash`) among the log's entries (group_keys_, confirmed against the
  // row) and the entries trimmed lately (group_kept_, confirmed against the
  // group_kept_keys row): *found, and its seq.
  Status FindGroupKey(std::uint64_t group, const std::string& key, std::uint64_t hash, std::uint64_t* seq,
                      bool* found);
  // group_keys_ follows the transaction as pending_ does (IndexAdd).
  // `bytes`: the entry's payload size (PendingIndex::BytesOf per group, for
  // CapGroupLog).
  void GroupIndexAdd(std::uint64_t group, std::uint64_t seq, std::uint64_t hash, std::uint64_t bytes);
  void GroupIndexRemove(std::uint64_t group, std::uint64_t seq, std::uint64_t hash, std::uint64_t bytes);
  struct GroupEntryKey {
    std::uint64_t seq;
    std::uint64_t hash;   // of the group and its dedupe key
    std::uint64_t bytes;  // its payload's
  };
  // Rebuilds group_keys_ from group_log and group_kept_ from group_kept_keys.
  Status LoadGroupIndexes();
  // Rebuilds acked_ from acked_batches, pending_ from the pending tables
  // (rows acked_batches names are dead) and the layout; then the group
  // indexes (LoadGroupIndexes).
  Status LoadIndexes();
  // Statement `sql` (one of the pending table's) on table `t` (0: pending,
  // 1: pending_b).
  static Sql OnTable(Sql sql, int t);
  // How many of `sorted` (ascending seqs) are at or below the boundary, in
  // the old table; the rest are in the head.
  std::size_t InOld(std::span<const std::uint64_t> sorted) const {
    return static_cast<std::size_t>(std::upper_bound(sorted.begin(), sorted.end(), layout_.boundary) - sorted.begin());
  }
  // The table row `seq` is in.
  int TableOf(std::uint64_t seq) const { return seq > layout_.boundary ? layout_.head : 1 - layout_.head; }
  // Whether an acknowledgement leaves its head rows there, dead: while a
  // rotation may still copy the old table's pending rows (at most
  // rotation_rows() of them), so the dead rows go with their table.
  bool MayLeaveDead() const { return layout_.old_live <= rotation_rows_; }
  // The head's rows left there, dead (its rows less its pending ones).
  std::uint64_t HeadDead() const {
    const std::uint64_t live = pending_.size() - layout_.old_live;
    return layout_.head_inserts > live ? layout_.head_inserts - live : 0;
  }
  // Whether a rotation is due: the head has had rotation_rows() inserts,
  // and the old table's pending rows, which it copies, are few: at most an
  // eighth of those, or at most half the head's dead rows (which the
  // rotation after it clears whole) and at most rotation_rows().
  bool RotationDue() const {
    if (layout_.head_inserts < rotation_rows_) return false;
    return layout_.old_live <= rotation_rows_ / 8 || (MayLeaveDead() && 2 * layout_.old_live <= HeadDead());
  }
  // Rotates (see the promises above) if it is time; journalled.
  Status MaybeRotate();
  // Rebuilds acked_ and pending_ (and moves next_acked_id_ up) if another
  // connection committed since they were built (never for an exclusive
  // store). Called inside the transaction that then reads or writes
  // acked_batches or pending, or before a read.
  Status SyncIndexes();
  Status DataVersion(std::uint64_t* v);
  // Deletes the named pending rows (one savepoint) and keeps their dedupe
  // keys for kDedupeRetentionMs in acked_batches rows of at most
  // kMaxKeysPerRow keys (ids from next_acked_id_ + 1 on, noted in acked_);
  // takes them out of pending_.
  Status AckRows(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& recipient_seqs, const char* context);
  // Adds the keys of acked_batches' rows from id `from_id` on to acked_,
  // and the seqs they name, with their row's id, to *acked_seqs for the
  // rows above layout_.safe_batch (those that may name dead rows).
  // (If a transaction that added a row is rolled back, acked_ names a row
  // that is not there, which FindAckedKey passes over: ids are never used
  // twice by one store.)
  Status IndexAckedKeys(std::uint64_t from_id, std::unordered_map<std::uint64_t, std::uint64_t>* acked_seqs);

  // pending_ follows the transaction: each change made inside one is
  // journalled, a savepoint marks the journal, and a rollback undoes the
  // changes back to its mark (all of them if SQLite dropped the whole
  // transaction); a commit forgets the journal.
  void IndexAdd(std::uint64_t recipient, std::uint64_t seq, std::uint64_t hash, std::uint64_t bytes);
  // False (and nothing journalled) if pending_ did not have the row.
  bool IndexRemove(std::uint64_t recipient, std::uint64_t seq, std::uint64_t hash, std::uint64_t bytes);
  void MarkSavepoint() { marks_.push_back(journal_.size()); }
  // The innermost savepoint was released (its changes now belong to the
  // one around it, or are committed).
  void ReleaseMark();
  // Undoes the changes since the innermost mark and drops it.
  void UndoToMark();
  // Undoes every change of the open transaction.
  void UndoAll();
  // Column 0 of the one row of `sql` with ?1 = `key` (a COUNT).
  Status Count(Sql sql, std::uint64_t key, const char* context, std::uint64_t* n);
  // Runs each of `sqls` (no result rows) with ?1 = `key`.
  Status RunEach(std::initializer_list<Sql> sqls, std::uint64_t key, const char* context);
  // Collects column 0 of every row of `sql` with ?1 = `key`.
  Status ListIds(Sql sql, std::uint64_t key, const char* context, std::vector<std::uint64_t>* ids);

  // kIOError "<context>: <sqlite3_errmsg>".
  Status IOError(const char* context) const;

  sqlite3* db_;
  std::array<sqlite3_stmt*, kNumSql> stmts_{};
  bool in_batch_ = false;
  // The newest seq drawn (pending and group logs share it). A rolled-back
  // write leaves a gap; seqs only grow.
  std::uint64_t next_seq_ = 0;
  // Seqs up to here are reserved durably (seq_reservation); 0 after any
  // rollback, which may have undone the last reservation.
  std::uint64_t reserved_seq_ = 0;
  static constexpr std::uint64_t kSeqReserve = 1'000'000;
  // Which acked_batches row holds the dedupe key of each row acknowledged lately.
  AckedKeys acked_;
  std::vector<std::uint64_t> candidates_;    // FindAckedKey's and FindPendingKey's, reused
  // A row an acknowledgement takes (AckRows'; reused).
  struct AckedRow {
    std::uint64_t recipient;
    std::uint64_t seq;
    std::uint64_t hash;   // of its dedupe key
    std::uint64_t bytes;  // its payload's
  };
  std::vector<AckedRow> acked_rows_;
  std::string acked_keys_;                   // AckRows' records, reused
  std::vector<std::size_t> acked_ends_;      // AckRows', reused
  std::vector<std::uint64_t> held_seqs_;     // AckRows', reused
  std::vector<std::uint64_t> unread_seqs_;   // AckRows', reused

  std::uint64_t next_acked_id_ = 0;  // the newest acked_batches id used; only grows
  // Where each recipient's pending rows are, and each row's key.
  PendingIndex pending_;
  // The group log's entries by group (as "recipient") and by the hash of
  // (group, dedupe key): group_log has no index on its keys on disk
  // (migration 12). Journalled like pending_ (IndexChange::group).
  PendingIndex group_keys_;
  // Which group_kept_keys row holds the key of each entry trimmed lately.
  AckedKeys group_kept_;
  std::uint64_t next_kept_id_ = 0;  // the newest group_kept_keys id used; only grows
  // The keys and sizes of the rows FetchPending read lately, so AckRows
  // need not read them again.
  RecentRowKeys recent_;
  struct IndexChange {
    bool added;  // (false with rotated: a rotation, undone from rotations_)
    std::uint64_t recipient;
    std::uint64_t seq;
    std::uint64_t hash;
    std::uint64_t bytes;
    bool rotated = false;
    bool group = false;  // a change of group_keys_ (recipient: the group), not of pending_
  };
  // The pending tables' layout (migration 10 in sqlite_store.cc).
  struct Layout {
    int head = 0;                     // the table inserts go to
    std::uint64_t boundary = 0;       // rows at or below it are in the other
    std::uint64_t safe_batch = 0;     // acked_batches ids up to here name no dead row
    std::uint64_t last_batch = 0;     // the newest acked_batches id at the latest rotation
    std::uint64_t old_live = 0;       // pending rows in the old table
    std::uint64_t head_inserts = 0;   // rows put in the head since the rotation (its rows)
  };
  Layout layout_;
  std::vector<Layout> rotations_;  // the layouts before the open transaction's rotations
  // acked_batches ids that may name dead rows (those at or below
  // layout_.safe_batch no longer do), ascending.
  std::vector<std::uint64_t> pinned_;
  std::uint64_t rotation_rows_ = 65536;
  std::vector<IndexChange> journal_;  // pending_'s changes in the open transaction
  std::vector<std::size_t> marks_;    // journal_'s size at each open savepoint
  std::vector<std::uint64_t> pending_seqs_;  // FetchPending's, reused
  bool exclusive_ = false;
  std::uint64_t data_version_ = 0;  // PRAGMA data_version when acked_ and pending_ were built
};

}  // namespace fastchat
