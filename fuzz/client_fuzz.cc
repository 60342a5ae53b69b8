// The client against a hostile server: every byte the server sends goes
// through Connection::Receive (frame decoder, parse, dispatch of replies,
// pushes and pings) into a real receiving session (ClientCore::Impl in listen
// mode, with a real LocalStore), which processes every Deliver/SyncDone/Error
// push and every event kind, asks the server what it needs (those requests
// get rids 1, 2, ... and the input may answer them) and writes received
// images to its downloads folder.
//
// Input: the server's byte stream (frames: 4-byte big-endian length +
// Envelope). It is handed over one frame at a time, with the client run
// until idle after each; a trailing partial frame is handed over last.
// Checked by the sanitizers, and: the session never writes outside its home.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>

#include "client_fixture.h"
#include "client_impl.h"
#include "fastchat/crypto.h"
#include "fastchat/frame.h"
#include "common.h"
#include <spdlog/spdlog.h>

namespace fs = std::filesystem;
using namespace fastchat;
using namespace fastchat::client;

using fastchat::fuzz::Check;
using fastchat::fuzz::Fail;

namespace {

// Alice's store in `home`: bob pinned with his friend key, group 7 (admin
// bob) with its epoch-1 key.
std::unique_ptr<LocalStore> MakeStore(const fs::path& home) {
  const fuzz::FixedKeys a = fuzz::KeysOf('a'), b = fuzz::KeysOf('b');
  Identity id;
  id.user_id = fuzz::kAlice;
  id.name = "alice";
  id.x25519_public = a.x25519_public;
  id.x25519_secret = a.x25519_secret;
  id.ed25519_public = a.ed25519_public;
  id.ed25519_secret = a.ed25519_secret;
  std::unique_ptr<LocalStore> store;
  Status s = LocalStore::Create(home / "alice.fcdb", id, "password", crypto::PwhashCost::Min(), &store);
  if (!s.ok()) Fail("store: " + s.ToString());
  Contact bob{fuzz::kBob, "bob", b.x25519_public, b.ed25519_public, 1};
  PinResult pin;
  Contact pinned;
  std::string key;
  LocalGroup g{fuzz::kGroup, "team", fuzz::kBob, 1, false};
  if (!store->Pin(bob, &pin, &pinned).ok() || !store->PutFriendKey(fuzz::kBob, fuzz::FriendKeyAliceBob()).ok() ||
      !store->PutGroup(g).ok() || !store->PutGroupKey(fuzz::kGroup, 1, fuzz::GroupKeyEpoch1(), &key).ok()) {
    Fail("cannot fill the store");
  }
  return store;
}

// The bytes of a store made once (LLVMFuzzerInitialize), written into each
// input's home: creating the store (its schema, under the sanitizers) took
// about half of every execution.
std::string& TemplateStore() {
  static std::string bytes;
  return bytes;
}

std::unique_ptr<LocalStore> CopyOfTemplateStore(const fs::path& home) {
  const fs::path path = home / "alice.fcdb";
  {
    std::ofstream f(path, std::ios::binary);
    f.write(TemplateStore().data(), static_cast<std::streamsize>(TemplateStore().size()));
    if (!f.flush()) Fail("cannot write " + path.string());
  }
  fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write);
  std::unique_ptr<LocalStore> store;
  Status s = LocalStore::Open(path, "password", &store);
  if (!s.ok()) Fail("store: " + s.ToString());
  return store;
}

void RunUntilIdle(asio::io_context& ioc) {
  ioc.restart();
  while (ioc.poll() > 0) ioc.restart();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fastchat::fuzz::QuietProtobuf();
  spdlog::set_level(spdlog::level::off);
  if (!crypto::Init()) Fail("libsodium");
  const fs::path dir = fastchat::fuzz::FreshDir("fastchat_client_fuzz_template");
  MakeStore(dir).reset();  // closed: its WAL folded into the file
  std::ifstream f(dir / "alice.fcdb", std::ios::binary);
  TemplateStore().assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  std::error_code ec;
  fs::remove_all(dir, ec);
  if (TemplateStore().empty() || ec) Fail("cannot make the template store in " + dir.string());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const fs::path home = fastchat::fuzz::FreshDir("fastchat_client_fuzz");
  {
    asio::io_context ioc;
    Output out(false);
    ClientConfig cfg;
    cfg.home = home;
    auto impl = std::make_unique<ClientCore::Impl>(ioc, cfg, &out);
    impl->store = CopyOfTemplateStore(home);
    impl->downloads = home / "downloads";
    impl->mode = SessionMode::kListen;
    impl->established = true;
    impl->link_up = true;
    auto conn = impl->NewConnection(true);
    impl->conn = conn;
    impl->server_id = "hostile";
    ClientCore::Impl* m = impl.get();
    asio::co_spawn(ioc, [m]() { return m->ProcessLoop(); }, asio::detached);
    RunUntilIdle(ioc);

    std::string_view stream(reinterpret_cast<const char*>(data), size);
    while (!stream.empty() && !conn->closed()) {
      std::size_t n = stream.size();
      if (stream.size() >= kFrameHeaderSize) {
        const std::uint64_t len = DecodeFrameHeader(stream.data());
        n = static_cast<std::size_t>(std::min<std::uint64_t>(kFrameHeaderSize + len, stream.size()));
      }
      conn->Receive(stream.substr(0, n));
      stream.remove_prefix(n);
      RunUntilIdle(ioc);
    }
    // The server goes away: every request still open fails, the session ends.
    conn->Close();
    m->stopping = true;
    m->inbox_wake.cancel();
    m->link_signal.NotifyAll();
    RunUntilIdle(ioc);
    impl->conn.reset();
    conn.reset();
    impl.reset();
    RunUntilIdle(ioc);
  }
  // Everything the session wrote is inside its home.
  std::error_code ec;
  fs::remove_all(home, ec);
  if (ec) Fail("cannot clean " + home.string());
  return 0;
}
