#include "tls.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "openssl_errors.h"
#include "tls_context.h"

namespace fastchat::net {
namespace {

std::string OpensslError(const std::string& what) {
  unsigned long e = ERR_get_error();
  char buf[256] = "unknown error";
  if (e != 0) ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return what + ": " + buf;
}

std::string Hex(const unsigned char* p, std::size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (std::size_t i = 0; i < n; ++i) {
    out.push_back(digits[p[i] >> 4]);
    out.push_back(digits[p[i] & 15]);
  }
  return out;
}

struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};


void TlsOnly13(asio::ssl::context& ctx) {
  SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(ctx.native_handle(), TLS1_3_VERSION);
  // Idle connections give back OpenSSL's record buffers.
  SSL_CTX_set_mode(ctx.native_handle(), SSL_MODE_RELEASE_BUFFERS);
  // No session tickets: FastChat has its own session tokens, and a ticket
  // costs every new connection an extra write.
  SSL_CTX_set_num_tickets(ctx.native_handle(), 0);
}

// The status form, for the functions below.
Status Fingerprint(X509* cert, std::string* out) {
  *out = CertFingerprint(cert);
  if (out->empty()) return Status(Code::kInternal, OpensslError("X509_digest"));
  return Status::OK();
}

}  // namespace

std::string OpensslErrors() {
  std::string out;
  for (unsigned long e = ERR_get_error(); e != 0; e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out;
}

std::string CertFingerprint(X509* cert) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (cert == nullptr || X509_digest(cert, EVP_sha256(), md, &len) != 1) return {};
  return Hex(md, len);
}

Status MakeServerTls(const std::string& cert_file, const std::string& key_file, std::shared_ptr<TlsContext>* out,
                     std::string* fingerprint) {
  auto t = std::make_shared<TlsContext>(asio::ssl::context::tls_server);
  TlsOnly13(t->ctx);
  SSL_CTX* ctx = t->ctx.native_handle();
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_file.c_str()) != 1)
    return Status(Code::kIOError, OpensslError("TLS certificate " + cert_file));
  if (SSL_CTX_use_PrivateKey_file(ctx, key_file.c_str(), SSL_FILETYPE_PEM) != 1)
    return Status(Code::kIOError, OpensslError("TLS key " + key_file));
  if (SSL_CTX_check_private_key(ctx) != 1)
    return Status(Code::kIOError, "TLS key " + key_file + " mismatches certificate " + cert_file);
  if (fingerprint != nullptr) {
    Status st = Fingerprint(SSL_CTX_get0_certificate(ctx), fingerprint);
    if (!st.ok()) return st;
  }
  *out = std::move(t);
  return Status::OK();
}

Status MakeClientTls(const std::string& ca_file, std::shared_ptr<TlsContext>* out) {
  auto t = std::make_shared<TlsContext>(asio::ssl::context::tls_client);
  TlsOnly13(t->ctx);
  if (!ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(t->ctx.native_handle(), ca_file.c_str(), nullptr) != 1)
      return Status(Code::kIOError, OpensslError("TLS CA file " + ca_file));
    t->ctx.set_verify_mode(asio::ssl::verify_peer);
    t->verify_chain = true;
  } else {
    t->ctx.set_verify_mode(asio::ssl::verify_none);  // the caller pins the fingerprint
  }
  *out = std::move(t);
  return Status::OK();
}

