#include "common/printable.h"

#include <string>

#include <gtest/gtest.h>

namespace fastchat {
namespace {

TEST(Printable, EscapesWhatCouldForgeALogLine) {
  EXPECT_EQ(Printable("alice"), "alice");
  EXPECT_EQ(Printable("a\nWARN fake\\"), "a\\x0aWARN fake\\x5c");
  EXPECT_EQ(Printable(std::string(100, 'x')), std::string(64, 'x') + "...");
}

TEST(Printable, NonAsciiIsEscapedByteByByte) {
  EXPECT_EQ(Printable("\xc3\xa9\x1b[2J"), "\\xc3\\xa9\\x1b[2J");
  EXPECT_EQ(Printable(std::string_view("a\0b", 3)), "a\\x00b");
}

}  // namespace
}  // namespace fastchat
