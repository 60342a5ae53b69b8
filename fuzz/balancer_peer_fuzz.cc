// A hostile balancer, played against the two programs that connect to one:
// a client asking for a server (client::ReadBalancerReply, what AskBalancers
// makes of each frame) and a chat server's reporter
// (balancer::ReporterHandshake, fed as BalancerReporter's connection feeds
// it: the first frame to OnHello, the second to OnAuthReply, the rest to
// OnLater). Sockets and TLS are not fuzzed; the frame decoder in front of
// both is the `frame` target's.
//
// Input: [side byte: & 1 = the reporter, else the client] then records of
// [op][4-byte big-endian length][bytes]. op & 3:
//   0  the bytes are one frame payload from the balancer;
//   1  a Hello: version 1 (bytes[0] when op & 8), challenge 32 bytes made
//      from the bytes (the bytes as they are when op & 16);
//   2  an Error: code bytes[0], message the rest;
//   3  op & 8: an AuthOk, expire_ms from the bytes; else a ServerAssignment:
//      port the first 3 bytes (big-endian, so past 65535), host the next
//      (byte 3) bytes, server_id the rest.
// Reporter only: op & 4 gives the frame to a method out of turn (OnAuthReply
// for the first, OnHello after); op & 32 keeps going after a refusal (the
// connection would close).
// Checked, against rules written out here apart from the code under test:
// - client: a frame is skipped exactly when it is a Hello; an assignment is
//   taken exactly when it is one a client can use (host 1-255 printable
//   ASCII without space, port 1-65535, server_id 1-64 printable ASCII), and
//   taken as it is; a refused frame changes nothing; kNotFound exactly for
//   Error{NO_SERVER}.
// - reporter: a hello is answered only if it is the first frame and a
//   version-1 Hello with a 32-byte challenge, and the answer is a ServerAuth
//   for this server carrying the spec's MAC (computed here with libsodium);
//   registered only after that and an AuthOk; kBadCredentials only for
//   Error{BAD_CREDENTIALS}; after a refusal nothing is accepted; every text
//   it returns is printable ASCII of bounded length.
#include <sodium.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "balancer.pb.h"
#include "balancer/auth.h"
#include "balancer/reporter_handshake.h"
#include "balancer_reply.h"
#include "common.h"
#include "fastchat/frame.h"

using namespace fastchat;

using fastchat::fuzz::Check;
using fastchat::fuzz::Fail;

