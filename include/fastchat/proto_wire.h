// The few pieces of the Protocol Buffers wire format that hand-built frame
// prefixes need (DeliverFramePrefix, the mesh's ForwardFramePrefix): a
// prefix is written by hand so that a stored event's bytes can follow it
// from their shared buffer, never copied into a message and serialized
// again. Everything else is encoded by protobuf itself.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace fastchat::proto_wire {

inline constexpr std::uint32_t kVarint = 0;
inline constexpr std::uint32_t kLengthDelimited = 2;

// The key of field `field` with wire type `wire_type`.
constexpr std::uint32_t Tag(std::uint32_t field, std::uint32_t wire_type) { return (field << 3) | wire_type; }

// Bytes PutVarint writes for `v`.
constexpr std::size_t VarintSize(std::uint64_t v) {
  std::size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

// Appends `v` as a base-128 varint.
inline void PutVarint(std::uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

// Writes `v` as a base-128 varint at `p` (VarintSize(v) bytes); returns the
// end.
inline char* PutVarint(std::uint64_t v, char* p) {
  while (v >= 0x80) {
    *p++ = static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  *p++ = static_cast<char>(v);
  return p;
}

}  // namespace fastchat::proto_wire
