// MeshHandshake: two ends with the cluster secret authenticate each other;
// a wrong secret, a relay (another TLS binding), a reflected or replayed
// PeerAuth, a wrong id, version or challenge, and frames out of order are
// each refused with a reason.
#include "mesh_handshake.h"

#include <gtest/gtest.h>

#include "fastchat/crypto.h"
#include "mesh.pb.h"

namespace fastchat::server {
namespace {

using Role = MeshHandshake::Role;

class MeshHandshakeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ASSERT_TRUE(crypto::Init()); }
  const std::string key_ = crypto::MacKeyFromSecret("a cluster secret of some length");
  const std::string other_key_ = crypto::MacKeyFromSecret("another cluster secret entirely");

  static std::string Challenge(char c) { return std::string(MeshHandshake::kChallengeBytes, c); }
  MeshHandshake Dialer(std::string_view key, std::string binding = "binding") {
    return MeshHandshake(Role::kDial, "s1", "s2", std::move(binding), key, Challenge('d'));
  }
  MeshHandshake Acceptor(std::string_view key, std::string binding = "binding") {
    return MeshHandshake(Role::kAccept, "s2", "", std::move(binding), key, Challenge('a'));
  }
  static mesh::MeshFrame HelloOf(const MeshHandshake& h) {
    mesh::MeshFrame f;
    h.Hello(&f);
    return f;
  }
  static mesh::MeshFrame Hello(std::uint32_t version, std::string id, std::string challenge) {
    mesh::MeshFrame f;
    f.mutable_hello()->set_version(version);
    f.mutable_hello()->set_server_id(std::move(id));
    f.mutable_hello()->set_challenge(std::move(challenge));
    return f;
  }
  // Runs both ends to the end; returns {dialer's OnAuth, acceptor's OnAuth}.
  static std::pair<Status, Status> Run(MeshHandshake& d, MeshHandshake& a) {
    mesh::MeshFrame d_auth, a_auth;
    EXPECT_TRUE(d.OnHello(HelloOf(a), &d_auth).ok());
    EXPECT_TRUE(a.OnHello(HelloOf(d), &a_auth).ok());
    return {d.OnAuth(a_auth), a.OnAuth(d_auth)};
  }
};

TEST_F(MeshHandshakeTest, TwoEndsWithTheSecretAuthenticateEachOther) {
  MeshHandshake d = Dialer(key_), a = Acceptor(key_);
  EXPECT_FALSE(d.authenticated());
  auto [ds, as] = Run(d, a);
  EXPECT_TRUE(ds.ok()) << ds.ToString();
  EXPECT_TRUE(as.ok()) << as.ToString();
  EXPECT_TRUE(d.authenticated());
  EXPECT_TRUE(a.authenticated());
  EXPECT_EQ(d.peer_id(), "s2");
  EXPECT_EQ(a.peer_id(), "s1");
}

TEST_F(MeshHandshakeTest, AWrongSecretIsRefusedAtBothEnds) {
  MeshHandshake d = Dialer(key_), a = Acceptor(other_key_);
  auto [ds, as] = Run(d, a);
  EXPECT_EQ(ds.code(), Code::kBadCredentials);
  EXPECT_EQ(as.code(), Code::kBadCredentials);
  EXPECT_FALSE(d.authenticated());
  EXPECT_FALSE(a.authenticated());
}

TEST_F(MeshHandshakeTest, ARelayBetweenTwoTlsSessionsIsRefused) {
  // Same secret, but each end sees its own TLS session's binding.
  MeshHandshake d = Dialer(key_, "session one"), a = Acceptor(key_, "session two");
  auto [ds, as] = Run(d, a);
  EXPECT_EQ(ds.code(), Code::kBadCredentials);
  EXPECT_EQ(as.code(), Code::kBadCredentials);
}

