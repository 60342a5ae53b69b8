#include "forward_frame.h"

#include <stdexcept>

#include "fastchat/frame.h"
#include "fastchat/proto_wire.h"

namespace fastchat::server {
namespace {

using namespace proto_wire;

// Field numbers in proto/mesh.proto.
constexpr std::uint32_t kMeshFrameForwardField = 4;
constexpr std::uint32_t kForwardTargetsField = 1;
constexpr std::uint32_t kForwardEventField = 2;
constexpr std::uint32_t kForwardGroupIdField = 3;
constexpr std::uint32_t kForwardPrevSeqField = 4;
constexpr std::uint32_t kTargetUserField = 1;
constexpr std::uint32_t kTargetSeqField = 2;

// A varint field as protobuf writes it for proto3: absent when zero.
std::size_t VarintFieldSize(std::uint32_t field, std::uint64_t v) {
  return v == 0 ? 0 : VarintSize(Tag(field, kVarint)) + VarintSize(v);
}
char* PutVarintField(std::uint32_t field, std::uint64_t v, char* p) {
  if (v == 0) return p;
  return PutVarint(v, PutVarint(Tag(field, kVarint), p));
}

std::size_t TargetSize(const Delivery& d) {
  return VarintFieldSize(kTargetUserField, d.user) + VarintFieldSize(kTargetSeqField, d.seq);
}

}  // namespace

std::string ForwardFramePrefix(std::span<const Delivery> targets, std::uint64_t group_id, std::uint64_t prev_seq,
                               std::size_t event_len) {
  // Fields may come in any order; the event goes last so its bytes can follow.
  std::size_t inner = VarintFieldSize(kForwardGroupIdField, group_id) + VarintFieldSize(kForwardPrevSeqField, prev_seq) +
                      VarintSize(Tag(kForwardEventField, kLengthDelimited)) + VarintSize(event_len) + event_len;
  for (const Delivery& d : targets) {
    const std::size_t t = TargetSize(d);
    inner += VarintSize(Tag(kForwardTargetsField, kLengthDelimited)) + VarintSize(t) + t;
  }
  const std::size_t outer = VarintSize(Tag(kMeshFrameForwardField, kLengthDelimited)) + VarintSize(inner) + inner;
  CheckFrameLength(outer);
  // Every size is known: the prefix is written in place, not grown.
  std::string out(kFrameHeaderSize + (outer - event_len), '\0');
  EncodeFrameHeader(static_cast<std::uint32_t>(outer), out.data());
  char* p = out.data() + kFrameHeaderSize;
  p = PutVarint(Tag(kMeshFrameForwardField, kLengthDelimited), p);
  p = PutVarint(inner, p);
  for (const Delivery& d : targets) {
    p = PutVarint(Tag(kForwardTargetsField, kLengthDelimited), p);
    p = PutVarint(TargetSize(d), p);
    p = PutVarintField(kTargetUserField, d.user, p);
    p = PutVarintField(kTargetSeqField, d.seq, p);
  }
  p = PutVarintField(kForwardGroupIdField, group_id, p);
  p = PutVarintField(kForwardPrevSeqField, prev_seq, p);
  p = PutVarint(Tag(kForwardEventField, kLengthDelimited), p);
  p = PutVarint(event_len, p);
  if (p != out.data() + out.size()) throw std::logic_error("ForwardFramePrefix: sizes disagree");
  return out;
}

}  // namespace fastchat::server
