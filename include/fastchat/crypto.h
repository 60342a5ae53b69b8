// Crypto: every cryptographic operation FastChat performs, on libsodium.
//
// Promises: keys come from libsodium's CSPRNG, nonces from it through
// PublicRandomBytes' per-thread pool; every ciphertext
// is authenticated; every failure returns a non-OK Status (kCryptoFailed for
// a forged/corrupt input), never a partial plaintext. Byte strings are
// std::string used as byte buffers. Call crypto::Init() once before use.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "fastchat/status.h"

namespace fastchat::crypto {

inline constexpr std::size_t kKeyBytes = 32;        // symmetric keys, X25519/Ed25519 public keys
inline constexpr std::size_t kAeadNonceBytes = 24;  // XChaCha20-Poly1305
inline constexpr std::size_t kAeadTagBytes = 16;
inline constexpr std::size_t kBoxNonceBytes = 24;   // crypto_box
inline constexpr std::size_t kSignatureBytes = 64;
inline constexpr std::size_t kMsgIdBytes = 16;

// Initialises libsodium; safe to call more than once. Returns false if the
// library cannot be used.
bool Init();

// Random bytes from the CSPRNG.
std::string RandomBytes(std::size_t n);

// Random bytes for values that go out in the clear (nonces, message ids),
// as unpredictable as RandomBytes' but without a system call each: they
// come from a per-thread pool of 4 KiB, filled by libsodium's ChaCha20
// (randombytes_buf_deterministic) under a fresh 32-byte seed from the
// CSPRNG, and each byte is handed out once and then wiped. A getrandom(2)
// per nonce cost ~0.6 us on the benchmark machine, a quarter of a sending
// client's CPU (docs/performance.md). Never for keys: the pool holds bytes
// before they are used. A fork refills the child's pool first
// (pthread_atfork), so parent and child never share bytes. Requests over
// 256 bytes go to RandomBytes.
std::string PublicRandomBytes(std::size_t n);

// A fresh 32-byte symmetric key.
std::string NewSymmetricKey();

// ---- identity key pairs -------------------------------------------------
struct BoxKeyPair {    // X25519, for crypto_box
  std::string public_key;  // 32 bytes
  std::string secret_key;  // 32 bytes
};
struct SignKeyPair {   // Ed25519
  std::string public_key;  // 32 bytes
  std::string secret_key;  // 64 bytes
};
BoxKeyPair NewBoxKeyPair();
SignKeyPair NewSignKeyPair();

// ---- public-key wrapping (crypto_box: X25519 + XSalsa20-Poly1305) ------
// Encrypts `plaintext` so only the holder of `their_public` can open it, and
// they can verify it came from the holder of `my_secret`. Sets *nonce.
Status BoxSeal(std::string_view plaintext, std::string_view their_public,
               std::string_view my_secret, std::string* nonce, std::string* ciphertext);
Status BoxOpen(std::string_view ciphertext, std::string_view nonce, std::string_view their_public,
               std::string_view my_secret, std::string* plaintext);

// ---- symmetric AEAD (XChaCha20-Poly1305-IETF) ---------------------------
// Encrypts with a fresh random nonce (returned in *nonce), binding `ad`.
Status AeadEncrypt(std::string_view plaintext, std::string_view ad, std::string_view key,
                   std::string* nonce, std::string* ciphertext);
Status AeadDecrypt(std::string_view ciphertext, std::string_view ad, std::string_view nonce,
                   std::string_view key, std::string* plaintext);

// ---- signatures (Ed25519, detached) --------------------------------------
// Returns a 64-byte signature, or "" if secret_key is not 64 bytes. Verify
// returns false (never crashes) for wrong-sized signatures or keys.
std::string Sign(std::string_view message, std::string_view secret_key);
bool Verify(std::string_view message, std::string_view signature, std::string_view public_key);

// ---- passwords -----------------------------------------------------------
// Cost of Argon2id. kInteractive is libsodium's OPSLIMIT/MEMLIMIT_INTERACTIVE;
// kMin is the library minimum (tests and benchmarks only).
struct PwhashCost {
  std::uint64_t opslimit;
  std::size_t memlimit;
  static PwhashCost Interactive();
  static PwhashCost Moderate();
  static PwhashCost Min();
  // Parses "min", "interactive", "moderate".
  static bool Parse(std::string_view name, PwhashCost* out);
};
// Argon2id hash string (crypto_pwhash_str), self-describing, for the server.
Status PasswordHash(std::string_view password, PwhashCost cost, std::string* hash);
// True if `password` matches `hash`.
bool PasswordVerify(std::string_view hash, std::string_view password);

// ---- keys at rest --------------------------------------------------------
// Derives a 32-byte key from a password and a 16-byte salt (Argon2id).
Status DeriveKey(std::string_view password, std::string_view salt, PwhashCost cost, std::string* key);
inline constexpr std::size_t kSaltBytes = 16;

// ---- helpers -------------------------------------------------------------
// Safety number for two identities: 60 decimal digits in 12 groups of 5, the
// same whichever order the two (id, x25519, ed25519) identities are given.
std::string SafetyNumber(std::uint64_t id_a, std::string_view x25519_a, std::string_view ed25519_a,
                         std::uint64_t id_b, std::string_view x25519_b, std::string_view ed25519_b);
// Lower-case hex.
std::string Hex(std::string_view bytes);
// BLAKE2b-256 of bytes (crypto_generichash), raw 32 bytes.
std::string Hash(std::string_view bytes);

// ---- shared-secret authentication (cluster links) ------------------------
// 32-byte MAC key derived from a configured secret (BLAKE2b, domain-separated).
std::string MacKeyFromSecret(std::string_view secret);
// HMAC-SHA512-256 (crypto_auth) of `message` under a 32-byte key.
std::string Mac(std::string_view message, std::string_view key);
// Constant-time check of a MAC made by Mac(); false on wrong sizes.
bool MacVerify(std::string_view mac, std::string_view message, std::string_view key);

}  // namespace fastchat::crypto
