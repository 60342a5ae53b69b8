#include "commands.h"

#include <algorithm>

#include <gtest/gtest.h>

namespace fastchat::client {
namespace {

TEST(ParseLine, LastArgumentTakesTheRestOfTheLine) {
  Command c;
  ASSERT_TRUE(ParseLine("single_message bob  hello   there, bob!\n", &c));
  EXPECT_EQ(c.name, "single_message");
  ASSERT_EQ(c.args.size(), 2u);
  EXPECT_EQ(c.args[0], "bob");
  EXPECT_EQ(c.args[1], "hello   there, bob!");
  EXPECT_TRUE(c.arity_ok);
}

TEST(ParseLine, QuotesAndAliases) {
  Command c;
  ASSERT_TRUE(ParseLine("add_member \"my team\" carol", &c));
  ASSERT_EQ(c.args.size(), 2u);
  EXPECT_EQ(c.args[0], "my team");
  EXPECT_EQ(c.args[1], "carol");
  ASSERT_TRUE(ParseLine("create_group \"the club\"", &c));
  EXPECT_EQ(c.args[0], "the club");
  ASSERT_TRUE(ParseLine("\\help", &c));
  EXPECT_EQ(c.name, "help");
  ASSERT_TRUE(ParseLine("\\q", &c));
  EXPECT_TRUE(IsQuit(c.name));
  EXPECT_FALSE(ParseLine("   \n", &c));
}

TEST(ParseLine, WrongArity) {
  Command c;
  ASSERT_TRUE(ParseLine("single_message bob", &c));
  EXPECT_FALSE(c.arity_ok);
  ASSERT_TRUE(ParseLine("friends now", &c));
  EXPECT_FALSE(c.arity_ok);
  ASSERT_TRUE(ParseLine("frobnicate now", &c));
  EXPECT_FALSE(c.arity_ok);
  EXPECT_FALSE(IsKnownCommand("frobnicate"));
}

TEST(FromWords, SurplusWordsJoinTheLastArgument) {
  Command c = FromWords({"single_message", "bob", "from", "a", "one-shot"});
  EXPECT_TRUE(c.arity_ok);
  ASSERT_EQ(c.args.size(), 2u);
  EXPECT_EQ(c.args[1], "from a one-shot");
  Command g = FromWords({"groups"});
  EXPECT_TRUE(g.arity_ok);
  Command bad = FromWords({"kick", "1"});
  EXPECT_FALSE(bad.arity_ok);
}

TEST(FromWords, OptionalArguments) {
  EXPECT_TRUE(FromWords({"history", "bob"}).arity_ok);
  Command h = FromWords({"history", "bob", "5"});
  EXPECT_TRUE(h.arity_ok);
  ASSERT_EQ(h.args.size(), 2u);
  EXPECT_EQ(h.args[1], "5");
  EXPECT_FALSE(FromWords({"history"}).arity_ok);
  EXPECT_TRUE(FromWords({"help"}).arity_ok);
  EXPECT_TRUE(FromWords({"help", "kick"}).arity_ok);
  Command c;
  ASSERT_TRUE(ParseLine("history climbers", &c));
  EXPECT_TRUE(c.arity_ok);
  ASSERT_TRUE(ParseLine("search  rope at 7", &c));
  EXPECT_TRUE(c.arity_ok);
  ASSERT_EQ(c.args.size(), 1u);
  EXPECT_EQ(c.args[0], "rope at 7");
}

TEST(DropEndOfOptions, TheFirstDoubleDashIsRemovedLaterOnesAreText) {
  std::vector<std::string> w = {"single_message", "bob", "--", "--json", "after", "dashdash"};
  DropEndOfOptions(&w);
  Command c = FromWords(w);
  ASSERT_TRUE(c.arity_ok);
  EXPECT_EQ(c.args[1], "--json after dashdash");

  w = {"--", "single_message", "bob", "--"};
  DropEndOfOptions(&w);
  c = FromWords(w);
  ASSERT_TRUE(c.arity_ok);
  EXPECT_EQ(c.name, "single_message");
  EXPECT_EQ(c.args[1], "--");

  w = {"single_message", "bob", "no", "dashes"};
  DropEndOfOptions(&w);
  EXPECT_EQ(w.size(), 4u);
}

TEST(ParseLine, TypedLinesAreNotOptionParsed) {
  Command c;
  ASSERT_TRUE(ParseLine("single_message bob -- --json after dashdash", &c));
  ASSERT_TRUE(c.arity_ok);
  EXPECT_EQ(c.args[1], "-- --json after dashdash");
}

// Every command and session mode has help: usage, what it does, and an
// example that is itself a valid command line.
TEST(Help, EveryCommandHasUsageDescriptionAndAWorkingExample) {
  std::vector<std::string> topics = HelpTopics();
  ASSERT_GE(topics.size(), 20u);
  for (const char* must : {"single_message", "history", "search", "help", "register", "chat", "listen",
                           "change_password", "decrypt-frames", "pending"}) {
    EXPECT_NE(std::find(topics.begin(), topics.end(), must), topics.end()) << must;
  }
  for (const std::string& t : topics) {
    SCOPED_TRACE(t);
    std::string text;
    ASSERT_TRUE(HelpFor(t, &text));
    EXPECT_EQ(text.rfind("usage: ", 0), 0u) << text;
    EXPECT_NE(text.find(t), std::string::npos) << text;
    std::size_t ex = text.find("\nexample:\n");
    ASSERT_NE(ex, std::string::npos) << text;
    // Between the usage line and the example: a description of some length.
    std::size_t usage_end = text.find('\n');
    EXPECT_GT(ex - usage_end, 40u) << text;
    if (IsKnownCommand(t)) {
      // The example, as typed in chat, parses as this command with the right
      // number of arguments; the one-shot form is the same words.
      std::size_t at = text.find("in chat:   ");
      ASSERT_NE(at, std::string::npos) << text;
      std::string line = text.substr(at + 11, text.find('\n', at) - at - 11);
      Command c;
      ASSERT_TRUE(ParseLine(line, &c)) << line;
      EXPECT_EQ(c.name, t) << line;
      EXPECT_TRUE(c.arity_ok) << line;
      EXPECT_NE(text.find("one-shot:  fastchat --user alice " + line), std::string::npos) << text;
    } else if (t != "\\q") {
      EXPECT_NE(text.find("\n  fastchat "), std::string::npos) << text;
    }
  }
  std::string text;
  EXPECT_FALSE(HelpFor("frobnicate", &text));
  EXPECT_TRUE(HelpFor("quit", &text));  // an alias of \q
}

TEST(ParseLine, SlashAliases) {
  Command c;
  ASSERT_TRUE(ParseLine("/msg bob hi there", &c));
  EXPECT_EQ(c.name, "single_message");
  ASSERT_EQ(c.args.size(), 2u);
  EXPECT_EQ(c.args[1], "hi there");
  EXPECT_TRUE(c.arity_ok);
  ASSERT_TRUE(ParseLine("/accept alice", &c));
  EXPECT_EQ(c.name, "accept");
  ASSERT_TRUE(ParseLine("/gmsg climbers rope", &c));
  EXPECT_EQ(c.name, "group_message");
  ASSERT_TRUE(ParseLine("/quit", &c));
  EXPECT_TRUE(IsQuit(c.name));
  ASSERT_TRUE(ParseLine("/nosuch x", &c));
  EXPECT_FALSE(IsKnownCommand(c.name));
  std::string text;
  ASSERT_TRUE(HelpFor("/msg", &text));
  EXPECT_NE(text.find("usage: single_message USER TEXT..."), std::string::npos);
  EXPECT_NE(text.find("In chat also /single_message, /msg."), std::string::npos);
  auto words = CompletionWords();
  for (const char* w : {"single_message", "/single_message", "/msg", "\\q"})
    EXPECT_NE(std::find(words.begin(), words.end(), w), words.end()) << w;
}

}  // namespace
}  // namespace fastchat::client
