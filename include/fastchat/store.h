// Store: the server's durable state (users, friendships, groups, pending
// deliveries) behind one interface.
//
// Implementations: SqliteStore (embedded default for one server,
// src/store/sqlite_store.h) and PgStore (PostgreSQL, shared by the servers of
// a cluster, src/store/pg_store.h). The interface speaks only in domain
// terms: no SQL, no connection or transaction types leak out.
//
// Threading: every method is synchronous. A SqliteStore is used by one
// thread at a time; a PgStore may be shared by threads (it pools
// connections). The server runs every call on its store thread.
//
// IDs (users, groups, pending seqs) are assigned by the database and are
// never reused. Pending seqs increase in insertion order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fastchat/status.h"

namespace fastchat {

struct UserRecord {
  std::uint64_t id = 0;
  std::string name;
  std::string password_hash;   // Argon2id string
  std::string x25519_public;   // 32 bytes
  std::string ed25519_public;  // 32 bytes
};

struct GroupRecord {
  std::uint64_t id = 0;
  std::string name;
  std::uint64_t admin_id = 0;
  std::uint64_t epoch = 1;  // key epoch; starts at 1, +1 on every removal
};

// The most one group's log may hold (Store::CapGroupLog): entries, and
// bytes of their payloads. 0: no bound of that kind.
struct GroupLogBound {
  std::uint64_t max_entries = 0;
  std::uint64_t max_bytes = 0;
};

// A reader of a group's log whose cursor Store::CapGroupLog moved past
// entries it had not acknowledged: `missed` of them were not its own.
struct LapsedReader {
  std::uint64_t user = 0;
  std::uint64_t missed = 0;
};

// One delivery waiting for its recipient's ack.
struct PendingItem {
  std::uint64_t recipient = 0;
  // Idempotency key, unique per recipient (e.g. "d/<sender>/<msgid-hex>/<chunk>").
  // Enqueueing an existing (recipient, dedupe_key) returns the existing seq,
  // also after the row was acknowledged (for kDedupeRetentionMs at least).
  std::string dedupe_key;
  std::string payload;  // serialized wire Event; opaque to the store
  // If not 0: the most rows, and the most payload bytes, the recipient may
  // have waiting (delivered or not, not yet acknowledged). An item that
  // would go past either is not stored (Enqueued::kRefused). Enforced
  // exactly by SqliteStore, and by PgStore within a slack (pg_store.h).
  std::uint32_t max_waiting = 0;
  std::uint64_t max_waiting_bytes = 0;
};

// What Enqueue did with one item.
enum class Enqueued : std::uint8_t {
  kStored,     // a new row, stored by this call
  kQueued,     // its key's row was queued already (a resend): that row and its seq stay
  kDelivered,  // its key's row was acknowledged already: nothing stored, not to be delivered again
  kRefused,    // not stored: the recipient's rows waiting would pass item.max_waiting(_bytes) (seq 0)
};

// How long a dedupe key outlives the acknowledgement of its pending row (or
// the trimming of its group-log entry): a resend with the key within this
// time is answered with the old seq and stored again never. It must exceed
// the longest a client may take to resend a request whose Ok it never saw:
// a receiving client reconnects for up to 60 s (client/reconnect.h,
// kReconnectFor) and then resends; five times that, so a dead connection
// noticed late still fits. Keys are dropped by TrimDedupeKeys once expired.
inline constexpr std::uint64_t kDedupeRetentionMs = 5 * 60 * 1000;
// When a dedupe key kept now expires: the wall clock in ms plus
// kDedupeRetentionMs.
std::uint64_t DedupeKeyExpiryMs();

// One server of a cluster, as it announces itself in the shared store.
struct ServerRecord {
  std::string id;            // the server's configured id, unique in the cluster
  std::string mesh_address;  // HOST:PORT its peers dial
  std::uint64_t heartbeat_ms = 0;  // wall-clock ms of its last announcement
};

struct PendingRow {
  std::uint64_t seq = 0;
  std::string payload;
  std::uint64_t group_id = 0;  // non-zero: an entry of this group's log (AppendGroup)
  // For an entry of a group's log: the seq of the entry before it in that
  // log when it was appended (0: none left). A reader that has every entry
  // of the group up to prev_seq misses none before this one.
  std::uint64_t prev_seq = 0;
};

// Everything but the pending deliveries: what a server keeps in memory to
// decide requests without reading the database (see server/directory.h).
struct DirectoryState {
  std::vector<UserRecord> users;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> friendships;  // each pair at least once
  std::vector<std::pair<std::uint64_t, std::uint64_t>> requests;     // (from, to), oldest first
  std::vector<GroupRecord> groups;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> members;      // (group, user), join order
};

class Store {
 public:
  virtual ~Store() = default;

