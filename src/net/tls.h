// TLS setup shared by every FastChat link (client-server, mesh, balancer):
// contexts, self-signed certificates and certificate fingerprints.
//
// Promises:
// - Every context speaks TLS 1.3 only.
// - A fingerprint is the SHA-256 of the certificate's DER bytes, 64 lowercase
//   hex digits; ParseFingerprint accepts it with or without colons, in either
//   case, with an optional "sha256:" prefix.
// - GenerateSelfSigned writes the private key with mode 0600 and never
//   overwrites an existing key.
// OpenSSL and Asio's SSL headers stay in tls.cc and stream.cc: this header is
// cheap to include.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "fastchat/status.h"

namespace fastchat::net {

// An Asio SSL context (opaque here; see stream.h for its use).
class TlsContext;

// A server context presenting cert_file (PEM chain) with key_file (PEM key).
// Sets *fingerprint to the leaf certificate's fingerprint.
Status MakeServerTls(const std::string& cert_file, const std::string& key_file, std::shared_ptr<TlsContext>* out,
                     std::string* fingerprint);

// A client context. With ca_file (PEM) the server's chain is verified against
// it (Stream::Handshake then also checks the host name); without, no chain is
// verified and the caller must check the peer's fingerprint (pinning).
Status MakeClientTls(const std::string& ca_file, std::shared_ptr<TlsContext>* out);

// Creates a self-signed ECDSA P-256 certificate for `name` (valid ten years)
// and its key. Fails if key_file exists.
Status GenerateSelfSigned(const std::string& cert_file, const std::string& key_file, const std::string& name,
                          std::string* fingerprint);

// Loads cert_file/key_file, creating both with GenerateSelfSigned if neither
// exists. Safe when several processes race to create the same pair.
Status LoadOrCreateServerTls(const std::string& cert_file, const std::string& key_file, const std::string& name,
                             std::shared_ptr<TlsContext>* out, std::string* fingerprint, bool* created);

// The fingerprint of the first certificate in a PEM file.
Status FileFingerprint(const std::string& cert_file, std::string* fingerprint);

// Normalises a user-typed fingerprint; false if it is not 32 hex bytes.
bool ParseFingerprint(std::string_view text, std::string* out);

}  // namespace fastchat::net
