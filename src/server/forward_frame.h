// ForwardFramePrefix: a mesh Forward frame written so that the stored
// event's bytes follow it from their shared buffer (Mesh::Forward pushes
// the prefix and the event as one frame, a gather write), instead of being
// copied into a MeshFrame and serialized again. The same idea as
// DeliverFramePrefix for clients (include/fastchat/deliver_frame.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "router.h"

namespace fastchat::server {

// Frame header and MeshFrame{forward: Forward{targets, group_id, prev_seq,
// event: <event_len bytes>}} up to the event's bytes: appending
// `event_len` bytes yields a frame that parses (proto/mesh.proto) as that
// Forward, each target's user and seq taken from `targets`. Throws
// std::length_error past the largest frame (as AppendFrame does).
std::string ForwardFramePrefix(std::span<const Delivery> targets, std::uint64_t group_id, std::uint64_t prev_seq,
                               std::size_t event_len);

}  // namespace fastchat::server
