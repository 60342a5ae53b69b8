// PgStore: the PostgreSQL implementation of Store, for several servers
// sharing one database.
//
// Promises:
//  - Same semantics and Status codes as SqliteStore (see sqlite_store.h):
//    writes naming an unknown user are kNoSuchUser, operations on a missing
//    group are kNoSuchGroup, per-user listings of an unknown user are empty,
//    output vectors are replaced, Enqueue is idempotent per
//    (recipient, dedupe_key). Database failures are kIOError carrying the
//    server's message.
//  - Thread-safe, beyond what store.h requires: any number of threads may
//    call one PgStore at once. Each call checks out one connection from a
//    pool of at most `pool_size` connections, blocking while all are busy.
//    Connections are opened when first needed.
//  - A connection that breaks (server restart, network) fails the call that
//    notices it with kIOError and is reopened by the next call that checks
//    it out. Calls are never retried behind the caller's back.
//  - Every statement is prepared once per connection and takes bound
//    parameters in binary format; no value is ever spliced into SQL text.
//  - Tables live in the connection's current schema: the first existing
//    schema on its search_path. To use a schema other than the default, name
//    it in the conninfo, e.g.
//        "host=db dbname=fastchat options='-c search_path=shard7'"
//        "postgresql://db/fastchat?options=-csearch_path%3Dshard7"
//    (or ALTER ROLE ... SET search_path). The schema must already exist;
//    if the search_path names none, Open fails with kIOError.
//  - The schema is versioned in `schema_version` and upgraded by Open in one
//    transaction holding a transaction-level advisory lock keyed on the
//    schema name, so servers starting together against one database migrate
//    it exactly once. A schema written by a newer binary is refused with
//    kIOError.
//  - User, group and friend-request ids and pending seqs come from identity
//    sequences: unique across all servers sharing the schema and never
//    reused. Group-log seqs are drawn from the pending seq sequence too (the
//    column default of group_log.seq), so one recipient's own rows and group
//    entries share one counter and FetchPending merges them in seq order.
//  - Each operation is atomic: one statement, or one implicit transaction of
//    pipelined statements for Enqueue, Ack, AckMany, AppendGroup and
//    TrimGroup.
//    CreateGroup, AddMember, RemoveMember and DeleteGroup are one statement
//    each, cursors included (a group deleted while AddMember runs yields
//    kNoSuchGroup through the foreign key).
//  - Group cursors: AddMember and CreateGroup start the member's cursor at
//    the newest seq drawn by any session (the sequence's last value, 0 if
//    none yet); re-adding a removed member restarts its cursor there.
//    RemoveMember ends the cursor at the newest seq drawn. The newest seq
//    drawn may belong to a write that has not committed yet: such an entry
//    counts as sent before the join or the removal.
//  - Enqueue stores a whole batch with one multi-row statement (arrays +
//    unnest), pipelined behind a per-recipient advisory lock in the same
//    implicit transaction: one round trip, after one more that checks every
//    recipient is a user (kNoSuchUser, nothing stored, if not: `pending`
//    has no foreign key to `users` since schema version 7, whose check
//    locked the user's row per inserted row; users are never deleted). Ack and AckMany take the same
//    locks before deleting (and keeping the keys of) the rows, so a resend
//    of an acknowledged row's key sees the kept key and never stores it
//    again, whichever servers the two run on. AppendGroup does the same with
//    the locks of `members` and of the sender (its cursor may move past the
//    entry), then inserts into the log and moves the sender's cursor in one
//    statement; only a dedupe key committed by a concurrent writer after
//    that statement's snapshot costs a second round trip to read its seq.
//    Because the locks are held from before a seq is drawn until commit, a
//    recipient's seqs (own rows and entries of the logs it reads, as long as
//    the caller names it among `members`) become visible in increasing order
//    even with several writers, so "fetch after the last seq seen" never
//    skips a row. Inside a batch (one transaction of many calls) a call
//    only waits for lock keys above every key the batch holds: one whose
//    keys (or group row) are at or below one held only tries them, and if
//    another transaction holds one it writes nothing and returns
//    kLockOrder (run it first in a new batch), so two servers' batches
//    never wait on each other in a cycle. (Advisory keys used: the two-int4 pairs
//    (hashtext('fastchat.migrate'), hashtext(schema)) and
//    (hashtext('fastchat.pending:' || schema), user id mod 2^31-1).)
//  - A group's row in chat_groups serialises its log with its membership:
//    AppendGroup locks it (FOR SHARE for a member's message, exclusively
//    for a notice, in a statement before the member locks), and AddMember,
//    RemoveMember and DeleteGroup lock it exclusively first. So an append sees every member who joined before it (their
//    streams are locked, their cursors start before the entry) and none who
//    joins after (their cursors start after it), and a member removed
//    before an append cannot add to the log (kNotMember), whichever servers
//    made the two changes.
//  - PendingItem::max_waiting(_bytes) are enforced within a slack: the
//    store counts a recipient's waiting rows and bytes (one query, for
//    every recipient of the call that is due) only once every
//    SetWaitingRecount().every capped items it stored for them, and while a
//    recipient is full (at or past a bound when last counted), refuses its
//    capped items without counting again for full_recheck_ms. Between counts items are stored, so a mailbox can
//    pass its bound by up to `every` rows per server writing to it (a
//    counter row updated by every insert and ack would be exact, at a cost
//    on every DM). Within a counted call, an item that would pass a bound is
//    Enqueued::kRefused (seq 0, nothing stored), unless its key is waiting
//    (kQueued) or was acknowledged (kDelivered), as on SqliteStore; such
//    resends add no row to the count, and a key repeated within the call
//    gets its first occurrence's answer.
//  - Text values (names, password hashes, dedupe keys) are PostgreSQL TEXT:
//    they must be valid in the database encoding and contain no NUL byte;
//    otherwise the call fails with kIOError.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "fastchat/status.h"
#include "fastchat/store.h"

