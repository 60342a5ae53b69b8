#include "commands.h"

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

}  // namespace
}  // namespace fastchat::client
