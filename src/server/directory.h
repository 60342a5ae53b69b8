// Directory: the server's in-memory copy of who exists, who is whose friend,
// who asked whom, and every group's admin, epoch and members.
//
// Requests are decided against the Directory, never against the database, so
// a send costs no read query and no cross-thread round trip before its
// batch. It is loaded whole from the Store at start and kept current by the
// request logic, which applies each change here as it decides it (the write
// that makes the change durable follows in the next store batch). In a
// cluster the other servers change the shared store too: they announce what
// they changed over the mesh and this server re-reads those facts
// (Refresh); a request this Directory would refuse is decided again after
// re-reading the facts it depends on (see RequestService).
//
// Plain data, no I/O, no locking: owned by the event-loop thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "fastchat/store.h"

namespace fastchat::server {

struct DirUser {
  std::uint64_t id = 0;
  std::string name;
  std::string password_hash;
  std::string x25519_public;
  std::string ed25519_public;
};

struct DirGroup {
  std::uint64_t id = 0;
  std::string name;
  std::uint64_t admin_id = 0;
  std::uint64_t epoch = 1;
  std::vector<std::uint64_t> members;  // join order
  bool HasMember(std::uint64_t user) const;
};

// The facts one request depends on, to re-read from the store.
struct Facts {
  std::vector<std::uint64_t> user_ids;
  std::vector<std::string> user_names;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> friendships;  // (a, b)
  std::vector<std::uint64_t> requests_to;  // every request waiting for these users
  std::vector<std::uint64_t> groups;
  std::vector<std::uint64_t> lists_of;  // a user's friends and groups
  // Also read the user of every member of `groups` (false: only the groups
  // and their member ids; the caller reads the members it does not know).
  bool member_users = true;
  bool empty() const {
    return user_ids.empty() && user_names.empty() && friendships.empty() && requests_to.empty() &&
           groups.empty() && lists_of.empty();
  }
  void Merge(const Facts& other);
};

// What the store says about some Facts (read on the store thread, applied on
// the event loop).
struct FactsSnapshot {
  std::vector<UserRecord> users;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> friends;      // pairs that are friends
  std::vector<std::pair<std::uint64_t, std::uint64_t>> not_friends;  // pairs that are not
  std::vector<std::pair<std::uint64_t, std::vector<std::uint64_t>>> requests_to;  // to -> from (oldest first)
  std::vector<std::pair<GroupRecord, std::vector<std::uint64_t>>> groups;  // with members
  std::vector<std::uint64_t> missing_groups;
  Status st;
};

// Reads `facts` from `store` (runs on the store thread).
FactsSnapshot LoadFacts(Store& store, const Facts& facts);

class Directory {
 public:
  // Replaces everything with the store's whole state.
  void Load(const DirectoryState& state);
  // Applies what LoadFacts read.
  void Apply(const FactsSnapshot& snap);

  // ---- users
  const DirUser* FindUser(std::uint64_t id) const;
  const DirUser* FindUser(std::string_view name) const;
  void PutUser(const UserRecord& u);
  std::size_t user_count() const { return users_.size(); }

  // ---- friends (symmetric) and requests (from -> to)
  bool AreFriends(std::uint64_t a, std::uint64_t b) const;
  void AddFriendship(std::uint64_t a, std::uint64_t b);
  const std::vector<std::uint64_t>& FriendsOf(std::uint64_t user) const;
  bool HasRequest(std::uint64_t from, std::uint64_t to) const;
  void AddRequest(std::uint64_t from, std::uint64_t to);
  // Removes the request; false if there was none.
  bool TakeRequest(std::uint64_t from, std::uint64_t to);
  const std::vector<std::uint64_t>& RequestsTo(std::uint64_t to) const;

  // ---- groups
  const DirGroup* FindGroup(std::uint64_t id) const;
  void PutGroup(DirGroup g);
  void AddMember(std::uint64_t group, std::uint64_t user);
  // Removes a member and bumps the epoch; returns the new epoch.
  std::uint64_t RemoveMember(std::uint64_t group, std::uint64_t user);
  void DeleteGroup(std::uint64_t group);
  const std::vector<std::uint64_t>& GroupsOf(std::uint64_t user) const;

 private:
  void SetFriends(std::uint64_t a, std::uint64_t b, bool yes);
  void SetRequestsTo(std::uint64_t to, const std::vector<std::uint64_t>& from);
  void UnlinkGroup(const DirGroup& g);

  std::unordered_map<std::uint64_t, DirUser> users_;
  std::unordered_map<std::string, std::uint64_t> by_name_;
  struct PairHash {
    std::size_t operator()(const std::pair<std::uint64_t, std::uint64_t>& p) const noexcept {
      return std::hash<std::uint64_t>()(p.first * 0x9E3779B97F4A7C15ull ^ p.second);
    }
  };
  std::unordered_set<std::pair<std::uint64_t, std::uint64_t>, PairHash> friendships_;  // (min, max)
  std::unordered_map<std::uint64_t, std::vector<std::uint64_t>> friends_of_;
  std::unordered_map<std::uint64_t, std::vector<std::uint64_t>> requests_to_;  // oldest first
  std::unordered_map<std::uint64_t, DirGroup> groups_;
  std::unordered_map<std::uint64_t, std::vector<std::uint64_t>> groups_of_;
};

}  // namespace fastchat::server
