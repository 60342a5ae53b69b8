// History: every message, file and notice this user sent or received, kept
// (sealed) in the local store as it happens, and the commands that read it
// back: history USER|GROUP [N] and search TEXT. Both read the local store
// only: they work without a server.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

#include "client.h"
#include "client_impl.h"

namespace fastchat::client {

namespace {

constexpr std::size_t kDefaultHistory = 20;
constexpr std::size_t kMaxHistory = 10000;
// search unseals at most this many of the newest entries, and shows at most
// kSearchHits of what matches.
constexpr std::size_t kSearchScan = 10000;
constexpr std::size_t kSearchHits = 100;

// "2024-05-01T12:00:01.250Z".
std::string IsoUtc(std::int64_t ms) {
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(ms % 1000));
  return buf;
}

char Fold(char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); }

// `needle` in `hay`, ASCII letters compared without case (other bytes as
// they are, so UTF-8 text matches byte for byte).
bool ContainsFolded(const std::string& hay, const std::string& needle) {
  auto it = std::search(hay.begin(), hay.end(), needle.begin(), needle.end(),
                        [](char a, char b) { return Fold(a) == Fold(b); });
  return it != hay.end();
}

}  // namespace

std::int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// ===================================================================== keeping

Status ClientCore::Impl::Remember(bool group, std::uint64_t conv, std::uint64_t sender, const char* kind,
                                  std::int64_t at_ms, const std::string& key, const Json& body) {
  HistoryEntry e;
  e.group = group;
  e.conv_id = conv;
  e.sender = sender;
  e.outgoing = sender == me().user_id;
  e.kind = kind;
  e.at_ms = at_ms;
  e.msg_id = key;
  e.body = body.dump(-1, ' ', false, Json::error_handler_t::replace);
  return store->AddHistory(e);
}

void ClientCore::Impl::RememberSent(bool group, std::uint64_t conv, const char* kind, const std::string& msg_id,
                                    const Json& body) {
  Status s = Remember(group, conv, me().user_id, kind, WallMs(), msg_id, body);
  if (!s.ok()) LogWarn("sent, but not kept in the history: " + s.ToString());
}

void ClientCore::Impl::RememberSentFile(bool group, std::uint64_t conv, const std::string& msg_id,
                                        const std::string& path, const Json& sent) {
  std::error_code ec;
  Json body = {{"title", sent.value("title", std::string())},
               {"path", std::filesystem::absolute(path, ec).string()},
               {"bytes", sent.value("bytes", std::uint64_t{0})}};
  RememberSent(group, conv, "image", msg_id, body);
}

std::string ClientCore::Impl::NoticeKey(std::uint64_t seq) {
  std::string key = "notice";
  PutU64(&key, seq);
  return key;
}

std::int64_t ClientCore::Impl::EventTime(const wire::Event& ev) {
  return ev.time_ms() != 0 ? static_cast<std::int64_t>(ev.time_ms()) : WallMs();
}

// ===================================================================== reading

std::string ClientCore::Impl::SenderName(std::uint64_t id) {
  if (id == me().user_id) return me().name;
  return ContactName(id, std::string());
}

Json ClientCore::Impl::HistoryJson(const HistoryEntry& e) {
  Json j = {{"id", e.id},         {"time_ms", e.at_ms},       {"time", IsoUtc(e.at_ms)},
            {"from", SenderName(e.sender)}, {"from_id", e.sender}, {"outgoing", e.outgoing},
            {"kind", e.kind}};
  if (!e.intact) {
    j["damaged"] = true;
    return j;
  }
  Json body = Json::parse(e.body, nullptr, false);
  if (body.is_object())
    for (auto it = body.begin(); it != body.end(); ++it) j[it.key()] = it.value();
  if (e.outgoing && !e.group && (e.kind == "message" || e.kind == "image")) {
    // Kept once the server had stored it; delivered once the recipient's
    // client sent a receipt sealed with the friend key.
    std::int64_t delivered = 0;
    Status s = store->DeliveredAt(e.conv_id, e.msg_id, &delivered);
    if (!s.ok()) LogWarn("reading receipts: " + s.ToString());
    j["state"] = delivered != 0 ? "delivered" : "stored";
    j["stored_ms"] = e.at_ms;
    if (delivered != 0) {
      j["delivered_ms"] = delivered;
      j["delivered_time"] = IsoUtc(delivered);
    }
  }
  return j;
}

