// The balancer's handling of what its connections send (PeerProtocol, the
// socket-free part of balancer::Session), three connections sharing one
// ServerTable.
//
// Input: records of [op][4-byte big-endian length][bytes]. op & 3:
//   0  the bytes are one frame from connection (op >> 2) % 3;
//   1  that connection authenticates properly (the harness computes the MAC,
//      which a fuzzer cannot) as server_id = the bytes;
//   2  time passes: (first byte of the bytes) * 100 ms;
//   3  that connection closes (its server leaves the table, as
//      Session::Close does) and a new one takes its place.
// Checked: every reply serializes into one frame under the balancer's limit;
// a connection told to close gets no more frames; the table only holds
// servers with a usable address, a finite load in [kMinLoad, kMaxLoad], and
// shares summing to 1; GetServer names a live server.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>

#include "balancer/auth.h"
#include "balancer/load.h"
#include "balancer/peer_protocol.h"
#include "fastchat/frame.h"
#include "common.h"
#include <spdlog/spdlog.h>

using namespace fastchat;
using namespace fastchat::balancer;

using fastchat::fuzz::Check;
using fastchat::fuzz::Fail;

namespace {

constexpr int kConns = 3;
constexpr std::uint32_t kBalancerMaxFrame = 64 * 1024;

struct Conn {
  std::uint64_t id = 0;
  std::string challenge, binding;
  std::unique_ptr<PeerProtocol> protocol;
  bool closing = false;
};

void CheckTable(const ServerTable& table) {
  double sum = 0;
  for (const auto& [id, share] : table.Shares()) {
    const ServerTable::Entry* e = table.Find(id);
    Check(e != nullptr, "a share for a server not in the table");
    Check(!e->host.empty() && e->port != 0, "server with an unusable address");
    Check(std::isfinite(e->load) && e->load >= kMinLoad && e->load <= kMaxLoad, "load out of range");
    Check(std::isfinite(share) && share > 0, "share not a positive number");
    sum += share;
  }
  if (table.size() > 0) Check(std::fabs(sum - 1.0) < 1e-9, "shares do not sum to 1");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fastchat::fuzz::QuietProtobuf();
  spdlog::set_level(spdlog::level::off);
  if (!AuthInit()) Fail("libsodium");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ServerTable table(std::chrono::milliseconds(3000));
  const std::string key = AuthKey("cluster secret");
  std::mt19937_64 rng(1);
  ServerTable::Clock::time_point now{};
  std::uint64_t next_id = 1;
  Conn conns[kConns];
  auto open = [&](Conn& c) {
    c.id = next_id++;
    c.challenge = std::string(kChallengeBytes, static_cast<char>(c.id));
    c.binding = std::string(32, static_cast<char>(0x80 + c.id));
    c.protocol = std::make_unique<PeerProtocol>(PeerProtocol::Shared{table, key, rng}, c.id,
                                                "peer" + std::to_string(c.id), c.challenge, c.binding);
    c.closing = false;
  };
  auto close = [&](Conn& c) {
    if (!c.protocol->server_id().empty()) table.Remove(c.protocol->server_id(), c.id);
    open(c);
  };
  for (Conn& c : conns) open(c);

  std::size_t pos = 0;
  while (size - pos >= 1 + kFrameHeaderSize) {
    const std::uint8_t op = data[pos];
    std::uint32_t len = DecodeFrameHeader(reinterpret_cast<const char*>(data + pos + 1));
    pos += 1 + kFrameHeaderSize;
    len = static_cast<std::uint32_t>(std::min<std::size_t>({len, size - pos, kBalancerMaxFrame}));
    const std::string bytes(reinterpret_cast<const char*>(data + pos), len);
    pos += len;
    Conn& c = conns[(op >> 2) % kConns];
    std::string frame;
    switch (op & 3) {
      case 0: frame = bytes; break;
      case 1: {
        Envelope env;
        std::string id = bytes.substr(0, kMaxServerIdBytes);
        env.mutable_server_auth()->set_server_id(id);
        env.mutable_server_auth()->set_mac(AuthMac(key, c.challenge + c.binding, id));
        frame = env.SerializeAsString();
        break;
      }
      case 2: now += std::chrono::milliseconds(100 * (bytes.empty() ? 1 : static_cast<std::uint8_t>(bytes[0])));
        continue;
      case 3: close(c); continue;
    }
    if (c.closing) continue;  // the session discards input once told to close
    PeerProtocol::Result r = c.protocol->OnFrame(frame, now);
    for (const Envelope& reply : r.replies) {
      Check(reply.ByteSizeLong() <= kBalancerMaxFrame, "reply over the frame limit");
      if (reply.has_server_assignment()) {
        const ServerTable::Entry* e = table.Find(reply.server_assignment().server_id());
        Check(e != nullptr && e->port == reply.server_assignment().port(), "assigned a server not in the table");
        Check(e->port != 0, "assigned port 0");
      }
    }
    if (r.close_after) close(c);
    CheckTable(table);
  }
  return 0;
}
