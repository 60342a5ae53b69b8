// The mesh handshake against a hostile peer: one MeshHandshake (dialler or
// acceptor, from the input's first byte) fed the frames a peer sends, in any
// order, as Mesh::RunLink feeds it (the first frame to OnHello, the second to
// OnAuth); the harness may also call them out of that order.
//
// Input: [role byte] then records of [op][4-byte big-endian length][bytes].
// op & 3:
//   0  the bytes are one frame payload from the peer (over the 4 KiB
//      handshake limit: the link closes, as its FrameDecoder refuses it);
//   1  a well-formed PeerHello naming server id = the bytes (version 1, or
//      bytes[0] when op & 16; the harness's fixed challenge);
//   2  a PeerAuth with the MAC the spec asks for, over what the harness's last
//      hello said (the harness computes it; a fuzzer cannot);
//   3  a PeerAuth whose MAC is the bytes.
// op & 4 set: give the frame to the method RunLink would not (OnAuth first,
// OnHello second); op & 8 set: keep going after a refusal (RunLink closes).
// Checked: a hello is accepted only if it is one (version 1, a 32-byte
// challenge, a usable id, the dialled id for a dialler), and the PeerAuth it
// returns carries the spec's MAC over the peer's challenge; the peer is
// authenticated only after such a hello and a PeerAuth carrying the spec's MAC
// over this end's challenge, computed here apart from the code under test;
// after a refusal nothing is accepted; what this end sends fits the limit.
#include <algorithm>
#include <cstdint>
#include <string>

#include "common.h"
#include "fastchat/crypto.h"
#include "fastchat/frame.h"
#include "mesh.pb.h"
#include "mesh_handshake.h"

using namespace fastchat;
using namespace fastchat::server;

using fastchat::fuzz::Check;
using fastchat::fuzz::Fail;

namespace {

constexpr std::size_t kMaxHandshakeFrame = 4096;  // mesh.cc: until a link authenticates
const std::string kMyId = "server-b";
const std::string kDialled = "server-c";
const std::string kBinding(32, '\x5a');

// The spec (docs/protocol.md, proto/mesh.proto), written out here again.
std::string SpecMac(const std::string& key, std::string_view role, std::string_view challenge, std::string_view from,
                    std::string_view to) {
  std::string m;
  m += role;
  m += '|';
  m += challenge;
  m += '|';
  m += from;
  m += '|';
  m += to;
  m += '|';
  m += kBinding;
  return crypto::Mac(m, key);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fastchat::fuzz::QuietProtobuf();
  if (!crypto::Init()) Fail("libsodium");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string key = crypto::MacKeyFromSecret("fuzz cluster secret, 16+ bytes");
  if (size < 1) return 0;
  const bool dialer = data[0] & 1;
  const std::string my_challenge(MeshHandshake::kChallengeBytes, static_cast<char>(data[0] | 0x40));
  const std::string peer_challenge(MeshHandshake::kChallengeBytes, '\x33');
  const std::string_view my_role = dialer ? "dial" : "accept";
  const std::string_view peer_role = dialer ? "accept" : "dial";
  MeshHandshake hs(dialer ? MeshHandshake::Role::kDial : MeshHandshake::Role::kAccept, kMyId, dialer ? kDialled : "",
                   kBinding, key, my_challenge);

  mesh::MeshFrame hello;
  hs.Hello(&hello);
  Check(hello.hello().version() == MeshHandshake::kVersion && hello.hello().server_id() == kMyId &&
            hello.hello().challenge() == my_challenge,
        "our PeerHello");
  Check(hello.ByteSizeLong() <= kMaxHandshakeFrame, "our PeerHello over the handshake limit");

  std::string said_id;          // the id in the harness's last op-1 hello
  std::string accepted_id;      // the id of the hello OnHello accepted
  bool hello_ok = false, refused = false;
  int calls = 0;
  std::size_t pos = 1;
  std::uint8_t op = 0;
  std::string_view record;
  while (fastchat::fuzz::NextRecord(data, size, &pos, &op, &record)) {
    const std::string bytes(record);

    mesh::MeshFrame f;
    switch (op & 3) {
      case 0:
        if (bytes.size() > kMaxHandshakeFrame) return 0;  // the decoder closes the link
        if (!f.ParseFromString(bytes)) {
          if (op & 8) continue;
          return 0;  // RunLink: a frame that does not parse ends the link
        }
        break;
      case 1:
        said_id = bytes;
        f.mutable_hello()->set_version((op & 16) && !bytes.empty() ? static_cast<std::uint8_t>(bytes[0]) : 1u);
        f.mutable_hello()->set_server_id(bytes);
        f.mutable_hello()->set_challenge(peer_challenge);
        break;
      case 2:
        f.mutable_auth()->set_mac(SpecMac(key, peer_role, my_challenge, said_id, kMyId));
        break;
      case 3:
        f.mutable_auth()->set_mac(bytes);
        break;
    }
    const bool as_hello = (calls == 0) != static_cast<bool>(op & 4);
    ++calls;
    const mesh::MeshFrame copy = f;
    if (as_hello) {
      mesh::MeshFrame auth;
      const Status st = hs.OnHello(f, &auth);
      if (st.ok()) {
        Check(!refused && !hello_ok && !hs.authenticated(), "a hello accepted after a refusal or a second time");
        const mesh::PeerHello& h = copy.hello();
        Check(copy.has_hello() && h.version() == 1 && h.challenge().size() == 32, "a bad hello accepted");
        Check(!h.server_id().empty() && h.server_id() != kMyId, "an unusable id accepted");
        Check(!dialer || h.server_id() == kDialled, "a dialler accepted another server");
        Check(hs.peer_id() == h.server_id(), "peer_id is not the hello's id");
        Check(auth.has_auth() && auth.auth().mac() == SpecMac(key, my_role, h.challenge(), kMyId, h.server_id()),
              "our PeerAuth is not the spec's MAC");
        Check(auth.ByteSizeLong() <= kMaxHandshakeFrame, "our PeerAuth over the handshake limit");
        hello_ok = true;
        accepted_id = h.server_id();
      } else {
        Check(!hs.authenticated() || hello_ok, "state");
        Check(!auth.has_auth(), "a PeerAuth to send after a refused hello");
        refused = true;
      }
    } else {
      const bool was = hs.authenticated();
      const Status st = hs.OnAuth(f);
      if (st.ok()) {
        Check(!refused && hello_ok && !was, "authenticated without a good hello, twice, or after a refusal");
        Check(copy.has_auth() && copy.auth().mac() == SpecMac(key, peer_role, my_challenge, accepted_id, kMyId),
              "authenticated by a MAC that is not the spec's");
        Check(hs.authenticated() && hs.peer_id() == accepted_id, "authenticated as another id");
      } else {
        Check(!hs.authenticated(), "authenticated after OnAuth refused");
        refused = true;
      }
    }
    if (refused && !(op & 8)) return 0;  // RunLink closes the link
    if (refused) Check(!hs.authenticated(), "authenticated after a refusal");
  }
  return 0;
}
