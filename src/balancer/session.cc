#include "session.h"

#include <array>
#include <utility>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <spdlog/spdlog.h>

#include "common/host_port.h"
#include "auth.h"
#include "balancer_impl.h"

namespace fastchat::balancer {
namespace {

using asio::use_awaitable;
using Clock = ServerTable::Clock;

constexpr std::size_t kReadChunk = 4096;

}  // namespace

Session::Session(Balancer::Impl& balancer, net::Socket socket, std::uint64_t id)
    : balancer_(balancer),
      stream_(std::move(socket), balancer.config.tls),
      id_(id),
      decoder_(balancer.config.max_frame),
      write_signal_(balancer.io),
      last_activity_(Clock::now()) {
  write_signal_.expires_at(asio::steady_timer::time_point::max());
  asio::error_code ec;
  auto ep = stream_.socket().remote_endpoint(ec);
  peer_ = ec ? std::string("?") : FormatHostPort(ep.address().to_string(), ep.port());
}

Session::~Session() = default;

void Session::Start() {
  auto self = shared_from_this();
  asio::co_spawn(balancer_.io, [self]() { return self->Run(); }, asio::detached);
}

asio::awaitable<void> Session::Run() {
  // TLS first (bounded by the idle sweep: a silent handshake is closed after
  // idle_timeout), then the Hello with its challenge.
  Status tls = co_await stream_.Handshake(net::Stream::Role::kServer);
  if (closed_) co_return;
  if (!tls.ok()) {
    spdlog::debug("{}: {}", peer_, tls.ToString());
    Close();
    co_return;
  }
  const std::string challenge = NewChallenge();
  protocol_ = std::make_unique<PeerProtocol>(
      PeerProtocol::Shared{balancer_.table, balancer_.auth_key, balancer_.rng}, id_, peer_, challenge,
      stream_.ChannelBinding(kBalancerBindingLabel));
  Envelope hello;
  hello.mutable_hello()->set_version(1);
  hello.mutable_hello()->set_challenge(challenge);
  Send(hello);
  auto self = shared_from_this();
  asio::co_spawn(balancer_.io, [self]() { return self->ReadLoop(); }, asio::detached);
  asio::co_spawn(balancer_.io, [self]() { return self->WriteLoop(); }, asio::detached);
}

void Session::Close() {
  if (closed_) return;
  closed_ = true;
  stream_.Close();
  write_signal_.cancel();
  if (protocol_ != nullptr && !protocol_->server_id().empty() && balancer_.table.Remove(protocol_->server_id(), id_)) {
    spdlog::info("server '{}' disconnected ({}): no longer assigned", protocol_->server_id(), peer_);
  }
  auto self = shared_from_this();  // keep alive past the erase
  balancer_.sessions.erase(self);
}

asio::awaitable<void> Session::ReadLoop() {
  std::array<char, kReadChunk> buf;
  for (;;) {
    asio::error_code ec;
    std::size_t n = 0;
    try {
      n = co_await stream_.ReadSome(asio::buffer(buf));
    } catch (const asio::system_error& e) {
      ec = e.code();
    }
    if (closed_) co_return;
    if (ec) {
      Close();
      co_return;
    }
    if (close_after_flush_) continue;  // discard input until the writer closes
    last_activity_ = Clock::now();
    decoder_.Append(buf.data(), n);
    for (;;) {
      std::string_view payload;
      bool have = false;
      Status st = decoder_.Next(&payload, &have);
      if (!st.ok()) {
        spdlog::debug("{}: {}", peer_, st.ToString());
        CloseWith(FRAME_TOO_LARGE, st.message());
        break;
      }
      if (!have) break;
      Handle(payload);
      if (closed_) co_return;
      if (close_after_flush_) break;
    }
  }
}

asio::awaitable<void> Session::WriteLoop() {
  for (;;) {
    if (closed_) co_return;
    if (queue_.empty()) {
      if (close_after_flush_) {
        Close();
        co_return;
      }
      asio::error_code ec;
      co_await write_signal_.async_wait(asio::redirect_error(use_awaitable, ec));
      continue;
    }
    std::string batch;
    batch.reserve(queued_bytes_);
    for (const std::string& frame : queue_) batch += frame;
    queue_.clear();
    queued_bytes_ = 0;
    asio::error_code ec;
    try {
      co_await stream_.Write(asio::buffer(batch));
    } catch (const asio::system_error& e) {
      ec = e.code();
    }
    if (ec) {
      Close();
      co_return;
    }
  }
}

void Session::Handle(std::string_view payload) {
  PeerProtocol::Result r = protocol_->OnFrame(payload, Clock::now());
  for (const Envelope& env : r.replies) Send(env);
  if (r.close_after) CloseAfterFlush();
}

void Session::Send(const Envelope& env) {
  if (closed_ || close_after_flush_) return;
  std::string frame;
  AppendFrame(env.SerializeAsString(), &frame);
  if (queued_bytes_ + frame.size() > balancer_.config.max_queue_bytes) {
    spdlog::warn("{}: not reading its replies; closing", peer_);
    Close();
    return;
  }
  queued_bytes_ += frame.size();
  queue_.push_back(std::move(frame));
  write_signal_.cancel_one();
}

void Session::SendError(ErrorCode code, const std::string& message) {
  Envelope env;
  env.mutable_error()->set_code(code);
  env.mutable_error()->set_message(message);
  Send(env);
}

void Session::CloseWith(ErrorCode code, const std::string& message) {
  SendError(code, message);
  CloseAfterFlush();
}

void Session::CloseAfterFlush() {
  close_after_flush_ = true;
  write_signal_.cancel_one();
}

}  // namespace fastchat::balancer
