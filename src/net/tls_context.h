// TlsContext's definition: for tls.cc and stream.cc only (pulls in OpenSSL).
#pragma once

#include <asio/ssl/context.hpp>

namespace fastchat::net {

class TlsContext {
 public:
  explicit TlsContext(asio::ssl::context::method m) : ctx(m) {}
  asio::ssl::context ctx;
  bool verify_chain = false;  // client: the chain and host name are checked
};

}  // namespace fastchat::net
