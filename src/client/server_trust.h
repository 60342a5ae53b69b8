// ServerTrust: how the client decides a TLS server is the one it means.
//
// Promises:
// - With a CA file the TLS handshake itself verified the chain and the host
//   name; nothing more is checked here.
// - With a pin, only a certificate whose SHA-256 fingerprint equals the pin
//   is accepted.
// - Otherwise trust on first use: the first fingerprint seen for HOST:PORT is
//   recorded in the known-servers file (mode 0600) and only it is accepted
//   later; a change is refused with a loud message saying what to do.
// - A refusal is Code::kCryptoFailed (callers do not retry it).
#pragma once

#include <string>

#include "fastchat/status.h"

namespace fastchat::client {

struct TlsTrust {
  bool plain = false;         // --insecure-plain-tcp: no TLS at all
  std::string ca_file;        // verify the chain against this CA (PEM)
  std::string pin;            // normalised SHA-256 fingerprint (net::ParseFingerprint)
  std::string known_servers;  // trust-on-first-use file; empty: first use is refused
};

// Checks `fingerprint` (the server's certificate, net::Stream::PeerFingerprint)
// for `host_port`. Sets *notice to a message for the user when a server is
// trusted for the first time.
Status CheckServerIdentity(const TlsTrust& trust, const std::string& host_port, const std::string& fingerprint,
                           std::string* notice);

}  // namespace fastchat::client
