// ServerMetrics: the event loop's running totals behind the /metrics
// endpoint (Server::MetricsText renders them with the gauges it reads at
// scrape time), and the client sessions' reader and writer coroutines
// running now. Plain counters: only the event-loop thread touches them.
#pragma once

#include <cstdint>

#include "fastchat/status.h"

namespace fastchat::server {

struct ServerMetrics {
  std::uint64_t accepted = 0;  // connections accepted (before admission)

  // Logins by method and outcome: ok, bad credentials (wrong password,
  // unknown user, bad token), refused (rate limited, busy, malformed, ...).
  enum LoginResult { kLoginOk, kLoginBadCredentials, kLoginRefused, kLoginResults };
  std::uint64_t password_logins[kLoginResults] = {};
  std::uint64_t token_logins[kLoginResults] = {};
  std::uint64_t registrations_ok = 0;
  std::uint64_t registrations_refused = 0;

  // Deliver frames queued to local sessions: pushed live, or read back from
  // the store (catch-up after login or lag).
  std::uint64_t deliveries_live = 0;
  std::uint64_t deliveries_from_store = 0;
  // Group-log entries that arrived before an earlier entry of the group had
  // been sent to the session (GroupChain) and were held for it (GroupHold);
  // and the times a session gave up waiting (the earlier entry did not come
  // within the hold's deadline or bounds, or a store read found such a gap)
  // and read its pending rows from the store again, from the start.
  std::uint64_t group_entries_held = 0;
  std::uint64_t group_gaps = 0;
  // Live group-log entries not sent because the session had sent them
  // already (GroupChain::Verdict::kRepeat): a forward that came after a
  // store read found the entry committed.
  std::uint64_t group_repeats_dropped = 0;
  // Group-log entries a read of the store from the start found that the
  // session had sent on its connection already (not acknowledged yet): not
  // sent again, unless the client asked with FetchPending.
  std::uint64_t group_store_repeats_skipped = 0;
  // Group logs that held more than their bound and lost their oldest entries
  // (group_log_cap.h), and the entries members had not collected from them
  // (summed over members).
  std::uint64_t group_logs_capped = 0;
  std::uint64_t group_log_entries_missed = 0;

  // Refusals over a limit, by the code they were answered with.
  std::uint64_t refused_busy = 0;
  std::uint64_t refused_rate_limited = 0;
  std::uint64_t refused_limit_reached = 0;

  // Connections closed at a deadline: before login (hello, login, idle) and
  // logged in (write stall, unanswered ping).
  std::uint64_t deadline_closes_before_login = 0;
  std::uint64_t deadline_closes_logged_in = 0;

  // Session readers (Session::ReadLoop) and writers (Session::WriteLoop)
  // running now. An idle plain connection runs neither (TLS: its reader).
  std::uint64_t session_readers = 0;
  std::uint64_t session_writers = 0;

  void CountLogin(bool by_token, const Status& st) {
    std::uint64_t* row = by_token ? token_logins : password_logins;
    if (st.ok()) {
      ++row[kLoginOk];
    } else if (st.code() == Code::kBadCredentials) {
      ++row[kLoginBadCredentials];
    } else {
      ++row[kLoginRefused];
    }
  }
  void CountRegistration(const Status& st) { ++(st.ok() ? registrations_ok : registrations_refused); }
  // Counts `code` if it is a limit's (BUSY, RATE_LIMITED, LIMIT_REACHED).
  void CountRefusal(Code code) {
    switch (code) {
      case Code::kBusy: ++refused_busy; break;
      case Code::kRateLimited: ++refused_rate_limited; break;
      case Code::kLimitReached: ++refused_limit_reached; break;
      default: break;
    }
  }
};

}  // namespace fastchat::server
