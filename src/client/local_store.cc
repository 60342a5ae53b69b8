#include "local_store.h"

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

#include <sqlite3.h>
#include <spdlog/spdlog.h>

#include "common/private_files.h"

namespace fastchat::client {

namespace {

constexpr int kSchemaVersion = 1;

const char* const kSchema = R"sql(
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS contacts(
  id INTEGER PRIMARY KEY, name TEXT NOT NULL, x25519 BLOB NOT NULL,
  ed25519 BLOB NOT NULL, first_seen INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS contacts_by_name ON contacts(name);
CREATE TABLE IF NOT EXISTS friend_keys(
  user_id INTEGER PRIMARY KEY, sealed BLOB NOT NULL, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS friend_requests(
  user_id INTEGER PRIMARY KEY, name TEXT NOT NULL, received INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chat_groups(
  id INTEGER PRIMARY KEY, name TEXT NOT NULL, admin_id INTEGER NOT NULL,
  epoch INTEGER NOT NULL, has_left INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS group_keys(
  group_id INTEGER NOT NULL, epoch INTEGER NOT NULL, sealed BLOB NOT NULL,
  PRIMARY KEY(group_id, epoch));
CREATE TABLE IF NOT EXISTS seen_seqs(seq INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS seen_msgs(
  sender INTEGER NOT NULL, msg_id BLOB NOT NULL, chunk INTEGER NOT NULL,
  PRIMARY KEY(sender, msg_id, chunk));
CREATE TABLE IF NOT EXISTS partial_images(
  scope INTEGER NOT NULL, sender INTEGER NOT NULL, msg_id BLOB NOT NULL,
  title TEXT NOT NULL, size INTEGER NOT NULL, chunk_count INTEGER NOT NULL,
  next_chunk INTEGER NOT NULL, temp_path TEXT NOT NULL, started INTEGER NOT NULL,
  PRIMARY KEY(scope, sender, msg_id));
CREATE TABLE IF NOT EXISTS history(
  id INTEGER PRIMARY KEY, slot BLOB NOT NULL UNIQUE, conv_group INTEGER NOT NULL,
  conv_id INTEGER NOT NULL, sender INTEGER NOT NULL, outgoing INTEGER NOT NULL,
  kind TEXT NOT NULL, at INTEGER NOT NULL, msg_id BLOB NOT NULL, sealed BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS history_by_conversation ON history(conv_group, conv_id, id);
CREATE UNIQUE INDEX IF NOT EXISTS history_once ON history(sender, msg_id) WHERE length(msg_id) > 0;
CREATE TABLE IF NOT EXISTS receipts(
  recipient INTEGER NOT NULL, msg_id BLOB NOT NULL, delivered INTEGER NOT NULL,
  PRIMARY KEY(recipient, msg_id));
)sql";

std::int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Status DbError(sqlite3* db, const std::string& what) {
  return Status(Code::kIOError, "local store: " + what + ": " + sqlite3_errmsg(db));
}

// A prepared statement with bound parameters (1-based, in call order).
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Stmt& Int(std::int64_t v) {
    if (rc_ == SQLITE_OK) rc_ = sqlite3_bind_int64(stmt_, ++idx_, v);
    return *this;
  }
  Stmt& U64(std::uint64_t v) { return Int(static_cast<std::int64_t>(v)); }
  Stmt& Text(std::string_view v) {
    if (rc_ == SQLITE_OK)
      rc_ = sqlite3_bind_text(stmt_, ++idx_, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Blob(std::string_view v) {
    if (rc_ == SQLITE_OK)
      rc_ = sqlite3_bind_blob(stmt_, ++idx_, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }

  // Steps once: *row = true if a row is available.
  Status Step(bool* row) {
    *row = false;
    if (rc_ != SQLITE_OK) return DbError(db_, "prepare/bind");
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) {
      *row = true;
      return Status::OK();
    }
    if (rc == SQLITE_DONE) return Status::OK();
    return DbError(db_, "step");
  }
  Status Run() {
    bool row;
    return Step(&row);
  }
  // Steps through every row, appending read(*this) for each to *out.
  template <typename T, typename Read>
  Status ReadAll(std::vector<T>* out, Read read) {
    for (;;) {
      bool row;
      Status s = Step(&row);
      if (!s.ok()) return s;
      if (!row) return Status::OK();
      out->push_back(read(*this));
    }
  }

  std::int64_t ColInt(int i) { return sqlite3_column_int64(stmt_, i); }
  std::uint64_t ColU64(int i) { return static_cast<std::uint64_t>(ColInt(i)); }
  std::string ColStr(int i) {
    const void* p = sqlite3_column_blob(stmt_, i);
    int n = sqlite3_column_bytes(stmt_, i);
    if (p == nullptr || n <= 0) return std::string();
    return std::string(static_cast<const char*>(p), static_cast<std::size_t>(n));
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
  int idx_ = 0;
};

bool AllDecimal(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

std::string FriendLabel(std::uint64_t id) { return "friend/" + std::to_string(id); }
std::string GroupLabel(std::uint64_t gid, std::uint64_t epoch) {
  return "group/" + std::to_string(gid) + "/" + std::to_string(epoch);
}

// A history entry's sealed body is bound to its slot (a random id of the
// row) and to every field stored beside it.
std::string HistoryLabel(const std::string& slot, const HistoryEntry& e) {
  return "history/" + crypto::Hex(slot) + "/" + (e.group ? "group/" : "user/") + std::to_string(e.conv_id) + "/" +
         std::to_string(e.sender) + "/" + (e.outgoing ? "out/" : "in/") + e.kind + "/" + std::to_string(e.at_ms) +
         "/" + crypto::Hex(e.msg_id);
}

constexpr const char* kHistoryColumns = "id, slot, conv_group, conv_id, sender, outgoing, kind, at, msg_id, sealed";

// One row of kHistoryColumns; *slot gets the slot, e->body the sealed body.
HistoryEntry ReadHistoryRow(Stmt& r, std::string* slot) {
  HistoryEntry e;
  e.id = r.ColInt(0);
  *slot = r.ColStr(1);
  e.group = r.ColInt(2) != 0;
  e.conv_id = r.ColU64(3);
  e.sender = r.ColU64(4);
  e.outgoing = r.ColInt(5) != 0;
  e.kind = r.ColStr(6);
  e.at_ms = r.ColInt(7);
  e.msg_id = r.ColStr(8);
  e.body = r.ColStr(9);
  return e;
}

// Best effort: overwrites key material before its memory is freed.
void Wipe(std::string* s) {
  volatile char* p = s->data();
  for (std::size_t i = 0; i < s->size(); ++i) p[i] = 0;
}

}  // namespace

LocalStore::LocalStore(sqlite3* db, std::filesystem::path path) : db_(db), path_(std::move(path)) {}

LocalStore::~LocalStore() {
  // Best effort: wipe key material from memory.
  for (std::string* s : {&master_key_, &identity_.x25519_secret, &identity_.ed25519_secret}) Wipe(s);
  sqlite3_close(db_);
}

std::filesystem::path LocalStore::PathFor(const std::filesystem::path& home, const std::string& name) {
  return home / (name + ".fcdb");
}

namespace {
constexpr std::uint64_t kMaxKdfOps = 4;             // crypto_pwhash_OPSLIMIT_SENSITIVE
constexpr std::size_t kMaxKdfMem = std::size_t{1} << 30;  // crypto_pwhash_MEMLIMIT_SENSITIVE
}  // namespace

Status LocalStore::OpenDb(const std::filesystem::path& path, bool create, sqlite3** db) {
  *db = nullptr;
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
  if (create) flags |= SQLITE_OPEN_CREATE;
  int rc = sqlite3_open_v2(path.c_str(), db, flags, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = *db ? sqlite3_errmsg(*db) : "out of memory";
    sqlite3_close(*db);
    *db = nullptr;
    return Status(Code::kIOError, "cannot open local store " + path.string() + ": " + msg);
  }
  sqlite3_busy_timeout(*db, 5000);
  char* err = nullptr;
  rc = sqlite3_exec(*db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err ? err : "?";
    sqlite3_free(err);
    sqlite3_close(*db);
    *db = nullptr;
    return Status(Code::kIOError, "local store " + path.string() + ": " + msg);
  }
  return Status::OK();
}

Status LocalStore::Exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "?";
    sqlite3_free(err);
    return Status(Code::kIOError, std::string("local store: ") + msg);
  }
  return Status::OK();
}

Status LocalStore::Seal(const std::string& label, std::string_view plaintext,
                        std::string* sealed) const {
  std::string nonce, ct;
  Status s = crypto::AeadEncrypt(plaintext, "fastchat-local-v1/" + label, master_key_, &nonce, &ct);
  if (!s.ok()) return s;
  *sealed = nonce + ct;
  return Status::OK();
}

Status LocalStore::Unseal(const std::string& label, std::string_view sealed,
                          std::string* plaintext) const {
  if (sealed.size() < crypto::kAeadNonceBytes + crypto::kAeadTagBytes)
    return Status(Code::kCorruption, "local store: sealed value too short (" + label + ")");
  Status s = crypto::AeadDecrypt(sealed.substr(crypto::kAeadNonceBytes),
                                 "fastchat-local-v1/" + label,
                                 sealed.substr(0, crypto::kAeadNonceBytes), master_key_, plaintext);
  if (!s.ok()) return Status(Code::kCorruption, "local store: cannot unseal " + label);
  return Status::OK();
}

Status LocalStore::SetMeta(const char* key, std::string_view value, bool blob) {
  Stmt st(db_, "INSERT OR REPLACE INTO meta(k, v) VALUES(?, ?)");
  st.Text(key);
  if (blob)
    st.Blob(value);
  else
    st.Text(value);
  return st.Run();
}

Status LocalStore::GetMeta(const char* key, std::string* value) {
  Stmt st(db_, "SELECT v FROM meta WHERE k = ?");
  st.Text(key);
  bool row;
  Status s = st.Step(&row);
  if (!s.ok()) return s;
  if (!row) return Status(Code::kCorruption, std::string("local store: missing ") + key);
  *value = st.ColStr(0);
  return Status::OK();
}

Status LocalStore::Create(const std::filesystem::path& path, const Identity& id,
                          std::string_view password, crypto::PwhashCost cost,
                          std::unique_ptr<LocalStore>* out) {
  // A new home (and any folder made for it) holds key stores: owner-only.
  Status s = MakePrivateDirs(path.parent_path().string());
  if (!s.ok()) return s;
  // Create the file ourselves: exclusively, owner-only (SQLite gives the
  // -wal/-shm files the same mode).
  bool created = false;
  s = CreatePrivateFile(path.string(), &created);
  if (!s.ok()) return s;
  if (!created) return Status(Code::kNameTaken, "local store " + path.string() + " already exists");

  sqlite3* db;
  s = OpenDb(path, false, &db);
  if (!s.ok()) return s;
  std::unique_ptr<LocalStore> store(new LocalStore(db, path));
  s = store->Exec(kSchema);
  if (!s.ok()) return s;

  std::string salt = crypto::RandomBytes(crypto::kSaltBytes);
  s = crypto::DeriveKey(password, salt, cost, &store->master_key_);
  if (!s.ok()) return s;
  std::string sealed_x, sealed_ed;
  s = store->Seal("identity/x25519", id.x25519_secret, &sealed_x);
  if (!s.ok()) return s;
  s = store->Seal("identity/ed25519", id.ed25519_secret, &sealed_ed);
  if (!s.ok()) return s;

  s = store->Begin();
  if (!s.ok()) return s;
  auto set = [&](const char* k, std::string_view v, bool blob) {
    if (s.ok()) s = store->SetMeta(k, v, blob);
  };
  set("schema_version", std::to_string(kSchemaVersion), false);
  set("user_id", std::to_string(id.user_id), false);
  set("name", id.name, false);
  set("salt", salt, true);
  set("kdf_ops", std::to_string(cost.opslimit), false);
  set("kdf_mem", std::to_string(cost.memlimit), false);
  set("x25519_public", id.x25519_public, true);
  set("ed25519_public", id.ed25519_public, true);
  set("x25519_secret", sealed_x, true);
  set("ed25519_secret", sealed_ed, true);
  if (!s.ok()) {
    store->Rollback();
    return s;
  }
  s = store->Commit();
  if (!s.ok()) return s;
  store->identity_ = id;
  store->salt_ = salt;
  *out = std::move(store);
  return Status::OK();
}

Status LocalStore::Open(const std::filesystem::path& path, std::string_view password,
                        std::unique_ptr<LocalStore>* out) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    return Status(Code::kNotFound, "no local store " + path.string());
  // It holds the user's keys: a store others may read (made by hand, or
  // copied in) becomes owner-only.
  Status s = MakeDatabaseOwnerOnly(path.string(), [](const std::string& line) { spdlog::warn("{}", line); });
  if (!s.ok()) return s;
  sqlite3* db;
  s = OpenDb(path, false, &db);
  if (!s.ok()) return s;
  std::unique_ptr<LocalStore> store(new LocalStore(db, path));
  s = store->Exec(kSchema);  // idempotent; adds tables of newer versions
  if (!s.ok()) return s;

  std::string uid, salt, ops, mem, sealed_x, sealed_ed;
  Identity& id = store->identity_;
  for (auto [k, v] : {std::pair<const char*, std::string*>{"user_id", &uid},
                      {"name", &id.name},
                      {"salt", &salt},
                      {"kdf_ops", &ops},
                      {"kdf_mem", &mem},
                      {"x25519_public", &id.x25519_public},
                      {"ed25519_public", &id.ed25519_public},
                      {"x25519_secret", &sealed_x},
                      {"ed25519_secret", &sealed_ed}}) {
    s = store->GetMeta(k, v);
    if (!s.ok()) return s;
  }
  crypto::PwhashCost cost{};
  try {
    id.user_id = std::stoull(uid);
    cost.opslimit = std::stoull(ops);
    cost.memlimit = static_cast<std::size_t>(std::stoull(mem));
  } catch (const std::exception&) {
    return Status(Code::kCorruption, "local store: bad meta values");
  }
  // The cost is read before the password is checked, so anyone who can write
  // the file sets it: only costs from Min to libsodium's "sensitive" (4
  // passes, 1 GiB; the client makes at most "moderate") are run, not hours
  // of hashing or terabytes of memory.
  const crypto::PwhashCost min = crypto::PwhashCost::Min();
  if (cost.opslimit < min.opslimit || cost.opslimit > kMaxKdfOps || cost.memlimit < min.memlimit ||
      cost.memlimit > kMaxKdfMem) {
    return Status(Code::kCorruption, "local store: key derivation cost out of range");
  }
  s = crypto::DeriveKey(password, salt, cost, &store->master_key_);
  if (!s.ok()) return s;
  s = store->Unseal("identity/x25519", sealed_x, &id.x25519_secret);
  if (!s.ok()) {
    spdlog::info("the password does not open the local store {}", path.string());
    return Status(Code::kBadCredentials, kBadCredentialsMessage);
  }
  s = store->Unseal("identity/ed25519", sealed_ed, &id.ed25519_secret);
  if (!s.ok()) return s;
  store->salt_ = salt;
  *out = std::move(store);
  return Status::OK();
}

Status LocalStore::StillOurKey() {
  std::string salt;
  Status s = GetMeta("salt", &salt);
  if (!s.ok()) return s;
  if (salt != salt_) {
    return Status(Code::kBadCredentials,
                  "the local store's password was changed by another process: start this client again");
  }
  return Status::OK();
}

Status LocalStore::ChangePassword(std::string_view new_password, crypto::PwhashCost cost) {
  std::string salt = crypto::RandomBytes(crypto::kSaltBytes);
  std::string new_key;
  Status s = crypto::DeriveKey(new_password, salt, cost, &new_key);
  if (!s.ok()) return s;
  // One write transaction (BEGIN IMMEDIATE): no other process writes a key
  // sealed the old way in between, and a crash leaves the old password.
  s = Begin();
  if (!s.ok()) return s;
  s = StillOurKey();
  struct Sealed {
    std::string table;  // friend_keys, group_keys or history
    std::uint64_t a = 0, b = 0;
    std::string label, value;
  };
  std::vector<Sealed> rows;
  if (s.ok()) {
    Stmt st(db_, "SELECT user_id, sealed FROM friend_keys");
    s = st.ReadAll(&rows, [](Stmt& r) {
      return Sealed{"friend_keys", r.ColU64(0), 0, FriendLabel(r.ColU64(0)), r.ColStr(1)};
    });
  }
  if (s.ok()) {
    Stmt st(db_, "SELECT group_id, epoch, sealed FROM group_keys");
    s = st.ReadAll(&rows, [](Stmt& r) {
      return Sealed{"group_keys", r.ColU64(0), r.ColU64(1), GroupLabel(r.ColU64(0), r.ColU64(1)), r.ColStr(2)};
    });
  }
  if (s.ok()) {
    Stmt st(db_, (std::string("SELECT ") + kHistoryColumns + " FROM history").c_str());
    s = st.ReadAll(&rows, [](Stmt& r) {
      std::string slot;
      HistoryEntry e = ReadHistoryRow(r, &slot);
      return Sealed{"history", static_cast<std::uint64_t>(e.id), 0, HistoryLabel(slot, e), e.body};
    });
  }
  // Every secret opened with the old key and sealed with the new one.
  const std::string old_key = master_key_;
  auto reseal = [&](const std::string& label, std::string* value) {
    std::string plain;
    master_key_ = old_key;
    Status r = Unseal(label, *value, &plain);
    master_key_ = new_key;
    if (r.ok()) r = Seal(label, plain, value);
    Wipe(&plain);
    return r;
  };
  for (Sealed& row : rows) {
    if (!s.ok()) break;
    s = reseal(row.label, &row.value);
    if (!s.ok()) break;
    Stmt up(db_, row.table == "friend_keys"  ? "UPDATE friend_keys SET sealed = ? WHERE user_id = ?"
                 : row.table == "group_keys" ? "UPDATE group_keys SET sealed = ? WHERE group_id = ? AND epoch = ?"
                                             : "UPDATE history SET sealed = ? WHERE id = ?");
    up.Blob(row.value).U64(row.a);
    if (row.table == "group_keys") up.U64(row.b);
    s = up.Run();
  }
  std::string sealed_x, sealed_ed;
  if (s.ok()) {
    master_key_ = new_key;
    s = Seal("identity/x25519", identity_.x25519_secret, &sealed_x);
  }
  if (s.ok()) s = Seal("identity/ed25519", identity_.ed25519_secret, &sealed_ed);
  if (s.ok()) s = SetMeta("salt", salt, true);
  if (s.ok()) s = SetMeta("kdf_ops", std::to_string(cost.opslimit), false);
  if (s.ok()) s = SetMeta("kdf_mem", std::to_string(cost.memlimit), false);
  if (s.ok()) s = SetMeta("x25519_secret", sealed_x, true);
  if (s.ok()) s = SetMeta("ed25519_secret", sealed_ed, true);
  if (s.ok()) s = Commit();
  if (!s.ok()) {
    Rollback();
    master_key_ = old_key;
    Wipe(&new_key);
    return s;
  }
  Wipe(&master_key_);
  master_key_ = std::move(new_key);
  salt_ = std::move(salt);
  return Status::OK();
}

Status LocalStore::Peek(const std::filesystem::path& path, std::uint64_t* user_id, std::string* name) {
  sqlite3* db;
  Status s = OpenDb(path, false, &db);
  if (!s.ok()) return s;
  std::unique_ptr<LocalStore> store(new LocalStore(db, path));
  std::string uid;
  s = store->GetMeta("user_id", &uid);
  if (s.ok()) s = store->GetMeta("name", name);
  if (!s.ok()) return s;
  try {
    *user_id = std::stoull(uid);
  } catch (const std::exception&) {
    return Status(Code::kCorruption, "local store: bad user id");
  }
  return Status::OK();
}

Status LocalStore::Find(const std::filesystem::path& home, const std::string& user,
                        std::filesystem::path* path) {
  std::error_code ec;
  if (!AllDecimal(user)) {
    *path = PathFor(home, user);
    if (std::filesystem::exists(*path, ec)) return Status::OK();
    return Status(Code::kNotFound, "no local store for user '" + user + "' in " + home.string() +
                                       " (register first, or check --home)");
  }
  std::uint64_t want;
  try {
    want = std::stoull(user);
  } catch (const std::exception&) {
    return Status(Code::kNotFound, "bad user id '" + user + "'");
  }
  std::filesystem::directory_iterator it(home, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    const auto& p = it->path();
    if (p.extension() != ".fcdb") continue;
    std::uint64_t id = 0;
    std::string name;
    if (Peek(p, &id, &name).ok() && id == want) {
      *path = p;
      return Status::OK();
    }
  }
  return Status(Code::kNotFound, "no local store for user id " + user + " in " + home.string());
}

Status LocalStore::Begin() { return Exec("BEGIN IMMEDIATE"); }
Status LocalStore::Commit() { return Exec("COMMIT"); }
void LocalStore::Rollback() {
  if (!sqlite3_get_autocommit(db_)) Exec("ROLLBACK");
}

// ---------------------------------------------------------------- contacts

Status LocalStore::GetContact(std::uint64_t id, Contact* c) {
  Stmt st(db_, "SELECT id, name, x25519, ed25519, first_seen FROM contacts WHERE id = ?");
  st.U64(id);
  bool row;
  Status s = st.Step(&row);
  if (!s.ok()) return s;
  if (!row) return Status(Code::kNotFound, "unknown contact " + std::to_string(id));
  c->id = st.ColU64(0);
  c->name = st.ColStr(1);
  c->x25519_public = st.ColStr(2);
  c->ed25519_public = st.ColStr(3);
  c->first_seen_ms = st.ColInt(4);
  return Status::OK();
}

Status LocalStore::FindContactByName(const std::string& name, Contact* c) {
  std::uint64_t id = 0;
  {
    Stmt st(db_, "SELECT id FROM contacts WHERE name = ? ORDER BY id LIMIT 1");
    st.Text(name);
    bool row;
    Status s = st.Step(&row);
    if (!s.ok()) return s;
    if (!row) return Status(Code::kNotFound, "unknown contact " + name);
    id = st.ColU64(0);
  }
  return GetContact(id, c);
}

Status LocalStore::Pin(const Contact& c, PinResult* result, Contact* pinned) {
  Stmt ins(db_,
           "INSERT OR IGNORE INTO contacts(id, name, x25519, ed25519, first_seen) VALUES(?,?,?,?,?)");
  ins.U64(c.id).Text(c.name).Blob(c.x25519_public).Blob(c.ed25519_public).Int(NowMs());
  Status s = ins.Run();
  if (!s.ok()) return s;
  bool inserted = sqlite3_changes(db_) > 0;
  s = GetContact(c.id, pinned);
  if (!s.ok()) return s;
  if (inserted) {
    *result = PinResult::kNew;
  } else if (pinned->x25519_public == c.x25519_public && pinned->ed25519_public == c.ed25519_public) {
    *result = PinResult::kMatch;
    if (pinned->name != c.name && !c.name.empty()) {
      Stmt up(db_, "UPDATE contacts SET name = ? WHERE id = ?");
      up.Text(c.name).U64(c.id);
      s = up.Run();
      if (!s.ok()) return s;
      pinned->name = c.name;
    }
  } else {
    *result = PinResult::kChanged;
  }
  return Status::OK();
}

// ---------------------------------------------------------------- friend keys

Status LocalStore::PutFriendKey(std::uint64_t user_id, std::string_view key) {
  std::string sealed;
  Status s = Seal(FriendLabel(user_id), key, &sealed);
  if (!s.ok()) return s;
  // Only while the store is still sealed under our key (see ChangePassword).
  Stmt st(db_,
          "INSERT OR REPLACE INTO friend_keys(user_id, sealed, created) "
          "SELECT ?,?,? WHERE (SELECT v FROM meta WHERE k = 'salt') = ?");
  st.U64(user_id).Blob(sealed).Int(NowMs()).Blob(salt_);
  s = st.Run();
  if (!s.ok()) return s;
  return sqlite3_changes(db_) == 1 ? Status::OK() : StillOurKey();
}

Status LocalStore::GetFriendKey(std::uint64_t user_id, std::string* key) {
  Stmt st(db_, "SELECT sealed FROM friend_keys WHERE user_id = ?");
  st.U64(user_id);
  bool row;
  Status s = st.Step(&row);
  if (!s.ok()) return s;
  if (!row) return Status(Code::kNotFound, "no friend key");
  return Unseal(FriendLabel(user_id), st.ColStr(0), key);
}

Status LocalStore::DeleteFriendKey(std::uint64_t user_id) {
  Stmt st(db_, "DELETE FROM friend_keys WHERE user_id = ?");
  st.U64(user_id);
  return st.Run();
}

// ---------------------------------------------------------------- friend requests

Status LocalStore::AddFriendRequest(std::uint64_t user_id, const std::string& name) {
  Stmt st(db_, "INSERT OR REPLACE INTO friend_requests(user_id, name, received) VALUES(?,?,?)");
  st.U64(user_id).Text(name).Int(NowMs());
  return st.Run();
}

Status LocalStore::RemoveFriendRequest(std::uint64_t user_id) {
  Stmt st(db_, "DELETE FROM friend_requests WHERE user_id = ?");
  st.U64(user_id);
  return st.Run();
}

Status LocalStore::ListFriends(std::vector<Contact>* out) {
  out->clear();
  Stmt st(db_, "SELECT c.id, c.name FROM contacts c JOIN friend_keys k ON k.user_id = c.id ORDER BY c.name, c.id");
  return st.ReadAll(out, [](Stmt& r) {
    Contact c;
    c.id = r.ColU64(0);
    c.name = r.ColStr(1);
    return c;
  });
}

Status LocalStore::ListFriendRequests(std::vector<Contact>* out) {
  out->clear();
  Stmt st(db_, "SELECT user_id, name, received FROM friend_requests ORDER BY received, user_id");
  return st.ReadAll(out, [](Stmt& r) {
    Contact c;
    c.id = r.ColU64(0);
    c.name = r.ColStr(1);
    c.first_seen_ms = r.ColInt(2);
    return c;
  });
}

// ---------------------------------------------------------------- groups

Status LocalStore::PutGroup(const LocalGroup& g) {
  Stmt st(db_,
          "INSERT INTO chat_groups(id, name, admin_id, epoch, has_left) VALUES(?,?,?,?,?) "
          "ON CONFLICT(id) DO UPDATE SET name = excluded.name, admin_id = excluded.admin_id, "
          "epoch = max(epoch, excluded.epoch), has_left = excluded.has_left");
  st.U64(g.id).Text(g.name).U64(g.admin_id).U64(g.epoch).Int(g.left ? 1 : 0);
  return st.Run();
}

namespace {
LocalGroup ReadGroup(Stmt& st) {
  LocalGroup g;
  g.id = st.ColU64(0);
  g.name = st.ColStr(1);
  g.admin_id = st.ColU64(2);
  g.epoch = st.ColU64(3);
  g.left = st.ColInt(4) != 0;
  return g;
}
}  // namespace

Status LocalStore::GetGroup(std::uint64_t id, LocalGroup* g) {
  Stmt st(db_, "SELECT id, name, admin_id, epoch, has_left FROM chat_groups WHERE id = ?");
  st.U64(id);
  bool row;
  Status s = st.Step(&row);
  if (!s.ok()) return s;
  if (!row) return Status(Code::kNotFound, "unknown group " + std::to_string(id));
  *g = ReadGroup(st);
  return Status::OK();
}

Status LocalStore::FindGroupsByName(const std::string& name, std::vector<LocalGroup>* out) {
  out->clear();
  Stmt st(db_, "SELECT id, name, admin_id, epoch, has_left FROM chat_groups WHERE name = ? ORDER BY id");
  st.Text(name);
  return st.ReadAll(out, ReadGroup);
}

Status LocalStore::ListGroups(std::vector<LocalGroup>* out) {
  out->clear();
  Stmt st(db_, "SELECT id, name, admin_id, epoch, has_left FROM chat_groups ORDER BY id");
  return st.ReadAll(out, ReadGroup);
}

Status LocalStore::SetGroupLeft(std::uint64_t id, bool left) {
  Stmt st(db_, "UPDATE chat_groups SET has_left = ? WHERE id = ?");
  st.Int(left ? 1 : 0).U64(id);
  return st.Run();
}

Status LocalStore::PutGroupKey(std::uint64_t group_id, std::uint64_t epoch, std::string_view key,
                               std::string* key_out) {
  std::string sealed;
  Status s = Seal(GroupLabel(group_id, epoch), key, &sealed);
  if (!s.ok()) return s;
  Stmt st(db_,
          "INSERT OR IGNORE INTO group_keys(group_id, epoch, sealed) "
          "SELECT ?,?,? WHERE (SELECT v FROM meta WHERE k = 'salt') = ?");
  st.U64(group_id).U64(epoch).Blob(sealed).Blob(salt_);
  s = st.Run();
  if (!s.ok()) return s;
  if (sqlite3_changes(db_) == 0) {
    s = StillOurKey();  // not inserted: the key was there already, or the password changed
    if (!s.ok()) return s;
  }
  if (key_out == nullptr) return Status::OK();
  return GetGroupKey(group_id, epoch, key_out);
}

Status LocalStore::GetGroupKey(std::uint64_t group_id, std::uint64_t epoch, std::string* key) {
  Stmt st(db_, "SELECT sealed FROM group_keys WHERE group_id = ? AND epoch = ?");
  st.U64(group_id).U64(epoch);
  bool row;
  Status s = st.Step(&row);
  if (!s.ok()) return s;
  if (!row)
    return Status(Code::kNotFound, "no key for group " + std::to_string(group_id) + " epoch " +
                                       std::to_string(epoch));
  return Unseal(GroupLabel(group_id, epoch), st.ColStr(0), key);
}

Status LocalStore::LatestGroupKey(std::uint64_t group_id, std::uint64_t* epoch, std::string* key) {
  Stmt st(db_, "SELECT epoch, sealed FROM group_keys WHERE group_id = ? ORDER BY epoch DESC LIMIT 1");
  st.U64(group_id);
  bool row;
  Status s = st.Step(&row);
  if (!s.ok()) return s;
  if (!row) return Status(Code::kNotFound, "no key for group " + std::to_string(group_id));
  *epoch = st.ColU64(0);
  return Unseal(GroupLabel(group_id, *epoch), st.ColStr(1), key);
}

// ---------------------------------------------------------------- dedupe

Status LocalStore::SeenSeq(std::uint64_t seq, bool* seen) {
  Stmt st(db_, "SELECT 1 FROM seen_seqs WHERE seq = ?");
  st.U64(seq);
  return st.Step(seen);
}

Status LocalStore::MarkSeq(std::uint64_t seq) {
  Stmt st(db_, "INSERT OR IGNORE INTO seen_seqs(seq) VALUES(?)");
  st.U64(seq);
  return st.Run();
}

Status LocalStore::SeenMsg(std::uint64_t sender, std::string_view msg_id, std::uint32_t chunk,
                           bool* seen) {
  Stmt st(db_, "SELECT 1 FROM seen_msgs WHERE sender = ? AND msg_id = ? AND chunk = ?");
  st.U64(sender).Blob(msg_id).Int(chunk);
  return st.Step(seen);
}

Status LocalStore::MarkMsg(std::uint64_t sender, std::string_view msg_id, std::uint32_t chunk) {
  Stmt st(db_, "INSERT OR IGNORE INTO seen_msgs(sender, msg_id, chunk) VALUES(?,?,?)");
  st.U64(sender).Blob(msg_id).Int(chunk);
  return st.Run();
}

// ---------------------------------------------------------------- partial images

Status LocalStore::GetPartial(std::uint64_t scope, std::uint64_t sender, std::string_view msg_id,
                              PartialImage* p) {
  Stmt st(db_,
          "SELECT title, size, chunk_count, next_chunk, temp_path FROM partial_images "
          "WHERE scope = ? AND sender = ? AND msg_id = ?");
  st.U64(scope).U64(sender).Blob(msg_id);
  bool row;
  Status s = st.Step(&row);
  if (!s.ok()) return s;
  if (!row) return Status(Code::kNotFound, "no partial image");
  p->scope = scope;
  p->sender = sender;
  p->msg_id = std::string(msg_id);
  p->title = st.ColStr(0);
  p->size = st.ColU64(1);
  p->chunk_count = static_cast<std::uint32_t>(st.ColU64(2));
  p->next_chunk = static_cast<std::uint32_t>(st.ColU64(3));
  p->temp_path = st.ColStr(4);
  return Status::OK();
}

Status LocalStore::PutPartial(const PartialImage& p) {
  Stmt st(db_,
          "INSERT OR REPLACE INTO partial_images(scope, sender, msg_id, title, size, chunk_count, "
          "next_chunk, temp_path, started) VALUES(?,?,?,?,?,?,?,?,?)");
  st.U64(p.scope).U64(p.sender).Blob(p.msg_id).Text(p.title).U64(p.size).Int(p.chunk_count);
  st.Int(p.next_chunk).Text(p.temp_path).Int(NowMs());
  return st.Run();
}

Status LocalStore::DeletePartial(std::uint64_t scope, std::uint64_t sender, std::string_view msg_id) {
  Stmt st(db_, "DELETE FROM partial_images WHERE scope = ? AND sender = ? AND msg_id = ?");
  st.U64(scope).U64(sender).Blob(msg_id);
  return st.Run();
}

// ---------------------------------------------------------------- history

Status LocalStore::AddHistory(const HistoryEntry& e, bool* added) {
  if (added != nullptr) *added = false;
  const std::string slot = crypto::RandomBytes(16);
  std::string sealed;
  Status s = Seal(HistoryLabel(slot, e), e.body, &sealed);
  if (!s.ok()) return s;
  // Only while the store is still sealed under our key (see ChangePassword).
  Stmt st(db_,
          "INSERT OR IGNORE INTO history(slot, conv_group, conv_id, sender, outgoing, kind, at, msg_id, sealed) "
          "SELECT ?,?,?,?,?,?,?,?,? WHERE (SELECT v FROM meta WHERE k = 'salt') = ?");
  st.Blob(slot).Int(e.group ? 1 : 0).U64(e.conv_id).U64(e.sender).Int(e.outgoing ? 1 : 0).Text(e.kind);
  st.Int(e.at_ms).Blob(e.msg_id).Blob(sealed).Blob(salt_);
  s = st.Run();
  if (!s.ok()) return s;
  if (sqlite3_changes(db_) == 1) {
    if (added != nullptr) *added = true;
    return Status::OK();
  }
  return StillOurKey();  // not stored: kept already, or the password changed
}

void LocalStore::UnsealHistory(HistoryEntry* e, const std::string& slot) const {
  std::string plain;
  Status s = Unseal(HistoryLabel(slot, *e), e->body, &plain);
  e->intact = s.ok();
  e->body = s.ok() ? std::move(plain) : std::string();
}

Status LocalStore::History(bool group, std::uint64_t conv_id, std::size_t limit, std::vector<HistoryEntry>* out) {
  out->clear();
  const std::string sql = std::string("SELECT ") + kHistoryColumns + " FROM (SELECT " + kHistoryColumns +
                          " FROM history WHERE conv_group = ? AND conv_id = ? ORDER BY id DESC LIMIT ?) ORDER BY id";
  Stmt st(db_, sql.c_str());
  st.Int(group ? 1 : 0).U64(conv_id).U64(limit);
  return st.ReadAll(out, [this](Stmt& r) {
    std::string slot;
    HistoryEntry e = ReadHistoryRow(r, &slot);
    UnsealHistory(&e, slot);
    return e;
  });
}

Status LocalStore::SearchHistory(std::size_t scan, std::size_t max_hits,
                                 const std::function<bool(const HistoryEntry&)>& keep,
                                 std::vector<HistoryEntry>* out, std::size_t* scanned, bool* more) {
  out->clear();
  *scanned = 0;
  *more = false;
  const std::string sql = std::string("SELECT ") + kHistoryColumns + " FROM history ORDER BY id DESC LIMIT ?";
  Stmt st(db_, sql.c_str());
  st.U64(scan + 1);  // one more than scanned: tells whether older entries are left
  for (;;) {
    bool row = false;
    Status s = st.Step(&row);
    if (!s.ok()) return s;
    if (!row) break;
    if (*scanned == scan) {
      *more = true;
      break;
    }
    ++*scanned;
    std::string slot;
    HistoryEntry e = ReadHistoryRow(st, &slot);
    UnsealHistory(&e, slot);
    if (!e.intact || !keep(e)) continue;
    out->push_back(std::move(e));
    if (out->size() == max_hits) {  // enough: older entries stay unread
      s = st.Step(more);
      if (!s.ok()) return s;
      break;
    }
  }
  std::reverse(out->begin(), out->end());
  return Status::OK();
}

// ---------------------------------------------------------------- receipts

Status LocalStore::AddReceipt(std::uint64_t recipient, std::string_view msg_id, std::int64_t delivered_ms) {
  Stmt st(db_, "INSERT OR IGNORE INTO receipts(recipient, msg_id, delivered) VALUES(?,?,?)");
  st.U64(recipient).Blob(msg_id).Int(delivered_ms);
  return st.Run();
}

Status LocalStore::DeliveredAt(std::uint64_t recipient, std::string_view msg_id, std::int64_t* delivered_ms) {
  *delivered_ms = 0;
  Stmt st(db_, "SELECT delivered FROM receipts WHERE recipient = ? AND msg_id = ?");
  st.U64(recipient).Blob(msg_id);
  bool row = false;
  Status s = st.Step(&row);
  if (s.ok() && row) *delivered_ms = st.ColInt(0);
  return s;
}

Status LocalStore::SentTo(std::uint64_t recipient, std::string_view msg_id, bool* sent) {
  Stmt st(db_, "SELECT 1 FROM history WHERE conv_group = 0 AND conv_id = ? AND outgoing = 1 AND msg_id = ?");
  st.U64(recipient).Blob(msg_id);
  return st.Step(sent);
}

}  // namespace fastchat::client
