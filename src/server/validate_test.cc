#include "validate.h"

#include <gtest/gtest.h>

namespace fastchat::server {
namespace {

TEST(Validate, UserNames) {
  EXPECT_TRUE(ValidateUserName("alice").ok());
  EXPECT_TRUE(ValidateUserName("a.b-c_9").ok());
  EXPECT_TRUE(ValidateUserName("7up").ok());
  EXPECT_EQ(ValidateUserName("").code(), Code::kBadRequest);
  EXPECT_EQ(ValidateUserName("12345").code(), Code::kBadRequest);  // would read as an ID
  EXPECT_EQ(ValidateUserName("al ice").code(), Code::kBadRequest);
  EXPECT_EQ(ValidateUserName("../etc").code(), Code::kBadRequest);
  EXPECT_EQ(ValidateUserName(std::string(33, 'a')).code(), Code::kBadRequest);
  EXPECT_TRUE(ValidateUserName(std::string(32, 'a')).ok());
}

TEST(Validate, Passwords) {
  EXPECT_EQ(ValidatePassword("short").code(), Code::kBadRequest);
  EXPECT_TRUE(ValidatePassword("longenough").ok());
  EXPECT_EQ(ValidatePassword(std::string(1025, 'x')).code(), Code::kBadRequest);
}

TEST(Validate, GroupNames) {
  EXPECT_TRUE(ValidateGroupName("team rocket").ok());
  EXPECT_TRUE(ValidateGroupName("caf\xc3\xa9").ok());
  EXPECT_EQ(ValidateGroupName("").code(), Code::kBadRequest);
  EXPECT_EQ(ValidateGroupName("bad\nname").code(), Code::kBadRequest);
  EXPECT_EQ(ValidateGroupName(std::string(65, 'g')).code(), Code::kBadRequest);
}

}  // namespace
}  // namespace fastchat::server
