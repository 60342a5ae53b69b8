#include "presence_snapshot.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <vector>

#include "mesh_inbox.h"
#include "remote_presence.h"

namespace fastchat::server {
namespace {

constexpr std::uint32_t kDefaultLimit = 4u << 20;  // ServerConfig::mesh_max_frame

struct Link {};

// Reads `frames` in order as a peer does; returns the tokens it would
// acknowledge after each frame and the users it would displace.
struct Applied {
  std::vector<std::uint64_t> acks;  // one per frame (0: none)
  std::size_t displaced = 0;
};
Applied Apply(RemotePresence<Link>& presence, Link* link, std::vector<mesh::MeshFrame> frames) {
  Applied a;
  for (mesh::MeshFrame& f : frames) {
    MeshInput in = ReadMeshFrame(presence, link, f);
    EXPECT_FALSE(in.unexpected);
    a.acks.push_back(in.ack_token);
    a.displaced += in.displace.size();
  }
  return a;
}

TEST(PresenceSnapshot, AMillionAndAHalfUsersGoInPartsWellUnderTheLimitAckedAfterTheLast) {
  std::vector<std::uint64_t> users;
  for (std::uint64_t id = 1; id <= 1'500'000; ++id) users.push_back(id);
  // As one frame (what LinkUp used to send) it passes the peer's limit.
  mesh::MeshFrame one;
  one.mutable_presence()->set_full(true);
  for (std::uint64_t u : users) one.mutable_presence()->add_online(u);
  one.mutable_presence()->set_ack_token(7);
  ASSERT_GT(one.ByteSizeLong(), kDefaultLimit);

  std::vector<mesh::MeshFrame> frames = PresenceSnapshot(users, kDefaultLimit, 7);
  ASSERT_GT(frames.size(), 1u);
  for (const mesh::MeshFrame& f : frames) EXPECT_LE(f.ByteSizeLong(), kDefaultLimit / 4);

  RemotePresence<Link> presence;
  Link link, other;
  presence.Online(&link, 99'000'000);  // announced before the link went down: forgotten
  presence.Online(&other, 5);          // the same user on another link: this link's snapshot takes it
  Applied a = Apply(presence, &link, std::move(frames));
  EXPECT_EQ(a.displaced, 0u) << "a snapshot part was taken for new logins";
  for (std::size_t i = 0; i + 1 < a.acks.size(); ++i) EXPECT_EQ(a.acks[i], 0u) << "part " << i << " asked for an ack";
  EXPECT_EQ(a.acks.back(), 7u);
  EXPECT_EQ(presence.size(), users.size());
  for (std::uint64_t u : {std::uint64_t{1}, std::uint64_t{5}, std::uint64_t{777'777}, std::uint64_t{1'500'000}}) {
    EXPECT_EQ(presence.Where(u), &link) << u;
  }
  EXPECT_EQ(presence.Where(99'000'000), nullptr);
}

TEST(PresenceSnapshot, EachPartFitsAQuarterOfASmallLimitEvenWithTheLongestIds) {
  for (std::uint32_t limit : {1024u, 4096u, 65536u}) {
    std::vector<std::uint64_t> users(5000, std::numeric_limits<std::uint64_t>::max());
    for (std::size_t i = 0; i < users.size(); ++i) users[i] -= i;  // 10-byte varints
    std::vector<mesh::MeshFrame> frames = PresenceSnapshot(users, limit, 1);
    std::size_t named = 0;
    for (std::size_t i = 0; i < frames.size(); ++i) {
      const mesh::Presence& p = frames[i].presence();
      EXPECT_LE(frames[i].ByteSizeLong(), limit / 4) << "limit " << limit << " part " << i;
      EXPECT_EQ(p.full(), i == 0);
      EXPECT_EQ(p.continued(), i != 0);
      EXPECT_EQ(p.ack_token(), i + 1 == frames.size() ? 1u : 0u);
      named += static_cast<std::size_t>(p.online_size());
    }
    EXPECT_EQ(named, users.size());
  }
}

TEST(PresenceSnapshot, NoUsersIsOneFullFrameWithTheToken) {
  std::vector<mesh::MeshFrame> frames = PresenceSnapshot({}, kDefaultLimit, 3);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_TRUE(frames[0].presence().full());
  EXPECT_EQ(frames[0].presence().online_size(), 0);
  EXPECT_EQ(frames[0].presence().ack_token(), 3u);
  RemotePresence<Link> presence;
  Link link;
  presence.Online(&link, 4);
  Applied a = Apply(presence, &link, std::move(frames));
  EXPECT_EQ(presence.size(), 0u);
  EXPECT_EQ(a.acks, std::vector<std::uint64_t>{3});
}

}  // namespace
}  // namespace fastchat::server
