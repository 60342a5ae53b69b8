#include "key_hash.h"

#include <array>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <sodium.h>

namespace fastchat {
namespace {

// The process's SipHash key, drawn once.
const std::array<unsigned char, crypto_shorthash_KEYBYTES>& HashKey() {
  static const std::array<unsigned char, crypto_shorthash_KEYBYTES> key = [] {
    std::array<unsigned char, crypto_shorthash_KEYBYTES> k{};
    if (sodium_init() < 0) std::abort();
    randombytes_buf(k.data(), k.size());
    return k;
  }();
  return key;
}

}  // namespace

std::uint64_t DedupeKeyHash(std::uint64_t recipient, std::string_view key) {
  // The recipient (8 bytes, host order) then the key; on the stack for
  // keys of usual length (a DM's is ~45 bytes).
  unsigned char small[128];
  std::vector<unsigned char> large;
  unsigned char* buf = small;
  const std::size_t n = 8 + key.size();
  if (n > sizeof small) {
    large.resize(n);
    buf = large.data();
  }
  std::memcpy(buf, &recipient, 8);
  if (!key.empty()) std::memcpy(buf + 8, key.data(), key.size());
  unsigned char out[crypto_shorthash_BYTES];
  crypto_shorthash(out, buf, n, HashKey().data());
  std::uint64_t h = 0;
  std::memcpy(&h, out, sizeof h);
  return h;
}

}  // namespace fastchat
