#include "auth.h"

#include <gtest/gtest.h>


namespace fastchat::balancer {
namespace {

TEST(AuthTest, RightSecretVerifies) {
  ASSERT_TRUE(AuthInit());
  const std::string challenge = NewChallenge();
  ASSERT_EQ(challenge.size(), kChallengeBytes);
  const std::string key = AuthKey("cluster secret");
  ASSERT_EQ(key.size(), kAuthKeyBytes);
  const std::string mac = AuthMac(key, challenge, "srv-1");
  ASSERT_EQ(mac.size(), kAuthMacBytes);
  EXPECT_TRUE(AuthVerify(key, challenge, "srv-1", mac));
  // The MAC never contains the secret or the key.
  EXPECT_EQ(mac.find("cluster secret"), std::string::npos);
  EXPECT_NE(mac, key);
}

TEST(AuthTest, AnythingElseFails) {
  const std::string challenge = NewChallenge();
  const std::string key = AuthKey("cluster secret");
  const std::string mac = AuthMac(key, challenge, "srv-1");
  EXPECT_FALSE(AuthVerify(AuthKey("cluster secreT"), challenge, "srv-1", mac));  // wrong secret
  EXPECT_FALSE(AuthVerify(key, NewChallenge(), "srv-1", mac));                   // replayed answer
  EXPECT_FALSE(AuthVerify(key, challenge, "srv-2", mac));                        // other server
  EXPECT_FALSE(AuthVerify(key, challenge, "srv-1", mac.substr(1)));             // wrong size
  EXPECT_FALSE(AuthVerify(key, challenge, "srv-1", ""));
  EXPECT_FALSE(AuthVerify("short", challenge, "srv-1", mac));
  std::string flipped = mac;
  flipped[0] = static_cast<char>(flipped[0] ^ 1);
  EXPECT_FALSE(AuthVerify(key, challenge, "srv-1", flipped));
  EXPECT_NE(NewChallenge(), NewChallenge());
}

TEST(AuthTest, ServerIds) {
  EXPECT_TRUE(ValidServerId("fastchat-1"));
  EXPECT_TRUE(ValidServerId(std::string(kMaxServerIdBytes, 'x')));
  EXPECT_FALSE(ValidServerId(""));
  EXPECT_FALSE(ValidServerId(std::string(kMaxServerIdBytes + 1, 'x')));
  EXPECT_FALSE(ValidServerId("a\nb"));
  EXPECT_FALSE(ValidServerId("caf\xc3\xa9"));
}

}  // namespace
}  // namespace fastchat::balancer
