// Unit tests for fastchat::crypto. Password tests use PwhashCost::Min() so
// the suite stays fast.

#include "fastchat/crypto.h"

#include <gtest/gtest.h>
#include <sodium.h>

#include <sys/wait.h>
#include <unistd.h>

#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace fastchat::crypto {
namespace {

class CryptoTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ASSERT_TRUE(Init()); }
};

// Returns `s` with one bit of byte `i` flipped.
std::string FlipBit(std::string s, std::size_t i) {
  s[i] = static_cast<char>(s[i] ^ 0x01);
  return s;
}

// ---- basics ------------------------------------------------------------------

TEST_F(CryptoTest, InitIsIdempotent) {
  EXPECT_TRUE(Init());
  EXPECT_TRUE(Init());
}

TEST_F(CryptoTest, RandomBytesHasRequestedSizeAndDiffers) {
  EXPECT_EQ(RandomBytes(0), "");
  EXPECT_EQ(RandomBytes(1).size(), 1u);
  std::string a = RandomBytes(32);
  std::string b = RandomBytes(32);
  ASSERT_EQ(a.size(), 32u);
  ASSERT_EQ(b.size(), 32u);
  EXPECT_NE(a, b);
  EXPECT_NE(a, std::string(32, '\0'));
}

// Enough draws to cross several refills of the 4 KiB pool: no value comes
// back twice (a pool that handed bytes out again, or refilled with the same
// seed, would repeat whole values).
TEST_F(CryptoTest, PublicRandomBytesNeverRepeatsAcrossRefillsAndSizes) {
  EXPECT_EQ(PublicRandomBytes(0), "");
  std::set<std::string> seen;
  for (int i = 0; i < 2000; ++i) {
    const std::string v = PublicRandomBytes(kAeadNonceBytes);
    ASSERT_EQ(v.size(), kAeadNonceBytes);
    ASSERT_TRUE(seen.insert(v).second) << "draw " << i;
    // Odd sizes leave the pool at odd offsets.
    ASSERT_EQ(PublicRandomBytes(static_cast<std::size_t>(i % 7) + 1).size(), static_cast<std::size_t>(i % 7) + 1);
  }
  EXPECT_EQ(PublicRandomBytes(300).size(), 300u);  // beyond the pool: RandomBytes
  EXPECT_EQ(PublicRandomBytes(4096).size(), 4096u);
}

TEST_F(CryptoTest, PublicRandomBytesOfTwoThreadsDiffer) {
  std::vector<std::string> a, b;
  std::thread t([&] {
    for (int i = 0; i < 500; ++i) a.push_back(PublicRandomBytes(kAeadNonceBytes));
  });
  for (int i = 0; i < 500; ++i) b.push_back(PublicRandomBytes(kAeadNonceBytes));
  t.join();
  std::set<std::string> all(a.begin(), a.end());
  all.insert(b.begin(), b.end());
  EXPECT_EQ(all.size(), 1000u);
}

// A forked child must not hand out what is left in its parent's pool.
TEST_F(CryptoTest, PublicRandomBytesOfAForkedChildDifferFromItsParents) {
  ASSERT_FALSE(PublicRandomBytes(kAeadNonceBytes).empty());  // the pool is part used
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(fds[0]);
    for (int i = 0; i < 10; ++i) {
      const std::string v = PublicRandomBytes(kAeadNonceBytes);
      if (write(fds[1], v.data(), v.size()) != static_cast<ssize_t>(v.size())) _exit(1);
    }
    _exit(0);
  }
  close(fds[1]);
  std::set<std::string> parent;
  for (int i = 0; i < 10; ++i) parent.insert(PublicRandomBytes(kAeadNonceBytes));
  std::string got;
  char buf[256];
  ssize_t r;
  while ((r = read(fds[0], buf, sizeof buf)) > 0) got.append(buf, static_cast<std::size_t>(r));
  close(fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_EQ(got.size(), 10 * kAeadNonceBytes);
  for (std::size_t i = 0; i < 10; ++i) {
    EXPECT_EQ(parent.count(got.substr(i * kAeadNonceBytes, kAeadNonceBytes)), 0u) << "child draw " << i;
  }
}

TEST_F(CryptoTest, NewSymmetricKeyIsFreshAndSized) {
  std::set<std::string> keys;
  for (int i = 0; i < 8; ++i) {
    std::string k = NewSymmetricKey();
    EXPECT_EQ(k.size(), kKeyBytes);
    keys.insert(k);
  }
  EXPECT_EQ(keys.size(), 8u);
}

