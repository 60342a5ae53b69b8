// ClientCore::KnownNames: the names the line editor completes, read from the
// local store.
#include <algorithm>

#include "client_impl.h"

namespace fastchat::client {

void ClientCore::KnownNames(std::vector<std::string>* users, std::vector<std::string>* groups) {
  users->clear();
  groups->clear();
  Impl& m = *impl_;
  if (m.store == nullptr) return;
  std::vector<Contact> contacts;
  if (m.store->ListFriends(&contacts).ok())
    for (const auto& c : contacts) users->push_back(c.name);
  if (m.store->ListFriendRequests(&contacts).ok())
    for (const auto& c : contacts) users->push_back(c.name);
  std::vector<LocalGroup> local;
  if (m.store->ListGroups(&local).ok())
    for (const auto& g : local)
      if (!g.left) groups->push_back(g.name);
  for (auto* list : {users, groups}) {
    std::sort(list->begin(), list->end());
    list->erase(std::unique(list->begin(), list->end()), list->end());
  }
}

}  // namespace fastchat::client
