#include "session.h"

#include <array>
#include <utility>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <spdlog/spdlog.h>

#include "address.h"
#include "auth.h"
#include "balancer_impl.h"

namespace fastchat::balancer {
namespace {

using asio::use_awaitable;
using Clock = ServerTable::Clock;

constexpr std::size_t kReadChunk = 4096;

const char* BodyName(Envelope::BodyCase c) {
  switch (c) {
    case Envelope::kHello: return "Hello";
    case Envelope::kAuthOk: return "AuthOk";
    case Envelope::kServerAssignment: return "ServerAssignment";
    default: return "this frame";
  }
}

}  // namespace

Session::Session(Balancer::Impl& balancer, asio::ip::tcp::socket socket, std::uint64_t id)
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
  binding_ = stream_.ChannelBinding(kBalancerBindingLabel);
  challenge_ = NewChallenge();
  Envelope hello;
  hello.mutable_hello()->set_version(1);
  hello.mutable_hello()->set_challenge(challenge_);
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
  if (!server_id_.empty() && balancer_.table.Remove(server_id_, id_)) {
    spdlog::info("server '{}' disconnected ({}): no longer assigned", server_id_, peer_);
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
  Envelope env;
  if (!env.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    SendError(BAD_FRAME, "frame does not parse as fastchat.balancer.Envelope");
    return;
  }
  switch (env.body_case()) {
    case Envelope::kServerAuth: HandleAuth(env); break;
    case Envelope::kServerReport: HandleReport(env); break;
    case Envelope::kGetServer: HandleGetServer(); break;
    case Envelope::kError: break;  // never answer an error with an error
    case Envelope::BODY_NOT_SET: SendError(UNKNOWN_TYPE, "frame has no known body"); break;
    default: SendError(BAD_REQUEST, std::string("the balancer does not accept ") + BodyName(env.body_case())); break;
  }
}

void Session::HandleAuth(const Envelope& env) {
  const ServerAuth& auth = env.server_auth();
  if (auth_tried_) {
    SendError(BAD_REQUEST, "ServerAuth may be sent only once per connection");
    return;
  }
  auth_tried_ = true;
  if (!ValidServerId(auth.server_id())) {
    spdlog::warn("refused server from {}: invalid server_id", peer_);
    CloseWith(BAD_REQUEST, "server_id must be 1-64 printable ASCII characters");
    return;
  }
  if (!AuthVerify(balancer_.auth_key, challenge_ + binding_, auth.server_id(), auth.mac())) {
    spdlog::warn("refused server '{}' from {}: wrong cluster secret", auth.server_id(), peer_);
    CloseWith(BAD_CREDENTIALS, "wrong cluster secret");
    return;
  }
  server_id_ = auth.server_id();
  spdlog::info("server '{}' authenticated from {}", server_id_, peer_);
  Envelope reply;
  reply.mutable_auth_ok()->set_expire_ms(static_cast<std::uint32_t>(balancer_.config.expire_after.count()));
  Send(reply);
}

void Session::HandleReport(const Envelope& env) {
  if (server_id_.empty()) {
    SendError(NOT_AUTHENTICATED, "send ServerAuth before ServerReport");
    return;
  }
  const ServerReport& r = env.server_report();
  if (r.server_id() != server_id_) {
    SendError(BAD_REQUEST, "this connection authenticated as '" + server_id_ + "'");
    return;
  }
  LoadReport report;
  report.server_id = server_id_;
  report.client_address = r.client_address();
  report.connections = r.connections();
  report.cpu_percent = r.cpu_percent();
  report.msgs_per_sec = r.msgs_per_sec();
  report.load = r.load();
  // Two live connections taking turns to report different addresses for one
  // id: two servers share a name, and clients go to either. Say so, once.
  const ServerTable::Entry* before = balancer_.table.Find(server_id_);
  if (before != nullptr && before->owner != id_ && !warned_conflict_ &&
      report.client_address != FormatHostPort(before->host, before->port)) {
    spdlog::warn("server id '{}' is reported from two connections with different addresses; "
                 "is it configured on two servers?", server_id_);
    warned_conflict_ = true;
  }
  bool added = false;
  Status st = balancer_.table.Update(report, id_, Clock::now(), &added);
  if (!st.ok()) {
    SendError(BAD_REQUEST, st.message());
    return;
  }
  if (added) {
    const ServerTable::Entry* e = balancer_.table.Find(server_id_);
    spdlog::info("server '{}' is live at {} (load {:.2f})", server_id_, FormatHostPort(e->host, e->port), e->load);
  }
}

void Session::HandleGetServer() {
  ExpireServers(balancer_);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  const ServerTable::Entry* e = balancer_.table.Pick(uniform(balancer_.rng));
  if (e == nullptr) {
    SendError(NO_SERVER, "no chat server is available");
    return;
  }
  Envelope reply;
  ServerAssignment* a = reply.mutable_server_assignment();
  a->set_server_id(e->server_id);
  a->set_host(e->host);
  a->set_port(e->port);
  Send(reply);
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
  close_after_flush_ = true;
  write_signal_.cancel_one();
}

}  // namespace fastchat::balancer
