// Deliver frames without re-encoding: the server stores each delivery's
// serialized Event and forwards those bytes untouched. A Deliver frame on the
// wire is [frame header][Envelope{deliver: Deliver{seq, event}} prefix][event
// bytes]; DeliverFramePrefix builds the first two parts so the event bytes can
// be written from the shared stored buffer (gather write, no copy).
#pragma once

#include <cstdint>
#include <string>

namespace fastchat {

// Frame header + Envelope/Deliver tags and lengths for a Deliver carrying
// `seq` and an event of `event_len` bytes. Appending the event bytes yields a
// complete frame that parses as Envelope{rid: 0, deliver: {seq, event}}.
// `group_id` non-zero marks an entry of that group's log (Deliver.group_id).
std::string DeliverFramePrefix(std::uint64_t seq, std::size_t event_len, std::uint64_t group_id = 0);

// The whole frame: DeliverFramePrefix(seq, event.size(), group_id) + event.
// One group log entry's frame is the same for every member (no field names
// the recipient), so it can be built once and shared.
std::string DeliverFrame(std::uint64_t seq, const std::string& event, std::uint64_t group_id);

}  // namespace fastchat