TEST_F(CryptoTest, KeyPairsAreSizedAndDistinct) {
  BoxKeyPair b1 = NewBoxKeyPair(), b2 = NewBoxKeyPair();
  EXPECT_EQ(b1.public_key.size(), kKeyBytes);
  EXPECT_EQ(b1.secret_key.size(), kKeyBytes);
  EXPECT_NE(b1.public_key, b2.public_key);
  EXPECT_NE(b1.secret_key, b2.secret_key);
  EXPECT_NE(b1.public_key, b1.secret_key);

  SignKeyPair s1 = NewSignKeyPair(), s2 = NewSignKeyPair();
  EXPECT_EQ(s1.public_key.size(), kKeyBytes);
  EXPECT_EQ(s1.secret_key.size(), 64u);
  EXPECT_NE(s1.public_key, s2.public_key);
  EXPECT_NE(s1.secret_key, s2.secret_key);
}

// ---- AEAD --------------------------------------------------------------------

TEST_F(CryptoTest, AeadRoundTrip) {
  std::string key = NewSymmetricKey();
  // Includes NUL bytes: the API must treat strings as byte buffers.
  const std::string plaintext("hello\0world", 11);
  const std::string ad = "header";
  std::string nonce, ct, pt;
  ASSERT_TRUE(AeadEncrypt(plaintext, ad, key, &nonce, &ct).ok());
  EXPECT_EQ(nonce.size(), kAeadNonceBytes);
  EXPECT_EQ(ct.size(), plaintext.size() + kAeadTagBytes);
  EXPECT_EQ(ct.find("hello"), std::string::npos);
  ASSERT_TRUE(AeadDecrypt(ct, ad, nonce, key, &pt).ok());
  EXPECT_EQ(pt, plaintext);
}

TEST_F(CryptoTest, AeadEmptyPlaintextAndAd) {
  std::string key = NewSymmetricKey();
  std::string nonce, ct, pt = "junk";
  ASSERT_TRUE(AeadEncrypt("", "", key, &nonce, &ct).ok());
  EXPECT_EQ(ct.size(), kAeadTagBytes);
  ASSERT_TRUE(AeadDecrypt(ct, "", nonce, key, &pt).ok());
  EXPECT_EQ(pt, "");
}

TEST_F(CryptoTest, AeadUsesFreshNonceEachCall) {
  std::string key = NewSymmetricKey();
  std::string n1, c1, n2, c2;
  ASSERT_TRUE(AeadEncrypt("same", "ad", key, &n1, &c1).ok());
  ASSERT_TRUE(AeadEncrypt("same", "ad", key, &n2, &c2).ok());
  EXPECT_NE(n1, n2);
  EXPECT_NE(c1, c2);
}

TEST_F(CryptoTest, AeadMatchesLibsodiumDirectly) {
  // Guards against using the wrong primitive: our ciphertext must open with
  // raw XChaCha20-Poly1305-IETF.
  std::string key = NewSymmetricKey();
  std::string nonce, ct;
  ASSERT_TRUE(AeadEncrypt("payload", "ad", key, &nonce, &ct).ok());
  unsigned char m[7];
  unsigned long long mlen = 0;
  ASSERT_EQ(crypto_aead_xchacha20poly1305_ietf_decrypt(
                m, &mlen, nullptr, reinterpret_cast<const unsigned char*>(ct.data()), ct.size(),
                reinterpret_cast<const unsigned char*>("ad"), 2,
                reinterpret_cast<const unsigned char*>(nonce.data()),
                reinterpret_cast<const unsigned char*>(key.data())),
            0);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(m), mlen), "payload");
}

