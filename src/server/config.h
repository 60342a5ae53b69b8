// ServerConfig: every setting of fastchat-server, from flags or a config file.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "fastchat/crypto.h"
#include "peer_limits.h"

namespace fastchat::net {
class TlsContext;
}

namespace fastchat::server {

struct ServerConfig {
  std::string listen_host = "127.0.0.1";
  std::uint16_t listen_port = 7400;  // 0 = pick a free port
  std::string db_path = "fastchat-data/server.db";
  std::string server_id = "fastchat-1";
  crypto::PwhashCost pwhash = crypto::PwhashCost::Interactive();
  std::uint32_t max_frame = 1u << 20;                 // bytes per frame
  std::uint64_t max_image_bytes = 128ull << 20;       // bytes per image
  std::size_t max_queue_bytes = 8u << 20;             // per-connection write queue before it lags
  std::size_t sync_page_rows = 64;                    // pending rows fetched per store call
  Limits limits;  // bounds and deadlines of what peers can make the server hold (peer_limits.h)

  // TLS for client connections and mesh links; null only with the explicit
  // --insecure-plain-tcp flag (tests, benchmarks behind a TLS proxy).
  std::shared_ptr<net::TlsContext> tls;
  // Client TLS context for dialling peers (mesh); null when tls is null.
  std::shared_ptr<net::TlsContext> peer_tls;
  std::chrono::milliseconds tls_handshake_timeout{10000};  // a client must finish its TLS handshake by then
  std::chrono::hours session_token_ttl{24 * 30};           // a session token's life from its issue

  // Cluster (all off unless mesh_enabled).
  bool mesh_enabled = false;
  std::string mesh_host = "127.0.0.1";
  std::uint16_t mesh_port = 0;       // 0 = pick a free port
  std::string mesh_advertise;        // HOST:PORT peers dial; default mesh_host:bound port
  std::string cluster_secret;        // shared by every server of the cluster
  // Largest frame accepted from an authenticated peer. A Forward carries a
  // stored event (up to max_frame) and its recipients, so the default is
  // well above max_frame; smaller values are for tests.
  std::uint32_t mesh_max_frame = 4u << 20;
};

// Image chunks carry at most this many plaintext bytes (docs/protocol.md).
inline constexpr std::size_t kImageChunkBytes = 256 * 1024;
// Largest ciphertext accepted for one chunk or text (plaintext + AEAD tag + slack).
inline constexpr std::size_t kMaxChunkCiphertext = kImageChunkBytes + 64;

}  // namespace fastchat::server
