// The client's local store (src/client/local_store.h) under a fuzzed
// sequence of calls, checked against a plain model of what each promises,
// with the file closed and reopened, opened with a wrong password, and
// tampered with (a meta value or a sealed column overwritten with fuzzed
// bytes, as by someone who can write the file but has no password).
//
// Input: consumed by FuzzedDataProvider: one byte picks each operation, its
// arguments follow.
// Checked: every value reads back as written (ids over the full 64-bit range
// included); pinned keys never change and a different key is reported as
// kChanged; the first key stored for a (group, epoch) stays; a group's epoch
// only grows; LatestGroupKey is the highest epoch; a wrong password is
// kBadCredentials; a tampered store fails with an error or reads back
// what was written, never crashes, hangs or allocates without bound.
#include <fuzzer/FuzzedDataProvider.h>
#include <sqlite3.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>

#include <spdlog/spdlog.h>

#include "fastchat/crypto.h"
#include "local_store.h"
#include "common.h"

namespace fs = std::filesystem;
using namespace fastchat;
using namespace fastchat::client;

using fastchat::fuzz::Check;
using fastchat::fuzz::Fail;

namespace {

void Ok(const Status& s, const std::string& what) {
  if (!s.ok()) Fail(what + ": " + s.ToString());
}

struct Model {
  std::map<std::uint64_t, Contact> contacts;
  std::map<std::uint64_t, std::string> friend_keys;
  std::map<std::uint64_t, std::string> requests;
  std::map<std::uint64_t, LocalGroup> groups;
  std::map<std::pair<std::uint64_t, std::uint64_t>, std::string> group_keys;
  std::set<std::uint64_t> seqs;
  std::set<std::tuple<std::uint64_t, std::string, std::uint32_t>> msgs;
};

std::uint64_t Id(FuzzedDataProvider& in) {
  // Mostly small ids (so operations meet), sometimes any 64-bit value.
  if (in.ConsumeBool()) return in.ConsumeIntegral<std::uint64_t>();
  return in.ConsumeIntegralInRange<std::uint64_t>(0, 6);
}

// Overwrites one stored value with `bytes` behind the store's back.
void Tamper(const fs::path& path, int which, const std::string& bytes) {
  static const char* const kSql[] = {
      "UPDATE meta SET v = ?1 WHERE k = 'kdf_ops'",       "UPDATE meta SET v = ?1 WHERE k = 'kdf_mem'",
      "UPDATE meta SET v = ?1 WHERE k = 'salt'",          "UPDATE meta SET v = ?1 WHERE k = 'x25519_secret'",
      "UPDATE meta SET v = ?1 WHERE k = 'ed25519_secret'", "UPDATE meta SET v = ?1 WHERE k = 'user_id'",
      "UPDATE meta SET v = ?1 WHERE k = 'x25519_public'", "UPDATE friend_keys SET sealed = ?1",
      "UPDATE group_keys SET sealed = ?1",                "UPDATE contacts SET x25519 = ?1",
      "UPDATE chat_groups SET epoch = ?1",                "UPDATE partial_images SET size = ?1",
      "UPDATE meta SET v = ?1 WHERE k = 'schema_version'", "DELETE FROM meta WHERE k = ?1",
  };
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) Fail("tamper: open");
  sqlite3_stmt* st = nullptr;
  const char* sql = kSql[which % (sizeof kSql / sizeof kSql[0])];
  if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) != SQLITE_OK) Fail(std::string("tamper: ") + sql);
  if (which & 0x80) {
    sqlite3_bind_text(st, 1, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
  } else {
    sqlite3_bind_blob(st, 1, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
  }
  sqlite3_step(st);
  sqlite3_finalize(st);
  sqlite3_close(db);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fastchat::fuzz::QuietProtobuf();
  if (!crypto::Init()) Fail("libsodium");
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  const fs::path home = fastchat::fuzz::FreshDir("fastchat_local_store_fuzz");
  const fs::path path = home / "alice.fcdb";
  {
    Identity id;
    id.user_id = in.ConsumeIntegral<std::uint64_t>();
    id.name = "alice";
    crypto::BoxKeyPair box = crypto::NewBoxKeyPair();
    crypto::SignKeyPair sign = crypto::NewSignKeyPair();
    id.x25519_public = box.public_key;
    id.x25519_secret = box.secret_key;
    id.ed25519_public = sign.public_key;
    id.ed25519_secret = sign.secret_key;
    std::unique_ptr<LocalStore> store;
    Ok(LocalStore::Create(path, id, "password", crypto::PwhashCost::Min(), &store), "Create");
    Model m;
    bool tampered = false;
    while (in.remaining_bytes() > 0 && store != nullptr) {
      const std::uint8_t op = in.ConsumeIntegral<std::uint8_t>();
      switch (op % 16) {
        case 0: {  // pin
          Contact c;
          c.id = Id(in);
          c.name = in.ConsumeRandomLengthString(40);
          c.x25519_public = in.ConsumeBytesAsString(in.ConsumeBool() ? 32 : 1);
          c.ed25519_public = std::string(32, static_cast<char>(op));
          c.first_seen_ms = 5;
          PinResult r;
          Contact pinned;
          Status s = store->Pin(c, &r, &pinned);
          if (tampered && !s.ok()) break;
          Ok(s, "Pin");
          auto it = m.contacts.find(c.id);
          if (it == m.contacts.end()) {
            Check(r == PinResult::kNew, "first pin is not kNew");
            m.contacts[c.id] = c;
          } else if (!tampered) {
            const bool same = it->second.x25519_public == c.x25519_public && it->second.ed25519_public == c.ed25519_public;
            Check(r == (same ? PinResult::kMatch : PinResult::kChanged), "pin result");
            Check(pinned.x25519_public == it->second.x25519_public, "pinned key changed");
            it->second.name = pinned.name;
          }
          break;
        }
        case 1: {
          const std::uint64_t uid = Id(in);
          Contact c;
          Status s = store->GetContact(uid, &c);
          if (tampered) break;
          auto it = m.contacts.find(uid);
          if (it == m.contacts.end()) {
            Check(s.code() == Code::kNotFound, "GetContact of an unknown id");
          } else {
            Ok(s, "GetContact");
            Check(c.id == uid && c.x25519_public == it->second.x25519_public &&
                      c.ed25519_public == it->second.ed25519_public,
                  "contact reads back differently");
          }
          break;
        }
        case 2: {
          const std::uint64_t uid = Id(in);
          std::string key = in.ConsumeBytesAsString(in.ConsumeIntegralInRange<std::size_t>(0, 40));
          Status s = store->PutFriendKey(uid, key);
          if (tampered && !s.ok()) break;
          Ok(s, "PutFriendKey");
          m.friend_keys[uid] = key;
          break;
        }
        case 3: {
          const std::uint64_t uid = Id(in);
          std::string key;
          Status s = store->GetFriendKey(uid, &key);
          if (tampered) break;
          auto it = m.friend_keys.find(uid);
          if (it == m.friend_keys.end()) {
            Check(s.code() == Code::kNotFound, "GetFriendKey of an unknown id");
          } else {
            Ok(s, "GetFriendKey");
            Check(key == it->second, "friend key reads back differently");
          }
          break;
        }
        case 4: {
          const std::uint64_t uid = Id(in);
          Status s = store->DeleteFriendKey(uid);
          if (!tampered) Ok(s, "DeleteFriendKey");
          m.friend_keys.erase(uid);
          break;
        }
        case 5: {
          const std::uint64_t uid = Id(in);
          std::string name = in.ConsumeRandomLengthString(40);
          if (in.ConsumeBool()) {
            Status s = store->AddFriendRequest(uid, name);
            if (!tampered) Ok(s, "AddFriendRequest");
            m.requests[uid] = name;
          } else {
            Status s = store->RemoveFriendRequest(uid);
            if (!tampered) Ok(s, "RemoveFriendRequest");
            m.requests.erase(uid);
          }
          std::vector<Contact> list;
          Status s = store->ListFriendRequests(&list);
          if (tampered) break;
          Ok(s, "ListFriendRequests");
          Check(list.size() == m.requests.size(), "request count");
          for (const Contact& c : list) Check(m.requests.count(c.id) == 1, "a request that was not made");
          break;
        }
        case 6: {
          LocalGroup g;
          g.id = Id(in);
          g.name = in.ConsumeRandomLengthString(40);
          g.admin_id = Id(in);
          g.epoch = in.ConsumeBool() ? in.ConsumeIntegral<std::uint64_t>() : in.ConsumeIntegralInRange<std::uint64_t>(0, 5);
          g.left = in.ConsumeBool();
          Status s = store->PutGroup(g);
          if (tampered && !s.ok()) break;
          Ok(s, "PutGroup");
          auto it = m.groups.find(g.id);
          if (it != m.groups.end() && it->second.epoch > g.epoch) g.epoch = it->second.epoch;
          m.groups[g.id] = g;
          break;
        }
        case 7: {
          const std::uint64_t gid = Id(in);
          LocalGroup g;
          Status s = store->GetGroup(gid, &g);
          if (tampered) break;
          auto it = m.groups.find(gid);
          if (it == m.groups.end()) {
            Check(s.code() == Code::kNotFound, "GetGroup of an unknown group");
          } else {
            Ok(s, "GetGroup");
            Check(g.id == gid && g.name == it->second.name && g.admin_id == it->second.admin_id &&
                      g.epoch == it->second.epoch && g.left == it->second.left,
                  "group reads back differently");
          }
          break;
        }
        case 8: {
          const std::uint64_t gid = Id(in);
          const std::uint64_t epoch = in.ConsumeBool() ? in.ConsumeIntegral<std::uint64_t>()
                                                       : in.ConsumeIntegralInRange<std::uint64_t>(0, 5);
          std::string key = in.ConsumeBytesAsString(in.ConsumeIntegralInRange<std::size_t>(0, 40));
          std::string now;
          Status s = store->PutGroupKey(gid, epoch, key, &now);
          if (tampered) break;
          Ok(s, "PutGroupKey");
          auto [it, fresh] = m.group_keys.emplace(std::make_pair(gid, epoch), key);
          Check(now == it->second, fresh ? "PutGroupKey of a new epoch" : "PutGroupKey replaced an earlier key");
          break;
        }
        case 9: {
          const std::uint64_t gid = Id(in);
          std::uint64_t epoch = 0;
          std::string key;
          Status s = store->LatestGroupKey(gid, &epoch, &key);
          if (tampered) break;
          const std::string* latest = nullptr;
          std::uint64_t latest_epoch = 0;
          for (const auto& [k, v] : m.group_keys) {
            if (k.first == gid && (latest == nullptr || k.second >= latest_epoch)) latest = &v, latest_epoch = k.second;
          }
          if (latest == nullptr) {
            Check(s.code() == Code::kNotFound, "LatestGroupKey of a group with no key");
          } else {
            Ok(s, "LatestGroupKey");
            Check(epoch == latest_epoch && key == *latest, "LatestGroupKey is not the highest epoch");
          }
          break;
        }
        case 10: {
          const std::uint64_t seq = Id(in);
          bool seen = false;
          Status s = store->SeenSeq(seq, &seen);
          if (tampered) break;
          Ok(s, "SeenSeq");
          Check(seen == (m.seqs.count(seq) == 1), "SeenSeq");
          if (in.ConsumeBool()) {
            Ok(store->MarkSeq(seq), "MarkSeq");
            m.seqs.insert(seq);
          }
          break;
        }
        case 11: {
          const std::uint64_t sender = Id(in);
          std::string msg = in.ConsumeBytesAsString(in.ConsumeIntegralInRange<std::size_t>(0, 17));
          const std::uint32_t chunk = in.ConsumeIntegral<std::uint32_t>();
          bool seen = false;
          Status s = store->SeenMsg(sender, msg, chunk, &seen);
          if (tampered) break;
          Ok(s, "SeenMsg");
          Check(seen == (m.msgs.count({sender, msg, chunk}) == 1), "SeenMsg");
          if (in.ConsumeBool()) {
            Ok(store->MarkMsg(sender, msg, chunk), "MarkMsg");
            m.msgs.insert({sender, msg, chunk});
          }
          break;
        }
        case 12: {
          PartialImage p;
          p.scope = Id(in);
          p.sender = Id(in);
          p.msg_id = in.ConsumeBytesAsString(16);
          p.title = in.ConsumeRandomLengthString(40);
          p.size = in.ConsumeIntegral<std::uint64_t>();
          p.chunk_count = in.ConsumeIntegral<std::uint32_t>();
          p.next_chunk = in.ConsumeIntegral<std::uint32_t>();
          p.temp_path = "/tmp/x";
          Status s = store->PutPartial(p);
          if (tampered) break;
          Ok(s, "PutPartial");
          PartialImage q;
          Ok(store->GetPartial(p.scope, p.sender, p.msg_id, &q), "GetPartial");
          Check(q.size == p.size && q.chunk_count == p.chunk_count && q.next_chunk == p.next_chunk &&
                    q.title == p.title,
                "partial image reads back differently");
          if (in.ConsumeBool()) Ok(store->DeletePartial(p.scope, p.sender, p.msg_id), "DeletePartial");
          break;
        }
        case 13: {  // close and reopen, maybe with the wrong password
          store.reset();
          const bool wrong = in.ConsumeBool();
          Status s = LocalStore::Open(path, wrong ? "passw0rd" : "password", &store);
          if (tampered) break;
          if (wrong) {
            Check(s.code() == Code::kBadCredentials, "wrong password: " + s.ToString());
            Ok(LocalStore::Open(path, "password", &store), "Open after a wrong password");
          } else {
            Ok(s, "Open");
          }
          Check(store->identity().user_id == id.user_id && store->identity().x25519_secret == id.x25519_secret &&
                    store->identity().ed25519_secret == id.ed25519_secret,
                "identity reads back differently");
          break;
        }
        case 14: {  // someone without the password changes the file
          const int which = in.ConsumeIntegral<std::uint8_t>();
          std::string bytes = in.ConsumeRandomLengthString(64);
          store.reset();
          Tamper(path, which, bytes);
          tampered = true;
          Status s = LocalStore::Open(path, "password", &store);
          if (!s.ok()) store.reset();
          break;
        }
        default: {
          std::vector<LocalGroup> groups;
          Status s = store->FindGroupsByName(in.ConsumeRandomLengthString(40), &groups);
          if (!tampered) Ok(s, "FindGroupsByName");
          std::vector<LocalGroup> all;
          s = store->ListGroups(&all);
          if (tampered) break;
          Ok(s, "ListGroups");
          Check(all.size() == m.groups.size(), "group count");
          break;
        }
      }
    }
  }
  std::error_code ec;
  fs::remove_all(home, ec);
  return 0;
}
