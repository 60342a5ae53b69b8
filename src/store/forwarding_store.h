// ForwardingStore: a Store that passes every call to another Store. Derive
// from it to watch or break one call (tests count batch commits and inject
// commit failures this way) without writing out the rest.
#pragma once

#include <memory>
#include <utility>

#include "fastchat/store.h"

namespace fastchat {

class ForwardingStore : public Store {
 public:
  explicit ForwardingStore(std::unique_ptr<Store> inner) : inner_(std::move(inner)) {}
  Store& inner() { return *inner_; }

  Status BeginBatch() override { return inner_->BeginBatch(); }
  Status CommitBatch() override { return inner_->CommitBatch(); }
  void RollbackBatch() override { inner_->RollbackBatch(); }
  Status BeginUnit() override { return inner_->BeginUnit(); }
  void EndUnit(bool keep) override { inner_->EndUnit(keep); }
  Status LoadDirectory(DirectoryState* out) override { return inner_->LoadDirectory(out); }
  Status CreateUser(const UserRecord& user, std::uint64_t* id) override { return inner_->CreateUser(user, id); }
  Status GetUserById(std::uint64_t id, UserRecord* out) override { return inner_->GetUserById(id, out); }
  Status GetUserByName(const std::string& name, UserRecord* out) override { return inner_->GetUserByName(name, out); }
  Status AddFriendRequest(std::uint64_t from, std::uint64_t to) override { return inner_->AddFriendRequest(from, to); }
  Status TakeFriendRequest(std::uint64_t from, std::uint64_t to) override { return inner_->TakeFriendRequest(from, to); }
  Status ListFriendRequestsTo(std::uint64_t to, std::vector<std::uint64_t>* from) override {
    return inner_->ListFriendRequestsTo(to, from);
  }
  Status AddFriendship(std::uint64_t a, std::uint64_t b) override { return inner_->AddFriendship(a, b); }
  Status AreFriends(std::uint64_t a, std::uint64_t b, bool* yes) override { return inner_->AreFriends(a, b, yes); }
  Status ListFriends(std::uint64_t user, std::vector<std::uint64_t>* friends) override {
    return inner_->ListFriends(user, friends);
  }
  Status CreateGroup(const std::string& name, std::uint64_t admin, std::uint64_t* id) override {
    return inner_->CreateGroup(name, admin, id);
  }
  Status GetGroup(std::uint64_t id, GroupRecord* out) override { return inner_->GetGroup(id, out); }
  Status AddMember(std::uint64_t group, std::uint64_t user) override { return inner_->AddMember(group, user); }
  Status RemoveMember(std::uint64_t group, std::uint64_t user, std::uint64_t* new_epoch) override {
    return inner_->RemoveMember(group, user, new_epoch);
  }
  Status IsMember(std::uint64_t group, std::uint64_t user, bool* yes) override {
    return inner_->IsMember(group, user, yes);
  }
  Status ListMembers(std::uint64_t group, std::vector<std::uint64_t>* members) override {
    return inner_->ListMembers(group, members);
  }
  Status ListGroupsOf(std::uint64_t user, std::vector<std::uint64_t>* groups) override {
    return inner_->ListGroupsOf(user, groups);
  }
  Status DeleteGroup(std::uint64_t group) override { return inner_->DeleteGroup(group); }
  Status Enqueue(const std::vector<PendingItem>& items, std::vector<std::uint64_t>* seqs,
                 std::vector<Enqueued>* how) override {
    return inner_->Enqueue(items, seqs, how);
  }
  std::size_t MaxMergedEnqueue() const override { return inner_->MaxMergedEnqueue(); }
  int BatchLanes() const override { return inner_->BatchLanes(); }
  Status FetchPending(std::uint64_t recipient, std::uint64_t after_seq, std::size_t limit,
                      std::vector<PendingRow>* rows) override {
    return inner_->FetchPending(recipient, after_seq, limit, rows);
  }
  Status Ack(std::uint64_t recipient, const std::vector<std::uint64_t>& seqs) override {
    return inner_->Ack(recipient, seqs);
  }
  Status AckMany(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& recipient_seqs) override {
    return inner_->AckMany(recipient_seqs);
  }
  Status AckGroups(const std::vector<GroupCursorAck>& acks) override { return inner_->AckGroups(acks); }
  Status CountPending(std::uint64_t recipient, std::uint64_t* n) override { return inner_->CountPending(recipient, n); }
  Status AppendGroup(std::uint64_t group, std::uint64_t sender, const std::vector<std::uint64_t>& members,
                     const std::string& dedupe_key, const std::string& payload, std::uint64_t* seq,
                     bool* fresh, std::vector<std::uint64_t>* readers, std::uint64_t* prev_seq) override {
    return inner_->AppendGroup(group, sender, members, dedupe_key, payload, seq, fresh, readers, prev_seq);
  }
  Status GroupHeads(std::uint64_t user, std::vector<std::pair<std::uint64_t, std::uint64_t>>* heads) override {
    return inner_->GroupHeads(user, heads);
  }
  Status AckGroup(std::uint64_t user, std::uint64_t group, std::uint64_t seq) override {
    return inner_->AckGroup(user, group, seq);
  }
  Status TrimGroup(std::uint64_t group) override { return inner_->TrimGroup(group); }
  Status CapGroupLog(std::uint64_t group, const GroupLogBound& bound, std::uint64_t* cut,
                     std::vector<LapsedReader>* lapsed) override {
    return inner_->CapGroupLog(group, bound, cut, lapsed);
  }
  Status TrimDedupeKeys(std::uint64_t now_ms) override { return inner_->TrimDedupeKeys(now_ms); }
  Status CountGroupLog(std::uint64_t group, std::uint64_t* n) override { return inner_->CountGroupLog(group, n); }
  Status AddSessionToken(const std::string& h, std::uint64_t u, std::uint64_t e, std::uint64_t n) override {
    return inner_->AddSessionToken(h, u, e, n);
  }
  Status CheckSessionToken(const std::string& h, std::uint64_t n, std::uint64_t* u) override {
    return inner_->CheckSessionToken(h, n, u);
  }
  Status RevokeSessionToken(const std::string& h) override { return inner_->RevokeSessionToken(h); }
  Status SetPassword(std::uint64_t u, const std::string& h) override { return inner_->SetPassword(u, h); }
  Status UpsertServer(const ServerRecord& s) override { return inner_->UpsertServer(s); }
  Status ListServers(std::vector<ServerRecord>* out) override { return inner_->ListServers(out); }

 private:
  std::unique_ptr<Store> inner_;
};

}  // namespace fastchat