namespace {

constexpr std::size_t kMaxFrame = 64 * 1024;  // both readers' FrameDecoder limit
const std::string kSecret = "fuzz cluster secret";
const std::string kServerId = "server-a";
const std::string kBinding(32, '\x5a');

bool Printable(const std::string& s, char low) {
  return std::all_of(s.begin(), s.end(), [low](char c) { return c >= low && c <= 0x7e; });
}

// proto/balancer.proto's MAC, written out here again.
std::string SpecMac(const std::string& challenge) {
  unsigned char key[crypto_auth_KEYBYTES];
  crypto_generichash(key, sizeof key, reinterpret_cast<const unsigned char*>(kSecret.data()), kSecret.size(), nullptr,
                     0);
  const std::string msg = "fastchat-balancer-auth-v1" + challenge + kBinding + kServerId;
  std::string mac(crypto_auth_BYTES, '\0');
  crypto_auth(reinterpret_cast<unsigned char*>(mac.data()), reinterpret_cast<const unsigned char*>(msg.data()),
              msg.size(), key);
  return mac;
}

void CheckText(const Status& st) {
  Check(Printable(st.message(), 0x20) && st.message().size() <= 400, "an unsafe or unbounded text from the reporter");
}

// One frame to the client, checked.
void Client(const std::string& payload) {
  balancer::Envelope env;
  const bool parses = env.ParseFromString(payload);
  const client::Assignment before{"sentinel", 1, "sentinel"};
  client::Assignment a = before;
  bool skip = false;
  const Status st = client::ReadBalancerReply(payload, &a, &skip);
  Check(skip == (st.ok() && parses && env.has_hello()), "skipped a frame that is not a Hello, or not a Hello");
  const balancer::ServerAssignment& sa = env.server_assignment();
  const bool usable = parses && env.has_server_assignment() && !sa.host().empty() && sa.host().size() <= 255 &&
                      Printable(sa.host(), 0x21) && sa.port() >= 1 && sa.port() <= 65535 &&
                      !sa.server_id().empty() && sa.server_id().size() <= 64 && Printable(sa.server_id(), 0x20);
  Check((st.ok() && !skip) == usable, "took an assignment no client can use, or refused a usable one");
  if (usable) {
    Check(a.host == sa.host() && a.port == sa.port() && a.server_id == sa.server_id(), "the assignment changed");
  } else {
    Check(a.host == before.host && a.port == before.port && a.server_id == before.server_id,
          "a refused frame changed the assignment");
  }
  Check((st.code() == Code::kNotFound) == (parses && env.has_error() && env.error().code() == balancer::NO_SERVER),
        "kNotFound for what is not Error{NO_SERVER}");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fastchat::fuzz::QuietProtobuf();
  if (!balancer::AuthInit()) Fail("libsodium");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string key = balancer::AuthKey(kSecret);
  if (size < 1) return 0;
  const bool reporter = data[0] & 1;
  balancer::ReporterHandshake hs(kServerId, key, kBinding);
  bool hello_ok = false, auth_ok = false, refused = false;
  int calls = 0;
  std::size_t pos = 1;
  std::uint8_t op = 0;
  std::string_view record;
  while (fastchat::fuzz::NextRecord(data, size, &pos, &op, &record)) {
    const std::string bytes(record);
    if (bytes.size() > kMaxFrame) return 0;  // the decoder ends the connection

    balancer::Envelope f;
    switch (op & 3) {
      case 0: break;
      case 1: {
        f.mutable_hello()->set_version((op & 8) && !bytes.empty() ? static_cast<std::uint8_t>(bytes[0]) : 1u);
        std::string challenge = bytes;
        if (!(op & 16)) challenge.resize(balancer::kChallengeBytes, '\x21');
        f.mutable_hello()->set_challenge(challenge);
        break;
      }
      case 2:
        f.mutable_error()->set_code(static_cast<balancer::ErrorCode>(bytes.empty() ? 0 : bytes[0] & 15));
        f.mutable_error()->set_message(bytes.empty() ? "" : bytes.substr(1));
        break;
      case 3:
        if (op & 8) {
          std::uint32_t ms = 0;
          for (std::size_t i = 0; i < std::min<std::size_t>(4, bytes.size()); ++i)
            ms = ms << 8 | static_cast<std::uint8_t>(bytes[i]);
          f.mutable_auth_ok()->set_expire_ms(ms);
        } else {
          std::uint32_t port = 0;
          for (std::size_t i = 0; i < std::min<std::size_t>(3, bytes.size()); ++i)
            port = port << 8 | static_cast<std::uint8_t>(bytes[i]);
          const std::size_t host_len = bytes.size() > 3 ? static_cast<std::uint8_t>(bytes[3]) : 0;
          const std::string rest = bytes.size() > 4 ? bytes.substr(4) : "";
          f.mutable_server_assignment()->set_port(port);
          f.mutable_server_assignment()->set_host(rest.substr(0, host_len));
          f.mutable_server_assignment()->set_server_id(rest.size() > host_len ? rest.substr(host_len) : "");
        }
        break;
    }
    const std::string payload = (op & 3) == 0 ? bytes : f.SerializeAsString();
    if (!reporter) {
      Client(payload);
      continue;
    }

    balancer::Envelope env;
    const bool parses = env.ParseFromString(payload);
    const int turn = calls == 0 ? 0 : calls == 1 ? 1 : 2;
    const int method = (op & 4) ? (turn == 0 ? 1 : 0) : turn;  // 0 OnHello, 1 OnAuthReply, 2 OnLater
    ++calls;
    const bool was_registered = hs.registered();
    Status st;
    if (method == 0) {
      std::string auth;
      st = hs.OnHello(payload, &auth);
      if (st.ok()) {
        Check(calls == 1 && !refused && !hello_ok, "a hello answered out of turn or after a refusal");
        Check(parses && env.has_hello() && env.hello().version() == 1 &&
                  env.hello().challenge().size() == balancer::kChallengeBytes,
              "answered what is not a version-1 Hello");
        balancer::Envelope sent;
        Check(sent.ParseFromString(auth) && sent.has_server_auth() && sent.server_auth().server_id() == kServerId &&
                  sent.server_auth().mac() == SpecMac(env.hello().challenge()),
              "the ServerAuth is not the spec's");
        hello_ok = true;
      } else {
        Check(auth.empty(), "a ServerAuth to send after a refusal");
      }
    } else if (method == 1) {
      std::uint32_t expire = 0;
      st = hs.OnAuthReply(payload, &expire);
      if (st.ok()) {
        Check(calls == 2 && hello_ok && !refused, "registered without an answered hello, or after a refusal");
        Check(parses && env.has_auth_ok() && expire == env.auth_ok().expire_ms(), "registered without an AuthOk");
        auth_ok = true;
      }
      if (st.code() == Code::kBadCredentials)
        Check(parses && env.has_error() && env.error().code() == balancer::BAD_CREDENTIALS,
              "kBadCredentials for what is not Error{BAD_CREDENTIALS}");
    } else {
      std::string refusal;
      st = hs.OnLater(payload, &refusal);
      if (st.ok()) {
        Check(was_registered && !refused, "a later frame accepted before registration");
        Check(refusal.empty() == !(parses && env.has_error()), "an Error not reported, or a report of none");
        Check(Printable(refusal, 0x20) && refusal.size() <= 300, "an unsafe or unbounded refusal text");
      }
    }
    CheckText(st);
    if (!st.ok()) refused = true;
    Check(hs.registered() == (auth_ok && !refused), "registered() does not match what was accepted");
    if (refused && !(op & 32)) return 0;  // the connection closes
  }
  return 0;
}
