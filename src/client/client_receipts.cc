// Delivery receipts for direct messages and files: the recipient's client,
// once it has stored a message, seals a receipt under the friend key and
// sends it back like a message (Kind RECEIPT); the sender's client opens it
// and records in its history when the message arrived. The server only
// carries receipts: it cannot make one, since it has no friend key, and one
// user's receipt cannot vouch for a message sent to someone else (receipts
// are filed under the user whose key opened them).
#include <cstdint>
#include <memory>
#include <string>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>

#include "client.h"
#include "client_impl.h"
#include "fastchat/crypto.h"

namespace fastchat::client {

namespace {

// msg_id(16) || u64be(ms when received).
constexpr std::size_t kReceiptBytes = crypto::kMsgIdBytes + 8;

}  // namespace

void ClientCore::Impl::QueueReceipt(std::uint64_t to, const std::string& msg_id) {
  if (to == me().user_id) return;
  ++receipts_out;
  asio::co_spawn(ioc, SendReceipt(to, msg_id, WallMs()), asio::detached);
}

awaitable<void> ClientCore::Impl::SendReceipt(std::uint64_t to, std::string msg_id, std::int64_t at) {
  Contact c;
  std::string key;
  Status s = store->GetContact(to, &c);
  if (s.ok()) s = store->GetFriendKey(to, &key);
  Outcome o = Outcome::From(s);
  wire::Envelope req, reply;
  if (o.ok()) {
    std::string plain = msg_id;
    PutU64(&plain, static_cast<std::uint64_t>(at));
    const std::string receipt_id = crypto::PublicRandomBytes(crypto::kMsgIdBytes);
    o = DirectMaker(c, key, receipt_id, wire::RECEIPT)(0, 1, plain, &req);
  }
  if (o.ok()) o = co_await Call(req, &reply);
  if (!o.ok()) LogInfo("no delivery receipt sent to user " + std::to_string(to) + ": " + o.code + ": " + o.message);
  --receipts_out;
  receipts_signal.NotifyAll();
}

awaitable<void> ClientCore::Impl::WaitReceipts() {
  if (receipts_out == 0) co_return;
  // Bounded: a receipt that cannot go now is not worth holding the exit for.
  auto expired = std::make_shared<bool>(false);
  asio::steady_timer deadline(ioc, kReceiptWait);
  deadline.async_wait([this, expired](std::error_code ec) {
    if (ec) return;
    *expired = true;
    receipts_signal.NotifyAll();
  });
  while (receipts_out > 0 && link_up && !over && !*expired) co_await receipts_signal.Wait();
  deadline.cancel();
}

Outcome ClientCore::Impl::OnReceipt(std::uint64_t seq, const wire::Event& ev) {
  std::string plain;
  Outcome o = OpenDirect(ev, &plain);
  if (o.ok() && plain.size() != kReceiptBytes) o = Err("BAD_FRAME", "malformed receipt");
  if (!o.ok()) {
    if (o.code == "IO_ERROR") return o;
    Undecryptable(seq, "receipt", ev, "receipt rejected: " + o.message);
    return Outcome::OK();
  }
  const std::string msg_id = plain.substr(0, crypto::kMsgIdBytes);
  const auto at = static_cast<std::int64_t>(GetU64(std::string_view(plain).substr(crypto::kMsgIdBytes)));
  bool sent = false;
  Status s = store->AddReceipt(ev.from_id(), msg_id, at);
  if (s.ok()) s = store->SentTo(ev.from_id(), msg_id, &sent);
  if (!s.ok()) return Outcome::From(s);
  Json e = {{"type", "receipt"}, {"seq", seq}, {"to", ContactName(ev.from_id(), ev.from_name())},
            {"to_id", ev.from_id()}, {"msg_id", crypto::Hex(msg_id)}, {"delivered_ms", at}};
  if (!sent) e["known"] = false;  // not (yet) in this store's history: kept for when it is
  Emit(e);
  return Outcome::OK();
}

}  // namespace fastchat::client