  // ---- batches (group commit)
  // Between BeginBatch() and CommitBatch(), calls share one transaction and
  // CommitBatch() makes all of them durable at once (one sync to stable
  // storage for the whole batch): when it returns OK every change made since
  // BeginBatch() survives a crash or power loss; when it fails none of them
  // happened. RollbackBatch() undoes the batch. Inside a batch, BeginUnit()
  // / EndUnit(keep) bracket one request's calls so a request that fails
  // half-way is undone alone (EndUnit(false)) without losing the others.
  // Outside a batch every call is its own durable transaction.
  // Implementations that cannot batch make these no-ops that return OK and
  // keep one transaction per call. (The store worker runs no job after
  // BeginBatch fails: see server/store_worker.h.)
  virtual Status BeginBatch() = 0;
  virtual Status CommitBatch() = 0;
  virtual void RollbackBatch() = 0;
  virtual Status BeginUnit() = 0;
  virtual void EndUnit(bool keep) = 0;

  // The whole directory state (users, friendships, requests, groups, members).
  virtual Status LoadDirectory(DirectoryState* out) = 0;

  // ---- users
  // Creates a user; kNameTaken if the name exists. Sets *id.
  virtual Status CreateUser(const UserRecord& user, std::uint64_t* id) = 0;
  // kNoSuchUser if absent.
  virtual Status GetUserById(std::uint64_t id, UserRecord* out) = 0;
  virtual Status GetUserByName(const std::string& name, UserRecord* out) = 0;

  // ---- friends (friendship is symmetric)
  // Records a request from -> to (idempotent).
  virtual Status AddFriendRequest(std::uint64_t from, std::uint64_t to) = 0;
  // kNoSuchRequest if there is no request from -> to; otherwise deletes it.
  virtual Status TakeFriendRequest(std::uint64_t from, std::uint64_t to) = 0;
  // Requests waiting for `to`'s answer, oldest first (requester ids).
  virtual Status ListFriendRequestsTo(std::uint64_t to, std::vector<std::uint64_t>* from) = 0;
  virtual Status AddFriendship(std::uint64_t a, std::uint64_t b) = 0;
  virtual Status AreFriends(std::uint64_t a, std::uint64_t b, bool* yes) = 0;
  virtual Status ListFriends(std::uint64_t user, std::vector<std::uint64_t>* friends) = 0;

  // ---- groups
  // Creates a group with `admin` as admin and only member, epoch 1. Sets *id.
  virtual Status CreateGroup(const std::string& name, std::uint64_t admin, std::uint64_t* id) = 0;
  // kNoSuchGroup if absent.
  virtual Status GetGroup(std::uint64_t id, GroupRecord* out) = 0;
  // kAlreadyMember if already in.
  virtual Status AddMember(std::uint64_t group, std::uint64_t user) = 0;
  // Removes a member and bumps the epoch by one (sets *new_epoch).
  // kNotMember if not in the group.
  virtual Status RemoveMember(std::uint64_t group, std::uint64_t user, std::uint64_t* new_epoch) = 0;
  virtual Status IsMember(std::uint64_t group, std::uint64_t user, bool* yes) = 0;
  // Members in join order.
  virtual Status ListMembers(std::uint64_t group, std::vector<std::uint64_t>* members) = 0;
  // Groups `user` belongs to, by id.
  virtual Status ListGroupsOf(std::uint64_t user, std::vector<std::uint64_t>* groups) = 0;
  // Deletes a group and its memberships.
  virtual Status DeleteGroup(std::uint64_t group) = 0;

