// The client fuzz target's fixed world, shared with the seed generator
// (seeds.cc) so that seeds can carry messages that really decrypt: alice
// (id 1, the client) is friends with bob (id 2), whose friend key is known,
// and is a member of bob's group 7, whose epoch-1 key she holds. carol (id 3)
// is not known to alice yet. Every key comes from a fixed seed.
#pragma once

#include <sodium.h>

#include <cstdint>
#include <string>

namespace fastchat::fuzz {

inline constexpr std::uint64_t kAlice = 1, kBob = 2, kCarol = 3, kGroup = 7;

struct FixedKeys {
  std::string x25519_public, x25519_secret, ed25519_public, ed25519_secret;
};

inline FixedKeys KeysOf(char who) {
  unsigned char seed[32];
  for (unsigned char& b : seed) b = static_cast<unsigned char>(who);
  unsigned char xp[crypto_box_PUBLICKEYBYTES], xs[crypto_box_SECRETKEYBYTES];
  unsigned char ep[crypto_sign_PUBLICKEYBYTES], es[crypto_sign_SECRETKEYBYTES];
  crypto_box_seed_keypair(xp, xs, seed);
  crypto_sign_seed_keypair(ep, es, seed);
  auto str = [](const unsigned char* p, std::size_t n) { return std::string(reinterpret_cast<const char*>(p), n); };
  return FixedKeys{str(xp, sizeof xp), str(xs, sizeof xs), str(ep, sizeof ep), str(es, sizeof es)};
}

inline std::string FriendKeyAliceBob() { return std::string(32, 'F'); }
inline std::string GroupKeyEpoch1() { return std::string(32, 'G'); }

}  // namespace fastchat::fuzz