Status GenerateSelfSigned(const std::string& cert_file, const std::string& key_file, const std::string& name,
                          std::string* fingerprint) {
  std::unique_ptr<EVP_PKEY, PkeyDeleter> key(EVP_EC_gen("P-256"));
  if (!key) return Status(Code::kInternal, OpensslError("generating a P-256 key"));
  std::unique_ptr<X509, X509Deleter> cert(X509_new());
  if (!cert) return Status(Code::kInternal, OpensslError("X509_new"));
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof serial) != 1) return Status(Code::kInternal, OpensslError("RAND_bytes"));
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 10L * 365 * 24 * 3600);
  X509_set_pubkey(cert.get(), key.get());
  X509_NAME* subject = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(name.c_str()), -1,
                             -1, 0);
  X509_set_issuer_name(cert.get(), subject);
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, cert.get(), cert.get(), nullptr, nullptr, 0);
  std::string san = "DNS:" + name;
  for (const std::string& ext : {std::string("basicConstraints=critical,CA:FALSE"), "subjectAltName=" + san}) {
    auto eq = ext.find('=');
    X509_EXTENSION* e = X509V3_EXT_conf(nullptr, &v3, ext.substr(0, eq).c_str(), ext.substr(eq + 1).c_str());
    if (e == nullptr) return Status(Code::kInternal, OpensslError("certificate extension " + ext));
    X509_add_ext(cert.get(), e, -1);
    X509_EXTENSION_free(e);
  }
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) == 0) return Status(Code::kInternal, OpensslError("X509_sign"));

  // The key first, created exclusively with 0600: never clobber a key.
  int fd = ::open(key_file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return Status(Code::kIOError, "creating " + key_file + ": " + std::strerror(errno));
  std::unique_ptr<FILE, FileCloser> kf(::fdopen(fd, "w"));
  if (!kf) {
    ::close(fd);
    return Status(Code::kIOError, "fdopen " + key_file);
  }
  if (PEM_write_PrivateKey(kf.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1 ||
      std::fflush(kf.get()) != 0 || ::fsync(fd) != 0)
    return Status(Code::kIOError, OpensslError("writing " + key_file));
  kf.reset();
  // The certificate appears atomically, after the key is complete.
  std::string tmp = cert_file + ".tmp." + std::to_string(::getpid());
  {
    std::unique_ptr<FILE, FileCloser> cf(std::fopen(tmp.c_str(), "w"));
    if (!cf || PEM_write_X509(cf.get(), cert.get()) != 1 || std::fflush(cf.get()) != 0)
      return Status(Code::kIOError, OpensslError("writing " + tmp));
  }
  if (std::rename(tmp.c_str(), cert_file.c_str()) != 0)
    return Status(Code::kIOError, "renaming " + tmp + ": " + std::strerror(errno));
  if (fingerprint != nullptr) return Fingerprint(cert.get(), fingerprint);
  return Status::OK();
}

Status LoadOrCreateServerTls(const std::string& cert_file, const std::string& key_file, const std::string& name,
                             std::shared_ptr<TlsContext>* out, std::string* fingerprint, bool* created) {
  namespace fs = std::filesystem;
  *created = false;
  std::error_code ec;
  if (!fs::exists(key_file, ec) && !fs::exists(cert_file, ec)) {
    Status st = GenerateSelfSigned(cert_file, key_file, name, nullptr);
    if (st.ok()) {
      *created = true;
    } else if (!fs::exists(key_file, ec)) {
      return st;
    }
    // else: another process created the key first; wait for its certificate.
  }
  for (int i = 0; i < 50 && fs::exists(key_file, ec) && !fs::exists(cert_file, ec); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  return MakeServerTls(cert_file, key_file, out, fingerprint);
}

Status FileFingerprint(const std::string& cert_file, std::string* fingerprint) {
  std::unique_ptr<FILE, FileCloser> f(std::fopen(cert_file.c_str(), "r"));
  if (!f) return Status(Code::kIOError, "cannot open " + cert_file + ": " + std::strerror(errno));
  std::unique_ptr<X509, X509Deleter> cert(PEM_read_X509(f.get(), nullptr, nullptr, nullptr));
  if (!cert) return Status(Code::kIOError, OpensslError("reading certificate " + cert_file));
  return Fingerprint(cert.get(), fingerprint);
}

bool ParseFingerprint(std::string_view text, std::string* out) {
  if (text.size() > 7) {
    std::string prefix(text.substr(0, 7));
    for (char& c : prefix) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (prefix == "sha256:") text.remove_prefix(7);
  }
  std::string hex;
  for (char c : text) {
    if (c == ':') continue;
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
    hex.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  if (hex.size() != 64) return false;
  *out = std::move(hex);
  return true;
}

}  // namespace fastchat::net
