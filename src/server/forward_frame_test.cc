#include "forward_frame.h"

#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "fastchat/frame.h"
#include "mesh.pb.h"

namespace fastchat::server {
namespace {

// Parses a whole frame's payload as a MeshFrame.
mesh::MeshFrame Parse(const std::string& frame) {
  EXPECT_GE(frame.size(), kFrameHeaderSize);
  EXPECT_EQ(DecodeFrameHeader(frame.data()), frame.size() - kFrameHeaderSize);
  mesh::MeshFrame f;
  EXPECT_TRUE(f.ParseFromArray(frame.data() + kFrameHeaderSize, static_cast<int>(frame.size() - kFrameHeaderSize)));
  return f;
}

TEST(ForwardFramePrefix, WithTheEventAppendedParsesAsTheForwardProtobufWrites) {
  // Varints of one and several bytes, zeros (absent in proto3), one target
  // and many, events from empty to longer than a two-byte length.
  const std::vector<std::vector<Delivery>> target_sets = {
      {{1, 1, 0, 0}},
      {{127, 128, 0, 0}, {300, 1ull << 40, 0, 0}},
      {{0, 5, 0, 0}, {9, 0, 0, 0}},
      std::vector<Delivery>(1000, Delivery{123456, 654321, 0, 0}),
  };
  for (const auto& targets : target_sets) {
    for (std::uint64_t group : {0ull, 1ull, 1ull << 35}) {
      for (std::uint64_t prev : {0ull, 200ull}) {
        for (std::size_t len : {0u, 1u, 127u, 128u, 70000u}) {
          const std::string event(len, '\x5a');
          const std::string frame = ForwardFramePrefix(targets, group, prev, event.size()) + event;
          const mesh::MeshFrame f = Parse(frame);
          ASSERT_TRUE(f.has_forward());
          const mesh::Forward& fw = f.forward();
          ASSERT_EQ(fw.targets_size(), static_cast<int>(targets.size()));
          for (std::size_t i = 0; i < targets.size(); ++i) {
            EXPECT_EQ(fw.targets(static_cast<int>(i)).user(), targets[i].user);
            EXPECT_EQ(fw.targets(static_cast<int>(i)).seq(), targets[i].seq);
          }
          EXPECT_EQ(fw.group_id(), group);
          EXPECT_EQ(fw.prev_seq(), prev);
          EXPECT_EQ(fw.event(), event);
          // As many bytes as protobuf's own encoding (which differs in field
          // order only, and leaves an empty event out where the prefix
          // writes its tag and a zero length: two bytes).
          EXPECT_EQ(frame.size() - kFrameHeaderSize, f.ByteSizeLong() + (len == 0 ? 2 : 0));
        }
      }
    }
  }
}

TEST(ForwardFramePrefix, PastTheLargestFrameThrows) {
  const std::vector<Delivery> one = {{1, 1, 0, 0}};
  EXPECT_THROW(ForwardFramePrefix(one, 0, 0, std::size_t{1} << 32), std::length_error);
}

}  // namespace
}  // namespace fastchat::server