TEST_F(CryptoTest, AeadTamperedCiphertextFails) {
  std::string key = NewSymmetricKey();
  std::string nonce, ct, pt;
  ASSERT_TRUE(AeadEncrypt("attack at dawn", "ad", key, &nonce, &ct).ok());
  // Every bit position of every byte matters, body and tag alike; check one
  // bit in each byte.
  for (std::size_t i = 0; i < ct.size(); ++i) {
    pt = "sentinel";
    Status s = AeadDecrypt(FlipBit(ct, i), "ad", nonce, key, &pt);
    EXPECT_EQ(s.code(), Code::kCryptoFailed) << "byte " << i;
    EXPECT_EQ(pt, "") << "no partial plaintext on failure, byte " << i;
  }
  // Truncated, extended and empty ciphertexts.
  EXPECT_EQ(AeadDecrypt(ct.substr(0, ct.size() - 1), "ad", nonce, key, &pt).code(),
            Code::kCryptoFailed);
  EXPECT_EQ(AeadDecrypt(ct + "x", "ad", nonce, key, &pt).code(), Code::kCryptoFailed);
  EXPECT_EQ(AeadDecrypt(ct.substr(0, kAeadTagBytes - 1), "ad", nonce, key, &pt).code(),
            Code::kCryptoFailed);
  EXPECT_EQ(AeadDecrypt("", "ad", nonce, key, &pt).code(), Code::kCryptoFailed);
  // The untouched ciphertext still opens.
  ASSERT_TRUE(AeadDecrypt(ct, "ad", nonce, key, &pt).ok());
  EXPECT_EQ(pt, "attack at dawn");
}

TEST_F(CryptoTest, AeadTamperedNonceAdOrKeyFails) {
  std::string key = NewSymmetricKey();
  std::string nonce, ct, pt;
  ASSERT_TRUE(AeadEncrypt("secret", "ad", key, &nonce, &ct).ok());
  EXPECT_EQ(AeadDecrypt(ct, "ad", FlipBit(nonce, 0), key, &pt).code(), Code::kCryptoFailed);
  EXPECT_EQ(AeadDecrypt(ct, "ad", FlipBit(nonce, kAeadNonceBytes - 1), key, &pt).code(),
            Code::kCryptoFailed);
  EXPECT_EQ(AeadDecrypt(ct, "ae", nonce, key, &pt).code(), Code::kCryptoFailed);
  EXPECT_EQ(AeadDecrypt(ct, "", nonce, key, &pt).code(), Code::kCryptoFailed);
  EXPECT_EQ(AeadDecrypt(ct, std::string("ad\0", 3), nonce, key, &pt).code(), Code::kCryptoFailed);
  EXPECT_EQ(AeadDecrypt(ct, "ad", nonce, FlipBit(key, 0), &pt).code(), Code::kCryptoFailed);
  EXPECT_EQ(AeadDecrypt(ct, "ad", nonce, NewSymmetricKey(), &pt).code(), Code::kCryptoFailed);
}

TEST_F(CryptoTest, AeadWrongSizesAreBadRequest) {
  std::string key = NewSymmetricKey();
  std::string nonce = "unchanged", ct = "unchanged", pt;
  EXPECT_EQ(AeadEncrypt("m", "", key.substr(1), &nonce, &ct).code(), Code::kBadRequest);
  EXPECT_EQ(AeadEncrypt("m", "", key + "x", &nonce, &ct).code(), Code::kBadRequest);
  EXPECT_EQ(AeadEncrypt("m", "", "", &nonce, &ct).code(), Code::kBadRequest);
  EXPECT_EQ(nonce, "unchanged");
  EXPECT_EQ(ct, "unchanged");

  ASSERT_TRUE(AeadEncrypt("m", "", key, &nonce, &ct).ok());
  EXPECT_EQ(AeadDecrypt(ct, "", nonce, key.substr(1), &pt).code(), Code::kBadRequest);
  EXPECT_EQ(AeadDecrypt(ct, "", nonce.substr(1), key, &pt).code(), Code::kBadRequest);
  EXPECT_EQ(AeadDecrypt(ct, "", nonce + "x", key, &pt).code(), Code::kBadRequest);
  EXPECT_EQ(AeadDecrypt(ct, "", "", key, &pt).code(), Code::kBadRequest);
}

TEST_F(CryptoTest, AeadOutputMayAliasInput) {
  std::string key = NewSymmetricKey();
  std::string buf = "in-place message", nonce;
  ASSERT_TRUE(AeadEncrypt(buf, "", key, &nonce, &buf).ok());
  EXPECT_EQ(buf.size(), 16 + kAeadTagBytes);
  ASSERT_TRUE(AeadDecrypt(buf, "", nonce, key, &buf).ok());
  EXPECT_EQ(buf, "in-place message");
}

// ---- crypto_box ------------------------------------------------------------------

TEST_F(CryptoTest, BoxRoundTrip) {
  BoxKeyPair alice = NewBoxKeyPair(), bob = NewBoxKeyPair();
  const std::string plaintext("group key\0\xff", 11);
  std::string nonce, ct, pt;
  ASSERT_TRUE(BoxSeal(plaintext, bob.public_key, alice.secret_key, &nonce, &ct).ok());
  EXPECT_EQ(nonce.size(), kBoxNonceBytes);
  EXPECT_EQ(ct.size(), plaintext.size() + 16);
  ASSERT_TRUE(BoxOpen(ct, nonce, alice.public_key, bob.secret_key, &pt).ok());
  EXPECT_EQ(pt, plaintext);
}

