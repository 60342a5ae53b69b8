#include "limit_flags.h"

#include <cmath>

#include <CLI/CLI.hpp>

namespace fastchat::server {
namespace {

// "10", "0.5": a default as people write it.
std::string Number(double v) {
  std::string s = std::to_string(v);
  s.erase(s.find_last_not_of('0') + 1);
  if (s.back() == '.') s.pop_back();
  return s;
}

std::string SecondsText(Millis d) { return Number(static_cast<double>(d.count()) / 1000.0); }

void AddSeconds(CLI::App& app, const std::string& name, Millis* field, const std::string& what) {
  app.add_option_function<double>(
         name, [field](double s) { *field = Millis(static_cast<std::int64_t>(std::llround(s * 1000.0))); },
         what + ", seconds (0 = off)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast)
      ->default_str(SecondsText(*field))
      ->check(CLI::NonNegativeNumber);
}

template <class T>
void AddCount(CLI::App& app, const std::string& name, T* field, const std::string& what) {
  app.add_option(name, *field, what)->multi_option_policy(CLI::MultiOptionPolicy::TakeLast)->capture_default_str();
}

void AddNumber(CLI::App& app, const std::string& name, double* field, const std::string& what) {
  app.add_option(name, *field, what)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast)
      ->default_str(Number(*field))
      ->check(CLI::NonNegativeNumber);
}

void AddPerMinute(CLI::App& app, const std::string& name, RateLimit* field, const std::string& what) {
  app.add_option_function<double>(
         name, [field](double n) { *field = RateLimit::PerMinute(n); }, what + " per minute (0 = no limit)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast)
      ->default_str(Number(field->burst))
      ->check(CLI::NonNegativeNumber);
}

}  // namespace

void AddLimitFlags(CLI::App& app, Limits* l) {
  // Each flag may be given again; the last value wins (scripts set defaults
  // that callers override).
  // Before login.
  AddSeconds(app, "--hello-timeout", &l->hello_timeout, "close a connection that has not sent Hello by then");
  AddSeconds(app, "--login-timeout", &l->login_timeout, "close a connection not logged in by then");
  AddSeconds(app, "--unauth-idle-timeout", &l->unauth_idle_timeout,
             "close a connection not logged in that sends no complete frame for this long");
  AddCount(app, "--max-unauth-frame", &l->max_unauth_frame,
           "largest frame accepted before login, bytes (0 = --max-frame)");
  AddCount(app, "--max-unauth-connections", &l->max_unauth_connections,
           "connections not logged in at once; over it the oldest is closed (0 = no limit)");
  // Connections.
  AddCount(app, "--max-connections", &l->max_connections,
           "client connections at once; lowered to fit the open-file limit (0 = only that)");
  AddCount(app, "--max-connections-per-ip", &l->max_connections_per_source,
           "client connections at once from one IPv4 address or IPv6 /64 (0 = no limit)");
  AddCount(app, "--reserved-fds", &l->reserved_fds,
           "file descriptors kept free of client connections (store, cluster links, logs)");
  // Logged in.
  AddSeconds(app, "--write-stall-timeout", &l->write_stall_timeout,
             "drop a connection whose queued replies and deliveries make no progress for this long");
  AddSeconds(app, "--ping-after", &l->ping_after, "send Ping to a logged-in connection silent for this long");
  AddSeconds(app, "--ping-timeout", &l->ping_timeout, "drop a connection that does not answer a Ping within this");
  AddSeconds(app, "--close-grace", &l->close_grace,
             "how long a connection closed with an Error frame may take to read it");
  // Rates.
  AddPerMinute(app, "--login-failures-per-account", &l->login_failures_per_account, "failed logins of one account");
  AddPerMinute(app, "--login-failures-per-ip", &l->login_failures_per_source,
               "failed logins from one IPv4 address or IPv6 /64");
  AddPerMinute(app, "--registrations-per-ip", &l->registrations_per_source,
               "registrations from one IPv4 address or IPv6 /64");
  AddNumber(app, "--sends-per-second", &l->sends_per_user.per_second,
           "requests that store something (messages, image chunks, friend and group changes) per user and second "
           "(0 = no limit)");
  AddNumber(app, "--send-burst", &l->sends_per_user.burst, "how many such requests a user may send at once");
  AddCount(app, "--rate-table-size", &l->rate_table_entries,
           "most rate buckets kept per table (sources, accounts, users); 0 = no bound");
  AddCount(app, "--max-hash-queue", &l->max_hash_queue,
           "password checks waiting for a hash thread; more are answered BUSY (0 = no limit)");
  AddCount(app, "--max-waiting-per-user", &l->max_waiting_per_user,
           "messages and image chunks one user may have waiting in the store (delivered or not, not yet "
           "acknowledged); more are answered LIMIT_REACHED (0 = no limit; on PostgreSQL counted once every "
           "--pg-waiting-recount messages per user and server)");
  AddCount(app, "--max-waiting-bytes-per-user", &l->max_waiting_bytes_per_user,
           "bytes of such messages one user may have waiting; more are answered LIMIT_REACHED (0 = no limit; "
           "on PostgreSQL counted as above)");
  // Groups.
  AddCount(app, "--max-group-members", &l->max_group_members, "members of one group (0 = no limit)");
  AddCount(app, "--max-groups-per-user", &l->max_groups_per_user, "groups one user may be in (0 = no limit)");
  AddCount(app, "--max-group-log-entries", &l->max_group_log_entries,
           "group messages one group's log keeps for members who have not collected them; past it the oldest "
           "go and those members are told how many they missed (0 = no limit)");
  AddCount(app, "--max-group-log-bytes", &l->max_group_log_bytes,
           "bytes of such messages one group's log keeps, as above (0 = no limit)");
  AddSeconds(app, "--group-log-check", &l->group_log_check,
             "how often the logs of the groups written through this server are held to the two bounds above");
  AddSeconds(app, "--group-hold-wait", &l->group_hold_wait,
             "how long a group message that arrived before the one it follows waits for it (cluster) before the "
             "session reads the store instead");
  AddCount(app, "--group-hold-entries", &l->group_hold_entries,
           "group messages held so per receiving session; more: the store is read instead (0 = hold none)");
  AddCount(app, "--group-hold-bytes", &l->group_hold_bytes,
           "bytes of group messages held so per receiving session; more: the store is read instead (0 = hold none)");
}

std::string CheckLimits(const Limits& l, std::uint32_t max_frame) {
  if (l.max_unauth_frame != 0 && l.max_unauth_frame < 4096) {
    return "--max-unauth-frame must be 0 or at least 4096 (a Register frame is up to ~1.2 KiB)";
  }
  if (l.max_unauth_frame > max_frame) return "--max-unauth-frame must not exceed --max-frame";
  if (l.sends_per_user.per_second > 0 && l.sends_per_user.burst < 1) return "--send-burst must be at least 1";
  return "";
}

std::string FitToFileLimit(Limits* l, rlim_t open_files) {
  if (open_files == RLIM_INFINITY) return "";
  const std::size_t room =
      open_files > static_cast<rlim_t>(l->reserved_fds) ? static_cast<std::size_t>(open_files) - l->reserved_fds : 1;
  if (l->max_connections != 0 && l->max_connections <= room) return "";
  const std::size_t before = l->max_connections;
  l->max_connections = room;
  return "max-connections " + (before == 0 ? std::string("(no limit)") : std::to_string(before)) + " lowered to " +
         std::to_string(room) + ": the open-file limit is " + std::to_string(open_files) + " and " +
         std::to_string(l->reserved_fds) + " are kept for the store, cluster links and logs";
}

}  // namespace fastchat::server
