#include "output.h"

#include <cstdint>
#include <cstdio>
#include <ctime>

#include <nlohmann/json.hpp>
#include <unistd.h>

#include "progress.h"

#include "terminal_text.h"

namespace fastchat::client {

namespace {

// The field as the program has it (only for text this program wrote).
std::string Raw(const Json& e, const char* key) {
  auto it = e.find(key);
  if (it == e.end() || it->is_null()) return std::string();
  if (it->is_string()) return it->get<std::string>();
  return it->dump(-1, ' ', false, Json::error_handler_t::replace);
}

// The field as it may be shown on a terminal: every value in an event may
// come from another user (names, titles, text, error messages naming them).
std::string Str(const Json& e, const char* key) { return SafeForTerminal(Raw(e, key)); }

std::string Dump(const Json& e) { return SafeJsonLine(e.dump(-1, ' ', false, Json::error_handler_t::replace)); }

// "bob" or "#7" when the name is unknown.
std::string Who(const Json& e, const char* name_key, const char* id_key) {
  std::string name = Str(e, name_key);
  if (!name.empty()) return name;
  std::string id = Str(e, id_key);
  return id.empty() ? std::string("?") : "#" + id;
}

std::string GroupName(const Json& e) {
  std::string name = Str(e, "group");
  return name.empty() ? "#" + Str(e, "group_id") : name;
}

std::string UserList(const Json& list) {
  std::string out;
  if (!list.is_array()) return out;
  for (const auto& u : list) {
    if (!out.empty()) out += ", ";
    out += Str(u, "name") + " (" + Str(u, "id") + ")";
  }
  return out.empty() ? "(none)" : out;
}

// "2024-05-01 14:00:01", local time.
std::string LocalTime(std::int64_t ms) {
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  localtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

// One entry of history or search: "2024-05-01 14:00:01  alice: hi".
std::string HistoryLine(const Json& e, bool with_conversation) {
  std::string line = "  " + LocalTime(e.value("time_ms", std::int64_t{0})) + "  ";
  if (with_conversation)
    line += e.contains("group_id") ? "[group " + GroupName(e) + "] " : "[" + Who(e, "with", "with_id") + "] ";
  std::string who = Who(e, "from", "from_id");
  std::string kind = Str(e, "kind");
  if (e.value("damaged", false)) return line + "! an entry that does not open (damaged, or moved in the store file)";
  // Outgoing direct messages and files: stored by the server, or delivered.
  std::string state;
  if (Str(e, "state") == "delivered")
    state = "  [delivered " + LocalTime(e.value("delivered_ms", std::int64_t{0})) + "]";
  else if (Str(e, "state") == "stored")
    state = "  [stored]";
  if (kind == "message") return line + who + ": " + Str(e, "text") + state;
  if (kind == "image")
    return line + who + " sent a file \"" + Str(e, "title") + "\" (" + Str(e, "bytes") + " bytes): " + Str(e, "path") +
           state;
  return line + "* " + Str(e, "text");
}

std::string HumanResult(const Json& e) {
  std::string cmd = Str(e, "cmd");
  auto ok_it = e.find("ok");
  bool ok = ok_it != e.end() && ok_it->is_boolean() && ok_it->get<bool>();
  if (!ok) return "error (" + cmd + "): " + Str(e, "code") + ": " + Str(e, "error");
  if (cmd == "help") return Raw(e, "text");  // this program's own text, several lines
  if (cmd == "register") return "registered " + Str(e, "user") + " with id " + Str(e, "user_id");
  if (cmd == "add_friend") return "friend request sent to " + Who(e, "user", "user_id");
  if (cmd == "accept") return "you and " + Who(e, "user", "user_id") + " are now friends";
  if (cmd == "decline") return "declined the request of " + Who(e, "user", "user_id");
  if (cmd == "friends") {
    std::string s = "friends: " + UserList(e.value("friends", Json::array()));
    s += "\nfriend requests: " + UserList(e.value("requests", Json::array()));
    return s;
  }
  if (cmd == "single_message") return "sent to " + Who(e, "user", "user_id");
  if (cmd == "single_image" || cmd == "group_image") {
    std::string to = cmd == "single_image" ? Who(e, "user", "user_id") : "group " + GroupName(e);
    return "sent " + Str(e, "title") + " (" + Str(e, "bytes") + " bytes) to " + to;
  }
  if (cmd == "create_group")
    return "created group " + GroupName(e) + " (id " + Str(e, "group_id") + ", epoch " + Str(e, "epoch") + ")";
  if (cmd == "add_member") return "added " + Who(e, "user", "user_id") + " to group " + GroupName(e);
  if (cmd == "group_message") return "sent to group " + GroupName(e);
  if (cmd == "kick")
    return "removed " + Who(e, "user", "user_id") + " from group " + GroupName(e) + " (now epoch " +
           Str(e, "epoch") + ")";
  if (cmd == "leave") return "left group " + GroupName(e);
  if (cmd == "groups") {
    std::string s = "groups:";
    const Json list = e.value("groups", Json::array());
    if (list.empty()) s += " (none)";
    for (const auto& g : list)
      s += "\n  " + Str(g, "name") + " (id " + Str(g, "id") + ", admin " + Who(g, "admin", "admin_id") +
           ", epoch " + Str(g, "epoch") + ")";
    return s;
  }
  if (cmd == "members")
    return "members of " + GroupName(e) + " (admin " + Who(e, "admin", "admin_id") +
           "): " + UserList(e.value("members", Json::array()));
  if (cmd == "fingerprint")
    return "safety number with " + Who(e, "user", "user_id") + ":\n  " + Str(e, "safety_number");
  if (cmd == "history") {
    std::string s = e.contains("group_id") ? "history of group " + GroupName(e) : "history with " + Who(e, "user", "user_id");
    const Json list = e.value("entries", Json::array());
    s += list.empty() ? ": nothing yet" : " (" + std::to_string(list.size()) + ", oldest first):";
    for (const auto& x : list) s += "\n" + HistoryLine(x, false);
    return s;
  }
  if (cmd == "search") {
    const Json list = e.value("entries", Json::array());
    std::string s = "search \"" + Str(e, "query") + "\": " + std::to_string(list.size()) + " found";
    if (e.value("more", false)) s += " (older entries were not searched)";
    for (const auto& x : list) s += "\n" + HistoryLine(x, true);
    return s;
  }
  if (cmd == "pending") {
    std::string n = Str(e, "count");
    return n.empty() ? "fetching pending deliveries" : n + " pending deliveries processed";
  }
  return "ok (" + cmd + ")";
}

}  // namespace

std::string Output::Human(const Json& e) {
  std::string type = Str(e, "type");
  if (type == "result") return HumanResult(e);
  if (type == "ready")
    return "* logged in as " + Str(e, "user") + " (id " + Str(e, "user_id") + ")" +
           (Str(e, "server_id").empty() ? std::string() : " on " + Str(e, "server_id")) + ", up to date";
  if (type == "message") return "[" + Who(e, "from", "from_id") + "] " + Str(e, "text");
  if (type == "image")
    return "[" + Who(e, "from", "from_id") + "] sent a file \"" + Str(e, "title") + "\" (" +
           Str(e, "bytes") + " bytes), saved as " + Str(e, "path");
  if (type == "group_message")
    return "[group " + GroupName(e) + "] <" + Who(e, "from", "from_id") + "> " + Str(e, "text");
  if (type == "group_image")
    return "[group " + GroupName(e) + "] <" + Who(e, "from", "from_id") + "> sent a file \"" +
           Str(e, "title") + "\" (" + Str(e, "bytes") + " bytes), saved as " + Str(e, "path");
  if (type == "friend_request")
    return "* friend request from " + Who(e, "from", "from_id") + " (id " + Str(e, "from_id") +
           "); answer with: accept " + Who(e, "from", "from_id") + "  or  decline " +
           Who(e, "from", "from_id");
  if (type == "friend_accepted")
    return "* " + Who(e, "from", "from_id") + " accepted your friend request";
  if (type == "friend_declined")
    return "* " + Who(e, "from", "from_id") + " declined your friend request";
  if (type == "group_added" || type == "group_kicked" || type == "group_left") {
    bool me = e.value("me", false);
    std::string who = me ? std::string("you") : Who(e, "user", "user_id");
    std::string what = type == "group_added"    ? (me ? " were added to" : " was added to")
                       : type == "group_kicked" ? (me ? " were removed from" : " was removed from")
                                                : " left";
    return "* [group " + GroupName(e) + "] " + who + what + " the group (epoch " + Str(e, "epoch") + ")";
  }
  if (type == "group_key")
    return "* [group " + GroupName(e) + "] now holding the key for epoch " + Str(e, "epoch");
  if (type == "group_expired")
    return "* [group " + GroupName(e) + "] " + Str(e, "expired") +
           (Str(e, "expired") == "1" ? " earlier message" : " earlier messages") +
           " of this group expired on the server before you collected them";
  if (type == "progress") {
    const int percent = e.value("percent", 0);
    if (Str(e, "direction") == "receive")
      return "receiving " + Str(e, "title") + " from " + Who(e, "from", "from_id") + ": " + std::to_string(percent) + "%";
    std::string to = e.contains("group") ? "group " + Str(e, "group") : Str(e, "to");
    std::string s = "sending " + Str(e, "title") + " to " + to + ": " + ProgressBar(percent, 20) + " " +
                    std::to_string(percent) + "% " + HumanBytes(e.value("bytes", 0.0)) + "/" +
                    HumanBytes(e.value("total", 0.0)) + ", " + HumanBytes(e.value("rate_bps", 0.0)) + "/s";
    const double left = e.value("eta_s", -1.0);
    if (percent < 100 && left >= 0) s += ", " + std::to_string(static_cast<long long>(left + 0.5)) + " s left";
    return s;
  }
  if (type == "receipt")
    return "* " + Who(e, "to", "to_id") + " received your message (" + LocalTime(e.value("delivered_ms", std::int64_t{0})) +
           ")";
  if (type == "undecryptable")
    return "! could not open a " + Str(e, "kind") + " delivery from " + Who(e, "from", "from_id") +
           " (seq " + Str(e, "seq") + "): " + Str(e, "reason");
  if (type == "warning")
    return "!!! WARNING [" + Str(e, "code") + "] " + Str(e, "message");
  if (type == "disconnected") return "* disconnected: " + Str(e, "reason");
  if (type == "reconnecting") return "* connection lost (" + Str(e, "reason") + "); reconnecting...";
  if (type == "reconnected")
    return "* reconnected to " + Str(e, "server_id") + " (" + Str(e, "server") + ") after " + Str(e, "after_ms") +
           " ms; up to date";
  if (type == "decrypt") {
    std::string s = "frame seq " + Str(e, "seq") + ": ";
    s += e.value("opened", false) ? "opened" : "not opened";
    std::string reason = Str(e, "reason");
    if (!reason.empty()) s += " (" + reason + ")";
    return s;
  }
  if (type == "decrypt_summary")
    return Str(e, "opened") + " of " + Str(e, "frames") + " frames opened";
  return Dump(e);
}

Output::Output(bool json) : json_(json), tty_(isatty(STDOUT_FILENO) == 1) {}

void Output::Emit(const Json& event) {
  std::string line;
  const bool progress = !json_ && event.value("type", std::string()) == "progress";
  if (progress && line_owner_ != nullptr) {
    // chat at a terminal: a report is a line above the prompt, at most one
    // per 10 percentage points of a transfer, and the last.
    const int percent = event.value("percent", 0);
    if (percent < 100 && percent < last_printed_percent_ + 10 && last_printed_percent_ >= 0) return;
    last_printed_percent_ = percent < 100 ? percent : -1;
    line = Human(event);
    line.push_back('\n');
  } else if (progress) {
    // Text: one line redrawn in place on a terminal; nothing elsewhere
    // (logs and pipes get the final result line only).
    if (!tty_) return;
    line = "\r\033[K" + Human(event);
    progress_open_ = event.value("percent", 0) < 100;
    if (!progress_open_) line.push_back('\n');
  } else {
    // Anything else clears a progress line first; the next report redraws it.
    if (progress_open_) line = "\r\033[K";
    progress_open_ = false;
    line += json_ ? Dump(event) : Human(event);
    line.push_back('\n');
  }
  if (line_owner_ != nullptr) line_owner_->Hide();
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fflush(stdout);
  if (line_owner_ != nullptr) line_owner_->Show();
}

}  // namespace fastchat::client