TEST_F(CryptoTest, BoxUsesFreshNonceEachCall) {
  BoxKeyPair alice = NewBoxKeyPair(), bob = NewBoxKeyPair();
  std::string n1, c1, n2, c2;
  ASSERT_TRUE(BoxSeal("same", bob.public_key, alice.secret_key, &n1, &c1).ok());
  ASSERT_TRUE(BoxSeal("same", bob.public_key, alice.secret_key, &n2, &c2).ok());
  EXPECT_NE(n1, n2);
  EXPECT_NE(c1, c2);
}

TEST_F(CryptoTest, BoxWrongSenderOrRecipientFails) {
  BoxKeyPair alice = NewBoxKeyPair(), bob = NewBoxKeyPair(), mallory = NewBoxKeyPair();
  std::string nonce, ct, pt;
  ASSERT_TRUE(BoxSeal("hi bob", bob.public_key, alice.secret_key, &nonce, &ct).ok());
  // Bob believes it came from Mallory: must not verify.
  pt = "sentinel";
  EXPECT_EQ(BoxOpen(ct, nonce, mallory.public_key, bob.secret_key, &pt).code(),
            Code::kCryptoFailed);
  EXPECT_EQ(pt, "");
  // Mallory tries to open a box meant for Bob.
  EXPECT_EQ(BoxOpen(ct, nonce, alice.public_key, mallory.secret_key, &pt).code(),
            Code::kCryptoFailed);
  // Correct keys still work.
  ASSERT_TRUE(BoxOpen(ct, nonce, alice.public_key, bob.secret_key, &pt).ok());
  EXPECT_EQ(pt, "hi bob");
}

TEST_F(CryptoTest, BoxTamperedCiphertextOrNonceFails) {
  BoxKeyPair alice = NewBoxKeyPair(), bob = NewBoxKeyPair();
  std::string nonce, ct, pt;
  ASSERT_TRUE(BoxSeal("payload", bob.public_key, alice.secret_key, &nonce, &ct).ok());
  for (std::size_t i = 0; i < ct.size(); ++i) {
    EXPECT_EQ(BoxOpen(FlipBit(ct, i), nonce, alice.public_key, bob.secret_key, &pt).code(),
              Code::kCryptoFailed)
        << "byte " << i;
  }
  EXPECT_EQ(BoxOpen(ct, FlipBit(nonce, 5), alice.public_key, bob.secret_key, &pt).code(),
            Code::kCryptoFailed);
  EXPECT_EQ(BoxOpen(ct.substr(0, 15), nonce, alice.public_key, bob.secret_key, &pt).code(),
            Code::kCryptoFailed);
  EXPECT_EQ(BoxOpen("", nonce, alice.public_key, bob.secret_key, &pt).code(),
            Code::kCryptoFailed);
}

TEST_F(CryptoTest, BoxWrongSizesAreBadRequest) {
  BoxKeyPair alice = NewBoxKeyPair(), bob = NewBoxKeyPair();
  std::string nonce, ct, pt;
  EXPECT_EQ(BoxSeal("m", bob.public_key.substr(1), alice.secret_key, &nonce, &ct).code(),
            Code::kBadRequest);
  EXPECT_EQ(BoxSeal("m", bob.public_key, alice.secret_key + "x", &nonce, &ct).code(),
            Code::kBadRequest);
  EXPECT_EQ(BoxSeal("m", "", "", &nonce, &ct).code(), Code::kBadRequest);
  EXPECT_TRUE(nonce.empty());
  EXPECT_TRUE(ct.empty());

  ASSERT_TRUE(BoxSeal("m", bob.public_key, alice.secret_key, &nonce, &ct).ok());
  EXPECT_EQ(BoxOpen(ct, nonce.substr(1), alice.public_key, bob.secret_key, &pt).code(),
            Code::kBadRequest);
  EXPECT_EQ(BoxOpen(ct, nonce, alice.public_key.substr(1), bob.secret_key, &pt).code(),
            Code::kBadRequest);
  EXPECT_EQ(BoxOpen(ct, nonce, alice.public_key, bob.secret_key + "x", &pt).code(),
            Code::kBadRequest);
}

