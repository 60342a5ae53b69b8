// PresenceTable: which receiving session each online user has on this server.
//
// Answers "where is this user connected?" for the Router. A user has at most
// one receiving session; Put returns the one it displaced. Owned and used by
// the server's event-loop thread only (no locking).
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>

namespace fastchat::server {

class Session;

class PresenceTable {
 public:
  // Makes `session` the receiving session of `user`; returns the previous one
  // (or null).
  std::shared_ptr<Session> Put(std::uint64_t user, std::shared_ptr<Session> session) {
    auto& slot = sessions_[user];
    std::shared_ptr<Session> old = std::move(slot);
    slot = std::move(session);
    return old;
  }
  // Removes `user` only if `session` is still its receiving session; says
  // whether it did.
  bool Remove(std::uint64_t user, const Session* session) {
    auto it = sessions_.find(user);
    if (it == sessions_.end() || it->second.get() != session) return false;
    sessions_.erase(it);
    return true;
  }
  // Every user with a receiving session here.
  template <class F>
  void ForEachUser(F f) const {
    for (const auto& [user, session] : sessions_) f(user);
  }
  // The receiving session of `user`, or null if none here.
  Session* Find(std::uint64_t user) const {
    auto it = sessions_.find(user);
    return it == sessions_.end() ? nullptr : it->second.get();
  }
  std::size_t size() const { return sessions_.size(); }

 private:
  std::unordered_map<std::uint64_t, std::shared_ptr<Session>> sessions_;
};

}  // namespace fastchat::server
