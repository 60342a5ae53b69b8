#include "directory.h"

#include <algorithm>

namespace fastchat::server {
namespace {

const std::vector<std::uint64_t> kNoIds;

std::pair<std::uint64_t, std::uint64_t> Ordered(std::uint64_t a, std::uint64_t b) {
  return a < b ? std::make_pair(a, b) : std::make_pair(b, a);
}

void Erase(std::vector<std::uint64_t>* v, std::uint64_t x) {
  v->erase(std::remove(v->begin(), v->end(), x), v->end());
}

DirGroup FromRecord(const GroupRecord& g, std::vector<std::uint64_t> members) {
  DirGroup d;
  d.id = g.id;
  d.name = g.name;
  d.admin_id = g.admin_id;
  d.epoch = g.epoch;
  d.members = std::move(members);
  return d;
}

}  // namespace

bool DirGroup::HasMember(std::uint64_t user) const {
  return std::find(members.begin(), members.end(), user) != members.end();
}

void Facts::Merge(const Facts& o) {
  user_ids.insert(user_ids.end(), o.user_ids.begin(), o.user_ids.end());
  user_names.insert(user_names.end(), o.user_names.begin(), o.user_names.end());
  friendships.insert(friendships.end(), o.friendships.begin(), o.friendships.end());
  requests_to.insert(requests_to.end(), o.requests_to.begin(), o.requests_to.end());
  groups.insert(groups.end(), o.groups.begin(), o.groups.end());
  lists_of.insert(lists_of.end(), o.lists_of.begin(), o.lists_of.end());
  member_users = member_users || o.member_users;
}

FactsSnapshot LoadFacts(Store& s, const Facts& facts) {
  FactsSnapshot snap;
  auto user = [&](Status st, UserRecord&& u) {
    if (st.ok()) {
      snap.users.push_back(std::move(u));
    } else if (st.code() != Code::kNoSuchUser && snap.st.ok()) {
      snap.st = st;
    }
  };
  // Users named by id (a request's, a group's members, requesters).
  auto users_by_id = [&](const std::vector<std::uint64_t>& ids) {
    for (std::uint64_t id : ids) {
      UserRecord u;
      Status st = s.GetUserById(id, &u);
      user(st, std::move(u));
    }
  };
  users_by_id(facts.user_ids);
  for (const std::string& name : facts.user_names) {
    UserRecord u;
    Status st = s.GetUserByName(name, &u);
    user(st, std::move(u));
  }
  auto pair = [&](std::uint64_t a, std::uint64_t b) {
    bool yes = false;
    Status st = s.AreFriends(a, b, &yes);
    if (!st.ok()) {
      if (snap.st.ok()) snap.st = st;
      return;
    }
    (yes ? snap.friends : snap.not_friends).emplace_back(a, b);
  };
  for (const auto& [a, b] : facts.friendships) pair(a, b);
  std::vector<std::uint64_t> requests_to = facts.requests_to;
  std::vector<std::uint64_t> groups = facts.groups;
  for (std::uint64_t u : facts.lists_of) {
    std::vector<std::uint64_t> ids;
    Status st = s.ListFriends(u, &ids);
    if (st.ok()) {
      for (std::uint64_t f : ids) snap.friends.emplace_back(u, f);
      users_by_id(ids);
      st = s.ListGroupsOf(u, &ids);
    }
    if (st.ok()) groups.insert(groups.end(), ids.begin(), ids.end());
    if (!st.ok() && snap.st.ok()) snap.st = st;
    requests_to.push_back(u);
  }
  for (std::uint64_t to : requests_to) {
    std::vector<std::uint64_t> from;
    Status st = s.ListFriendRequestsTo(to, &from);
    if (!st.ok()) {
      if (snap.st.ok()) snap.st = st;
      continue;
    }
    users_by_id(from);
    snap.requests_to.emplace_back(to, std::move(from));
  }
  for (std::uint64_t gid : groups) {
    GroupRecord g;
    Status st = s.GetGroup(gid, &g);
    std::vector<std::uint64_t> members;
    if (st.ok()) st = s.ListMembers(gid, &members);
    if (st.code() == Code::kNoSuchGroup) {
      snap.missing_groups.push_back(gid);
      continue;
    }
    if (!st.ok()) {
      if (snap.st.ok()) snap.st = st;
      continue;
    }
    if (facts.member_users) users_by_id(members);
    snap.groups.emplace_back(std::move(g), std::move(members));
  }
  return snap;
}

void Directory::Load(const DirectoryState& state) {
  *this = Directory();
  for (const UserRecord& u : state.users) PutUser(u);
  for (const auto& [a, b] : state.friendships) AddFriendship(a, b);
  for (const auto& [from, to] : state.requests) AddRequest(from, to);
  for (const GroupRecord& g : state.groups) groups_[g.id] = FromRecord(g, {});
  for (const auto& [gid, user] : state.members) AddMember(gid, user);
}

void Directory::Apply(const FactsSnapshot& snap) {
  for (const UserRecord& u : snap.users) PutUser(u);
  for (const auto& [a, b] : snap.friends) SetFriends(a, b, true);
  for (const auto& [a, b] : snap.not_friends) SetFriends(a, b, false);
  for (const auto& [to, from] : snap.requests_to) SetRequestsTo(to, from);
  for (const auto& [g, members] : snap.groups) PutGroup(FromRecord(g, members));
  for (std::uint64_t gid : snap.missing_groups) DeleteGroup(gid);
}

// ---- users

const DirUser* Directory::FindUser(std::uint64_t id) const {
  auto it = users_.find(id);
  return it == users_.end() ? nullptr : &it->second;
}

const DirUser* Directory::FindUser(std::string_view name) const {
  auto it = by_name_.find(std::string(name));
  return it == by_name_.end() ? nullptr : FindUser(it->second);
}

void Directory::PutUser(const UserRecord& u) {
  DirUser& d = users_[u.id];
  d.id = u.id;
  d.name = u.name;
  d.password_hash = u.password_hash;
  d.x25519_public = u.x25519_public;
  d.ed25519_public = u.ed25519_public;
  by_name_[u.name] = u.id;
}

// ---- friends

bool Directory::AreFriends(std::uint64_t a, std::uint64_t b) const {
  return friendships_.count(Ordered(a, b)) != 0;
}

void Directory::AddFriendship(std::uint64_t a, std::uint64_t b) { SetFriends(a, b, true); }

void Directory::SetFriends(std::uint64_t a, std::uint64_t b, bool yes) {
  const auto key = Ordered(a, b);
  if (yes) {
    if (!friendships_.insert(key).second) return;
    friends_of_[a].push_back(b);
    if (a != b) friends_of_[b].push_back(a);
    return;
  }
  if (friendships_.erase(key) == 0) return;
  Erase(&friends_of_[a], b);
  Erase(&friends_of_[b], a);
}

const std::vector<std::uint64_t>& Directory::FriendsOf(std::uint64_t user) const {
  auto it = friends_of_.find(user);
  return it == friends_of_.end() ? kNoIds : it->second;
}

bool Directory::HasRequest(std::uint64_t from, std::uint64_t to) const {
  const auto& v = RequestsTo(to);
  return std::find(v.begin(), v.end(), from) != v.end();
}

void Directory::AddRequest(std::uint64_t from, std::uint64_t to) {
  if (HasRequest(from, to)) return;
  requests_to_[to].push_back(from);
}

bool Directory::TakeRequest(std::uint64_t from, std::uint64_t to) {
  auto it = requests_to_.find(to);
  if (it == requests_to_.end()) return false;
  auto pos = std::find(it->second.begin(), it->second.end(), from);
  if (pos == it->second.end()) return false;
  it->second.erase(pos);
  if (it->second.empty()) requests_to_.erase(it);
  return true;
}

const std::vector<std::uint64_t>& Directory::RequestsTo(std::uint64_t to) const {
  auto it = requests_to_.find(to);
  return it == requests_to_.end() ? kNoIds : it->second;
}

void Directory::SetRequestsTo(std::uint64_t to, const std::vector<std::uint64_t>& from) {
  if (from.empty()) {
    requests_to_.erase(to);
  } else {
    requests_to_[to] = from;
  }
}

// ---- groups

const DirGroup* Directory::FindGroup(std::uint64_t id) const {
  auto it = groups_.find(id);
  return it == groups_.end() ? nullptr : &it->second;
}

void Directory::UnlinkGroup(const DirGroup& g) {
  for (std::uint64_t m : g.members) {
    auto it = groups_of_.find(m);
    if (it == groups_of_.end()) continue;
    Erase(&it->second, g.id);
    if (it->second.empty()) groups_of_.erase(it);
  }
}

void Directory::PutGroup(DirGroup g) {
  auto it = groups_.find(g.id);
  if (it != groups_.end()) UnlinkGroup(it->second);
  for (std::uint64_t m : g.members) groups_of_[m].push_back(g.id);
  const std::uint64_t id = g.id;
  groups_[id] = std::move(g);
}

void Directory::AddMember(std::uint64_t group, std::uint64_t user) {
  auto it = groups_.find(group);
  if (it == groups_.end() || it->second.HasMember(user)) return;
  it->second.members.push_back(user);
  groups_of_[user].push_back(group);
}

std::uint64_t Directory::RemoveMember(std::uint64_t group, std::uint64_t user) {
  auto it = groups_.find(group);
  if (it == groups_.end()) return 0;
  Erase(&it->second.members, user);
  auto g = groups_of_.find(user);
  if (g != groups_of_.end()) {
    Erase(&g->second, group);
    if (g->second.empty()) groups_of_.erase(g);
  }
  return ++it->second.epoch;
}

void Directory::DeleteGroup(std::uint64_t group) {
  auto it = groups_.find(group);
  if (it == groups_.end()) return;
  UnlinkGroup(it->second);
  groups_.erase(it);
}

const std::vector<std::uint64_t>& Directory::GroupsOf(std::uint64_t user) const {
  auto it = groups_of_.find(user);
  return it == groups_of_.end() ? kNoIds : it->second;
}

}  // namespace fastchat::server