TEST_F(CryptoTest, BoxOutputMayAliasInput) {
  BoxKeyPair alice = NewBoxKeyPair(), bob = NewBoxKeyPair();
  std::string buf = "in-place", nonce;
  ASSERT_TRUE(BoxSeal(buf, bob.public_key, alice.secret_key, &nonce, &buf).ok());
  EXPECT_EQ(buf.size(), 8u + 16);
  ASSERT_TRUE(BoxOpen(buf, nonce, alice.public_key, bob.secret_key, &buf).ok());
  EXPECT_EQ(buf, "in-place");
}

TEST_F(CryptoTest, BoxRejectsLowOrderPublicKey) {
  // An all-zero X25519 public key yields an all-zero shared secret.
  BoxKeyPair alice = NewBoxKeyPair();
  std::string nonce, ct;
  Status s = BoxSeal("m", std::string(kKeyBytes, '\0'), alice.secret_key, &nonce, &ct);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Code::kBadRequest);
}

// ---- signatures --------------------------------------------------------------------

TEST_F(CryptoTest, SignVerifyRoundTrip) {
  SignKeyPair kp = NewSignKeyPair();
  std::string sig = Sign("message", kp.secret_key);
  ASSERT_EQ(sig.size(), kSignatureBytes);
  EXPECT_TRUE(Verify("message", sig, kp.public_key));
  // Ed25519 is deterministic.
  EXPECT_EQ(Sign("message", kp.secret_key), sig);
  // Empty message is signable too.
  EXPECT_TRUE(Verify("", Sign("", kp.secret_key), kp.public_key));
}

TEST_F(CryptoTest, VerifyRejectsModifiedMessageSignatureOrKey) {
  SignKeyPair kp = NewSignKeyPair(), other = NewSignKeyPair();
  const std::string msg = "transfer 10 coins";
  std::string sig = Sign(msg, kp.secret_key);
  ASSERT_TRUE(Verify(msg, sig, kp.public_key));
  EXPECT_FALSE(Verify("transfer 99 coins", sig, kp.public_key));
  EXPECT_FALSE(Verify(msg + " ", sig, kp.public_key));
  EXPECT_FALSE(Verify(msg.substr(1), sig, kp.public_key));
  for (std::size_t i = 0; i < sig.size(); ++i) {
    EXPECT_FALSE(Verify(msg, FlipBit(sig, i), kp.public_key)) << "byte " << i;
  }
  EXPECT_FALSE(Verify(msg, sig, other.public_key));
  EXPECT_FALSE(Verify(msg, Sign(msg, other.secret_key), kp.public_key));
}

TEST_F(CryptoTest, SignVerifyWrongSizesDoNotCrash) {
  SignKeyPair kp = NewSignKeyPair();
  std::string sig = Sign("m", kp.secret_key);
  EXPECT_FALSE(Verify("m", "", kp.public_key));
  EXPECT_FALSE(Verify("m", sig.substr(1), kp.public_key));
  EXPECT_FALSE(Verify("m", sig + "x", kp.public_key));
  EXPECT_FALSE(Verify("m", sig, ""));
  EXPECT_FALSE(Verify("m", sig, kp.public_key.substr(1)));
  EXPECT_FALSE(Verify("m", sig, kp.public_key + "x"));
  // A wrong-sized secret key yields an empty (never valid) signature.
  EXPECT_EQ(Sign("m", kp.secret_key.substr(1)), "");
  EXPECT_EQ(Sign("m", kp.secret_key.substr(0, 32)), "");
  EXPECT_EQ(Sign("m", ""), "");
}

// ---- passwords ---------------------------------------------------------------------

TEST_F(CryptoTest, PwhashCostPresets) {
  EXPECT_EQ(PwhashCost::Interactive().opslimit, crypto_pwhash_OPSLIMIT_INTERACTIVE);
  EXPECT_EQ(PwhashCost::Interactive().memlimit, crypto_pwhash_MEMLIMIT_INTERACTIVE);
  EXPECT_EQ(PwhashCost::Moderate().opslimit, crypto_pwhash_OPSLIMIT_MODERATE);
  EXPECT_EQ(PwhashCost::Moderate().memlimit, crypto_pwhash_MEMLIMIT_MODERATE);
  EXPECT_EQ(PwhashCost::Min().opslimit, crypto_pwhash_OPSLIMIT_MIN);
  EXPECT_EQ(PwhashCost::Min().memlimit, crypto_pwhash_MEMLIMIT_MIN);
}

