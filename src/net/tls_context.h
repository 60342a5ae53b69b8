// TlsContext's definition: for tls.cc and stream.cc only (pulls in OpenSSL).
#pragma once

#include <string>

#include <asio/ssl/context.hpp>

namespace fastchat::net {

class TlsContext {
 public:
  explicit TlsContext(asio::ssl::context::method m) : ctx(m) {}
  asio::ssl::context ctx;
  bool verify_chain = false;  // client: the chain and host name are checked
};

// SHA-256 of the certificate's DER bytes, 64 lowercase hex digits (tls.h);
// empty if it cannot be computed.
std::string CertFingerprint(X509* cert);

}  // namespace fastchat::net
