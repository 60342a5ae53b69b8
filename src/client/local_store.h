// LocalStore: one user's client-side state in a SQLite file
// (<home>/<name>.fcdb).
//
// Promises:
// - Secret material (own secret keys, friend keys, group keys, and the
//   content of the history: message texts, file names and paths, notices) is
//   stored only sealed with XChaCha20-Poly1305 under a key derived from the password
//   (Argon2id, per-store random salt); each sealed value is bound to its slot
//   (associated data), so values cannot be swapped between rows. Opening with
//   a wrong password fails with kBadCredentials.
// - Nothing is cached across calls except the identity: every getter reads the
//   file, so two processes of the same user (a receiving session and a
//   one-shot command) see each other's writes. SQLite's locking (WAL,
//   busy_timeout 5 s) serialises them.
// - Only bound parameters reach SQL.
// Not thread-safe; one object per thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fastchat/crypto.h"
#include "fastchat/status.h"

struct sqlite3;

namespace fastchat::client {

struct Identity {
  std::uint64_t user_id = 0;
  std::string name;
  std::string x25519_public, x25519_secret;    // crypto_box
  std::string ed25519_public, ed25519_secret;  // crypto_sign
};

// A user whose public keys were pinned the first time we saw them.
struct Contact {
  std::uint64_t id = 0;
  std::string name;
  std::string x25519_public;
  std::string ed25519_public;
  std::int64_t first_seen_ms = 0;
};

struct LocalGroup {
  std::uint64_t id = 0;
  std::string name;
  std::uint64_t admin_id = 0;
  std::uint64_t epoch = 0;  // latest epoch known (not necessarily keyed)
  bool left = false;        // I was kicked or left
};

// An image being received chunk by chunk.
struct PartialImage {
  std::uint64_t scope = 0;  // 0: direct message; otherwise the group id
  std::uint64_t sender = 0;
  std::string msg_id;
  std::string title;
  std::uint64_t size = 0;
  std::uint32_t chunk_count = 0;
  std::uint32_t next_chunk = 0;  // index of the next chunk expected
  std::string temp_path;
};

// One entry of the history: a message, file or notice sent or received.
// Everything but `body` is stored in the clear (like contacts and groups,
// so that a conversation can be read without opening every entry); `body`
// is sealed, bound to the entry's slot and to every other field.
struct HistoryEntry {
  std::int64_t id = 0;       // set when stored: the order of storing
  bool group = false;        // the conversation: a group, or a direct one with a user
  std::uint64_t conv_id = 0;  // the group's id, or the other user's id
  std::uint64_t sender = 0;   // who sent it (this user, for outgoing entries)
  bool outgoing = false;
  std::string kind;           // "message", "image" or "notice"
  std::int64_t at_ms = 0;     // when (ms since the epoch)
  // The sender's msg_id, or another key that names the entry for good:
  // an entry with a non-empty key is stored once per (sender, key). Empty:
  // no such check.
  std::string msg_id;
  std::string body;           // the content (the client stores JSON here)
  bool intact = true;         // read back: false if `body` did not unseal
};

enum class PinResult { kNew, kMatch, kChanged };

class LocalStore {
 public:
  ~LocalStore();
  LocalStore(const LocalStore&) = delete;
  LocalStore& operator=(const LocalStore&) = delete;

  // Creates a new store at `path` (which must not exist) holding `id`,
  // sealing the secret keys under a key derived from `password`. The file
  // is made with mode 0600 and any folder made for it with 0700, whatever
  // the umask (SQLite gives the -wal and -shm files the file's mode).
  static Status Create(const std::filesystem::path& path, const Identity& id,
                       std::string_view password, crypto::PwhashCost cost,
                       std::unique_ptr<LocalStore>* out);
  // Opens an existing store; kBadCredentials (with kBadCredentialsMessage,
  // as the server says it) for a wrong password. A store
  // file (or its -wal, -shm) that others may access is made 0600 first,
  // with a warning in the log.
  static Status Open(const std::filesystem::path& path, std::string_view password,
                     std::unique_ptr<LocalStore>* out);
  // Reads the user id and name of a store without the password.
  static Status Peek(const std::filesystem::path& path, std::uint64_t* user_id, std::string* name);
  // Finds the store of `user` (a name, or all digits: an id) in `home`.
  static Status Find(const std::filesystem::path& home, const std::string& user,
                     std::filesystem::path* path);
  // "<home>/<name>.fcdb".
  static std::filesystem::path PathFor(const std::filesystem::path& home, const std::string& name);

  const Identity& identity() const { return identity_; }

  // Re-seals every secret (own keys, friend keys, group keys, history) under a key
  // derived from `new_password` with a new salt, in one transaction: after
  // it, only the new password opens the store; if it fails, only the old
  // one does. Another process still holding the old key cannot write keys
  // sealed with it any more: its PutFriendKey/PutGroupKey/AddHistory fail
  // with kBadCredentials ("changed by another process").
  Status ChangePassword(std::string_view new_password, crypto::PwhashCost cost);

  // ---- transactions (BEGIN IMMEDIATE; not nestable)
  Status Begin();
  Status Commit();
  void Rollback();

