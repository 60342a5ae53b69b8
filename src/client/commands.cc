#include "commands.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "client.h"
#include "output.h"

namespace fastchat::client {

namespace {

// One command of the language, or (session) a mode of the fastchat program.
struct Spec {
  const char* name;
  std::vector<const char*> args;  // the last one takes the rest of the line; "[X]" is optional
  const char* help;               // one line, for the list
  const char* details;            // what it does
  const char* example;            // a command: as typed in chat; a session: a fastchat command line
  bool local = false;             // reads the local store only (no server needed)
};

const std::vector<Spec>& Specs() {
  static const std::vector<Spec> specs = {
      {"help", {"[COMMAND]"}, "list the commands, or explain one",
       "Without COMMAND, lists every command. With one, shows its usage, what it does and an example.",
       "help single_message", true},
      {"add_friend", {"USER"}, "ask USER to be your friend",
       "Sends USER a friend request. Once USER accepts, you share a friend key and can send each other "
       "messages and files.",
       "add_friend bob"},
      {"accept", {"USER"}, "accept USER's friend request",
       "Accepts a friend request from USER: makes a new friend key and sends it to USER sealed with "
       "USER's public key.",
       "accept alice"},
      {"decline", {"USER"}, "decline USER's friend request", "Declines a friend request from USER; USER is told.",
       "decline mallory"},
      {"friends", {}, "list friends and incoming friend requests",
       "Lists your friends and the friend requests waiting for your answer.", "friends"},
      {"single_message", {"USER", "TEXT..."}, "send an end-to-end encrypted message to a friend",
       "Encrypts TEXT with the key you share with USER and sends it. Everything after USER is the text. "
       "On the command line, put -- before a text that starts with a dash.",
       "single_message bob see you at 8"},
      {"single_image", {"USER", "PATH"}, "send a file to a friend",
       "Sends the file at PATH (any file) encrypted to USER. It arrives as received_<its name> in USER's "
       "download folder.",
       "single_image bob holiday.jpg"},
      {"create_group", {"NAME"}, "create a group (you are its admin)",
       "Creates a group called NAME with you as its admin and makes its first key.", "create_group climbers"},
      {"add_member", {"GROUP", "USER"}, "add USER to a group you administer",
       "Admin only: adds USER to GROUP and hands USER the group's key.", "add_member climbers carol"},
      {"group_message", {"GROUP", "TEXT..."}, "send a message to a group",
       "Encrypts TEXT with the group's current key, signs it, and sends it to every other member.",
       "group_message climbers rope check at 7"},
      {"group_image", {"GROUP", "PATH"}, "send a file to a group",
       "Sends the file at PATH to every other member of GROUP, encrypted with the group's key.",
       "group_image climbers topo.png"},
      {"kick", {"GROUP", "USER"}, "remove USER from a group you administer (rotates its key)",
       "Admin only: removes USER from GROUP and sends a new group key to the members left, so USER cannot "
       "read what follows.",
       "kick climbers carol"},
      {"groups", {}, "list your groups", "Lists the groups you are a member of, with their admin and key epoch.",
       "groups"},
      {"members", {"GROUP"}, "list the members of a group", "Lists the members of GROUP.", "members climbers"},
      {"leave", {"GROUP"}, "leave a group",
       "Leaves GROUP; its admin makes a new key for the members left.", "leave climbers"},
      {"fingerprint", {"USER"}, "show the safety number of you and USER",
       "Shows the safety number of your keys and USER's. Compare it with USER's out of band (in person, "
       "by phone): if they match, nobody is in between.",
       "fingerprint bob"},
      {"pending", {}, "fetch deliveries still pending on the server",
       "Asks the server for everything not yet received: in chat, again; on the command line, fetches it, "
       "prints it and exits, beside a running chat or listen (it displaces neither).",
       "pending"},
      {"history", {"USER|GROUP", "[N]"}, "show the conversation with a user or a group",
       "Shows the newest N (default 20, at most 10000) messages, files and notices of your conversation "
       "with USER or in GROUP, oldest first, with names and times; what you sent USER directly is marked "
       "stored (the server has it) or delivered (USER's client sent a receipt). Read from your local store (it is "
       "sealed there under your password), so it works without a server. Write user:NAME or group:NAME "
       "when a user and a group share a name.",
       "history bob 50", true},
      {"search", {"TEXT..."}, "find messages that contain TEXT",
       "Finds messages and file names that contain TEXT (letters A-Z in any case) in all your "
       "conversations. The history is sealed, so each entry is opened and matched on this machine: the "
       "newest 10000 are searched and at most 100 matches shown.",
       "search rope", true},
  };
  return specs;
}

// The modes of the fastchat program that are not commands (help only).
const std::vector<Spec>& Sessions() {
  static const std::vector<Spec> sessions = {
      {"register", {"NAME"}, "create an account and its local key store",
       "Registers NAME with the server, makes your keys and keeps them in a new local store sealed under "
       "your password. Prints your user id.",
       "fastchat register alice"},
      {"chat", {}, "interactive session: type commands, see what arrives",
       "Logs in, shows what arrived while you were away, then what arrives as it comes; type commands "
       "(help lists them), \\q to quit. Reconnects by itself if the server goes away. One chat or listen "
       "per user at a time: a newer one ends the older; pending and one-shot commands run beside it.",
       "fastchat --user alice chat"},
      {"listen", {}, "stay connected and print what arrives",
       "Like chat without typing: prints every message, file and notice as it arrives until stopped.",
       "fastchat --user bob listen"},
      {"change_password", {}, "change your password (server and local store)",
       "Changes your password on the server and re-seals your local store (keys and history) under the "
       "new one. The new password is asked twice, or given with --new-password.",
       "fastchat --user alice change_password"},
      {"decrypt-frames", {"FILE"}, "try your keys on recorded deliveries",
       "Reads the Deliver frames recorded with --record in FILE and says which ones your keys open. "
       "Offline.",
       "fastchat --user alice decrypt-frames frames.bin"},
      {"\\q", {}, "quit (interactive mode)", "Ends chat: what arrived is processed and acknowledged first.",
       "\\q"},
  };
  return sessions;
}

const Spec* Find(const std::string& name) {
  for (const auto& s : Specs())
    if (name == s.name) return &s;
  return nullptr;
}

bool Optional(const char* arg) { return arg[0] == '['; }

std::size_t Required(const Spec& spec) {
  std::size_t n = 0;
  for (const char* a : spec.args) n += Optional(a) ? 0 : 1;
  return n;
}

// `text` in lines of at most 78 characters, each starting with two spaces.
std::string Wrap(const std::string& text) {
  std::string out, line;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find(' ', start);
    if (end == std::string::npos) end = text.size();
    std::string word = text.substr(start, end - start);
    if (!line.empty() && line.size() + 1 + word.size() > 76) {
      out += "  " + line + "\n";
      line.clear();
    }
    line += (line.empty() ? "" : " ") + word;
    start = end + 1;
  }
  return out + "  " + line;
}

std::string Signature(const Spec& spec) {
  std::string s = spec.name;
  for (const char* a : spec.args) s += std::string(" ") + a;
  return s;
}

// Short IRC-style names (irssi, weechat) beside the seed's.
struct Alias {
  const char* alias;
  const char* command;
};
const std::vector<Alias>& Aliases() {
  static const std::vector<Alias> aliases = {
      {"/msg", "single_message"}, {"/gmsg", "group_message"}, {"/file", "single_image"},
      {"/gfile", "group_image"},  {"/add", "add_friend"},     {"/create", "create_group"},
      {"/invite", "add_member"},  {"/names", "members"},      {"/log", "history"},
      {"/q", "\\q"},              {"/quit", "\\q"},
  };
  return aliases;
}

std::string Canonical(std::string_view name) {
  if (name == "\\help" || name == "?") return "help";
  if (name == "\\q" || name == "quit" || name == "exit" || name == "\\quit") return "\\q";
  for (const auto& a : Aliases())
    if (name == a.alias) return a.command;
  // "/accept bob": every command also answers to its name after a slash.
  if (name.size() > 1 && name[0] == '/') {
    for (const auto& s : Specs())
      if (name.substr(1) == s.name) return s.name;
  }
  return std::string(name);
}

// "/msg, /m" for `command` ("" if it has no alias).
std::string AliasesOf(const std::string& command) {
  std::string out;
  for (const auto& a : Aliases())
    if (command == a.command) out += (out.empty() ? "" : ", ") + std::string(a.alias);
  return out;
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
  cmd->arity_ok = spec != nullptr && cmd->args.size() >= Required(*spec) && cmd->args.size() <= spec->args.size();
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

void DropEndOfOptions(std::vector<std::string>* words) {
  auto it = std::find(words->begin(), words->end(), "--");
  if (it != words->end()) words->erase(it);
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
  return "usage: " + Signature(*spec);
}

bool IsLocalCommand(const std::string& name) {
  const Spec* spec = Find(Canonical(name));
  return spec != nullptr && spec->local;
}

std::string HelpText() {
  std::string h = "Commands (USER: a name or numeric id; GROUP: a group id or name):\n";
  for (const auto& s : Specs()) {
    std::string line = "  " + Signature(s);
    if (line.size() < 34) line.resize(34, ' ');
    h += line + "  " + s.help + "\n";
  }
  h += "  \\q                                quit (interactive mode)\n";
  h += "Aliases: /COMMAND for every command, and";
  for (const auto& a : Aliases()) h += std::string(" ") + a.alias + "=" + a.command;
  h += "\n";
  h += "Session modes: register NAME | chat | listen | pending | change_password | decrypt-frames FILE\n";
  h += "help COMMAND explains one (fastchat help COMMAND on the command line)";
  return h;
}

std::vector<std::string> HelpTopics() {
  std::vector<std::string> topics;
  for (const auto& s : Specs()) topics.push_back(s.name);
  for (const auto& s : Sessions()) topics.push_back(s.name);
  return topics;
}

bool HelpFor(const std::string& topic, std::string* text) {
  std::string name = Canonical(topic);
  const Spec* spec = Find(name);
  if (spec != nullptr) {
    std::string aliases = AliasesOf(spec->name);
    *text = "usage: " + Signature(*spec) + "\n  " + spec->help + ".\n" + Wrap(spec->details) +
            "\n  In chat also /" + spec->name + (aliases.empty() ? "" : ", " + aliases) + ".\nexample:\n" +
            "  in chat:   " + spec->example + "\n" + "  one-shot:  fastchat --user alice " + spec->example;
    return true;
  }
  for (const auto& s : Sessions()) {
    if (name != s.name) continue;
    bool chat_only = name == "\\q";
    *text = std::string("usage: ") + (chat_only ? "" : "fastchat [options] ") + Signature(s) + "\n  " + s.help +
            ".\n" + Wrap(s.details) + "\nexample:\n  " + s.example;
    return true;
  }
  return false;
}

std::vector<std::string> CompletionWords() {
  std::vector<std::string> words;
  for (const auto& s : Specs()) words.push_back(s.name);
  for (const auto& s : Specs()) words.push_back(std::string("/") + s.name);
  for (const auto& a : Aliases()) words.push_back(a.alias);
  words.push_back("\\q");
  std::sort(words.begin(), words.end());
  words.erase(std::unique(words.begin(), words.end()), words.end());
  return words;
}

ArgKind KindOfArgument(const std::string& command, std::size_t index) {
  const Spec* spec = Find(Canonical(command));
  if (spec == nullptr || index >= spec->args.size()) return ArgKind::kNone;
  std::string_view a = spec->args[index];
  if (a.front() == '[') a = a.substr(1, a.size() - 2);
  if (a == "USER") return ArgKind::kUser;
  if (a == "GROUP") return ArgKind::kGroup;
  if (a == "USER|GROUP") return ArgKind::kUserOrGroup;
  if (a == "COMMAND") return ArgKind::kCommand;
  if (a == "PATH") return ArgKind::kPath;
  return ArgKind::kNone;
}

std::vector<HelpEntry> HelpEntries() {
  std::vector<HelpEntry> entries;
  for (const auto& s : Specs())
    entries.push_back(HelpEntry{s.name, Signature(s), s.help, s.details, s.example, AliasesOf(s.name), false});
  for (const auto& s : Sessions())
    entries.push_back(HelpEntry{s.name, Signature(s), s.help, s.details, s.example, AliasesOf(s.name), true});
  return entries;
}

bool EmitHelp(Output& out, const std::string& topic) {
  Json r = {{"type", "result"}, {"cmd", "help"}, {"ok", true}};
  std::string text;
  if (topic.empty()) {
    text = HelpText();
  } else if (HelpFor(topic, &text)) {
    r["topic"] = Canonical(topic);
  } else {
    EmitError(out, "help", kCodeUsage, "no command '" + topic + "' (help lists them)");
    return false;
  }
  r["text"] = text;
  out.Emit(r);
  return true;
}

void EmitError(Output& out, const std::string& cmd, const std::string& code, const std::string& message) {
  Json r = {{"type", "result"}, {"cmd", cmd}, {"ok", false}, {"code", code}, {"error", message}};
  out.Emit(r);
}

asio::awaitable<bool> RunCommand(ClientCore& core, Output& out, Command cmd) {
  if (cmd.name == "help" && cmd.arity_ok) {
    co_return EmitHelp(out, cmd.args.empty() ? std::string() : cmd.args[0]);
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
  const std::string second = a.size() > 1 ? a[1] : std::string();  // an optional argument
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
  else if (n == "history") o = core.History(a[0], second, &extra);
  else if (n == "search") o = core.Search(a[0], &extra);
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