Outcome ClientCore::Impl::ResolveConversation(const std::string& arg, bool* group, std::uint64_t* id,
                                              Json* result) {
  // "user:NAME" and "group:NAME" say which when a user and a group share a name.
  std::string what = arg;
  bool users = true, groups = true;
  if (what.rfind("user:", 0) == 0) {
    what = what.substr(5);
    groups = false;
  } else if (what.rfind("group:", 0) == 0) {
    what = what.substr(6);
    users = false;
  }
  Contact c;
  bool user_found = false;
  if (users) {
    Status s = AllDigits(what) ? store->GetContact(std::stoull(what), &c) : store->FindContactByName(what, &c);
    user_found = s.ok() && c.id != me().user_id;
  }
  std::vector<LocalGroup> found;
  if (groups) {
    LocalGroup g;
    if (AllDigits(what)) {
      if (store->GetGroup(std::stoull(what), &g).ok()) found.push_back(g);
    } else {
      store->FindGroupsByName(what, &found);
    }
  }
  if (user_found && !found.empty())
    return Err(kCodeAmbiguous, "'" + what + "' names a user and a group: say user:" + what + " or group:" + what);
  if (found.size() > 1) {
    std::string ids;
    for (const auto& x : found) ids += (ids.empty() ? "" : ", ") + std::to_string(x.id);
    return Err(kCodeAmbiguous, "several groups are named '" + what + "' (ids " + ids + "); use the id");
  }
  if (user_found) {
    *group = false;
    *id = c.id;
    (*result)["user"] = c.name;
    (*result)["user_id"] = c.id;
    return Outcome::OK();
  }
  if (found.size() == 1) {
    *group = true;
    *id = found[0].id;
    (*result)["group"] = found[0].name;
    (*result)["group_id"] = found[0].id;
    return Outcome::OK();
  }
  return Err("NOT_FOUND", "no conversation with '" + what + "' here: no user or group of that name or id is known");
}

Outcome ClientCore::History(std::string target, std::string count, Json* result) {
  Impl& m = *impl_;
  std::size_t n = kDefaultHistory;
  if (!count.empty()) {
    n = AllDigits(count) && count.size() <= 6 ? std::stoul(count) : 0;
    if (n == 0 || n > kMaxHistory)
      return Err(kCodeUsage, "N is how many entries to show: a number from 1 to " + std::to_string(kMaxHistory));
  }
  bool group = false;
  std::uint64_t id = 0;
  Outcome o = m.ResolveConversation(target, &group, &id, result);
  if (!o.ok()) return o;
  std::vector<HistoryEntry> entries;
  Status s = m.store->History(group, id, n, &entries);
  if (!s.ok()) return Outcome::From(s);
  Json list = Json::array();
  for (const auto& e : entries) list.push_back(m.HistoryJson(e));
  (*result)["count"] = list.size();
  (*result)["entries"] = std::move(list);
  return Outcome::OK();
}

Outcome ClientCore::Search(std::string text, Json* result) {
  Impl& m = *impl_;
  auto keep = [&text](const HistoryEntry& e) {
    Json body = Json::parse(e.body, nullptr, false);
    if (!body.is_object()) return false;
    for (const char* field : {"text", "title"}) {
      auto it = body.find(field);
      if (it != body.end() && it->is_string() && ContainsFolded(it->get<std::string>(), text)) return true;
    }
    return false;
  };
  std::vector<HistoryEntry> hits;
  std::size_t scanned = 0;
  bool more = false;
  Status s = m.store->SearchHistory(kSearchScan, kSearchHits, keep, &hits, &scanned, &more);
  if (!s.ok()) return Outcome::From(s);
  Json list = Json::array();
  for (const auto& e : hits) {
    Json j = m.HistoryJson(e);
    if (e.group) {
      j["group"] = m.GroupNameOf(e.conv_id);
      j["group_id"] = e.conv_id;
    } else {
      j["with"] = m.SenderName(e.conv_id);
      j["with_id"] = e.conv_id;
    }
    list.push_back(std::move(j));
  }
  (*result)["query"] = text;
  (*result)["scanned"] = scanned;
  (*result)["more"] = more;  // older entries were not searched (or more matches than shown)
  (*result)["count"] = list.size();
  (*result)["entries"] = std::move(list);
  return Outcome::OK();
}

}  // namespace fastchat::client
