#include "presence_snapshot.h"

#include <algorithm>

namespace fastchat::server {

namespace {

// A frame's fixed part (tags, lengths, the flags, the token) stays under
// this; each user id is a varint of at most 10 bytes.
constexpr std::size_t kFrameOverhead = 64;
constexpr std::size_t kMaxVarint = 10;

}  // namespace

std::size_t SnapshotUsersPerFrame(std::uint32_t max_frame) {
  const std::size_t budget = max_frame / 4;
  return budget > kFrameOverhead + kMaxVarint ? (budget - kFrameOverhead) / kMaxVarint : 1;
}

std::vector<mesh::MeshFrame> PresenceSnapshot(const std::vector<std::uint64_t>& users, std::uint32_t max_frame,
                                              std::uint64_t ack_token) {
  const std::size_t per_frame = SnapshotUsersPerFrame(max_frame);
  std::vector<mesh::MeshFrame> frames;
  std::size_t i = 0;
  do {
    mesh::Presence* p = frames.emplace_back().mutable_presence();
    if (frames.size() == 1)
      p->set_full(true);
    else
      p->set_continued(true);
    const std::size_t end = std::min(users.size(), i + per_frame);
    p->mutable_online()->Reserve(static_cast<int>(end - i));
    for (; i < end; ++i) p->add_online(users[i]);
  } while (i < users.size());
  frames.back().mutable_presence()->set_ack_token(ack_token);
  return frames;
}

}  // namespace fastchat::server