TEST_F(CryptoTest, PwhashCostParse) {
  PwhashCost c{0, 0};
  ASSERT_TRUE(PwhashCost::Parse("min", &c));
  EXPECT_EQ(c.opslimit, PwhashCost::Min().opslimit);
  EXPECT_EQ(c.memlimit, PwhashCost::Min().memlimit);
  ASSERT_TRUE(PwhashCost::Parse("interactive", &c));
  EXPECT_EQ(c.opslimit, PwhashCost::Interactive().opslimit);
  EXPECT_EQ(c.memlimit, PwhashCost::Interactive().memlimit);
  ASSERT_TRUE(PwhashCost::Parse("moderate", &c));
  EXPECT_EQ(c.opslimit, PwhashCost::Moderate().opslimit);
  EXPECT_EQ(c.memlimit, PwhashCost::Moderate().memlimit);

  for (const char* bad : {"", "Min", "sensitive", "moderate ", "interactiv"}) {
    PwhashCost untouched{123, 456};
    EXPECT_FALSE(PwhashCost::Parse(bad, &untouched)) << bad;
    EXPECT_EQ(untouched.opslimit, 123u) << bad;
    EXPECT_EQ(untouched.memlimit, 456u) << bad;
  }
}

TEST_F(CryptoTest, PasswordHashVerify) {
  std::string hash;
  ASSERT_TRUE(PasswordHash("correct horse", PwhashCost::Min(), &hash).ok());
  // Argon2id, carrying the requested cost (8 KiB, 1 pass).
  EXPECT_EQ(hash.rfind("$argon2id$v=19$m=8,t=1,p=1$", 0), 0u) << hash;
  EXPECT_TRUE(PasswordVerify(hash, "correct horse"));
  EXPECT_FALSE(PasswordVerify(hash, "correct horsE"));
  EXPECT_FALSE(PasswordVerify(hash, "correct horse "));
  EXPECT_FALSE(PasswordVerify(hash, ""));
}

TEST_F(CryptoTest, PasswordHashIsSalted) {
  std::string h1, h2;
  ASSERT_TRUE(PasswordHash("pw", PwhashCost::Min(), &h1).ok());
  ASSERT_TRUE(PasswordHash("pw", PwhashCost::Min(), &h2).ok());
  EXPECT_NE(h1, h2);
  EXPECT_TRUE(PasswordVerify(h1, "pw"));
  EXPECT_TRUE(PasswordVerify(h2, "pw"));
}

TEST_F(CryptoTest, PasswordHashEmptyAndBinaryPasswords) {
  std::string hash;
  ASSERT_TRUE(PasswordHash("", PwhashCost::Min(), &hash).ok());
  EXPECT_TRUE(PasswordVerify(hash, ""));
  EXPECT_FALSE(PasswordVerify(hash, "x"));

  // Bytes after a NUL must count.
  const std::string pw("a\0b", 3);
  ASSERT_TRUE(PasswordHash(pw, PwhashCost::Min(), &hash).ok());
  EXPECT_TRUE(PasswordVerify(hash, pw));
  EXPECT_FALSE(PasswordVerify(hash, std::string("a\0c", 3)));
  EXPECT_FALSE(PasswordVerify(hash, "a"));
}

TEST_F(CryptoTest, PasswordVerifyRejectsMalformedHashes) {
  std::string hash;
  ASSERT_TRUE(PasswordHash("pw", PwhashCost::Min(), &hash).ok());
  EXPECT_FALSE(PasswordVerify("", "pw"));
  EXPECT_FALSE(PasswordVerify("garbage", "pw"));
  EXPECT_FALSE(PasswordVerify(hash.substr(0, hash.size() - 1), "pw"));
  EXPECT_FALSE(PasswordVerify(hash + std::string(1, '\0') + "x", "pw"));
  EXPECT_FALSE(PasswordVerify(hash + std::string(200, 'A'), "pw"));
  // Changing a character of the stored digest breaks it.
  std::string bad = hash;
  bad[bad.size() - 2] = bad[bad.size() - 2] == 'A' ? 'B' : 'A';
  EXPECT_FALSE(PasswordVerify(bad, "pw"));
  // Sanity: the original still verifies.
  EXPECT_TRUE(PasswordVerify(hash, "pw"));
}