  // ---- pending deliveries
  // Stores all items atomically (one transaction); seqs[i] is item i's seq.
  // Idempotent per (recipient, dedupe_key): an item already queued keeps its
  // row and seq, and an item whose key's row was acknowledged (within
  // kDedupeRetentionMs, until TrimDedupeKeys drops the key) stores nothing
  // and yields the acknowledged row's seq. If `how` is not null, (*how)[i]
  // says which of the three happened to item i, so a resend is not
  // delivered twice; or kRefused (seq 0, nothing stored) for an item with
  // max_waiting or max_waiting_bytes whose recipient's waiting rows it
  // would pass (SqliteStore exactly; PgStore within a slack, pg_store.h).
  virtual Status Enqueue(const std::vector<PendingItem>& items, std::vector<std::uint64_t>* seqs,
                         std::vector<Enqueued>* how) = 0;
  // The most items one Enqueue call should hold for the best throughput: a
  // caller merging many requests' items into one call (StoreWorker) cuts
  // them into calls of at most this many, never splitting one request's
  // items. Unlimited unless a store says otherwise.
  virtual std::size_t MaxMergedEnqueue() const { return std::numeric_limits<std::size_t>::max(); }
  // How many batches this store can run at once, each begun, run and
  // committed by a thread of its own (1: one batch at a time). A store
  // saying more than 1 must be safe to call from that many threads at once,
  // each with its own open batch. The store worker then splits a batch of
  // nothing but enqueues and acks into that many batches by recipient
  // (server/store_worker.h).
  virtual int BatchLanes() const { return 1; }
  // Up to `limit` rows for `recipient` with seq > after_seq, in seq order:
  // the recipient's own pending rows merged with the entries of the logs of
  // the groups it has a cursor in (entries after its cursor, up to the
  // cursor's end, not its own messages; those rows carry group_id).
  virtual Status FetchPending(std::uint64_t recipient, std::uint64_t after_seq, std::size_t limit,
                              std::vector<PendingRow>* rows) = 0;
  // Deletes the named rows of `recipient` (others' rows are untouched),
  // keeping each row's dedupe key and seq for kDedupeRetentionMs.
  virtual Status Ack(std::uint64_t recipient, const std::vector<std::uint64_t>& seqs) = 0;
  // Ack for many recipients at once: deletes each (recipient, seq) row.
  // (The default calls Ack once per recipient.)
  virtual Status AckMany(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& recipient_seqs);
  // Number of rows waiting for `recipient`.
  virtual Status CountPending(std::uint64_t recipient, std::uint64_t* n) = 0;

  // ---- group logs (a group message is stored once)
  // Pending seqs and group-log seqs come from one counter, so one
  // recipient's merged stream (FetchPending) is in seq order.
  // Every member has a cursor in each of its groups: AddMember (and
  // CreateGroup, for the admin) starts it at the newest seq, so a member
  // gets what is sent after joining; RemoveMember ends it at the newest seq,
  // so a removed member still gets what was sent before, and nothing after.
  //
  // Appends one message of `sender` to `group`'s log (idempotent per
  // (group, dedupe_key): a repeat yields the existing seq with *fresh =
  // false). `members` are the group's members other than the sender (a
  // shared store serialises their streams with it). If the sender had
  // acknowledged everything before it, its own cursor moves past its message.
  // If `readers` is not null it gets who reads the entry as the store has it
  // (every current member but the sender), for routing when other servers
  // change the group too. *prev_seq (if not null) gets the seq of the
  // log's entry before it (0: none), also stored with the entry: appends to
  // one group are serialised and draw their seqs in that order, so each
  // entry names its predecessor and a reader can tell it missed one.
  // A new entry needs the group to exist (else kNoSuchGroup) and `sender`
  // to be a member as the store has it at the write (else kNotMember;
  // sender 0, a notice from no member, needs no membership): on a shared
  // store a member removed through another server cannot add to the log.
  // A repeat of an entry already stored still yields it.
  virtual Status AppendGroup(std::uint64_t group, std::uint64_t sender, const std::vector<std::uint64_t>& members,
                             const std::string& dedupe_key, const std::string& payload, std::uint64_t* seq,
                             bool* fresh, std::vector<std::uint64_t>* readers, std::uint64_t* prev_seq) = 0;
  // For each group `user` has a cursor in: (group, head), head the newest
  // seq of its log as the store has it now, or the user's cursor if that is
  // higher (every entry up to it is the user's, acknowledged or not, or
  // trimmed). Read it before a FetchPending: an entry up to a head that the
  // user reads is then in that read's rows or at or below its after_seq.
  virtual Status GroupHeads(std::uint64_t user, std::vector<std::pair<std::uint64_t, std::uint64_t>>* heads) = 0;
  // Acknowledges every entry of `group`'s log up to `seq` for `user`
  // (cumulative; a cursor never moves back).
  virtual Status AckGroup(std::uint64_t user, std::uint64_t group, std::uint64_t seq) = 0;
  // AckGroup for many (group, user, seq) at once; a cursor named more than
  // once moves to the highest. (The default calls AckGroup for each;
  // PgStore sends them in one statement.)
  struct GroupCursorAck {
    std::uint64_t group = 0;
    std::uint64_t user = 0;
    std::uint64_t seq = 0;
  };
  virtual Status AckGroups(const std::vector<GroupCursorAck>& acks);
  // Deletes the log entries of `group` that every cursor has passed
  // (keeping each entry's dedupe key and seq for kDedupeRetentionMs, so a
  // resend is not appended again), and the cursors of removed members that
  // have collected what they were owed.
  virtual Status TrimGroup(std::uint64_t group) = 0;
  // Bounds what `group`'s log holds. If its entries number more than
  // bound.max_entries, or their payloads' bytes more than bound.max_bytes,
  // *cut gets the newest seq such that the entries above it fit both, and
  // every cursor of the group below *cut (members' and removed members')
  // moves to it, so the next TrimGroup deletes the oldest entries (keeping
  // their dedupe keys) even though a reader never acknowledged them.
  // *lapsed gets each reader that missed entries of others that way, and
  // how many (as its cursor stood). Within both bounds: *cut = 0 and
  // nothing changes. On PostgreSQL it takes the group's row as TrimGroup
  // does and reads the whole log (every entry's seq and size); SqliteStore
  // counts entries and bytes in memory, so within the bound it reads
  // nothing and past it only the entries that go.
  virtual Status CapGroupLog(std::uint64_t group, const GroupLogBound& bound, std::uint64_t* cut,
                             std::vector<LapsedReader>* lapsed) = 0;
  // Drops the dedupe keys of acknowledged rows and trimmed log entries
  // whose retention ended at or before now_ms (wall-clock ms). (SqliteStore
  // drops DM keys a generation at a time: a key may stay up to
  // AckedKeys::kGenerationSpanMs, 30 s, past its retention.)
  virtual Status TrimDedupeKeys(std::uint64_t now_ms) = 0;
  // Number of entries in `group`'s log.
  virtual Status CountGroupLog(std::uint64_t group, std::uint64_t* n) = 0;

