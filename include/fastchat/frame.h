// Frame codec: the length-prefixed framing of the wire protocol.
//
// A frame is a 4-byte big-endian length N followed by N payload bytes (one
// serialized Envelope). FrameDecoder is incremental and allocation-free per
// frame beyond its buffer; it never trusts a length over its limit.
// Header-only dependencies: no Asio, no protobuf.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fastchat/status.h"

namespace fastchat {

inline constexpr std::size_t kFrameHeaderSize = 4;
inline constexpr std::uint32_t kProtocolVersion = 1;
// Default largest payload a peer accepts (the server's is configurable).
inline constexpr std::uint32_t kDefaultMaxFrame = 1u << 20;  // 1 MiB

// Writes the 4-byte big-endian header for a payload of `len` bytes.
void EncodeFrameHeader(std::uint32_t len, char out[kFrameHeaderSize]);
// Reads a 4-byte big-endian header.
std::uint32_t DecodeFrameHeader(const char in[kFrameHeaderSize]);

// Appends header + payload to *out. A payload the 4-byte header cannot
// describe (over 4 GiB - 1) throws std::length_error: it is never written
// with a truncated length.
void AppendFrame(std::string_view payload, std::string* out);
// Throws std::length_error unless `len` fits the 4-byte header.
void CheckFrameLength(std::size_t len);

// Incremental decoder. Feed bytes with Append(); pull whole frames with Next().
class FrameDecoder {
 public:
  explicit FrameDecoder(std::uint32_t max_frame = kDefaultMaxFrame) : max_frame_(max_frame) {}

  void Append(const char* data, std::size_t n);

  // If a whole frame is buffered, sets *payload to view its bytes (valid until
  // the next call to Append or Next) and returns OK with *have = true.
  // Returns kFrameTooLarge if the next header announces more than max_frame;
  // the decoder is then unusable (the stream cannot be resynchronised).
  Status Next(std::string_view* payload, bool* have);

  // Changes the limit for the frames not yet returned (e.g. larger once a
  // peer has logged in).
  void set_max_frame(std::uint32_t max_frame) { max_frame_ = max_frame; }

  // Bytes buffered but not yet returned as frames (e.g. a truncated frame).
  std::size_t buffered() const { return buf_.size() - pos_; }

  // Frees the buffer's memory if nothing is buffered, so an idle connection
  // holds none (a connection that once carried a 1 MiB frame would keep it).
  void ReleaseIfIdle() {
    if (buffered() == 0 && buf_.capacity() > 0) {
      std::string().swap(buf_);
      pos_ = 0;
    }
  }

 private:
  std::uint32_t max_frame_;
  std::string buf_;
  std::size_t pos_ = 0;
};

}  // namespace fastchat
