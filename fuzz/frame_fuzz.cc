// Frame codec: FrameDecoder fed a hostile byte stream in arbitrary pieces,
// checked against a plain reference decoder; every payload that parses as an
// Envelope goes back through AppendFrame and decodes to itself; and the
// hand-written Deliver prefix (deliver_frame.cc) must parse as the Envelope it
// claims to be.
//
// Input: byte 0-1 the limit (max_frame = 16 * value), bytes 2-9 the read
// sizes (each 1..256, reused in turn), then the stream.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "fastchat.pb.h"
#include "fastchat/deliver_frame.h"
#include "fastchat/frame.h"
#include "common.h"

using fastchat::fuzz::Check;
using fastchat::fuzz::Fail;

namespace {

using fastchat::FrameDecoder;
using fastchat::kFrameHeaderSize;

// Whole-buffer reference: the frames before the first over-limit header, and
// whether the stream stopped at such a header.
std::vector<std::string_view> Reference(std::string_view s, std::uint32_t max_frame, bool* too_large) {
  std::vector<std::string_view> out;
  *too_large = false;
  std::size_t pos = 0;
  while (s.size() - pos >= kFrameHeaderSize) {
    const std::uint32_t len = fastchat::DecodeFrameHeader(s.data() + pos);
    if (len > max_frame) {
      *too_large = true;
      break;
    }
    if (s.size() - pos - kFrameHeaderSize < len) break;
    out.push_back(s.substr(pos + kFrameHeaderSize, len));
    pos += kFrameHeaderSize + len;
  }
  return out;
}

void RoundTrip(std::string_view payload) {
  fastchat::wire::Envelope env;
  if (!env.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) return;
  std::string frame;
  fastchat::AppendFrame(env.SerializeAsString(), &frame);
  FrameDecoder d(static_cast<std::uint32_t>(frame.size()));
  d.Append(frame.data(), frame.size());
  std::string_view again;
  bool have = false;
  Check(d.Next(&again, &have).ok() && have, "re-encoded frame does not decode");
  Check(d.buffered() == 0, "re-encoded frame leaves bytes behind");
  fastchat::wire::Envelope env2;
  Check(env2.ParseFromArray(again.data(), static_cast<int>(again.size())), "re-encoded envelope does not parse");
  Check(env2.SerializeAsString() == env.SerializeAsString(), "envelope changed in a round trip");
}

// DeliverFramePrefix(seq, len, group) + event must be one frame holding
// Envelope{deliver{seq, event, group_id}}.
void DeliverPrefix(std::uint64_t seq, std::uint64_t group, std::string_view event) {
  std::string frame = fastchat::DeliverFramePrefix(seq, event.size(), group);
  frame.append(event);
  Check(frame.size() >= kFrameHeaderSize, "short deliver frame");
  Check(fastchat::DecodeFrameHeader(frame.data()) == frame.size() - kFrameHeaderSize, "deliver frame length");
  fastchat::wire::Envelope env;
  Check(env.ParseFromArray(frame.data() + kFrameHeaderSize, static_cast<int>(frame.size() - kFrameHeaderSize)),
        "deliver frame does not parse");
  Check(env.has_deliver() && env.rid() == 0, "deliver frame body");
  Check(env.deliver().seq() == seq, "deliver seq");
  Check(env.deliver().group_id() == group, "deliver group_id");
  Check(env.deliver().event() == event, "deliver event bytes");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fastchat::fuzz::QuietProtobuf();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 10) return 0;
  const std::uint32_t max_frame = 16u * (static_cast<std::uint32_t>(data[0]) << 8 | data[1]);
  const std::uint8_t* sizes = data + 2;
  std::string_view stream(reinterpret_cast<const char*>(data + 10), size - 10);

  bool ref_too_large = false;
  std::vector<std::string_view> expected = Reference(stream, max_frame, &ref_too_large);

  FrameDecoder d(max_frame);
  std::vector<std::string> got;
  bool too_large = false;
  std::size_t pos = 0;
  for (int i = 0; pos < stream.size() && !too_large; ++i) {
    const std::size_t n = std::min<std::size_t>(stream.size() - pos, 1 + sizes[i % 8]);
    d.Append(stream.data() + pos, n);
    pos += n;
    for (;;) {
      std::string_view payload;
      bool have = false;
      fastchat::Status st = d.Next(&payload, &have);
      if (!st.ok()) {
        Check(st.code() == fastchat::Code::kFrameTooLarge, "decoder error other than kFrameTooLarge");
        too_large = true;
        break;
      }
      if (!have) break;
      Check(payload.size() <= max_frame, "payload over the limit");
      got.emplace_back(payload);
    }
    if (sizes[i % 8] & 1) d.ReleaseIfIdle();
  }
  Check(got.size() == expected.size(), "frame count differs from the reference");
  for (std::size_t i = 0; i < got.size(); ++i) Check(got[i] == expected[i], "frame bytes differ");
  Check(too_large == ref_too_large, "over-limit detection differs");

  for (const std::string& p : got) RoundTrip(p);

  std::uint64_t seq = 0, group = 0;
  for (int i = 0; i < 8; ++i) seq = seq << 8 | sizes[i];
  group = sizes[0] & 2 ? seq ^ 0x5a5a5a5a5a5a5a5aull : 0;
  DeliverPrefix(seq, group, stream.substr(0, std::min<std::size_t>(stream.size(), 4096)));
  return 0;
}
