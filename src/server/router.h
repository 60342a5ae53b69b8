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
#include <vector>

namespace fastchat::server {

class PresenceTable;
class Mesh;

// One stored delivery: pending row `seq` of recipient `user`.
struct Delivery {
  std::uint64_t user = 0;
  std::uint64_t seq = 0;
  std::uint64_t group_id = 0;  // non-zero: an entry of this group's log
  std::uint64_t prev_seq = 0;  // the entry before it in that log (0: none)
};

class Router {
 public:
  explicit Router(PresenceTable& presence) : presence_(presence) {}

  // Enables routing to other servers (cluster mode).
  void set_mesh(Mesh* mesh) { mesh_ = mesh; }

  // Offers each delivery (all carrying the same serialized Event `event`) to
  // its recipient's receiving session: here, or on the server that hosts it
  // (one Forward per server for all its recipients). Recipients online
  // nowhere get it from the store when they return.
  void Route(const std::vector<Delivery>& deliveries, const std::shared_ptr<const std::string>& event);

 private:
  PresenceTable& presence_;
  Mesh* mesh_ = nullptr;
};

}  // namespace fastchat::server
