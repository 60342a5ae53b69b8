// Auth: how a chat server proves to a balancer that it knows the cluster
// secret without sending it (proto/balancer.proto describes the exchange).
//
//   key = BLAKE2b-256(cluster_secret)                         (crypto_generichash)
//   mac = HMAC-SHA512-256(key, kAuthContext || challenge || server_id)  (crypto_auth)
//
// The balancer sends a fresh random challenge on every connection, so an
// answer recorded from one connection does not work on another. Note what
// this does not give: the TCP stream after authentication is neither
// encrypted nor integrity-protected, so balancers belong on a network an
// attacker cannot tamper with (clients cannot authenticate a balancer at
// all; end-to-end encryption keeps messages safe from a rogue server).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace fastchat::balancer {

inline constexpr std::size_t kChallengeBytes = 32;
inline constexpr std::size_t kAuthKeyBytes = 32;
inline constexpr std::size_t kAuthMacBytes = 32;
// TLS exporter label of the channel binding appended to the challenge before
// it is MACed (net::Stream::ChannelBinding; empty on plain TCP).
inline constexpr const char* kBalancerBindingLabel = "EXPORTER-fastchat-balancer";
inline constexpr std::size_t kMaxServerIdBytes = 64;
inline constexpr std::string_view kAuthContext = "fastchat-balancer-auth-v1";

// A server_id is 1..kMaxServerIdBytes bytes of printable ASCII (0x20-0x7e),
// so it is safe to log.
bool ValidServerId(std::string_view server_id);

// Initialises libsodium if needed. Returns false if it cannot be used.
bool AuthInit();

// kChallengeBytes random bytes.
std::string NewChallenge();

// The MAC key for a cluster secret.
std::string AuthKey(std::string_view cluster_secret);

// The answer to `challenge` for `server_id` under `key` (from AuthKey).
std::string AuthMac(std::string_view key, std::string_view challenge, std::string_view server_id);

// True if `mac` is the right answer (constant-time comparison). False, never
// a crash, for wrong-sized inputs.
bool AuthVerify(std::string_view key, std::string_view challenge, std::string_view server_id,
                std::string_view mac);

}  // namespace fastchat::balancer