TEST_F(CryptoTest, PasswordHashRejectsOutOfRangeCost) {
  std::string hash = "unchanged";
  EXPECT_EQ(PasswordHash("pw", PwhashCost{0, crypto_pwhash_MEMLIMIT_MIN}, &hash).code(),
            Code::kBadRequest);
  EXPECT_EQ(PasswordHash("pw", PwhashCost{1, crypto_pwhash_MEMLIMIT_MIN - 1}, &hash).code(),
            Code::kBadRequest);
  EXPECT_EQ(hash, "unchanged");
}

// ---- DeriveKey -----------------------------------------------------------------------

TEST_F(CryptoTest, DeriveKeyDeterministicPerSalt) {
  std::string salt = RandomBytes(kSaltBytes);
  std::string k1, k2, k3, k4;
  ASSERT_TRUE(DeriveKey("passphrase", salt, PwhashCost::Min(), &k1).ok());
  ASSERT_TRUE(DeriveKey("passphrase", salt, PwhashCost::Min(), &k2).ok());
  EXPECT_EQ(k1.size(), kKeyBytes);
  EXPECT_EQ(k1, k2);

  ASSERT_TRUE(DeriveKey("passphrase", FlipBit(salt, 0), PwhashCost::Min(), &k3).ok());
  EXPECT_NE(k1, k3);
  ASSERT_TRUE(DeriveKey("passphrasE", salt, PwhashCost::Min(), &k4).ok());
  EXPECT_NE(k1, k4);
}

TEST_F(CryptoTest, DeriveKeyDependsOnCost) {
  std::string salt(kSaltBytes, 's');
  std::string k1, k2;
  ASSERT_TRUE(DeriveKey("pw", salt, PwhashCost::Min(), &k1).ok());
  ASSERT_TRUE(DeriveKey("pw", salt, PwhashCost{2, crypto_pwhash_MEMLIMIT_MIN}, &k2).ok());
  EXPECT_NE(k1, k2);
}

TEST_F(CryptoTest, DeriveKeyIsArgon2id) {
  std::string salt(kSaltBytes, 's');
  std::string key;
  ASSERT_TRUE(DeriveKey("pw", salt, PwhashCost::Min(), &key).ok());
  unsigned char want[32];
  ASSERT_EQ(crypto_pwhash(want, sizeof(want), "pw", 2,
                          reinterpret_cast<const unsigned char*>(salt.data()),
                          crypto_pwhash_OPSLIMIT_MIN, crypto_pwhash_MEMLIMIT_MIN,
                          crypto_pwhash_ALG_ARGON2ID13),
            0);
  EXPECT_EQ(key, std::string(reinterpret_cast<char*>(want), sizeof(want)));
}

TEST_F(CryptoTest, DeriveKeyWrongSaltSizeIsBadRequest) {
  std::string key = "unchanged";
  EXPECT_EQ(DeriveKey("pw", "", PwhashCost::Min(), &key).code(), Code::kBadRequest);
  EXPECT_EQ(DeriveKey("pw", std::string(kSaltBytes - 1, 's'), PwhashCost::Min(), &key).code(),
            Code::kBadRequest);
  EXPECT_EQ(DeriveKey("pw", std::string(kSaltBytes + 1, 's'), PwhashCost::Min(), &key).code(),
            Code::kBadRequest);
  EXPECT_EQ(DeriveKey("pw", std::string(kSaltBytes, 's'), PwhashCost{0, 0}, &key).code(),
            Code::kBadRequest);
  EXPECT_EQ(key, "unchanged");
}

// ---- SafetyNumber ----------------------------------------------------------------------

struct Ident {
  std::uint64_t id;
  std::string x25519;
  std::string ed25519;
};

std::string SN(const Ident& a, const Ident& b) {
  return SafetyNumber(a.id, a.x25519, a.ed25519, b.id, b.x25519, b.ed25519);
}

Ident RandomIdent(std::uint64_t id) {
  return Ident{id, NewBoxKeyPair().public_key, NewSignKeyPair().public_key};
}

TEST_F(CryptoTest, SafetyNumberFormat) {
  const std::regex kFormat("^[0-9]{5}( [0-9]{5}){11}$");
  for (int i = 0; i < 5; ++i) {
    std::string sn = SN(RandomIdent(1), RandomIdent(2));
    EXPECT_EQ(sn.size(), 12u * 5 + 11);
    EXPECT_TRUE(std::regex_match(sn, kFormat)) << sn;
  }
}

