#include "client_error.h"

#include <memory>
#include <regex>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

namespace fastchat::server {
namespace {

// Sends spdlog's default logger to a string for the life of the object.
class CapturedLog {
 public:
  CapturedLog() : old_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    sink->set_pattern("%l %v");
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("captured", sink));
  }
  ~CapturedLog() { spdlog::set_default_logger(old_); }
  std::string text() const { return out_.str(); }

 private:
  std::ostringstream out_;
  std::shared_ptr<spdlog::logger> old_;
};

// libpq's words when the database is down: what a client once saw.
const Status kDatabaseDown(Code::kIOError,
                          "Enqueue: connection to server at \"127.0.0.1\", port 7600 failed: Connection refused");

// The incident id of a generic message, or "" if the message is not one.
std::string IncidentOf(const std::string& message) {
  static const std::regex kGeneric(R"(^internal error \(incident ([0-9a-f]{8})\)$)");
  std::smatch m;
  return std::regex_match(message, m, kGeneric) ? m[1].str() : std::string();
}

TEST(ClientError, AnswersToTheRequestGoOutAsTheyAre) {
  CapturedLog log;
  for (const Status& st : {Status(Code::kBadRequest, "msg_id must be 16 bytes"),
                           Status(Code::kNotFriends, "bob is not your friend"),
                           Status(Code::kNameTaken, "name taken: alice"), Status(Code::kFrameTooLarge, "too big"),
                           Status(Code::kDisplaced, "you logged in from somewhere else")}) {
    Status out = ClientError(st);
    EXPECT_EQ(out.code(), st.code());
    EXPECT_EQ(out.message(), st.message());
  }
  EXPECT_TRUE(ClientError(Status::OK()).ok());
  EXPECT_EQ(log.text(), "");
}

TEST(ClientError, InternalFailuresBecomeAnIncident) {
  for (const Status& st : {kDatabaseDown, Status(Code::kInternal, "password hashing failed (out of memory?)"),
                           Status(Code::kCorruption, "stored row 7 is garbage"),
                           Status(Code::kCryptoFailed, "AEAD authentication failed"),
                           Status(Code::kNotFound, "/var/lib/fastchat/x not found")}) {
    CapturedLog log;
    Status out = ClientError(st);
    EXPECT_EQ(out.code(), Code::kInternal);
    const std::string id = IncidentOf(out.message());
    ASSERT_FALSE(id.empty()) << out.message();
    // The log has the id and the whole status, at error level.
    EXPECT_EQ(log.text(), "error incident " + id + ": " + st.ToString() + "\n");
  }
}

TEST(ClientError, EachIncidentHasItsOwnId) {
  CapturedLog log;
  const std::string a = IncidentOf(ClientError(kDatabaseDown).message());
  const std::string b = IncidentOf(ClientError(kDatabaseDown).message());
  ASSERT_FALSE(a.empty());
  ASSERT_FALSE(b.empty());
  EXPECT_NE(a, b);
}

TEST(StoreFailure, OnlyTheWordedAnswersPass) {
  for (const Status& st : {Status(Code::kNameTaken, "name taken: alice"),
                           Status(Code::kNoSuchRequest, "no such friend request")}) {
    Status out = StoreFailure(st, "request of user 5");
    EXPECT_EQ(out.code(), st.code());
    EXPECT_EQ(out.message(), st.message());
  }
  EXPECT_TRUE(StoreFailure(Status::OK(), "x").ok());
  // Anything else the store says is internal, with its context, for the log.
  for (const Status& st : {kDatabaseDown, Status(Code::kNoSuchGroup, "AddMember: no such group"),
                           Status(Code::kNotMember, "RemoveMember: not a member")}) {
    Status out = StoreFailure(st, "request of user 5");
    EXPECT_EQ(out.code(), Code::kInternal);
    EXPECT_EQ(out.message(), "request of user 5: " + st.ToString());
    // ...which ClientError then hides from the client.
    CapturedLog log;
    Status sent = ClientError(out);
    EXPECT_FALSE(IncidentOf(sent.message()).empty()) << sent.message();
    EXPECT_NE(log.text().find(st.message()), std::string::npos) << log.text();
  }
}

}  // namespace
}  // namespace fastchat::server