  // ---- session tokens: a login by token instead of password. Only a hash
  // of each token is kept (the token itself is 32 random bytes).
  static constexpr std::size_t kMaxTokensPerUser = 32;
  // Records a token of `user` valid until expires_ms. Drops the user's
  // tokens expired at now_ms and all but the newest kMaxTokensPerUser.
  virtual Status AddSessionToken(const std::string& token_hash, std::uint64_t user, std::uint64_t expires_ms,
                                 std::uint64_t now_ms) = 0;
  // Sets *user to the owner of the token if it exists and expires after
  // now_ms; kNotFound otherwise.
  virtual Status CheckSessionToken(const std::string& token_hash, std::uint64_t now_ms, std::uint64_t* user) = 0;
  // Forgets one token (logout). OK if it did not exist.
  virtual Status RevokeSessionToken(const std::string& token_hash) = 0;
  // Replaces the user's password hash and forgets every token of the user.
  // kNoSuchUser if there is no such user. Run it inside a unit.
  virtual Status SetPassword(std::uint64_t user, const std::string& password_hash) = 0;

  // ---- cluster membership (the seed's server table)
  // Inserts or replaces the row of server `s.id`.
  virtual Status UpsertServer(const ServerRecord& s) = 0;
  // Every server row, by id.
  virtual Status ListServers(std::vector<ServerRecord>* out) = 0;
};

// Opens (creating if needed) a SQLite store at `path` in WAL mode.
// `exclusive`: this process is the file's only user (the server): SQLite
// then takes its file lock once instead of on every transaction, and no
// other connection can open the file while the store is open.
Status OpenSqliteStore(const std::string& path, std::unique_ptr<Store>* out, bool exclusive = false);

// Opens a PostgreSQL store (libpq conninfo or URI), creating/migrating the
// schema. `waiting_recount_every`: the store counts a recipient's waiting
// rows for PendingItem::max_waiting(_bytes) once every that many capped
// items it stores for them (at least 1; 1 counts every one, exactly), so a
// mailbox may pass its bound by up to that many rows per server between
// counts (PgStore::SetWaitingRecount).
inline constexpr std::uint32_t kDefaultWaitingRecount = 1000;
Status OpenPgStore(const std::string& conninfo, std::unique_ptr<Store>* out,
                   std::uint32_t waiting_recount_every = kDefaultWaitingRecount);

}  // namespace fastchat
