#include "group_log_cap.h"

#include <vector>

#include "fastchat.pb.h"

namespace fastchat::server {

std::string ExpiredNoticeKey(std::uint64_t group) { return "gx/" + std::to_string(group); }

std::string ExpiredNoticeEvent(const GroupLogCap& cap, std::uint64_t missed) {
  wire::Event event;
  event.set_time_ms(cap.now_ms);
  auto* n = event.mutable_group_notice();
  n->set_group_id(cap.group);
  n->set_group_name(cap.group_name);
  n->set_admin_id(cap.admin);
  n->set_what(wire::GroupNoticeEvent::EXPIRED);
  n->set_expired(missed);
  return event.SerializeAsString();
}

GroupLogCapResult CapGroupLogAndTell(Store& store, const GroupLogCap& cap) {
  GroupLogCapResult r;
  std::vector<LapsedReader> lapsed;
  r.st = store.CapGroupLog(cap.group, cap.bound, &r.cut, &lapsed);
  if (!r.st.ok() || r.cut == 0) return r;
  r.lapsed = lapsed.size();
  for (const LapsedReader& l : lapsed) r.missed += l.missed;
  if (!lapsed.empty()) {
    std::vector<PendingItem> items;
    items.reserve(lapsed.size());
    for (const LapsedReader& reader : lapsed) {
      PendingItem item;
      item.recipient = reader.user;
      item.dedupe_key = ExpiredNoticeKey(cap.group);
      item.payload = ExpiredNoticeEvent(cap, reader.missed);
      items.push_back(std::move(item));
    }
    std::vector<std::uint64_t> seqs;
    std::vector<Enqueued> how;
    r.st = store.Enqueue(items, &seqs, &how);
    if (!r.st.ok()) return r;
  }
  r.st = store.TrimGroup(cap.group);
  return r;
}

}  // namespace fastchat::server
