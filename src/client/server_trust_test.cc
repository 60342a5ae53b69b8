#include "server_trust.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace fastchat::client {
namespace {

namespace fs = std::filesystem;

class ServerTrustTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("fastchat-trust-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    trust_.known_servers = (dir_ / "known_servers").string();
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
  TlsTrust trust_;
  const std::string a_ = std::string(64, 'a'), b_ = std::string(64, 'b');
};

TEST_F(ServerTrustTest, FirstUseIsRecordedPrivatelyThenOnlyThatCertificateIsAccepted) {
  std::string notice;
  ASSERT_TRUE(CheckServerIdentity(trust_, "chat.example:7400", a_, &notice).ok());
  EXPECT_NE(notice.find(a_), std::string::npos);
  struct stat st {};
  ASSERT_EQ(::stat(trust_.known_servers.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  notice.clear();
  EXPECT_TRUE(CheckServerIdentity(trust_, "chat.example:7400", a_, &notice).ok());
  EXPECT_TRUE(notice.empty());  // known: no notice

  Status changed = CheckServerIdentity(trust_, "chat.example:7400", b_, &notice);
  EXPECT_EQ(changed.code(), Code::kCryptoFailed);
  EXPECT_NE(changed.message().find("HAS CHANGED"), std::string::npos);
  EXPECT_NE(changed.message().find(b_), std::string::npos);
  // The refusal did not overwrite what was known.
  EXPECT_TRUE(CheckServerIdentity(trust_, "chat.example:7400", a_, &notice).ok());
  // Another port is another server.
  EXPECT_TRUE(CheckServerIdentity(trust_, "chat.example:7401", b_, &notice).ok());
}

TEST_F(ServerTrustTest, APinAcceptsOnlyItsCertificateAndRecordsNothing) {
  trust_.pin = a_;
  std::string notice;
  EXPECT_TRUE(CheckServerIdentity(trust_, "h:1", a_, &notice).ok());
  EXPECT_EQ(CheckServerIdentity(trust_, "h:1", b_, &notice).code(), Code::kCryptoFailed);
  EXPECT_FALSE(fs::exists(trust_.known_servers));
}

TEST_F(ServerTrustTest, NoCertificateOrNoWayToCheckIsRefused) {
  std::string notice;
  EXPECT_EQ(CheckServerIdentity(trust_, "h:1", "", &notice).code(), Code::kCryptoFailed);
  TlsTrust none;
  EXPECT_EQ(CheckServerIdentity(none, "h:1", a_, &notice).code(), Code::kCryptoFailed);
}

}  // namespace
}  // namespace fastchat::client
