// Every server request handler (RequestService::Handle) fed decoded requests
// from four logged-in users, against the in-memory Directory, with each
// decided write run on a real SQLite store (":memory:").
//
// Input: records of [control byte][4-byte big-endian length][Envelope
// bytes]. control & 3 picks the caller (alice, bob, carol, dave: ids 1-4);
// control & 4 first commits every write decided so far (otherwise decisions
// pile up before their writes run, as when they share one store batch).
//
// Checked: a reply is one frame holding an Envelope with the request's rid;
// a refusal carries no write; every write the service decided commits (the
// Directory decided it would, so a store that refuses means the two
// disagree); and after each commit point the Directory equals one freshly
// loaded from the store (users, friendships, requests, groups, members,
// epochs).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "fastchat.pb.h"
#include "fastchat/frame.h"
#include "common.h"
#include <spdlog/spdlog.h>
#include "request_service.h"
#include "fastchat/store.h"

using fastchat::fuzz::Check;
using fastchat::fuzz::Fail;

namespace {

using namespace fastchat;
using namespace fastchat::server;

constexpr int kUsers = 4;
const char* const kNames[kUsers] = {"alice", "bob", "carol", "dave"};

std::vector<std::uint64_t> Sorted(std::vector<std::uint64_t> v) {
  std::sort(v.begin(), v.end());
  return v;
}

// The Directory as the store has it must equal the one requests were decided
// against.
void CompareWithStore(Store& store, const Directory& dir, const std::vector<std::uint64_t>& users) {
  DirectoryState state;
  Check(store.LoadDirectory(&state).ok(), "LoadDirectory failed");
  Directory fresh;
  fresh.Load(state);
  std::uint64_t max_group = 0;
  for (const GroupRecord& g : state.groups) max_group = std::max(max_group, g.id);
  for (std::uint64_t a : users) {
    for (std::uint64_t b : users) {
      Check(dir.AreFriends(a, b) == fresh.AreFriends(a, b),
            "friendship " + std::to_string(a) + "-" + std::to_string(b) + " differs from the store");
      Check(dir.HasRequest(a, b) == fresh.HasRequest(a, b),
            "request " + std::to_string(a) + "->" + std::to_string(b) + " differs from the store");
    }
    Check(Sorted(dir.FriendsOf(a)) == Sorted(fresh.FriendsOf(a)), "friends of " + std::to_string(a));
    Check(Sorted(dir.RequestsTo(a)) == Sorted(fresh.RequestsTo(a)), "requests to " + std::to_string(a));
    Check(Sorted(dir.GroupsOf(a)) == Sorted(fresh.GroupsOf(a)), "groups of " + std::to_string(a));
  }
  for (std::uint64_t gid = 1; gid <= max_group + 2; ++gid) {
    const DirGroup* x = dir.FindGroup(gid);
    const DirGroup* y = fresh.FindGroup(gid);
    const std::string g = "group " + std::to_string(gid);
    Check((x == nullptr) == (y == nullptr), g + ": exists in one of directory and store only");
    if (x == nullptr) continue;
    Check(x->admin_id == y->admin_id, g + ": admin differs");
    Check(x->epoch == y->epoch, g + ": epoch differs");
    Check(x->name == y->name, g + ": name differs");
    Check(Sorted(x->members) == Sorted(y->members), g + ": members differ");
  }
}

void CheckReply(const std::string& frame, std::uint64_t rid) {
  Check(frame.size() >= kFrameHeaderSize, "reply shorter than a header");
  Check(DecodeFrameHeader(frame.data()) == frame.size() - kFrameHeaderSize, "reply header length");
  wire::Envelope reply;
  Check(reply.ParseFromArray(frame.data() + kFrameHeaderSize, static_cast<int>(frame.size() - kFrameHeaderSize)),
        "reply does not parse");
  Check(reply.rid() == rid, "reply rid");
}

// The store with the four users, made once: each run is one store batch
// (as the server's StoreWorker runs them, each write in its own unit),
// rolled back at the end, so every run starts from the same state.
struct World {
  std::unique_ptr<Store> store;
  DirectoryState initial;
  std::vector<Caller> callers;
  std::vector<std::uint64_t> ids;