TEST_F(MeshHandshakeTest, ItsOwnPeerAuthReflectedBackIsRefused) {
  // An attacker without the secret answers the acceptor's hello with the
  // acceptor's own id-swapped hello and reflects its PeerAuth back: the role
  // in the MAC differs, so it fails.
  MeshHandshake a = Acceptor(key_);
  mesh::MeshFrame a_auth;
  ASSERT_TRUE(a.OnHello(Hello(1, "s1", Challenge('a')), &a_auth).ok());
  EXPECT_EQ(a.OnAuth(a_auth).code(), Code::kBadCredentials);
}

TEST_F(MeshHandshakeTest, APeerAuthFromAnEarlierHandshakeIsRefused) {
  // A recorded PeerAuth answered an earlier challenge; a new handshake's
  // challenge differs.
  MeshHandshake d = Dialer(key_), a = Acceptor(key_);
  mesh::MeshFrame d_auth;
  ASSERT_TRUE(d.OnHello(HelloOf(a), &d_auth).ok());
  MeshHandshake a2(Role::kAccept, "s2", "", "binding", key_, Challenge('b'));
  mesh::MeshFrame unused;
  ASSERT_TRUE(a2.OnHello(HelloOf(d), &unused).ok());
  EXPECT_EQ(a2.OnAuth(d_auth).code(), Code::kBadCredentials);
}

TEST_F(MeshHandshakeTest, ABadHelloIsRefusedWithItsReason) {
  struct Case {
    mesh::MeshFrame frame;
    Code code;
    const char* says;
  };
  mesh::MeshFrame ping;
  ping.mutable_ping();
  const Case cases[] = {
      {ping, Code::kHandshakeRequired, "expected PeerHello"},
      {Hello(2, "s2", Challenge('x')), Code::kUnsupportedVersion, "version"},
      {Hello(1, "s2", "short"), Code::kBadRequest, "32 bytes"},
      {Hello(1, "", Challenge('x')), Code::kBadRequest, "unusable"},
      {Hello(1, "s1", Challenge('x')), Code::kBadRequest, "unusable"},  // this server's own id
      {Hello(1, "s3", Challenge('x')), Code::kBadRequest, "dialed s2 but it says it is s3"},
  };
  for (const Case& c : cases) {
    MeshHandshake d = Dialer(key_);
    mesh::MeshFrame auth;
    Status st = d.OnHello(c.frame, &auth);
    EXPECT_EQ(st.code(), c.code) << st.ToString();
    EXPECT_NE(st.message().find(c.says), std::string::npos) << st.ToString();
    EXPECT_FALSE(auth.has_auth());
    // A refused handshake takes nothing more.
    EXPECT_FALSE(d.OnAuth(auth).ok());
    EXPECT_FALSE(d.authenticated());
  }
  // An acceptor takes any other id.
  MeshHandshake a = Acceptor(key_);
  mesh::MeshFrame auth;
  EXPECT_TRUE(a.OnHello(Hello(1, "s9", Challenge('x')), &auth).ok());
  EXPECT_EQ(a.peer_id(), "s9");
}

TEST_F(MeshHandshakeTest, FramesOutOfOrderAreRefused) {
  MeshHandshake d = Dialer(key_), a = Acceptor(key_);
  mesh::MeshFrame a_auth;
  ASSERT_TRUE(a.OnHello(HelloOf(d), &a_auth).ok());
  // PeerAuth before PeerHello.
  Status st = d.OnAuth(a_auth);
  EXPECT_EQ(st.code(), Code::kBadRequest);
  EXPECT_FALSE(d.authenticated());

  // A second PeerHello where the PeerAuth belongs, and a hello after the end.
  MeshHandshake d2 = Dialer(key_);
  mesh::MeshFrame d_auth;
  ASSERT_TRUE(d2.OnHello(HelloOf(a), &d_auth).ok());
  EXPECT_EQ(d2.OnAuth(HelloOf(a)).code(), Code::kHandshakeRequired);
  EXPECT_FALSE(d2.OnHello(HelloOf(a), &d_auth).ok());
  EXPECT_FALSE(d2.authenticated());
}

}  // namespace
}  // namespace fastchat::server