TEST_F(CryptoTest, SafetyNumberIsSymmetricAndDeterministic) {
  Ident a = RandomIdent(7), b = RandomIdent(42);
  EXPECT_EQ(SN(a, b), SN(b, a));
  EXPECT_EQ(SN(a, b), SN(a, b));
  // Same id on both sides: ordering must fall back to the keys.
  Ident c = RandomIdent(7);
  EXPECT_EQ(SN(a, c), SN(c, a));
  // Same id and X25519 key: falls back to the Ed25519 key.
  Ident d = a;
  d.ed25519 = NewSignKeyPair().public_key;
  EXPECT_EQ(SN(a, d), SN(d, a));
}

TEST_F(CryptoTest, SafetyNumberChangesWhenAnyInputChanges) {
  Ident a = RandomIdent(7), b = RandomIdent(42);
  const std::string base = SN(a, b);
  std::set<std::string> seen{base};
  auto check = [&](const Ident& a2, const Ident& b2, const char* what) {
    std::string sn = SN(a2, b2);
    EXPECT_NE(sn, base) << what;
    EXPECT_EQ(sn, SN(b2, a2)) << what;
    seen.insert(sn);
  };
  Ident t;
  t = a; t.id = 8;                            check(t, b, "a.id");
  t = a; t.x25519 = FlipBit(t.x25519, 31);    check(t, b, "a.x25519");
  t = a; t.ed25519 = FlipBit(t.ed25519, 0);   check(t, b, "a.ed25519");
  t = b; t.id = 43;                           check(a, t, "b.id");
  t = b; t.x25519 = FlipBit(t.x25519, 0);     check(a, t, "b.x25519");
  t = b; t.ed25519 = FlipBit(t.ed25519, 31);  check(a, t, "b.ed25519");
  EXPECT_EQ(seen.size(), 7u);
  // Swapping keys between the two identities is a different pairing.
  Ident swapped_a{a.id, b.x25519, b.ed25519}, swapped_b{b.id, a.x25519, a.ed25519};
  EXPECT_NE(SN(swapped_a, swapped_b), base);
}

TEST_F(CryptoTest, SafetyNumberKnownAnswer) {
  // Pins the documented scheme (see crypto.cc) so two builds always agree.
  // Computed independently with Python's hashlib.blake2b(digest_size=30).
  Ident a{7, std::string(32, '\x01'), std::string(32, '\x02')};
  Ident b{42, std::string(32, '\x03'), std::string(32, '\x04')};
  const char* kWant =
      "94094 15724 30297 12160 25549 84636 12174 96576 25135 95235 93958 13599";
  EXPECT_EQ(SN(a, b), kWant);
  EXPECT_EQ(SN(b, a), kWant);
}

// ---- Hex / Hash --------------------------------------------------------------------------

TEST_F(CryptoTest, HexIsLowerCase) {
  EXPECT_EQ(Hex(""), "");
  EXPECT_EQ(Hex(std::string("\x00\x01\x7f\x80\xab\xff", 6)), "00017f80abff");
  EXPECT_EQ(Hex("FastChat"), "4661737443686174");
}

TEST_F(CryptoTest, HashIsBlake2b256) {
  EXPECT_EQ(Hash("").size(), 32u);
  EXPECT_EQ(Hex(Hash("")), "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8");
  EXPECT_EQ(Hex(Hash("abc")), "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319");
  EXPECT_NE(Hash("abc"), Hash("abd"));
}

}  // namespace
}  // namespace fastchat::crypto

namespace fastchat::crypto {
namespace {

TEST(ClusterMac, VerifiesOnlyWithTheSameSecretAndMessage) {
  ASSERT_TRUE(Init());
  const std::string key = MacKeyFromSecret("cluster secret one");
  ASSERT_EQ(key.size(), 32u);
  EXPECT_EQ(key, MacKeyFromSecret("cluster secret one"));
  EXPECT_NE(key, MacKeyFromSecret("cluster secret two"));
  const std::string mac = Mac("challenge|a|b", key);
  ASSERT_EQ(mac.size(), 32u);
  EXPECT_TRUE(MacVerify(mac, "challenge|a|b", key));
  EXPECT_FALSE(MacVerify(mac, "challenge|a|c", key));
  EXPECT_FALSE(MacVerify(mac, "challenge|a|b", MacKeyFromSecret("cluster secret two")));
  EXPECT_FALSE(MacVerify(mac.substr(1), "challenge|a|b", key));
  EXPECT_TRUE(Mac("x", "short key").empty());
}

}  // namespace
}  // namespace fastchat::crypto
