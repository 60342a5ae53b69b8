#include "message_format.h"

#include <algorithm>

namespace fastchat::client {

void PutU64(std::string* out, std::uint64_t v) {
  for (int i = 7; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutU32(std::string* out, std::uint32_t v) {
  for (int i = 3; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
std::uint64_t GetU64(std::string_view in) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(in[static_cast<std::size_t>(i)]);
  return v;
}

std::string DmAd(std::uint64_t sender, std::uint64_t recipient, std::string_view msg_id, int kind,
                 std::uint32_t index, std::uint32_t count) {
  std::string ad = "fastchat-dm-v1";
  PutU64(&ad, sender);
  PutU64(&ad, recipient);
  ad.append(msg_id);
  ad.push_back(static_cast<char>(kind));
  PutU32(&ad, index);
  PutU32(&ad, count);
  return ad;
}

std::string GroupAd(std::uint64_t group, std::uint64_t epoch, std::uint64_t sender, std::string_view msg_id,
                    int kind, std::uint32_t index, std::uint32_t count) {
  std::string ad = "fastchat-grp-v1";
  PutU64(&ad, group);
  PutU64(&ad, epoch);
  PutU64(&ad, sender);
  ad.append(msg_id);
  ad.push_back(static_cast<char>(kind));
  PutU32(&ad, index);
  PutU32(&ad, count);
  return ad;
}

std::uint64_t ChunkCount(std::uint64_t size) { return 1 + (size + kChunkBytes - 1) / kChunkBytes; }

std::uint64_t DataChunkSize(std::uint64_t size, std::uint64_t index) {
  std::uint64_t offset = (index - 1) * kChunkBytes;
  return std::min(kChunkBytes, size - offset);
}

}  // namespace fastchat::client
