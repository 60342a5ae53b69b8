// CatchUpCursor: where a receiving session's next read of the store starts.
//
// A session sends a user's rows two ways: pushed live as they commit, or
// read back from the store (after login, after lagging, after a peer link
// could not carry them). Pushes from different servers of a cluster can
// arrive out of seq order, so "the highest seq sent" is not a safe place to
// resume reading: a row below it may never have been sent. The cursor keeps
// both the highest seq sent and the lowest seq it knows was missed, and a
// read starts below every missed row. Rows between a missed one and the
// highest sent may be sent twice; clients drop repeats by seq.
//
// Used on the event-loop thread only. Header-only, no I/O: tested alone.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

namespace fastchat::server {

class CatchUpCursor {
 public:
  // A row was sent to the client (pushed live, or read from the store).
  void Sent(std::uint64_t seq) { last_sent_ = std::max(last_sent_, seq); }

  // Row `seq` of this user was not sent (the session was not live, its
  // queue was full, or a peer link dropped it): the next read includes it.
  void Missed(std::uint64_t seq) {
    if (seq <= last_sent_) rewind_ = std::min(rewind_, seq - 1);  // above last_sent_ it is read anyway
  }

  // Everything still pending is to be sent again (a client's FetchPending).
  void Restart() { rewind_ = 0; }

  // Where a read of the store starts: at `after` (the read in progress, or
  // last_sent() for a new one), or below a row missed since.
  std::uint64_t ReadAfter(std::uint64_t after) {
    after = std::min(after, rewind_);
    rewind_ = kNone;
    return after;
  }

  std::uint64_t last_sent() const { return last_sent_; }

 private:
  static constexpr std::uint64_t kNone = std::numeric_limits<std::uint64_t>::max();
  std::uint64_t last_sent_ = 0;
  std::uint64_t rewind_ = kNone;
};

}  // namespace fastchat::server
