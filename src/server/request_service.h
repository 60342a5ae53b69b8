// RequestService: the request logic of a logged-in user, with no sockets.
//
// Handle() takes one decoded request and decides it at once against the
// in-memory Directory (rules: friendship, membership, admin, epoch, sizes).
// It returns an Outcome: either a reply to send now (a refusal, or an answer
// read from the Directory), or a write that makes the decided change durable
// plus the reply to send and the deliveries to route once that write has
// committed. A decided change is applied to the Directory immediately, so the
// next request (of this or any user) sees it even before its write commits;
// writes commit in decision order (StoreWorker), so the store follows the
// same history.
//
// Handle, like the Directory, runs on the event-loop thread; the write runs
// on the store thread and touches only the Store it is given.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "config.h"
#include "directory.h"
#include "fastchat/status.h"
#include "fastchat/store.h"
#include "router.h"

namespace fastchat::wire {
class Envelope;
}

namespace fastchat::server {

struct Caller {
  std::uint64_t id = 0;
  std::string name;
};

// What a write did: its status, an id it created, the group epoch to report,
// and the stored deliveries to route (only rows new to the store: a resend
// is not pushed twice).
struct WriteResult {
  Status st;
  std::uint64_t id = 0;
  std::uint64_t epoch = 0;
  std::vector<Delivery> routed;
  // A group message's own entry (group_id 0: none): the sender's receiving
  // session has nothing to send for it, but the next entry names it.
  Delivery own_entry;
};

struct Outcome {
  // Set when the request is answered now: a whole reply frame (maybe an
  // Error). Empty with no write: nothing to answer (Ack).
  std::string reply;
  // The refusal, if `reply` is one.
  Status refusal;
  // True if the refusal came from Directory state (an unknown user, not
  // friends, not a member, ...) rather than from the request itself: a
  // server sharing its store with others decides again after Refresh(facts).
  bool state_refusal = false;
  // The facts the decision read (to re-read before deciding again) or, for a
  // write, the facts it changed (for other servers to re-read).
  Facts facts;

  // Set when the request needs a durable write first: either `write`, or
  // (for the common case the store merges across requests) `enqueue`: the
  // pending rows to store, routed once stored.
  std::function<WriteResult(Store&)> write;
  std::vector<PendingItem> enqueue;
  // Ack of per-recipient rows only: no reply, merged across requests.
  bool ack_only = false;
  std::vector<std::uint64_t> ack_seqs;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ack_groups;  // (group, seq), cumulative
  // Serialized wire Event routed to the write's deliveries.
  std::shared_ptr<const std::string> event;
  // Runs on the event loop after the write committed (creations that only
  // get their id from the store update the Directory here).
  std::function<void(Directory&, const WriteResult&)> committed;
  bool reply_after_write = true;  // false for Ack: no reply at all
  bool single_call = false;       // the write is one store call (needs no unit of its own)
  std::uint64_t rid = 0;
};

class RequestService {
 public:
  // `shared_store`: other servers write the same store (a cluster), so
  // group deliveries are routed to the members the store has at write time.
  RequestService(Directory& directory, const ServerConfig& config, bool shared_store = false)
      : dir_(directory), config_(config), shared_store_(shared_store) {}

  // Decides one request of `me` (logged in). `now_ms` is the server time
  // stamped on the events it creates. A DirectSend or GroupSend it accepts
  // gives up its bytes fields (msg_id, nonce, ciphertext, signature) to the
  // event it builds, so the caller must not read them afterwards; a refused
  // one keeps them (a server of a cluster decides it again after a refresh).
  Outcome Handle(const Caller& me, wire::Envelope& env, std::uint64_t now_ms);

  // Reply frames. An Error says what ClientError(st) lets a client see;
  // retry_after_ms goes with BUSY / RATE_LIMITED / LIMIT_REACHED.
  static std::string ErrorFrame(std::uint64_t rid, const Status& st, std::uint32_t retry_after_ms = 0);
  static std::string OkFrame(std::uint64_t rid, std::uint64_t id = 0, std::uint64_t epoch = 0);
  // The reply for a finished write: Ok{id, epoch} or its error.
  static std::string WriteReply(std::uint64_t rid, const WriteResult& r);
  // What an `enqueue` write did, from Store::Enqueue's answer.
  static WriteResult EnqueueResult(std::span<const std::uint64_t> recipients, const Status& st,
                                   std::span<const std::uint64_t> seqs, std::span<const Enqueued> how);

 private:
  // Bytes of entries one page of a list reply may hold: half the frame
  // limit, at most 256 KiB (clients read frames of 1 MiB by default).
  std::size_t ListBudget() const { return std::min<std::size_t>(config_.max_frame / 2, 256 * 1024); }
  // LIMIT_REACHED if `user` is in max_groups_per_user groups already
  // (`who`: "you are", "bob is").
  Status CheckGroupsOf(std::uint64_t user, const std::string& who) const;

  Directory& dir_;
  const ServerConfig& config_;
  bool shared_store_;
};

}  // namespace fastchat::server
