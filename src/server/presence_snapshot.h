// PresenceSnapshot: the Presence frames a new mesh link starts with, naming
// every user whose receiving session is on this server.
//
// Promises:
// - Every frame is at most a quarter of `max_frame` bytes serialized (a user
//   id is at most 10 bytes), however many users there are: a million users
//   no longer make one frame over the peer's mesh frame limit.
// - The first frame has `full` (the peer forgets what this link announced
//   before); the others have `continued` (the peer adds the users without
//   taking them for new logins); together they name each user once.
// - Only the last frame carries `ack_token`: the peer acknowledges after it
//   has applied every part (frames on a link are read in order).
// - With no users, one frame (full, no users, the token).
#pragma once

#include <cstdint>
#include <vector>

#include "mesh.pb.h"

namespace fastchat::server {

// How many users one snapshot frame names under `max_frame`.
std::size_t SnapshotUsersPerFrame(std::uint32_t max_frame);

std::vector<mesh::MeshFrame> PresenceSnapshot(const std::vector<std::uint64_t>& users, std::uint32_t max_frame,
                                              std::uint64_t ack_token);

}  // namespace fastchat::server
