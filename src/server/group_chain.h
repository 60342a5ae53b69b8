// GroupChain: how far a receiving session has sent each of its user's
// group logs without a gap.
//
// A group message is one entry of its group's log, and a member
// acknowledges the log cumulatively (Ack.groups{group, seq}). In a cluster an
// entry committed on one server may never be forwarded to the member's
// server (a silently cut link, a server killed between its commit and its
// forward) while later entries of the same group arrive live from elsewhere;
// the member's cumulative acknowledgement of those would pass the missing
// entry, which would then never be delivered. Every entry names the entry
// before it in its log (prev_seq, stored with it), so the session can tell:
// an entry whose predecessor it has not sent is held back: for a short while
// for the predecessor's forward (GroupHold: usually it is in flight on
// another link), and past that the session reads the store again (the store
// returns the missing entries and this one in seq order).
//
// Known(group) = K promises: every entry of the group's log up to seq K that
// the user reads (not its own messages, not before it joined) has been sent
// to this session or was acknowledged before. It grows as entries are sent:
// live pushes that name a known predecessor, the user's own entries (which
// name one), rows read from the store by a catch-up pass that covers the
// group (the pass read everything after a point at or below Known), and the
// heads of the logs when such a pass ends (read before its last, empty read).
// So a live push of an entry at or below Known(group) is a repeat (a forward
// that came after a store read sent it): the session drops it.
//
// Used on the event-loop thread only. Header-only, no I/O: tested alone.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

namespace fastchat::server {

class GroupChain {
 public:
  std::uint64_t Known(std::uint64_t group) const {
    if (!known_) return floor_;
    auto it = known_->find(group);
    return it == known_->end() ? floor_ : std::max(floor_, it->second);
  }

  // Entry `seq` of `group` was sent to this session or acknowledged before
  // (at or below Known(group)): sending it again would be a repeat.
  bool IsRepeat(std::uint64_t group, std::uint64_t seq) const { return seq <= Known(group); }

  // What to do with a live push (Push).
  enum class Verdict {
    kSend,    // nothing before it is missing: send it (it is counted as sent)
    kRepeat,  // at or below Known(group): sent or acknowledged before; drop it
    kGap,     // entries after Known(group) up to its predecessor were never sent
  };

  // A live push of entry `seq` of `group` that names `prev`. kGap: hold it
  // back and read the store after Known(group). kRepeat: a forward that
  // came after a store read sent the entry, or a second forward of it.
  // (One hash lookup: this runs for every live group delivery.)
  Verdict Push(std::uint64_t group, std::uint64_t seq, std::uint64_t prev) {
    std::uint64_t known = floor_;
    std::uint64_t* slot = nullptr;
    if (known_) {
      if (auto it = known_->find(group); it != known_->end()) {
        slot = &it->second;
        known = std::max(floor_, it->second);
      }
    }
    if (seq <= known) return Verdict::kRepeat;  // as IsRepeat
    if (prev > known) return Verdict::kGap;
    if (slot != nullptr) {
      *slot = seq;
    } else {
      Set(group, seq);
    }
    return Verdict::kSend;
  }

  // The user's own entry `seq` (it reads none of its own): the next entry
  // names it, so it is known once its predecessor is. False if its
  // predecessor is not known yet (nothing changes: call again once it is).
  bool Own(std::uint64_t group, std::uint64_t seq, std::uint64_t prev) {
    const std::uint64_t known = Known(group);
    if (prev > known) return false;
    if (seq > known) Set(group, seq);
    return true;
  }

  // ---- a catch-up pass: reads of the store in seq order until one is empty

  // A pass begins.
  void StartPass() { pass_start_ = kNone; }

  // A read of the pass starts after `after`; each read starts where the
  // previous one ended, or lower (a rewind).
  void Reading(std::uint64_t after) { pass_start_ = std::min(pass_start_, after); }

  // Entry `seq` of `group`, naming `prev`, was read from the store: true to
  // send it (counted as sent); false if the pass began above Known(group)
  // and `prev` is above it too: rows of the group below the pass may never
  // have been sent, so read again after Known(group) before sending it.
  // (Rows at or below Known(group) are sent again: a client's FetchPending
  // asks for everything pending once more.)
  bool FromStore(std::uint64_t group, std::uint64_t seq, std::uint64_t prev) {
    const std::uint64_t known = Known(group);
    if (pass_start_ > known && prev > known) return false;
    if (seq > known) Set(group, seq);
    return true;
  }

  // The pass ended with an empty read after `after`; `heads` are the
  // (group, head) pairs read before that read (Store::GroupHeads). A group
  // the pass covered (it began at or below Known) is known up to its head
  // and up to `after`; if the pass covered every group, so is every group.
  void EndPass(std::uint64_t after, const std::vector<std::pair<std::uint64_t, std::uint64_t>>& heads) {
    if (pass_start_ == kNone) return;
    for (const auto& [group, head] : heads) {
      const std::uint64_t known = Known(group);
      if (pass_start_ <= known) Set(group, std::max({known, head, after}));
    }
    if (known_) {
      for (auto& [group, known] : *known_) {
        if (pass_start_ <= known) known = std::max(known, after);
      }
    }
    if (pass_start_ <= floor_) {
      floor_ = std::max(floor_, after);
      if (known_) {
        std::erase_if(*known_, [this](const auto& kv) { return kv.second <= floor_; });
        if (known_->empty()) known_.reset();
      }
    }
    pass_start_ = kNone;
  }

 private:
  static constexpr std::uint64_t kNone = std::numeric_limits<std::uint64_t>::max();
  void Set(std::uint64_t group, std::uint64_t seq) {
    if (!known_) known_ = std::make_unique<std::unordered_map<std::uint64_t, std::uint64_t>>();
    (*known_)[group] = seq;
  }

  std::uint64_t floor_ = 0;  // every group is known up to here
  // Groups known above floor_; allocated only while there are some (an idle
  // session's chain is two integers and a null pointer: 24 bytes, not 72).
  std::unique_ptr<std::unordered_map<std::uint64_t, std::uint64_t>> known_;
  std::uint64_t pass_start_ = kNone;                       // the lowest read of the pass
};

}  // namespace fastchat::server
