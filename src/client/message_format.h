// The bytes around a FastChat message that are not the message itself: the
// associated data that binds each sealed chunk to its place, and the way an
// image is cut into chunks.
//
// Promises:
// - DmAd and GroupAd cover everything a receiver relies on (sender,
//   recipient or group and epoch, msg_id, kind, chunk index and count), so a
//   sealed chunk does not open anywhere else. Their bytes never change: both
//   ends of a conversation compute them.
// - An image of `size` bytes travels as ChunkCount(size) chunks: chunk 0 is
//   u64be(size) || title, chunk i >= 1 holds DataChunkSize(size, i) bytes
//   from offset (i - 1) * kChunkBytes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace fastchat::client {

inline constexpr std::uint64_t kChunkBytes = 262144;  // image data per chunk

// Big-endian integers.
void PutU64(std::string* out, std::uint64_t v);
void PutU32(std::string* out, std::uint32_t v);
// Reads the first 8 bytes of `in` (which must have them).
std::uint64_t GetU64(std::string_view in);

// Associated data of a direct message chunk.
std::string DmAd(std::uint64_t sender, std::uint64_t recipient, std::string_view msg_id, int kind,
                 std::uint32_t index, std::uint32_t count);
// Associated data of a group message chunk (also what its signature covers,
// with the nonce and ciphertext).
std::string GroupAd(std::uint64_t group, std::uint64_t epoch, std::uint64_t sender, std::string_view msg_id,
                    int kind, std::uint32_t index, std::uint32_t count);

// Number of chunks of an image of `size` bytes (header chunk included).
std::uint64_t ChunkCount(std::uint64_t size);
// Size of data chunk `index` (1-based) of an image of `size` bytes.
std::uint64_t DataChunkSize(std::uint64_t size, std::uint64_t index);

}  // namespace fastchat::client
