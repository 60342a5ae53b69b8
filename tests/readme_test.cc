// README.md's client commands, run as written against real processes.
//
// The commands are read out of README.md (its ```sh blocks and its inline
// `fastchat ...` spans), not copied: if the README changes a command this
// test runs the new one, and if it drops one the test says which. The only
// things the test supplies are what the README leaves to the environment:
// FASTCHAT_SERVER (the single-server commands use the default server),
// FASTCHAT_HOME and FASTCHAT_PASSWORD (the README's commands prompt for
// it), and the balancer's address, which the README gives as cluster.sh's
// 127.0.0.1:7300 and the test replaces with its own balancer's.
//
// The cluster half needs PostgreSQL (ctest runs under pg_virtualenv).
#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <optional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "harness/cluster.h"
#include "harness/fastchat.h"

namespace fastchat::testing {
namespace {

using Words = std::vector<std::string>;
using Env = std::vector<std::pair<std::string, std::string>>;

const std::string kReadmeBalancer = "127.0.0.1:7300";

// Splits a shell command line into words: blanks separate words, double or
// single quotes group, a '#' at the start of a word starts a comment.
Words ShellWords(const std::string& line) {
  Words words;
  std::string word;
  bool in_word = false;
  char quote = 0;
  for (char c : line) {
    if (quote != 0) {
      if (c == quote) {
        quote = 0;
      } else {
        word.push_back(c);
      }
    } else if (c == '"' || c == '\'') {
      quote = c;
      in_word = true;
    } else if (c == ' ' || c == '\t') {
      if (in_word) words.push_back(word);
      word.clear();
      in_word = false;
    } else if (c == '#' && !in_word) {
      break;
    } else {
      word.push_back(c);
      in_word = true;
    }
  }
  if (in_word) words.push_back(word);
  return words;
}

// Every `fastchat` client command README.md shows: lines of its code blocks
// and inline code spans that start with "fastchat ".
std::vector<Words> ReadmeClientCommands() {
  const std::string path = std::string(FASTCHAT_SOURCE_DIR) + "/README.md";
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::vector<Words> commands;
  auto take = [&commands](const std::string& text) {
    if (text.rfind("fastchat ", 0) == 0) commands.push_back(ShellWords(text));
  };
  bool in_block = false;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("```", 0) == 0) {
      in_block = !in_block;
      continue;
    }
    if (in_block) {
      take(line);
      continue;
    }
    for (std::size_t open = line.find('`'); open != std::string::npos; open = line.find('`', open + 1)) {
      std::size_t close = line.find('`', open + 1);
      if (close == std::string::npos) break;
      take(line.substr(open + 1, close - open - 1));
      open = close;
    }
  }
  return commands;
}

std::string Join(const Words& w) {
  std::string s;
  for (const std::string& x : w) s += (s.empty() ? "" : " ") + x;
  return s;
}

// The README command whose words are `wanted`; fails the test (naming it)
// if the README no longer shows it.
Words Readme(const std::string& wanted) {
  static const std::vector<Words> all = ReadmeClientCommands();
  for (const Words& w : all) {
    if (Join(w) == wanted) return w;
  }
  std::string shown;
  for (const Words& w : all) shown += "\n  " + Join(w);
  ADD_FAILURE() << "README.md no longer shows `" << wanted << "`; it shows:" << shown;
  throw std::runtime_error("missing README command");
}

// `words` with the README's names and addresses replaced and the program
// path put in.
Words Adapt(Words words, const std::map<std::string, std::string>& replace = {}) {
  words.at(0) = ClientBinary();
  for (std::string& w : words) {
    auto it = replace.find(w);
    if (it != replace.end()) w = it->second;
  }
  return words;
}

// Runs a one-shot command; throws with its output unless it exits 0.
RunResult RunOk(TempDir& tmp, const Words& argv, const Env& env) {
  static int n = 0;
  RunResult r = RunClientOnce(argv, tmp.Sub("readme-run-" + std::to_string(++n) + ".stderr"), Millis(60000), env);
  if (r.exit_code != 0) throw std::runtime_error("README command failed\n" + r.Describe());
  return r;
}

// A long-running command (chat, listen) in the README's human output mode.
std::unique_ptr<ChatClient> Start(TempDir& tmp, const std::string& label, const Words& argv, const Env& env) {
  SpawnOptions so;
  so.argv = argv;
  so.env = env;
  so.stderr_path = tmp.Sub("readme-" + label + ".stderr");
  return std::make_unique<ChatClient>(label, Process::Spawn(so));
}

