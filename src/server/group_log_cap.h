// GroupLogCap: the bound on what one group's log keeps for members who do
// not collect it.
//
// A group message is stored once, in its group's log, and leaves it when
// every member has acknowledged it (Store::TrimGroup). A member who never
// comes back (or a removed member owed entries from before) would hold the
// log, and its in-memory index on SQLite, forever. So once in a while
// (Limits::group_log_check) the server caps the logs of the groups appended
// to through it: past Limits::max_group_log_entries entries or
// max_group_log_bytes payload bytes the oldest entries go
// (Store::CapGroupLog, then TrimGroup), and each member who had not
// collected some of them is queued one notice saying how many
// (GroupNoticeEvent EXPIRED), at most one waiting per member and group.
//
// No I/O of its own: a store job, tested against a real store.
#pragma once

#include <cstdint>
#include <string>

#include "fastchat/status.h"
#include "fastchat/store.h"

namespace fastchat::server {

struct GroupLogCap {
  std::uint64_t group = 0;
  GroupLogBound bound;
  std::string group_name;    // for the notice
  std::uint64_t admin = 0;   // for the notice
  std::uint64_t now_ms = 0;  // the notice's time
};

// The dedupe key of the EXPIRED notice of `group`: one per recipient and
// group while it waits (a later cap finds it queued and adds none).
std::string ExpiredNoticeKey(std::uint64_t group);

// The serialized Event telling a member `missed` entries of the group's log
// were dropped before it collected them.
std::string ExpiredNoticeEvent(const GroupLogCap& cap, std::uint64_t missed);

// What one CapGroupLogAndTell did.
struct GroupLogCapResult {
  Status st;
  std::uint64_t cut = 0;        // Store::CapGroupLog's: 0 if the log was within its bound
  std::size_t lapsed = 0;       // readers told
  std::uint64_t missed = 0;     // entries of others they missed, summed over them
};

// Caps the log (Store::CapGroupLog), queues each lapsed reader its notice
// (Store::Enqueue) and trims the log (Store::TrimGroup), all in the caller's
// unit: run it as one store job, so a failure undoes all three.
GroupLogCapResult CapGroupLogAndTell(Store& store, const GroupLogCap& cap);

}  // namespace fastchat::server
