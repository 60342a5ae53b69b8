#include "fastchat/frame.h"

#include <limits>
#include <stdexcept>
#include <string>

namespace fastchat {

void EncodeFrameHeader(std::uint32_t len, char out[kFrameHeaderSize]) {
  out[0] = static_cast<char>((len >> 24) & 0xff);
  out[1] = static_cast<char>((len >> 16) & 0xff);
  out[2] = static_cast<char>((len >> 8) & 0xff);
  out[3] = static_cast<char>(len & 0xff);
}

std::uint32_t DecodeFrameHeader(const char in[kFrameHeaderSize]) {
  auto b = [&](int i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(in[i])); };
  return (b(0) << 24) | (b(1) << 16) | (b(2) << 8) | b(3);
}

void CheckFrameLength(std::size_t len) {
  if (len > std::numeric_limits<std::uint32_t>::max()) {
    throw std::length_error("frame payload of " + std::to_string(len) + " bytes does not fit a 4-byte length");
  }
}

void AppendFrame(std::string_view payload, std::string* out) {
  CheckFrameLength(payload.size());
  char hdr[kFrameHeaderSize];
  EncodeFrameHeader(static_cast<std::uint32_t>(payload.size()), hdr);
  out->append(hdr, kFrameHeaderSize);
  out->append(payload);
}

void FrameDecoder::Append(const char* data, std::size_t n) {
  // Compact consumed bytes before growing, so the buffer stays bounded by
  // one frame plus one read.
  if (pos_ > 0 && pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  } else if (pos_ > (1u << 16) && pos_ * 2 > buf_.size()) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  buf_.append(data, n);
}

Status FrameDecoder::Next(std::string_view* payload, bool* have) {
  *have = false;
  if (buffered() < kFrameHeaderSize) return Status::OK();
  std::uint32_t len = DecodeFrameHeader(buf_.data() + pos_);
  if (len > max_frame_) {
    return Status(Code::kFrameTooLarge, "frame of " + std::to_string(len) +
                                            " bytes exceeds limit of " + std::to_string(max_frame_));
  }
  if (buffered() < kFrameHeaderSize + len) return Status::OK();
  *payload = std::string_view(buf_.data() + pos_ + kFrameHeaderSize, len);
  pos_ += kFrameHeaderSize + len;
  *have = true;
  return Status::OK();
}

}  // namespace fastchat