  World() {
    if (!OpenSqliteStore(":memory:", &store).ok()) Fail("cannot open the store");
    for (int i = 0; i < kUsers; ++i) {
      UserRecord u;
      u.name = kNames[i];
      u.password_hash = "h";
      u.x25519_public = std::string(32, static_cast<char>('a' + i));
      u.ed25519_public = std::string(32, static_cast<char>('A' + i));
      std::uint64_t id = 0;
      if (!store->CreateUser(u, &id).ok()) Fail("cannot create a user");
      callers.push_back(Caller{id, u.name});
      ids.push_back(id);
    }
    if (!store->LoadDirectory(&initial).ok()) Fail("cannot load the directory");
  }
};

struct Harness {
  Store* store;
  Directory dir;
  ServerConfig config;
  std::unique_ptr<RequestService> service;
  const std::vector<Caller>& callers;
  const std::vector<std::uint64_t>& ids;
  std::deque<Outcome> decided;  // writes not yet run, in decision order

  explicit Harness(World& w) : store(w.store.get()), callers(w.callers), ids(w.ids) {
    config.max_image_bytes = 1u << 20;
    config.limits.max_group_members = 4;
    config.limits.max_groups_per_user = 3;
    dir.Load(w.initial);
    service = std::make_unique<RequestService>(dir, config);
    if (!store->BeginBatch().ok()) Fail("BeginBatch");
  }
  ~Harness() { store->RollbackBatch(); }

  void RunWrites() {
    while (!decided.empty()) {
      Outcome o = std::move(decided.front());
      decided.pop_front();
      WriteResult r;
      Check(store->BeginUnit().ok(), "BeginUnit");
      if (o.write) {
        r = o.write(*store);
      } else if (!o.enqueue.empty()) {
        std::vector<std::uint64_t> recipients, seqs;
        for (const PendingItem& i : o.enqueue) recipients.push_back(i.recipient);
        std::vector<Enqueued> how;
        Status st = store->Enqueue(o.enqueue, &seqs, &how);
        r = RequestService::EnqueueResult(recipients, st, seqs, how);
      }
      store->EndUnit(r.st.ok());
      Check(r.st.ok(), "a decided write failed in the store: " + r.st.ToString());
      if (o.committed) o.committed(dir, r);
      if (o.reply_after_write) CheckReply(RequestService::WriteReply(o.rid, r), o.rid);
    }
    CompareWithStore(*store, dir, ids);
  }
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fastchat::fuzz::QuietProtobuf();
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static World* world = new World();
  Harness h(*world);
  std::uint64_t now = 1'700'000'000'000;
  std::size_t pos = 0;
  std::uint8_t control = 0;
  std::string_view record;
  while (fastchat::fuzz::NextRecord(data, size, &pos, &control, &record)) {
    wire::Envelope env;
    const bool parsed = env.ParseFromArray(record.data(), static_cast<int>(record.size()));
    if (!parsed) continue;  // the session answers BAD_FRAME before the service
    if (control & 4) h.RunWrites();
    const Caller& me = h.callers[control & 3];
    Outcome o = h.service->Handle(me, env, ++now);
    Check(o.rid == env.rid(), "outcome rid");
    if (!o.reply.empty()) {
      CheckReply(o.reply, env.rid());
      Check(!o.write && o.enqueue.empty() && !o.ack_only, "a reply now and a write");
      continue;
    }
    Check(o.refusal.ok(), "a refusal with no reply");
    if (o.ack_only) {
      // As the store worker runs them: the seqs, then the group cursors.
      Check(h.store->Ack(me.id, o.ack_seqs).ok(), "Ack failed");
      std::vector<Store::GroupCursorAck> groups;
      for (const auto& [gid, seq] : o.ack_groups) groups.push_back({gid, me.id, seq});
      Check(h.store->AckGroups(groups).ok(), "AckGroups failed");
      for (const auto& [gid, seq] : o.ack_groups) Check(h.store->TrimGroup(gid).ok(), "TrimGroup failed");
      continue;
    }
    Check(static_cast<bool>(o.write) || !o.enqueue.empty(), "no reply and nothing to write");
    h.decided.push_back(std::move(o));
  }
  h.RunWrites();
  return 0;
}
