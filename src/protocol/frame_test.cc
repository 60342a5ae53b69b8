#include "fastchat/frame.h"

#include <gtest/gtest.h>

#include <stdexcept>

#include "fastchat.pb.h"
#include "fastchat/deliver_frame.h"

namespace fastchat {
namespace {

TEST(Frame, HeaderRoundTrip) {
  char hdr[kFrameHeaderSize];
  for (std::uint32_t v : {0u, 1u, 255u, 256u, 65535u, 1u << 20, 0xffffffffu}) {
    EncodeFrameHeader(v, hdr);
    EXPECT_EQ(DecodeFrameHeader(hdr), v);
  }
  EncodeFrameHeader(0x01020304u, hdr);
  EXPECT_EQ(hdr[0], 1);
  EXPECT_EQ(hdr[3], 4);
}

TEST(Frame, DecodesFramesSplitAcrossReads) {
  std::string stream;
  AppendFrame("hello", &stream);
  AppendFrame("", &stream);
  AppendFrame(std::string(70000, 'x'), &stream);
  FrameDecoder dec;
  std::vector<std::string> got;
  for (char c : stream) {
    dec.Append(&c, 1);
    std::string_view p;
    bool have = false;
    ASSERT_TRUE(dec.Next(&p, &have).ok());
    if (have) got.emplace_back(p);
  }
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0], "hello");
  EXPECT_EQ(got[1], "");
  EXPECT_EQ(got[2].size(), 70000u);
  EXPECT_EQ(dec.buffered(), 0u);
}

TEST(Frame, ReleaseIfIdleKeepsPendingBytes) {
  std::string stream;
  AppendFrame(std::string(5000, 'a'), &stream);
  AppendFrame("tail", &stream);
  FrameDecoder dec;
  dec.Append(stream.data(), stream.size() - 1);  // second frame incomplete
  std::string_view p;
  bool have = false;
  ASSERT_TRUE(dec.Next(&p, &have).ok());
  ASSERT_TRUE(have);
  dec.ReleaseIfIdle();  // bytes pending: must keep them
  dec.Append(stream.data() + stream.size() - 1, 1);
  ASSERT_TRUE(dec.Next(&p, &have).ok());
  ASSERT_TRUE(have);
  EXPECT_EQ(p, "tail");
  dec.ReleaseIfIdle();
  EXPECT_EQ(dec.buffered(), 0u);
  AppendFrame("again", &stream);
  dec.Append(stream.data() + stream.size() - 9, 9);
  ASSERT_TRUE(dec.Next(&p, &have).ok());
  ASSERT_TRUE(have);
  EXPECT_EQ(p, "again");
}

TEST(Frame, TruncatedFrameStaysBuffered) {
  std::string stream;
  AppendFrame("abcdef", &stream);
  FrameDecoder dec;
  dec.Append(stream.data(), stream.size() - 2);
  std::string_view p;
  bool have = true;
  ASSERT_TRUE(dec.Next(&p, &have).ok());
  EXPECT_FALSE(have);
  EXPECT_EQ(dec.buffered(), stream.size() - 2);
}

TEST(Frame, RejectsOversizedHeaderBeforeBuffering) {
  FrameDecoder dec(1024);
  char hdr[kFrameHeaderSize];
  EncodeFrameHeader(1025, hdr);
  dec.Append(hdr, sizeof hdr);
  std::string_view p;
  bool have = false;
  Status s = dec.Next(&p, &have);
  EXPECT_EQ(s.code(), Code::kFrameTooLarge);
  EXPECT_FALSE(have);
}

TEST(Frame, APayloadOverFourGiBIsRefusedNotTruncated) {
  // Only the size is looked at before refusing: no 4 GiB buffer is needed.
  const char byte = 'x';
  const std::string_view huge(&byte, (std::size_t{1} << 32) + 5);
  std::string out;
  EXPECT_THROW(AppendFrame(huge, &out), std::length_error);
  EXPECT_TRUE(out.empty());  // before: a header saying 5 bytes
  EXPECT_THROW(DeliverFramePrefix(1, std::size_t{1} << 32), std::length_error);
  EXPECT_NO_THROW(CheckFrameLength(0xffffffffu));
}

TEST(Frame, EnvelopeRoundTripAndGarbageRejected) {
  wire::Envelope env;
  env.set_rid(7);
  env.mutable_direct_send()->mutable_to()->set_name("bob");
  env.mutable_direct_send()->set_ciphertext(std::string("\x00\x01\x02", 3));
  std::string bytes = env.SerializeAsString();
  wire::Envelope back;
  ASSERT_TRUE(back.ParseFromString(bytes));
  EXPECT_EQ(back.rid(), 7u);
  EXPECT_EQ(back.direct_send().to().name(), "bob");
  // A truncated serialization does not parse.
  wire::Envelope bad;
  EXPECT_FALSE(bad.ParseFromString(bytes.substr(0, bytes.size() - 2)));
}

}  // namespace
}  // namespace fastchat


namespace fastchat {
namespace {

TEST(DeliverFrame, PrefixPlusEventParsesAsEnvelope) {
  for (std::uint64_t seq : {1ull, 127ull, 128ull, 300ull, 1ull << 40}) {
    for (std::size_t len : {0u, 1u, 127u, 128u, 70000u}) {
      std::string event(len, '\x5a');
      std::string frame = DeliverFramePrefix(seq, event.size()) + event;
      ASSERT_GE(frame.size(), kFrameHeaderSize);
      EXPECT_EQ(DecodeFrameHeader(frame.data()), frame.size() - kFrameHeaderSize);
      wire::Envelope env;
      ASSERT_TRUE(env.ParseFromArray(frame.data() + kFrameHeaderSize,
                                     static_cast<int>(frame.size() - kFrameHeaderSize)));
      ASSERT_TRUE(env.has_deliver());
      EXPECT_EQ(env.rid(), 0u);
      EXPECT_EQ(env.deliver().seq(), seq);
      EXPECT_EQ(env.deliver().event(), event);
    }
  }
}

TEST(DeliverFrame, AWholeGroupFrameIsThePrefixAndTheEvent) {
  const std::string event = "group entry bytes";
  for (std::uint64_t group : {1ull, 300ull, 1ull << 40}) {
    const std::string frame = DeliverFrame(1ull << 33, event, group);
    EXPECT_EQ(frame, DeliverFramePrefix(1ull << 33, event.size(), group) + event);
    wire::Envelope env;
    ASSERT_TRUE(env.ParseFromArray(frame.data() + kFrameHeaderSize, static_cast<int>(frame.size() - kFrameHeaderSize)));
    EXPECT_EQ(env.deliver().group_id(), group);
    EXPECT_EQ(env.deliver().event(), event);
  }
}

}  // namespace
}  // namespace fastchat
