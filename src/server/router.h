// Router: hands a stored delivery to wherever its recipient is connected.
//
// Every delivery is durably in the pending store before it is routed, so
// routing is best effort: a recipient that is offline (or lagging) picks the
// delivery up from the store later. Today the only destination is a local
// session (PresenceTable); the cluster adds other servers behind this same
// interface.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace fastchat::server {

class PresenceTable;

class Router {
 public:
  explicit Router(PresenceTable& presence) : presence_(presence) {}

  // Pushes delivery `seq` carrying serialized Event `event` to `user` if they
  // have a receiving session; otherwise does nothing.
  void Deliver(std::uint64_t user, std::uint64_t seq, const std::shared_ptr<const std::string>& event);

 private:
  PresenceTable& presence_;
};

}  // namespace fastchat::server
