#include "fastchat/deliver_frame.h"

#include "fastchat/frame.h"
#include "fastchat/proto_wire.h"

namespace fastchat {
namespace {

using namespace proto_wire;

// Field numbers in proto/fastchat.proto.
constexpr std::uint32_t kEnvelopeDeliverField = 62;
constexpr std::uint32_t kDeliverSeqField = 1;
constexpr std::uint32_t kDeliverEventField = 2;
constexpr std::uint32_t kDeliverGroupField = 3;

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

std::string DeliverFrame(std::uint64_t seq, const std::string& event, std::uint64_t group_id) {
  std::string out = DeliverFramePrefix(seq, event.size(), group_id);
  out.append(event);
  return out;
}

}  // namespace fastchat
