#include "fastchat/deliver_frame.h"

#include "fastchat/frame.h"

namespace fastchat {
namespace {

// Field numbers in proto/fastchat.proto.
constexpr std::uint32_t kEnvelopeDeliverField = 62;
constexpr std::uint32_t kDeliverSeqField = 1;
constexpr std::uint32_t kDeliverEventField = 2;
constexpr std::uint32_t kDeliverGroupField = 3;
constexpr std::uint32_t kVarint = 0;
constexpr std::uint32_t kLengthDelimited = 2;

std::size_t VarintSize(std::uint64_t v) {
  std::size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

void PutVarint(std::uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

std::uint32_t Tag(std::uint32_t field, std::uint32_t wire_type) { return (field << 3) | wire_type; }

}  // namespace

std::string DeliverFramePrefix(std::uint64_t seq, std::size_t event_len, std::uint64_t group_id) {
  // Fields may come in any order; the event goes last so its bytes can follow.
  const std::size_t group = group_id == 0 ? 0 : VarintSize(Tag(kDeliverGroupField, kVarint)) + VarintSize(group_id);
  const std::size_t inner = VarintSize(Tag(kDeliverSeqField, kVarint)) + VarintSize(seq) + group +
                            VarintSize(Tag(kDeliverEventField, kLengthDelimited)) +
                            VarintSize(event_len) + event_len;
  const std::size_t outer = VarintSize(Tag(kEnvelopeDeliverField, kLengthDelimited)) + VarintSize(inner) + inner;
  CheckFrameLength(outer);
  std::string out;
  out.reserve(kFrameHeaderSize + 24);
  char hdr[kFrameHeaderSize];
  EncodeFrameHeader(static_cast<std::uint32_t>(outer), hdr);
  out.append(hdr, kFrameHeaderSize);
  PutVarint(Tag(kEnvelopeDeliverField, kLengthDelimited), &out);
  PutVarint(inner, &out);
  PutVarint(Tag(kDeliverSeqField, kVarint), &out);
  PutVarint(seq, &out);
  if (group_id != 0) {
    PutVarint(Tag(kDeliverGroupField, kVarint), &out);
    PutVarint(group_id, &out);
  }
  PutVarint(Tag(kDeliverEventField, kLengthDelimited), &out);
  PutVarint(event_len, &out);
  return out;
}

}  // namespace fastchat
