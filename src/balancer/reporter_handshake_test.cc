#include "reporter_handshake.h"

#include <sodium.h>

#include <string>

#include <gtest/gtest.h>

#include "auth.h"
#include "balancer.pb.h"

namespace fastchat::balancer {
namespace {

const std::string kBinding(32, '\x42');
const std::string kChallenge(kChallengeBytes, '\x17');

std::string HelloFrame(std::uint32_t version = 1, const std::string& challenge = kChallenge) {
  Envelope env;
  env.mutable_hello()->set_version(version);
  env.mutable_hello()->set_challenge(challenge);
  return env.SerializeAsString();
}

std::string AuthOkFrame(std::uint32_t expire_ms) {
  Envelope env;
  env.mutable_auth_ok()->set_expire_ms(expire_ms);
  return env.SerializeAsString();
}

std::string ErrorFrame(ErrorCode code, const std::string& message) {
  Envelope env;
  env.mutable_error()->set_code(code);
  env.mutable_error()->set_message(message);
  return env.SerializeAsString();
}

// proto/balancer.proto's MAC, written out with libsodium here.
std::string SpecMac(const std::string& secret, const std::string& challenge, const std::string& id) {
  unsigned char key[crypto_auth_KEYBYTES];
  crypto_generichash(key, sizeof key, reinterpret_cast<const unsigned char*>(secret.data()), secret.size(), nullptr,
                     0);
  const std::string msg = "fastchat-balancer-auth-v1" + challenge + kBinding + id;
  std::string mac(crypto_auth_BYTES, '\0');
  crypto_auth(reinterpret_cast<unsigned char*>(mac.data()), reinterpret_cast<const unsigned char*>(msg.data()),
              msg.size(), key);
  return mac;
}

class ReporterHandshakeTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(AuthInit()); }
  ReporterHandshake hs_{"s1", AuthKey("the cluster secret"), kBinding};
};

TEST_F(ReporterHandshakeTest, AnswersTheChallengeThenRegistersOnAuthOk) {
  std::string auth;
  ASSERT_TRUE(hs_.OnHello(HelloFrame(), &auth).ok());
  Envelope sent;
  ASSERT_TRUE(sent.ParseFromString(auth));
  ASSERT_TRUE(sent.has_server_auth());
  EXPECT_EQ(sent.server_auth().server_id(), "s1");
  EXPECT_EQ(sent.server_auth().mac(), SpecMac("the cluster secret", kChallenge, "s1"));
  EXPECT_FALSE(hs_.registered());
  std::uint32_t expire = 0;
  ASSERT_TRUE(hs_.OnAuthReply(AuthOkFrame(3000), &expire).ok());
  EXPECT_EQ(expire, 3000u);
  EXPECT_TRUE(hs_.registered());
  std::string refused = "x";
  EXPECT_TRUE(hs_.OnLater(AuthOkFrame(1), &refused).ok());  // ignored
  EXPECT_TRUE(refused.empty());
  EXPECT_TRUE(hs_.OnLater(ErrorFrame(BAD_REQUEST, "client_address must be host:port"), &refused).ok());
  EXPECT_EQ(refused, "'client_address must be host:port'");
  EXPECT_TRUE(hs_.registered());
}

TEST_F(ReporterHandshakeTest, AWrongSecretIsBadCredentials) {
  std::string auth;
  ASSERT_TRUE(hs_.OnHello(HelloFrame(), &auth).ok());
  std::uint32_t expire = 0;
  Status st = hs_.OnAuthReply(ErrorFrame(BAD_CREDENTIALS, "wrong cluster secret"), &expire);
  EXPECT_EQ(st.code(), Code::kBadCredentials);
  EXPECT_NE(st.message().find("wrong cluster secret"), std::string::npos);
  EXPECT_FALSE(hs_.registered());
}

TEST_F(ReporterHandshakeTest, WhatIsNotAVersionOneHelloIsRefused) {
  const std::string bad[] = {HelloFrame(2), HelloFrame(1, std::string(31, 'c')), HelloFrame(1, std::string(33, 'c')),
                             AuthOkFrame(1), ErrorFrame(BAD_FRAME, "x"), std::string("\xff\xff", 2)};
  for (const std::string& frame : bad) {
    ReporterHandshake hs("s1", AuthKey("secret"), kBinding);
    std::string auth;
    EXPECT_FALSE(hs.OnHello(frame, &auth).ok());
    EXPECT_TRUE(auth.empty());
    std::uint32_t expire = 0;
    EXPECT_FALSE(hs.OnAuthReply(AuthOkFrame(1), &expire).ok()) << "accepted after a refusal";
    EXPECT_FALSE(hs.registered());
  }
}

TEST_F(ReporterHandshakeTest, FramesOutOfTurnAreRefusedAndTheRefusalIsFinal) {
  std::uint32_t expire = 0;
  EXPECT_EQ(hs_.OnAuthReply(AuthOkFrame(1), &expire).code(), Code::kBadRequest);  // AuthOk before any hello
  std::string auth;
  EXPECT_FALSE(hs_.OnHello(HelloFrame(), &auth).ok());
  EXPECT_FALSE(hs_.registered());

  ReporterHandshake twice("s1", AuthKey("secret"), kBinding);
  ASSERT_TRUE(twice.OnHello(HelloFrame(), &auth).ok());
  EXPECT_EQ(twice.OnHello(HelloFrame(), &auth).code(), Code::kBadRequest);
  EXPECT_FALSE(twice.OnAuthReply(AuthOkFrame(1), &expire).ok());
  EXPECT_FALSE(twice.registered());

  ReporterHandshake later("s1", AuthKey("secret"), kBinding);
  std::string refused;
  EXPECT_FALSE(later.OnLater(ErrorFrame(BAD_REQUEST, "x"), &refused).ok());
  EXPECT_FALSE(later.OnHello(HelloFrame(), &auth).ok());
}

TEST_F(ReporterHandshakeTest, ABalancersTextIsMadeSafeForTheLog) {
  std::string auth;
  ASSERT_TRUE(hs_.OnHello(HelloFrame(), &auth).ok());
  std::uint32_t expire = 0;
  ASSERT_TRUE(hs_.OnAuthReply(AuthOkFrame(1), &expire).ok());
  std::string refused;
  ASSERT_TRUE(hs_.OnLater(ErrorFrame(BAD_REQUEST, "x\n[error] forged line\x1b[2J" + std::string(100, 'y')), &refused)
                  .ok());
  EXPECT_EQ(refused.find('\n'), std::string::npos);
  EXPECT_EQ(refused.find('\x1b'), std::string::npos);
  EXPECT_LT(refused.size(), 120u);
  EXPECT_EQ(refused.substr(0, 8), "'x\\x0a[e");
  EXPECT_EQ(hs_.OnLater("\xff\xff", &refused).code(), Code::kBadFrame);
  EXPECT_FALSE(hs_.registered());
}

}  // namespace
}  // namespace fastchat::balancer
