// RemotePresence: the users whose receiving session is on another server of
// the cluster, by the mesh link that announced them. A user is where the
// latest announcement says; a link's offline (or full snapshot) removes only
// what that link announced; Drop(link) forgets everything the link announced,
// so no entry outlives its link. Plain data, used on the event loop.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <unordered_set>

namespace fastchat::server {

template <class Link>
class RemotePresence {
 public:
  // The link hosting `user`'s receiving session, or null.
  Link* Where(std::uint64_t user) const {
    auto it = where_.find(user);
    return it == where_.end() ? nullptr : it->second;
  }
  void Online(Link* link, std::uint64_t user) {
    users_[link].insert(user);
    where_[user] = link;
  }
  void Offline(Link* link, std::uint64_t user) {
    auto u = users_.find(link);
    if (u != users_.end()) u->second.erase(user);
    auto w = where_.find(user);
    if (w != where_.end() && w->second == link) where_.erase(w);
  }
  // Forgets everything `link` announced; returns how many users that was.
  std::size_t Drop(Link* link) {
    auto u = users_.find(link);
    if (u == users_.end()) return 0;
    const std::size_t n = u->second.size();
    for (std::uint64_t user : u->second) {
      auto w = where_.find(user);
      if (w != where_.end() && w->second == link) where_.erase(w);
    }
    users_.erase(u);
    return n;
  }
  std::size_t size() const { return where_.size(); }

 private:
  std::unordered_map<std::uint64_t, Link*> where_;
  std::unordered_map<Link*, std::unordered_set<std::uint64_t>> users_;
};

}  // namespace fastchat::server
