#include "common/host_port.h"

#include <gtest/gtest.h>

namespace fastchat {
namespace {

TEST(HostPort, ParseAndFormat) {
  std::string host;
  std::uint16_t port = 1;
  ASSERT_TRUE(ParseHostPort("127.0.0.1:7300", &host, &port));
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 7300);
  ASSERT_TRUE(ParseHostPort("[::1]:0", &host, &port));
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, 0);
  ASSERT_TRUE(ParseHostPort("chat.example.org:65535", &host, &port));
  EXPECT_EQ(port, 65535);
  for (const char* bad : {"", "x", "x:", ":1", "x:-1", "x:65536", "x:1a", "::1:7300", "[]:1", "x:123456"}) {
    EXPECT_FALSE(ParseHostPort(bad, &host, &port)) << bad;
  }
  EXPECT_EQ(FormatHostPort("127.0.0.1", 7300), "127.0.0.1:7300");
  EXPECT_EQ(FormatHostPort("::1", 7300), "[::1]:7300");
}

// Mesh addresses are written the same way: an IPv6 one ("[::1]:7001", the
// form --mesh-advertise takes) used to reach the resolver with its brackets
// and could not be dialled.
TEST(HostPort, AnIpv6MeshAddressRoundTrips) {
  std::string host;
  std::uint16_t port = 0;
  ASSERT_TRUE(ParseHostPort(FormatHostPort("::1", 7001), &host, &port));
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, 7001);
}

}  // namespace
}  // namespace fastchat
