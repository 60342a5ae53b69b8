// Crypto: thin, checked wrappers over libsodium. See fastchat/crypto.h.
//
// Conventions used throughout:
//  - Inputs are validated for size before libsodium sees them; a wrong-sized
//    key, nonce or salt is the caller's mistake (kBadRequest).
//  - Results are built in locals and copied to the out-parameters only on
//    success, so an out-parameter may alias an input, and a failed decrypt
//    leaves *plaintext empty rather than holding partial data.

#include "fastchat/crypto.h"

#include <sodium.h>

#include <pthread.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <tuple>
#include <utility>

namespace fastchat::crypto {

static_assert(kKeyBytes == crypto_aead_xchacha20poly1305_ietf_KEYBYTES);
static_assert(kKeyBytes == crypto_box_PUBLICKEYBYTES);
static_assert(kKeyBytes == crypto_box_SECRETKEYBYTES);
static_assert(kKeyBytes == crypto_sign_PUBLICKEYBYTES);
static_assert(kAeadNonceBytes == crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
static_assert(kAeadTagBytes == crypto_aead_xchacha20poly1305_ietf_ABYTES);
static_assert(kBoxNonceBytes == crypto_box_NONCEBYTES);
static_assert(kSignatureBytes == crypto_sign_BYTES);
static_assert(kSaltBytes == crypto_pwhash_SALTBYTES);
static_assert(crypto_generichash_BYTES == 32);

namespace {

// libsodium speaks unsigned char; std::string holds char. Same object
// representation, so these casts are safe.
const unsigned char* U8(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}
unsigned char* U8(std::string* s) { return reinterpret_cast<unsigned char*>(s->data()); }

Status BadSize(const char* what, std::size_t want, std::size_t got) {
  return Status(Code::kBadRequest, std::string(what) + " must be " + std::to_string(want) +
                                       " bytes, got " + std::to_string(got));
}

// Argon2id rejects costs outside these bounds; report that as the caller's
// mistake so a -1 from libsodium afterwards can only mean an internal failure
// (in practice: could not allocate memlimit bytes).
Status CheckPwhashInput(std::string_view password, PwhashCost cost) {
  if (cost.opslimit < crypto_pwhash_OPSLIMIT_MIN || cost.opslimit > crypto_pwhash_OPSLIMIT_MAX ||
      cost.memlimit < crypto_pwhash_MEMLIMIT_MIN || cost.memlimit > crypto_pwhash_MEMLIMIT_MAX) {
    return Status(Code::kBadRequest, "password hashing cost out of range");
  }
  if (password.size() > crypto_pwhash_PASSWD_MAX) {
    return Status(Code::kBadRequest, "password too long");
  }
  return Status::OK();
}

// BoxOpen and AeadDecrypt work on a local plaintext so that *plaintext may
// alias the ciphertext; this stores the result, or clears *plaintext on
// failure so no stale or partial data is left behind.
Status Finish(Status s, std::string* result, std::string* plaintext) {
  if (s.ok()) {
    *plaintext = std::move(*result);
  } else {
    plaintext->clear();
  }
  return s;
}

void AppendU64BE(std::string* out, std::uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) {
    out->push_back(static_cast<char>((v >> shift) & 0xff));
  }
}

// Bumped in a forked child: every pool filled before it is stale there.
std::atomic<std::uint64_t> fork_generation{0};
void OnForkChild() { fork_generation.fetch_add(1, std::memory_order_relaxed); }

struct PublicPool {
  std::array<unsigned char, 4096> bytes{};
  std::size_t left = 0;  // bytes[0, left) are unused
  std::uint64_t generation = 0;
  ~PublicPool() { sodium_memzero(bytes.data(), bytes.size()); }
};
thread_local PublicPool public_pool;

constexpr std::size_t kMaxPublicRequest = 256;

}  // namespace

bool Init() {
  static const bool fork_hook = pthread_atfork(nullptr, nullptr, &OnForkChild) == 0;
  return fork_hook && sodium_init() >= 0;
}

std::string RandomBytes(std::size_t n) {
  std::string out(n, '\0');
  randombytes_buf(out.data(), out.size());
  return out;
}

std::string PublicRandomBytes(std::size_t n) {
  if (n > kMaxPublicRequest) return RandomBytes(n);
  PublicPool& pool = public_pool;
  const std::uint64_t generation = fork_generation.load(std::memory_order_relaxed);
  if (pool.left < n || pool.generation != generation) {
    unsigned char seed[randombytes_SEEDBYTES];
    randombytes_buf(seed, sizeof seed);
    randombytes_buf_deterministic(pool.bytes.data(), pool.bytes.size(), seed);
    sodium_memzero(seed, sizeof seed);
    pool.left = pool.bytes.size();
    pool.generation = generation;
  }
  pool.left -= n;
  unsigned char* from = pool.bytes.data() + pool.left;
  std::string out(reinterpret_cast<const char*>(from), n);
  sodium_memzero(from, n);
  return out;
}

std::string NewSymmetricKey() { return RandomBytes(kKeyBytes); }

BoxKeyPair NewBoxKeyPair() {
  BoxKeyPair kp;
  kp.public_key.resize(crypto_box_PUBLICKEYBYTES);
  kp.secret_key.resize(crypto_box_SECRETKEYBYTES);
  crypto_box_keypair(U8(&kp.public_key), U8(&kp.secret_key));
  return kp;
}

SignKeyPair NewSignKeyPair() {
  SignKeyPair kp;
  kp.public_key.resize(crypto_sign_PUBLICKEYBYTES);
  kp.secret_key.resize(crypto_sign_SECRETKEYBYTES);
  crypto_sign_keypair(U8(&kp.public_key), U8(&kp.secret_key));
  return kp;
}

// ---- crypto_box ------------------------------------------------------------

Status BoxSeal(std::string_view plaintext, std::string_view their_public,
               std::string_view my_secret, std::string* nonce, std::string* ciphertext) {
  if (their_public.size() != crypto_box_PUBLICKEYBYTES) {
    return BadSize("box public key", crypto_box_PUBLICKEYBYTES, their_public.size());
  }
  if (my_secret.size() != crypto_box_SECRETKEYBYTES) {
    return BadSize("box secret key", crypto_box_SECRETKEYBYTES, my_secret.size());
  }
  std::string n = PublicRandomBytes(crypto_box_NONCEBYTES);
  std::string c(plaintext.size() + crypto_box_MACBYTES, '\0');
  // Fails only when the shared secret is all zeros, i.e. their_public is a
  // low-order point: a bad key from the caller, not an internal fault.
  if (crypto_box_easy(U8(&c), U8(plaintext), plaintext.size(), U8(n), U8(their_public),
                      U8(my_secret)) != 0) {
    return Status(Code::kBadRequest, "unusable box public key");
  }
  *nonce = std::move(n);
  *ciphertext = std::move(c);
  return Status::OK();
}

namespace {

Status BoxOpenTo(std::string_view ciphertext, std::string_view nonce,
                 std::string_view their_public, std::string_view my_secret, std::string* m) {
  if (nonce.size() != crypto_box_NONCEBYTES) {
    return BadSize("box nonce", crypto_box_NONCEBYTES, nonce.size());
  }
  if (their_public.size() != crypto_box_PUBLICKEYBYTES) {
    return BadSize("box public key", crypto_box_PUBLICKEYBYTES, their_public.size());
  }
  if (my_secret.size() != crypto_box_SECRETKEYBYTES) {
    return BadSize("box secret key", crypto_box_SECRETKEYBYTES, my_secret.size());
  }
  if (ciphertext.size() < crypto_box_MACBYTES) {
    return Status(Code::kCryptoFailed, "box ciphertext too short");
  }
  m->resize(ciphertext.size() - crypto_box_MACBYTES);
  if (crypto_box_open_easy(U8(m), U8(ciphertext), ciphertext.size(), U8(nonce), U8(their_public),
                           U8(my_secret)) != 0) {
    return Status(Code::kCryptoFailed, "box authentication failed");
  }
  return Status::OK();
}

}  // namespace

Status BoxOpen(std::string_view ciphertext, std::string_view nonce, std::string_view their_public,
               std::string_view my_secret, std::string* plaintext) {
  std::string m;
  return Finish(BoxOpenTo(ciphertext, nonce, their_public, my_secret, &m), &m, plaintext);
}

// ---- AEAD --------------------------------------------------------------------

Status AeadEncrypt(std::string_view plaintext, std::string_view ad, std::string_view key,
                   std::string* nonce, std::string* ciphertext) {
  if (key.size() != crypto_aead_xchacha20poly1305_ietf_KEYBYTES) {
    return BadSize("AEAD key", crypto_aead_xchacha20poly1305_ietf_KEYBYTES, key.size());
  }
  // 24-byte random nonces are safe to pick at random: collisions are
  // negligible even after 2^64 messages under one key.
  std::string n = PublicRandomBytes(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
  std::string c(plaintext.size() + crypto_aead_xchacha20poly1305_ietf_ABYTES, '\0');
  unsigned long long clen = 0;
  if (crypto_aead_xchacha20poly1305_ietf_encrypt(U8(&c), &clen, U8(plaintext), plaintext.size(),
                                                 U8(ad), ad.size(), nullptr, U8(n),
                                                 U8(key)) != 0) {
    return Status(Code::kInternal, "AEAD encryption failed");
  }
  c.resize(static_cast<std::size_t>(clen));
  *nonce = std::move(n);
  *ciphertext = std::move(c);
  return Status::OK();
}

namespace {

Status AeadDecryptTo(std::string_view ciphertext, std::string_view ad, std::string_view nonce,
                     std::string_view key, std::string* m) {
  if (key.size() != crypto_aead_xchacha20poly1305_ietf_KEYBYTES) {
    return BadSize("AEAD key", crypto_aead_xchacha20poly1305_ietf_KEYBYTES, key.size());
  }
  if (nonce.size() != crypto_aead_xchacha20poly1305_ietf_NPUBBYTES) {
    return BadSize("AEAD nonce", crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, nonce.size());
  }
  if (ciphertext.size() < crypto_aead_xchacha20poly1305_ietf_ABYTES) {
    return Status(Code::kCryptoFailed, "AEAD ciphertext too short");
  }
  m->resize(ciphertext.size() - crypto_aead_xchacha20poly1305_ietf_ABYTES);
  unsigned long long mlen = 0;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(U8(m), &mlen, nullptr, U8(ciphertext),
                                                 ciphertext.size(), U8(ad), ad.size(), U8(nonce),
                                                 U8(key)) != 0) {
    return Status(Code::kCryptoFailed, "AEAD authentication failed");
  }
  m->resize(static_cast<std::size_t>(mlen));
  return Status::OK();
}

}  // namespace

Status AeadDecrypt(std::string_view ciphertext, std::string_view ad, std::string_view nonce,
                   std::string_view key, std::string* plaintext) {
  std::string m;
  return Finish(AeadDecryptTo(ciphertext, ad, nonce, key, &m), &m, plaintext);
}

// ---- signatures ----------------------------------------------------------------

std::string Sign(std::string_view message, std::string_view secret_key) {
  // The API has no Status here; an empty string (which Verify always rejects)
  // signals a wrong-sized secret key.
  if (secret_key.size() != crypto_sign_SECRETKEYBYTES) return std::string();
  std::string sig(crypto_sign_BYTES, '\0');
  crypto_sign_detached(U8(&sig), nullptr, U8(message), message.size(), U8(secret_key));
  return sig;
}

bool Verify(std::string_view message, std::string_view signature, std::string_view public_key) {
  if (signature.size() != crypto_sign_BYTES) return false;
  if (public_key.size() != crypto_sign_PUBLICKEYBYTES) return false;
  return crypto_sign_verify_detached(U8(signature), U8(message), message.size(),
                                     U8(public_key)) == 0;
}

// ---- passwords -------------------------------------------------------------------

PwhashCost PwhashCost::Interactive() {
  return {crypto_pwhash_OPSLIMIT_INTERACTIVE, crypto_pwhash_MEMLIMIT_INTERACTIVE};
}
PwhashCost PwhashCost::Moderate() {
  return {crypto_pwhash_OPSLIMIT_MODERATE, crypto_pwhash_MEMLIMIT_MODERATE};
}
PwhashCost PwhashCost::Min() { return {crypto_pwhash_OPSLIMIT_MIN, crypto_pwhash_MEMLIMIT_MIN}; }

bool PwhashCost::Parse(std::string_view name, PwhashCost* out) {
  if (name == "min") {
    *out = Min();
  } else if (name == "interactive") {
    *out = Interactive();
  } else if (name == "moderate") {
    *out = Moderate();
  } else {
    return false;
  }
  return true;
}

Status PasswordHash(std::string_view password, PwhashCost cost, std::string* hash) {
  Status s = CheckPwhashInput(password, cost);
  if (!s.ok()) return s;
  char out[crypto_pwhash_STRBYTES];
  if (crypto_pwhash_str_alg(out, password.data(), password.size(), cost.opslimit, cost.memlimit,
                            crypto_pwhash_ALG_ARGON2ID13) != 0) {
    return Status(Code::kInternal, "password hashing failed (out of memory?)");
  }
  *hash = out;  // NUL-terminated ASCII
  return Status::OK();
}

bool PasswordVerify(std::string_view hash, std::string_view password) {
  // libsodium wants a NUL-terminated string in a crypto_pwhash_STRBYTES
  // buffer. Anything that does not fit, or hides a NUL, cannot be valid.
  if (hash.size() >= crypto_pwhash_STRBYTES) return false;
  if (hash.find('\0') != std::string_view::npos) return false;
  if (password.size() > crypto_pwhash_PASSWD_MAX) return false;
  char str[crypto_pwhash_STRBYTES] = {};
  std::memcpy(str, hash.data(), hash.size());
  return crypto_pwhash_str_verify(str, password.data(), password.size()) == 0;
}

// ---- keys at rest ------------------------------------------------------------------

Status DeriveKey(std::string_view password, std::string_view salt, PwhashCost cost,
                 std::string* key) {
  if (salt.size() != crypto_pwhash_SALTBYTES) {
    return BadSize("salt", crypto_pwhash_SALTBYTES, salt.size());
  }
  Status s = CheckPwhashInput(password, cost);
  if (!s.ok()) return s;
  std::string k(kKeyBytes, '\0');
  if (crypto_pwhash(U8(&k), k.size(), password.data(), password.size(), U8(salt), cost.opslimit,
                    cost.memlimit, crypto_pwhash_ALG_ARGON2ID13) != 0) {
    return Status(Code::kInternal, "key derivation failed (out of memory?)");
  }
  *key = std::move(k);
  return Status::OK();
}

// ---- helpers -------------------------------------------------------------------------

// Safety number scheme (version 1; changing it makes old numbers disagree):
//
//  1. Each identity is encoded as
//       id (8 bytes, big-endian) || len(x25519) (8 bytes, big-endian) || x25519
//                                || len(ed25519) (8 bytes, big-endian) || ed25519
//     The lengths keep the encoding unambiguous even for malformed keys.
//  2. The two identities are ordered by (id, x25519, ed25519), comparing the
//     keys bytewise, so the result does not depend on argument order.
//  3. Each encoding is hashed with unkeyed BLAKE2b (crypto_generichash) to a
//     30-byte fingerprint.
//  4. Each fingerprint is cut into six 5-byte chunks; each chunk, read as a
//     40-bit big-endian integer, is reduced mod 100000 and printed as 5
//     zero-padded digits (as Signal does).
//  5. The lower identity's six groups come first, then the higher one's, all
//     12 joined by single spaces.
std::string SafetyNumber(std::uint64_t id_a, std::string_view x25519_a, std::string_view ed25519_a,
                         std::uint64_t id_b, std::string_view x25519_b,
                         std::string_view ed25519_b) {
  constexpr std::size_t kFingerprintBytes = 30;
  constexpr std::size_t kChunkBytes = 5;

  struct Identity {
    std::uint64_t id;
    std::string_view x25519;
    std::string_view ed25519;
  };
  Identity first{id_a, x25519_a, ed25519_a};
  Identity second{id_b, x25519_b, ed25519_b};
  if (std::tie(second.id, second.x25519, second.ed25519) <
      std::tie(first.id, first.x25519, first.ed25519)) {
    std::swap(first, second);
  }

  std::string out;
  for (const Identity* who : {&first, &second}) {
    std::string encoded;
    AppendU64BE(&encoded, who->id);
    AppendU64BE(&encoded, who->x25519.size());
    encoded.append(who->x25519);
    AppendU64BE(&encoded, who->ed25519.size());
    encoded.append(who->ed25519);

    unsigned char fp[kFingerprintBytes];
    crypto_generichash(fp, sizeof(fp), U8(encoded), encoded.size(), nullptr, 0);

    for (std::size_t chunk = 0; chunk < kFingerprintBytes; chunk += kChunkBytes) {
      std::uint64_t v = 0;
      for (std::size_t i = 0; i < kChunkBytes; ++i) v = (v << 8) | fp[chunk + i];
      char digits[6];
      std::snprintf(digits, sizeof(digits), "%05u", static_cast<unsigned>(v % 100000));
      if (!out.empty()) out.push_back(' ');
      out.append(digits, 5);
    }
  }
  return out;
}

std::string Hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) {
    unsigned char b = static_cast<unsigned char>(c);
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0x0f]);
  }
  return out;
}