// Matches a human-readable output line containing `text`.
Match Line(const std::string& text) {
  return [text](const json& j) { return j.value("line", "").find(text) != std::string::npos; };
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// README "Using the client": register, chat, one-shot single_message,
// listen and pending, "--", history and help, against one server.
TEST(Readme, SingleServerCommandsWorkAsWritten) {
  World w;
  const std::string home = w.tmp().Sub("home");  // one home, one store per user, as ~/.fastchat
  const Env env = {{"FASTCHAT_SERVER", w.server_address()},
                   {"FASTCHAT_HOME", home},
                   {"FASTCHAT_PASSWORD", "readme-password"}};

  // fastchat register alice; the same command registers bob.
  const Words reg = Readme("fastchat register alice");
  RunResult r = RunOk(w.tmp(), Adapt(reg), env);
  EXPECT_TRUE(Contains(r.out, "registered alice with id ")) << r.Describe();
  r = RunOk(w.tmp(), Adapt(reg, {{"alice", "bob"}}), env);
  EXPECT_TRUE(Contains(r.out, "registered bob with id ")) << r.Describe();

  // "Every command also works one-shot": the chat table's add_friend and accept.
  RunOk(w.tmp(), Adapt({"fastchat", "--user", "alice", "add_friend", "bob"}), env);
  RunOk(w.tmp(), Adapt({"fastchat", "--user", "bob", "accept", "alice"}), env);

  // fastchat --user alice chat: logs in; `friends` lists bob.
  auto chat = Start(w.tmp(), "alice-chat", Adapt(Readme("fastchat --user alice chat")), env);
  chat->WaitFor(Line("* logged in as alice"), "alice's chat logged in");
  chat->Send("friends");
  chat->WaitFor(Line("friends: bob ("), "bob in alice's friends");
  EXPECT_EQ(chat->Quit(), 0) << chat->Diagnostics();

  // fastchat --user alice single_message bob "hi", then bob's pending shows it.
  const Words send = Readme("fastchat --user alice single_message bob hi");
  r = RunOk(w.tmp(), Adapt(send), env);
  EXPECT_TRUE(Contains(r.out, "sent to bob")) << r.Describe();
  r = RunOk(w.tmp(), Adapt(Readme("fastchat --user bob pending")), env);
  EXPECT_TRUE(Contains(r.out, "[alice] hi")) << r.Describe();

  // fastchat --user bob listen prints what arrives while it runs.
  auto listen = Start(w.tmp(), "bob-listen", Adapt(Readme("fastchat --user bob listen")), env);
  listen->WaitFor(Line("* logged in as bob"), "bob's listen logged in");
  RunOk(w.tmp(), Adapt(send), env);
  listen->WaitFor(Line("[alice] hi"), "alice's message in bob's listen");

  // fastchat --user bob pending beside that listen: it displaces nothing,
  // and the listen keeps receiving.
  r = RunOk(w.tmp(), Adapt(Readme("fastchat --user bob pending")), env);
  EXPECT_FALSE(Contains(r.out, "DISPLACED")) << r.Describe();

  // fastchat --user alice single_message bob -- --not-an-option
  RunOk(w.tmp(), Adapt(Readme("fastchat --user alice single_message bob -- --not-an-option")), env);
  listen->WaitFor(Line("[alice] --not-an-option"), "the text after -- in bob's listen");
  // alice's one-shot commands took bob's receipts for the two "hi"s.
  // fastchat --user alice history bob: what alice sent is kept, with its state.
  r = RunOk(w.tmp(), Adapt(Readme("fastchat --user alice history bob")), env);
  EXPECT_TRUE(Contains(r.out, "history with bob (")) << r.Describe();
  EXPECT_TRUE(Contains(r.out, "  alice: hi  [delivered ")) << r.Describe();
  EXPECT_TRUE(Contains(r.out, "  alice: --not-an-option  [stored]\n")) << r.Describe();
  listen->process().Signal(SIGTERM);
  EXPECT_EQ(listen->WaitExit(Millis(10000)), std::optional<int>(0)) << listen->Diagnostics();
  // fastchat help history
  r = RunOk(w.tmp(), Adapt(Readme("fastchat help history")), env);
  EXPECT_TRUE(Contains(r.out, "usage: history USER|GROUP [N]\n")) << r.Describe();
  // fastchat help /msg: an alias of chat explains its command.
  r = RunOk(w.tmp(), Adapt(Readme("fastchat help /msg")), env);
  EXPECT_TRUE(Contains(r.out, "usage: single_message USER TEXT...\n")) << r.Describe();
}

// README "A cluster": register and chat through the balancer (the
// `--balancer HOST:PORT` before the command words), and a message between
// two chats placed by the balancer.
TEST(Readme, ClusterCommandsWorkAsWritten) {
  ClusterOptions o;
  o.servers = 2;
  o.balancer = true;
  Cluster c(o);
  c.WaitMeshFormed();
  c.WaitRegisteredWithBalancer();
  const std::map<std::string, std::string> to_ours = {{kReadmeBalancer, c.balancer().address()}};
  const Env env = {{"FASTCHAT_HOME", c.tmp().Sub("home")}, {"FASTCHAT_PASSWORD", "readme-password"}};

  const Words reg = Readme("fastchat --balancer " + kReadmeBalancer + " register alice");
  RunResult r = RunOk(c.tmp(), Adapt(reg, to_ours), env);
  EXPECT_TRUE(Contains(r.out, "registered alice with id ")) << r.Describe();
  auto bob_reg = to_ours;
  bob_reg["alice"] = "bob";
  r = RunOk(c.tmp(), Adapt(reg, bob_reg), env);
  EXPECT_TRUE(Contains(r.out, "registered bob with id ")) << r.Describe();

  const Words chat = Readme("fastchat --balancer " + kReadmeBalancer + " --user alice chat");
  auto alice = Start(c.tmp(), "alice-chat", Adapt(chat, to_ours), env);
  auto bob_chat = to_ours;
  bob_chat["alice"] = "bob";
  auto bob = Start(c.tmp(), "bob-chat", Adapt(chat, bob_chat), env);
  alice->WaitFor(Line("* logged in as alice"), "alice's chat logged in");
  bob->WaitFor(Line("* logged in as bob"), "bob's chat logged in");

  // The chat table's commands.
  alice->Send("add_friend bob");
  bob->WaitFor(Line("* friend request from alice"), "alice's request at bob");
  bob->Send("accept alice");
  alice->WaitFor(Line("* bob accepted your friend request"), "bob's answer at alice");
  alice->Send("single_message bob hello from the README");
  bob->WaitFor(Line("[alice] hello from the README"), "alice's message at bob");
  EXPECT_EQ(alice->Quit(), 0) << alice->Diagnostics();
  EXPECT_EQ(bob->Quit(), 0) << bob->Diagnostics();
}

}  // namespace
}  // namespace fastchat::testing