namespace fastchat {

class PgStore final : public Store {
 public:
  static constexpr int kDefaultPoolSize = 4;
  // SetWaitingRecount's default full_recheck_ms (its default `every` is
  // kDefaultWaitingRecount, fastchat/store.h).
  static constexpr std::uint32_t kDefaultFullRecheckMs = 1000;

  // Connects to `conninfo` (a libpq keyword/value string or a postgresql://
  // URI; empty means "from the PG* environment variables"), brings the
  // schema up to date and returns a store with up to `pool_size` (>= 1)
  // connections.
  static Status Open(const std::string& conninfo, int pool_size, std::unique_ptr<PgStore>* out);

  PgStore(const PgStore&) = delete;
  PgStore& operator=(const PgStore&) = delete;
  // No call may be in progress.
  ~PgStore() override;

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
  Status CountPending(std::uint64_t recipient, std::uint64_t* n) override;
  Status AddSessionToken(const std::string& token_hash, std::uint64_t user, std::uint64_t expires_ms,
                         std::uint64_t now_ms) override;
  Status CheckSessionToken(const std::string& token_hash, std::uint64_t now_ms, std::uint64_t* user) override;
  Status RevokeSessionToken(const std::string& token_hash) override;
  Status SetPassword(std::uint64_t user, const std::string& password_hash) override;
  Status UpsertServer(const ServerRecord& server) override;
  Status ListServers(std::vector<ServerRecord>* out) override;

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
  Status AckMany(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& recipient_seqs) override;
  Status AckGroups(const std::vector<GroupCursorAck>& acks) override;
  // Half the pool (at least 1): batches on disjoint recipients run on that
  // many connections at once, and the other half stays for calls outside
  // the store worker's batches.
  int BatchLanes() const override { return lanes_; }

  // How often Enqueue counts a recipient's waiting rows for
  // PendingItem::max_waiting(_bytes) (see above). Defaults: every 1,000
  // capped items, and once a second while full. every = 1 and
  // full_recheck_ms = 0 count on every call (exact; for tests).
  void SetWaitingRecount(std::uint32_t every, std::uint32_t full_recheck_ms);

