#include "balancer_reply.h"

#include <string>

#include <gtest/gtest.h>

#include "balancer.pb.h"

namespace fastchat::client {
namespace {

std::string AssignmentFrame(const std::string& host, std::uint32_t port, const std::string& id) {
  balancer::Envelope env;
  env.mutable_server_assignment()->set_host(host);
  env.mutable_server_assignment()->set_port(port);
  env.mutable_server_assignment()->set_server_id(id);
  return env.SerializeAsString();
}

std::string ErrorFrame(balancer::ErrorCode code, const std::string& message) {
  balancer::Envelope env;
  env.mutable_error()->set_code(code);
  env.mutable_error()->set_message(message);
  return env.SerializeAsString();
}

TEST(BalancerReply, AnAssignmentIsTaken) {
  Assignment a;
  bool skip = true;
  ASSERT_TRUE(ReadBalancerReply(AssignmentFrame("10.0.0.7", 7400, "s1"), &a, &skip).ok());
  EXPECT_FALSE(skip);
  EXPECT_EQ(a.host, "10.0.0.7");
  EXPECT_EQ(a.port, 7400);
  EXPECT_EQ(a.server_id, "s1");
  ASSERT_TRUE(ReadBalancerReply(AssignmentFrame("::1", 65535, "s 2"), &a, &skip).ok());
  EXPECT_EQ(a.host, "::1");
  EXPECT_EQ(a.port, 65535);
}

TEST(BalancerReply, TheGreetingIsSkipped) {
  balancer::Envelope hello;
  hello.mutable_hello()->set_version(1);
  hello.mutable_hello()->set_challenge(std::string(32, 'c'));
  Assignment a;
  bool skip = false;
  ASSERT_TRUE(ReadBalancerReply(hello.SerializeAsString(), &a, &skip).ok());
  EXPECT_TRUE(skip);
  EXPECT_TRUE(a.host.empty());
}

TEST(BalancerReply, NoServerIsNotFoundOtherErrorsAreRefusals) {
  Assignment a;
  bool skip = true;
  Status st = ReadBalancerReply(ErrorFrame(balancer::NO_SERVER, "no chat server is registered"), &a, &skip);
  EXPECT_EQ(st.code(), Code::kNotFound);
  EXPECT_EQ(st.message(), "no chat server is registered");
  EXPECT_FALSE(skip);
  EXPECT_EQ(ReadBalancerReply(ErrorFrame(balancer::BAD_FRAME, "x"), &a, &skip).code(), Code::kBadRequest);
  EXPECT_EQ(ReadBalancerReply("\xff\xff\xff", &a, &skip).code(), Code::kBadFrame);
  balancer::Envelope other;
  other.mutable_get_server();
  EXPECT_EQ(ReadBalancerReply(other.SerializeAsString(), &a, &skip).code(), Code::kBadRequest);
  EXPECT_TRUE(a.host.empty());
}

TEST(BalancerReply, AnAssignmentNoClientCouldUseIsRefusedAndChangesNothing) {
  const std::string bad[] = {
      AssignmentFrame("", 7400, "s1"),
      AssignmentFrame("host", 0, "s1"),
      AssignmentFrame("host", 65536, "s1"),
      AssignmentFrame(std::string(256, 'h'), 7400, "s1"),
      AssignmentFrame("evil host", 7400, "s1"),
      AssignmentFrame("host\x1b[2J", 7400, "s1"),
      AssignmentFrame("h\xc3\xa9", 7400, "s1"),
      AssignmentFrame("host", 7400, ""),
      AssignmentFrame("host", 7400, std::string(65, 's')),
      AssignmentFrame("host", 7400, "s\n1"),
  };
  for (const std::string& frame : bad) {
    Assignment a{"before", 1, "before"};
    bool skip = true;
    Status st = ReadBalancerReply(frame, &a, &skip);
    EXPECT_EQ(st.code(), Code::kBadRequest) << st.ToString();
    EXPECT_FALSE(skip);
    EXPECT_EQ(a.host, "before");
    EXPECT_EQ(a.port, 1);
    EXPECT_EQ(a.server_id, "before");
  }
  Assignment a;
  bool skip = true;
  EXPECT_TRUE(ReadBalancerReply(AssignmentFrame(std::string(255, 'h'), 1, std::string(64, 's')), &a, &skip).ok());
}

}  // namespace
}  // namespace fastchat::client
