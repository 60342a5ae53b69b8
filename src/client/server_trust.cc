#include "server_trust.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace fastchat::client {

Status CheckServerIdentity(const TlsTrust& trust, const std::string& host_port, const std::string& fingerprint,
                           std::string* notice) {
  if (trust.plain || !trust.ca_file.empty()) return Status::OK();
  if (fingerprint.empty()) return Status(Code::kCryptoFailed, "the server at " + host_port + " sent no certificate");
  if (!trust.pin.empty()) {
    if (fingerprint == trust.pin) return Status::OK();
    return Status(Code::kCryptoFailed, "the server at " + host_port + " presents certificate " + fingerprint +
                                           ", not the pinned " + trust.pin + ": refusing to connect");
  }
  if (trust.known_servers.empty())
    return Status(Code::kCryptoFailed, "no way to check the server at " + host_port +
                                           ": give --tls-pin FINGERPRINT or --tls-ca FILE");
  std::ifstream in(trust.known_servers);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string who, fp;
    if (!(fields >> who >> fp) || who != host_port) continue;
    if (fp == fingerprint) return Status::OK();
    return Status(Code::kCryptoFailed,
                  "WARNING: THE IDENTITY OF " + host_port + " HAS CHANGED.\n"
                  "  known certificate: " + fp + "\n  presented now:     " + fingerprint +
                  "\n  Someone may be intercepting this connection. If the server's certificate really changed, "
                  "ask its operator for the new fingerprint, then remove the line for " + host_port + " from " +
                  trust.known_servers + " (or connect with --tls-pin NEW_FINGERPRINT). Refusing to connect.");
  }
  // First use: record it (0600; the file lists where this user chats).
  int fd = ::open(trust.known_servers.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0)
    return Status(Code::kIOError, "cannot record the server's fingerprint in " + trust.known_servers + ": " +
                                      std::strerror(errno));
  std::string entry = host_port + " " + fingerprint + "\n";
  ssize_t n = ::write(fd, entry.data(), entry.size());
  ::close(fd);
  if (n != static_cast<ssize_t>(entry.size()))
    return Status(Code::kIOError, "cannot record the server's fingerprint in " + trust.known_servers);
  *notice = "trusting " + host_port + " on first use; its certificate fingerprint is " + fingerprint +
            " (compare it with the one the server printed; recorded in " + trust.known_servers + ")";
  return Status::OK();
}

}  // namespace fastchat::client
