// Mesh frames from hostile peers: three authenticated links, each with the
// frame decoder a mesh link uses (4 MiB limit), every frame parsed as a
// MeshFrame and read by ReadMeshFrame (what Mesh::OnFrame carries out),
// against one RemotePresence table; links go down and come back.
//
// Input: records of [op][4-byte big-endian length][bytes]. op & 1 == 0: the
// bytes arrive on link (op >> 1) % 3 (any framing: they are appended to its
// decoder); op & 1 == 1: that link goes down (as Mesh::LinkDown) and a new
// one replaces it. A link that sends an over-limit header, an unparsable or
// an unexpected frame is closed the same way, as Mesh does.
// Checked: the table never names a link that is gone (each link is its own
// heap object, freed when it goes: a stale entry is a use-after-free), a
// user's entry is the link that announced it last, and what ReadMeshFrame
// returns matches the frame.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <set>
#include <string>

#include "fastchat/frame.h"
#include "common.h"
#include "mesh_inbox.h"

using namespace fastchat;
using namespace fastchat::server;

using fastchat::fuzz::Check;
using fastchat::fuzz::Fail;

namespace {

constexpr int kLinks = 3;
constexpr std::uint32_t kMaxMeshFrame = 4u << 20;  // ServerConfig::mesh_max_frame's default

struct Link {
  explicit Link(int n) : id(n), decoder(kMaxMeshFrame) {}
  int id;
  FrameDecoder decoder;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fastchat::fuzz::QuietProtobuf();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  RemotePresence<Link> presence;
  std::unique_ptr<Link> links[kLinks];
  int next = 0;
  for (auto& l : links) l = std::make_unique<Link>(next++);
  std::set<std::uint64_t> seen;  // every user any frame named
  auto drop = [&](std::unique_ptr<Link>& l) {
    presence.Drop(l.get());
    l = std::make_unique<Link>(next++);  // the old one is freed here
  };

  std::size_t pos = 0;
  std::uint8_t op = 0;
  std::string_view record;
  while (fastchat::fuzz::NextRecord(data, size, &pos, &op, &record)) {
    const char* bytes = record.data();
    const auto len = static_cast<std::uint32_t>(record.size());
    std::unique_ptr<Link>& link = links[(op >> 1) % kLinks];
    if (op & 1) {
      drop(link);
      continue;
    }
    link->decoder.Append(bytes, len);
    for (;;) {
      std::string_view payload;
      bool have = false;
      if (!link->decoder.Next(&payload, &have).ok()) {
        drop(link);
        break;
      }
      if (!have) break;
      mesh::MeshFrame frame;
      if (!frame.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
        drop(link);
        break;
      }
      const mesh::MeshFrame copy = frame;
      MeshInput in = ReadMeshFrame(presence, link.get(), frame);
      if (in.unexpected) {
        Check(copy.body_case() == mesh::MeshFrame::kHello || copy.body_case() == mesh::MeshFrame::kAuth ||
                  copy.body_case() == mesh::MeshFrame::BODY_NOT_SET,
              "a known frame called unexpected");
        drop(link);
        break;
      }
      if (copy.has_presence()) {
        const mesh::Presence& p = copy.presence();
        for (std::uint64_t u : p.offline()) seen.insert(u);
        for (std::uint64_t u : p.online()) {
          seen.insert(u);
          Check(presence.Where(u) == link.get(), "an announced user is not where its link said");
        }
        Check(in.ack_token == p.ack_token(), "ack token");
        const bool snapshot = p.full() || p.continued();  // a snapshot's part: no new logins
        Check(in.displace.size() == (snapshot ? 0u : static_cast<std::size_t>(p.online_size())), "displaced");
      }
      if (copy.has_forward()) {
        Check(in.event != nullptr && *in.event == copy.forward().event(), "forwarded event bytes");
        Check(in.deliver.size() == static_cast<std::size_t>(copy.forward().targets_size()), "forward targets");
        Check(in.group_id == copy.forward().group_id(), "forward group");
      }
      if (copy.has_changed()) Check(in.refresh, "Changed without a refresh");
      if (copy.has_resync()) Check(in.resync.size() == static_cast<std::size_t>(copy.resync().users_size()), "resync");
      if (copy.has_presence_ack()) Check(in.acked && in.acked_token == copy.presence_ack().token(), "ack");
    }
    // Every entry names a live link (reading its id would be a
    // use-after-free otherwise).
    for (std::uint64_t u : seen) {
      if (Link* l = presence.Where(u)) {
        bool live = false;
        for (auto& x : links) live = live || x.get() == l;
        Check(live && l->id >= 0, "a user is placed on a link that is gone");
      }
    }
    Check(presence.size() <= seen.size(), "more placed users than were ever named");
  }
  return 0;
}
