#include "auth.h"

#include <sodium.h>

namespace fastchat::balancer {
namespace {

const unsigned char* Bytes(std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); }

}  // namespace

bool ValidServerId(std::string_view server_id) {
  if (server_id.empty() || server_id.size() > kMaxServerIdBytes) return false;
  for (char c : server_id) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

bool AuthInit() { return sodium_init() >= 0; }

std::string NewChallenge() {
  AuthInit();
  std::string out(kChallengeBytes, '\0');
  randombytes_buf(out.data(), out.size());
  return out;
}

std::string AuthKey(std::string_view cluster_secret) {
  static_assert(kAuthKeyBytes == crypto_auth_KEYBYTES);
  AuthInit();
  std::string key(kAuthKeyBytes, '\0');
  crypto_generichash(reinterpret_cast<unsigned char*>(key.data()), key.size(), Bytes(cluster_secret),
                     cluster_secret.size(), nullptr, 0);
  return key;
}

std::string AuthMac(std::string_view key, std::string_view challenge, std::string_view server_id) {
  static_assert(kAuthMacBytes == crypto_auth_BYTES);
  if (key.size() != kAuthKeyBytes) return std::string();
  AuthInit();
  std::string msg;
  msg.reserve(kAuthContext.size() + challenge.size() + server_id.size());
  msg.append(kAuthContext);
  msg.append(challenge);
  msg.append(server_id);
  std::string mac(kAuthMacBytes, '\0');
  crypto_auth(reinterpret_cast<unsigned char*>(mac.data()), Bytes(msg), msg.size(), Bytes(key));
  return mac;
}

bool AuthVerify(std::string_view key, std::string_view challenge, std::string_view server_id,
                std::string_view mac) {
  if (key.size() != kAuthKeyBytes || mac.size() != kAuthMacBytes) return false;
  std::string expected = AuthMac(key, challenge, server_id);
  return sodium_memcmp(expected.data(), mac.data(), kAuthMacBytes) == 0;
}

}  // namespace fastchat::balancer