std::string Hash(std::string_view bytes) {
  std::string out(crypto_generichash_BYTES, '\0');
  crypto_generichash(U8(&out), out.size(), U8(bytes), bytes.size(), nullptr, 0);
  return out;
}

std::string MacKeyFromSecret(std::string_view secret) {
  static constexpr std::string_view kDomain = "fastchat-cluster-mac-v1";
  std::string out(crypto_auth_KEYBYTES, '\0');
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, out.size());
  crypto_generichash_update(&st, U8(kDomain), kDomain.size());
  crypto_generichash_update(&st, U8(secret), secret.size());
  crypto_generichash_final(&st, U8(&out), out.size());
  return out;
}

std::string Mac(std::string_view message, std::string_view key) {
  if (key.size() != crypto_auth_KEYBYTES) return std::string();
  std::string out(crypto_auth_BYTES, '\0');
  crypto_auth(U8(&out), U8(message), message.size(), U8(key));
  return out;
}

bool MacVerify(std::string_view mac, std::string_view message, std::string_view key) {
  if (mac.size() != crypto_auth_BYTES || key.size() != crypto_auth_KEYBYTES) return false;
  return crypto_auth_verify(U8(mac), U8(message), message.size(), U8(key)) == 0;
}

}  // namespace fastchat::crypto