  // A batch is one transaction on one pooled connection, held by the thread
  // that began it (its calls use that connection; other threads' calls use
  // the rest of the pool): one WAL flush at CommitBatch for the whole batch.
  // Units are savepoints. A statement that fails inside a batch outside a
  // unit aborts the whole batch (PostgreSQL's rule), so CommitBatch then
  // fails and nothing of the batch stays.
  Status BeginBatch() override;
  Status CommitBatch() override;
  void RollbackBatch() override;
  Status BeginUnit() override;
  void EndUnit(bool keep) override;
  Status LoadDirectory(DirectoryState* out) override;

 public:
  class Conn;  // one libpq connection and its prepared statements

 private:

  PgStore(std::string conninfo, int pool_size);

  // The highest stream lock key this thread's open batch may hold, -1 if
  // none (or no batch is open); NoteKeysHeld raises it.
  std::int64_t HeldKeyMax() const;
  void NoteKeysHeld(std::int64_t max_key);

  // The stream locks of a call that writes the streams of some users
  // (lock_recipients, pipelined before the call's statement).
  struct StreamLocks {
    std::string keys;            // lock_recipients' $1: the users' keys, ascending
    std::int64_t held = -1;      // its $2: HeldKeyMax() when prepared
    std::int64_t max_key = -1;   // the highest of the keys (NoteKeysHeld after the call)
  };
  // Prepares the stream locks of `users`. In a batch that may hold a key at
  // or below one of theirs already, takes them first, in a round trip of
  // their own, without waiting for those keys: kLockOrder (nothing written)
  // if another transaction holds one.
  Status PrepareStreamLocks(const std::vector<std::uint64_t>& users, const char* context, StreamLocks* locks);
  // OK if every one of `ids` is a user; kNoSuchUser naming one that is not.
  // One round trip, reading only (no row locks).
  Status CheckUsersExist(std::vector<std::uint64_t> ids, const char* context);

  // Brings the schema in `conn`'s current schema up to date.
  static Status Migrate(Conn* conn);

  // Waits for an idle connection, (re)opening it if it is closed or broken.
  Status Acquire(Conn** out);
  // Returns `conn` to the pool, closing it if it is not cleanly idle.
  void Release(Conn* conn);
  // Runs `body` on a checked-out connection.
  template <typename Body>
  Status WithConn(Body&& body);

  // Enqueue's insert of `items`, none refused.
  Status StoreItems(const std::vector<PendingItem>& items, std::vector<std::uint64_t>* seqs,
                    std::vector<Enqueued>* how);
  // For items[at[0]], items[at[1]], ...: the seq of a waiting row with the
  // item's key, and of an acknowledged one (dedupe_keys); 0 if none.
  Status FindKeys(const std::vector<PendingItem>& items, const std::vector<std::size_t>& at, const char* context,
                  std::vector<std::uint64_t>* waiting, std::vector<std::uint64_t>* acked);
  // Which items of `items` (capped ones whose recipient is full) Enqueue
  // refuses; counts the recipients that are due first (see above).
  Status RefusedItems(const std::vector<PendingItem>& items, std::vector<bool>* refused);

  const std::string conninfo_;
  int lanes_ = 1;

  // Per recipient of capped items: stored since its last count, and what
  // that count said. Guarded by waiting_mu_ (lanes enqueue at once).
  struct Waiting {
    std::uint32_t since_count = 0;
    bool full = false;
    std::chrono::steady_clock::time_point counted;
  };
  std::mutex waiting_mu_;
  std::unordered_map<std::uint64_t, Waiting> waiting_;
  std::uint32_t recount_every_ = kDefaultWaitingRecount;
  std::chrono::milliseconds full_recheck_{kDefaultFullRecheckMs};

  std::mutex mu_;
  std::condition_variable idle_cv_;
  std::vector<std::unique_ptr<Conn>> conns_;  // all pool_size of them; fixed
  std::vector<Conn*> idle_;                   // guarded by mu_
};

}  // namespace fastchat