  // ---- contacts and key pinning
  // Pins c's keys if the id is new (and records its name); otherwise compares
  // with the pinned keys. *pinned gets the stored contact.
  Status Pin(const Contact& c, PinResult* result, Contact* pinned);
  Status GetContact(std::uint64_t id, Contact* c);  // kNotFound
  Status FindContactByName(const std::string& name, Contact* c);  // kNotFound

  // ---- friend keys
  Status PutFriendKey(std::uint64_t user_id, std::string_view key);
  Status GetFriendKey(std::uint64_t user_id, std::string* key);  // kNotFound
  Status DeleteFriendKey(std::uint64_t user_id);
  // The contacts holding a friend key (id and name only), by name.
  Status ListFriends(std::vector<Contact>* out);

  // ---- incoming friend requests
  Status AddFriendRequest(std::uint64_t user_id, const std::string& name);
  Status RemoveFriendRequest(std::uint64_t user_id);
  Status ListFriendRequests(std::vector<Contact>* out);

  // ---- groups
  // Inserts or updates name/admin/left; the epoch only ever grows.
  Status PutGroup(const LocalGroup& g);
  Status GetGroup(std::uint64_t id, LocalGroup* g);  // kNotFound
  Status FindGroupsByName(const std::string& name, std::vector<LocalGroup>* out);
  Status ListGroups(std::vector<LocalGroup>* out);
  Status SetGroupLeft(std::uint64_t id, bool left);
  // Stores the key of (group, epoch) unless one is there already; *key_out
  // gets the key now stored (which may be the earlier one).
  Status PutGroupKey(std::uint64_t group_id, std::uint64_t epoch, std::string_view key,
                     std::string* key_out);
  Status GetGroupKey(std::uint64_t group_id, std::uint64_t epoch, std::string* key);  // kNotFound
  // The key of the highest epoch held for the group.
  Status LatestGroupKey(std::uint64_t group_id, std::uint64_t* epoch, std::string* key);  // kNotFound

  // ---- dedupe of deliveries
  Status SeenSeq(std::uint64_t seq, bool* seen);
  Status MarkSeq(std::uint64_t seq);
  Status SeenMsg(std::uint64_t sender, std::string_view msg_id, std::uint32_t chunk, bool* seen);
  Status MarkMsg(std::uint64_t sender, std::string_view msg_id, std::uint32_t chunk);

  // ---- partially received images
  Status GetPartial(std::uint64_t scope, std::uint64_t sender, std::string_view msg_id,
                    PartialImage* p);  // kNotFound
  Status PutPartial(const PartialImage& p);
  Status DeletePartial(std::uint64_t scope, std::uint64_t sender, std::string_view msg_id);

  // ---- history
  // Stores `e` (its id is chosen here) unless an entry with the same sender
  // and non-empty msg_id is there already; *added tells which.
  Status AddHistory(const HistoryEntry& e, bool* added = nullptr);
  // The newest `limit` entries of one conversation, oldest first.
  Status History(bool group, std::uint64_t conv_id, std::size_t limit, std::vector<HistoryEntry>* out);
  // Unseals the entries of all conversations, newest first, at most `scan`
  // of them, until `max_hits` have keep(entry) true; *out gets those,
  // oldest first. *scanned: entries read; *more: older entries were left
  // unread. (The text is sealed, so it is matched here, not by SQL.)
  Status SearchHistory(std::size_t scan, std::size_t max_hits, const std::function<bool(const HistoryEntry&)>& keep,
                       std::vector<HistoryEntry>* out, std::size_t* scanned, bool* more);

  // ---- delivery receipts (direct messages this user sent)
  // Records that `recipient`'s client received message `msg_id` at
  // `delivered_ms` (its own clock); the first receipt is kept. Callers
  // record only receipts that opened with `recipient`'s friend key, so a
  // receipt is filed under the user who made it and never vouches for a
  // message sent to someone else.
  Status AddReceipt(std::uint64_t recipient, std::string_view msg_id, std::int64_t delivered_ms);
  // When `recipient` received `msg_id` (0: no receipt).
  Status DeliveredAt(std::uint64_t recipient, std::string_view msg_id, std::int64_t* delivered_ms);
  // Whether the history holds a direct message or file `msg_id` this user
  // sent to `recipient`.
  Status SentTo(std::uint64_t recipient, std::string_view msg_id, bool* sent);

 private:
  LocalStore(sqlite3* db, std::filesystem::path path);
  static Status OpenDb(const std::filesystem::path& path, bool create, sqlite3** db);
  Status Exec(const char* sql);
  Status Seal(const std::string& label, std::string_view plaintext, std::string* sealed) const;
  Status Unseal(const std::string& label, std::string_view sealed, std::string* plaintext) const;
  // Replaces e->body (sealed, as read) by its plaintext, or clears it and
  // sets e->intact = false.
  void UnsealHistory(HistoryEntry* e, const std::string& slot) const;
  Status SetMeta(const char* key, std::string_view value, bool blob);
  Status GetMeta(const char* key, std::string* value);
  // OK while the file's salt is the one this object opened it with.
  Status StillOurKey();

  sqlite3* db_;
  std::filesystem::path path_;
  std::string master_key_;
  std::string salt_;  // of master_key_
  Identity identity_;
};

}  // namespace fastchat::client
