// DedupeKeyHash: the hash SqliteStore's in-memory indexes (AckedKeys,
// PendingIndex) take for a (recipient, dedupe key) pair.
//
// Promises:
//  - SipHash-2-4 (libsodium's crypto_shorthash) of the recipient's 8 bytes
//    and the key, under a key drawn at random once per process: a client
//    that chooses dedupe keys (a DM's msg_id) cannot make them collide in
//    either index's table, so probe chains stay short whatever it sends.
//    (The indexes live in memory and are rebuilt at open, so the hash need
//    not be the same from one process to the next.)
//  - Stable within a process; thread-safe.
#pragma once

#include <cstdint>
#include <string_view>

namespace fastchat {

std::uint64_t DedupeKeyHash(std::uint64_t recipient, std::string_view key);

}  // namespace fastchat
