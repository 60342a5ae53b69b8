#include "commands.h"

#include <nlohmann/json.hpp>

#include "client.h"
#include "output.h"

namespace fastchat::client {

namespace {

struct Spec {
  const char* name;
  std::vector<const char*> args;  // the last one takes the rest of the line
  const char* help;
};

const std::vector<Spec>& Specs() {
  static const std::vector<Spec> specs = {
      {"help", {}, "show this help"},
      {"add_friend", {"USER"}, "ask USER to be your friend"},
      {"accept", {"USER"}, "accept USER's friend request"},
      {"decline", {"USER"}, "decline USER's friend request"},
      {"friends", {}, "list friends and incoming friend requests"},
      {"single_message", {"USER", "TEXT..."}, "send an end-to-end encrypted message to a friend"},
      {"single_image", {"USER", "PATH"}, "send a file to a friend"},
      {"create_group", {"NAME"}, "create a group (you are its admin)"},
      {"add_member", {"GROUP", "USER"}, "add USER to a group you administer"},
      {"group_message", {"GROUP", "TEXT..."}, "send a message to a group"},
      {"group_image", {"GROUP", "PATH"}, "send a file to a group"},
      {"kick", {"GROUP", "USER"}, "remove USER from a group you administer (rotates its key)"},
      {"groups", {}, "list your groups"},
      {"members", {"GROUP"}, "list the members of a group"},
      {"leave", {"GROUP"}, "leave a group"},
      {"fingerprint", {"USER"}, "show the safety number of you and USER"},
      {"pending", {}, "fetch deliveries still pending on the server"},
  };
  return specs;
}

const Spec* Find(const std::string& name) {
  for (const auto& s : Specs())
    if (name == s.name) return &s;
  return nullptr;
}

std::string Canonical(std::string_view name) {
  if (name == "\\help" || name == "?") return "help";
  if (name == "\\q" || name == "quit" || name == "exit" || name == "\\quit") return "\\q";
  return std::string(name);
}

void SkipSpace(std::string_view s, std::size_t* i) {
  while (*i < s.size() && (s[*i] == ' ' || s[*i] == '\t')) ++*i;
}

// Reads one word (quoted or not) starting at *i.
std::string Word(std::string_view s, std::size_t* i) {
  std::string w;
  if (*i < s.size() && s[*i] == '"') {
    ++*i;
    while (*i < s.size() && s[*i] != '"') {
      if (s[*i] == '\\' && *i + 1 < s.size()) ++*i;
      w.push_back(s[(*i)++]);
    }
    if (*i < s.size()) ++*i;  // closing quote
    return w;
  }
  while (*i < s.size() && s[*i] != ' ' && s[*i] != '\t') w.push_back(s[(*i)++]);
  return w;
}

void CheckArity(Command* cmd) {
  const Spec* spec = Find(cmd->name);
  cmd->arity_ok = spec != nullptr && cmd->args.size() == spec->args.size();
  if (cmd->arity_ok)
    for (const auto& a : cmd->args)
      if (a.empty()) cmd->arity_ok = false;
}

}  // namespace

bool IsKnownCommand(const std::string& name) { return Find(Canonical(name)) != nullptr; }
bool IsQuit(const std::string& name) { return Canonical(name) == "\\q"; }

bool ParseLine(std::string_view line, Command* cmd) {
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  std::size_t i = 0;
  SkipSpace(line, &i);
  if (i >= line.size()) return false;
  *cmd = Command();
  cmd->name = Canonical(Word(line, &i));
  const Spec* spec = Find(cmd->name);
  std::size_t want = spec ? spec->args.size() : 0;
  for (std::size_t a = 0; a + 1 < want; ++a) {
    SkipSpace(line, &i);
    if (i >= line.size()) break;
    cmd->args.push_back(Word(line, &i));
  }
  SkipSpace(line, &i);
  if (i < line.size()) {
    std::string rest(line.substr(i));
    while (!rest.empty() && (rest.back() == ' ' || rest.back() == '\t')) rest.pop_back();
    if (rest.size() >= 2 && rest.front() == '"' && rest.back() == '"' &&
        rest.find('"', 1) == rest.size() - 1)
      rest = rest.substr(1, rest.size() - 2);
    cmd->args.push_back(rest);
  }
  CheckArity(cmd);
  return true;
}

Command FromWords(const std::vector<std::string>& words) {
  Command cmd;
  if (words.empty()) return cmd;
  cmd.name = Canonical(words[0]);
  const Spec* spec = Find(cmd.name);
  std::size_t want = spec ? spec->args.size() : 0;
  for (std::size_t i = 1; i < words.size(); ++i) {
    if (want > 0 && cmd.args.size() == want) {
      cmd.args.back() += " " + words[i];
    } else {
      cmd.args.push_back(words[i]);
    }
  }
  CheckArity(&cmd);
  return cmd;
}

std::string Usage(const std::string& name) {
  const Spec* spec = Find(Canonical(name));
  if (spec == nullptr) return "unknown command '" + name + "' (try: help)";
  std::string u = std::string("usage: ") + spec->name;
  for (const char* a : spec->args) u += std::string(" ") + a;
  return u;
}

std::string HelpText() {
  std::string h = "Commands (USER: a name or numeric id; GROUP: a group id or name):\n";
  for (const auto& s : Specs()) {
    std::string line = std::string("  ") + s.name;
    for (const char* a : s.args) line += std::string(" ") + a;
    if (line.size() < 34) line.resize(34, ' ');
    h += line + "  " + s.help + "\n";
  }
  h += "  \\q                                quit (interactive mode)\n";
  h += "Session modes: register NAME | chat | listen | pending | change_password | decrypt-frames FILE";
  return h;
}

void EmitError(Output& out, const std::string& cmd, const std::string& code, const std::string& message) {
  Json r = {{"type", "result"}, {"cmd", cmd}, {"ok", false}, {"code", code}, {"error", message}};
  out.Emit(r);
}

asio::awaitable<bool> RunCommand(ClientCore& core, Output& out, Command cmd) {
  if (cmd.name == "help") {
    Json r = {{"type", "result"}, {"cmd", "help"}, {"ok", true}, {"text", HelpText()}};
    out.Emit(r);
    co_return true;
  }
  if (Find(cmd.name) == nullptr) {
    EmitError(out, cmd.name, kCodeUsage, Usage(cmd.name));
    co_return false;
  }
  if (!cmd.arity_ok) {
    EmitError(out, cmd.name, kCodeUsage, Usage(cmd.name));
    co_return false;
  }
  Json extra = Json::object();
  Outcome o;
  const auto& a = cmd.args;
  const std::string& n = cmd.name;
  if (n == "add_friend") o = co_await core.AddFriend(a[0], &extra);
  else if (n == "accept") o = co_await core.Accept(a[0], &extra);
  else if (n == "decline") o = co_await core.Decline(a[0], &extra);
  else if (n == "friends") o = co_await core.Friends(&extra);
  else if (n == "single_message") o = co_await core.SingleMessage(a[0], a[1], &extra);
  else if (n == "single_image") o = co_await core.SingleImage(a[0], a[1], &extra);
  else if (n == "create_group") o = co_await core.CreateGroup(a[0], &extra);
  else if (n == "add_member") o = co_await core.AddMember(a[0], a[1], &extra);
  else if (n == "group_message") o = co_await core.GroupMessage(a[0], a[1], &extra);
  else if (n == "group_image") o = co_await core.GroupImage(a[0], a[1], &extra);
  else if (n == "kick") o = co_await core.Kick(a[0], a[1], &extra);
  else if (n == "groups") o = co_await core.Groups(&extra);
  else if (n == "members") o = co_await core.Members(a[0], &extra);
  else if (n == "leave") o = co_await core.Leave(a[0], &extra);
  else if (n == "fingerprint") o = co_await core.Fingerprint(a[0], &extra);
  else if (n == "pending") o = co_await core.FetchPending(&extra);
  if (!o.ok()) {
    EmitError(out, n, o.code, o.message);
    co_return false;
  }
  Json r = {{"type", "result"}, {"cmd", n}, {"ok", true}};
  for (auto it = extra.begin(); it != extra.end(); ++it) r[it.key()] = it.value();
  out.Emit(r);
  co_return true;
}

}  // namespace fastchat::client
