// What a frame from an authenticated mesh peer means, without sockets or
// sessions: Mesh::OnFrame reads each frame with ReadMeshFrame and carries out
// what it returns; fuzz/mesh_fuzz.cc drives it directly.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "directory.h"
#include "mesh.pb.h"
#include "remote_presence.h"

namespace fastchat::server {

// What one frame asks of this server.
struct MeshInput {
  std::vector<std::uint64_t> displace;  // local sessions to close: logged in on the sender
  std::uint64_t ack_token = 0;          // non-zero: answer PresenceAck{ack_token}
  bool acked = false;                   // a PresenceAck for our announcement acked_token
  std::uint64_t acked_token = 0;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> deliver;  // (user, seq) of `event`
  std::shared_ptr<const std::string> event;
  std::uint64_t group_id = 0;
  std::uint64_t prev_seq = 0;  // a group entry: the entry before it in the log
  bool refresh = false;  // re-read `changed` from the store
  Facts changed;
  // (user, seq): local sessions to catch up from the store, from below the
  // seq each missed (0: everything pending; a Resync without seqs).
  std::vector<std::pair<std::uint64_t, std::uint64_t>> resync;
  bool unexpected = false;            // not a frame a linked peer sends: close the link
};

// Applies the Presence parts of `frame` from `link` to `presence` and says
// what else it asks. Moves the Forward's event bytes out of `frame`.
template <class Link>
MeshInput ReadMeshFrame(RemotePresence<Link>& presence, Link* link, mesh::MeshFrame& frame) {
  MeshInput in;
  switch (frame.body_case()) {
    case mesh::MeshFrame::kPing:
      break;
    case mesh::MeshFrame::kPresence: {
      const mesh::Presence& p = frame.presence();
      if (p.full()) presence.Drop(link);
      for (std::uint64_t u : p.offline()) presence.Offline(link, u);
      for (std::uint64_t u : p.online()) {
        presence.Online(link, u);
        // A login announced elsewhere displaces the session here (a full
        // snapshot after a link comes back, in all its parts, is not a new
        // login).
        if (!p.full() && !p.continued()) in.displace.push_back(u);
      }
      in.ack_token = p.ack_token();
      break;
    }
    case mesh::MeshFrame::kPresenceAck:
      in.acked = true;
      in.acked_token = frame.presence_ack().token();
      break;
    case mesh::MeshFrame::kForward: {
      mesh::Forward* fw = frame.mutable_forward();
      in.event = std::make_shared<const std::string>(std::move(*fw->mutable_event()));
      for (const mesh::Target& t : fw->targets()) in.deliver.emplace_back(t.user(), t.seq());
      in.group_id = fw->group_id();
      in.prev_seq = fw->prev_seq();
      break;
    }
    case mesh::MeshFrame::kChanged: {
      const mesh::Changed& c = frame.changed();
      in.refresh = true;
      in.changed.user_ids.assign(c.user_ids().begin(), c.user_ids().end());
      for (const mesh::Pair& p : c.friendships()) in.changed.friendships.emplace_back(p.a(), p.b());
      in.changed.requests_to.assign(c.requests_to().begin(), c.requests_to().end());
      in.changed.groups.assign(c.groups().begin(), c.groups().end());
      break;
    }
    case mesh::MeshFrame::kResync: {
      const mesh::Resync& r = frame.resync();
      const bool have_seqs = r.seqs_size() == r.users_size();
      for (int i = 0; i < r.users_size(); ++i) in.resync.emplace_back(r.users(i), have_seqs ? r.seqs(i) : 0);
      break;
    }
    default:
      in.unexpected = true;
  }
  return in;
}

}  // namespace fastchat::server
