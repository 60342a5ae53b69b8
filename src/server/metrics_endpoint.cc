#include "metrics_endpoint.h"

#include <string_view>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/read_until.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <spdlog/spdlog.h>

#include "common/listen.h"

namespace fastchat::server {

struct MetricsEndpoint::Impl : std::enable_shared_from_this<MetricsEndpoint::Impl> {
  Impl(asio::io_context& io_in, Render render_in) : io(io_in), render(std::move(render_in)), acceptor(io_in) {}

  asio::awaitable<void> AcceptLoop();
  asio::awaitable<void> Serve(asio::ip::tcp::socket socket);

  asio::io_context& io;
  Render render;
  asio::ip::tcp::acceptor acceptor;
  std::size_t open = 0;
  bool stopping = false;
};

namespace {

std::string Response(std::string_view status, std::string_view content_type, const std::string& body,
                     bool with_body) {
  std::string r = "HTTP/1.1 ";
  r += status;
  r += "\r\nContent-Type: ";
  r += content_type;
  r += "\r\nContent-Length: " + std::to_string(body.size());
  r += "\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n";
  if (with_body) r += body;
  return r;
}

std::string Plain(std::string_view status, const std::string& text) {
  return Response(status, "text/plain; charset=utf-8", text + "\n", true);
}

}  // namespace

asio::awaitable<void> MetricsEndpoint::Impl::AcceptLoop() {
  auto self = shared_from_this();
  while (!stopping) {
    asio::error_code ec;
    asio::ip::tcp::socket socket = co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping) co_return;
    if (ec) {
      spdlog::warn("metrics: accept failed: {}", ec.message());
      asio::steady_timer t(io, std::chrono::milliseconds(50));
      co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    if (open >= kMaxConnections) {
      socket.close(ec);  // a scraper needs one at a time
      continue;
    }
    ++open;
    asio::co_spawn(io, Serve(std::move(socket)), asio::detached);
  }
}

asio::awaitable<void> MetricsEndpoint::Impl::Serve(asio::ip::tcp::socket accepted) {
  auto self = shared_from_this();
  // Shared with the deadline's handler, which may run after this coroutine ends.
  auto shared = std::make_shared<asio::ip::tcp::socket>(std::move(accepted));
  asio::ip::tcp::socket& socket = *shared;
  asio::steady_timer deadline(io, kDeadline);
  deadline.async_wait([shared](const asio::error_code& ec) {
    asio::error_code ignored;
    if (!ec) shared->close(ignored);  // fails the read or write below
  });
  std::string head;
  asio::error_code ec;
  co_await asio::async_read_until(socket, asio::dynamic_buffer(head, kMaxRequestBytes), "\r\n\r\n",
                                  asio::redirect_error(asio::use_awaitable, ec));
  std::string answer;
  if (ec == asio::error::not_found) {
    answer = Plain("431 Request Header Fields Too Large", "request head over " + std::to_string(kMaxRequestBytes) +
                                                              " bytes");
  } else if (!ec) {
    // Request line: METHOD SP TARGET SP VERSION.
    const std::string_view line = std::string_view(head).substr(0, head.find("\r\n"));
    const std::size_t sp1 = line.find(' ');
    const std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || line.substr(sp2 + 1).rfind("HTTP/1.", 0) != 0) {
      answer = Plain("400 Bad Request", "not an HTTP/1.x request line");
    } else {
      const std::string_view method = line.substr(0, sp1);
      std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
      target = target.substr(0, target.find('?'));
      const bool head_only = method == "HEAD";
      if (method != "GET" && !head_only) {
        answer = Plain("405 Method Not Allowed", "GET /metrics");
      } else if (target != "/metrics") {
        answer = Plain("404 Not Found", "metrics are at /metrics");
      } else {
        answer = Response("200 OK", "text/plain; version=0.0.4; charset=utf-8", render(), !head_only);
      }
    }
  }
  if (!answer.empty()) {
    co_await asio::async_write(socket, asio::buffer(answer), asio::redirect_error(asio::use_awaitable, ec));
    socket.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  }
  deadline.cancel();
  socket.close(ec);
  --open;
}

MetricsEndpoint::MetricsEndpoint(asio::io_context& io, Render render)
    : impl_(std::make_shared<Impl>(io, std::move(render))) {}

MetricsEndpoint::~MetricsEndpoint() {
  Stop();
}

Status MetricsEndpoint::Start(const std::string& host, std::uint16_t port, std::uint16_t* bound_port) {
  asio::error_code ec;
  const asio::ip::address addr = asio::ip::make_address(host, ec);
  if (!ec && !addr.is_loopback()) {
    return Status(Code::kBadRequest, "metrics are served on a loopback address only (127.0.0.1 or ::1), not '" +
                                         host + "': scrape them through a local agent or a tunnel");
  }
  Status st = Listen(impl_->acceptor, host, port, "metrics", bound_port);
  if (!st.ok()) return st;
  asio::co_spawn(impl_->io, impl_->AcceptLoop(), asio::detached);
  return Status::OK();
}

void MetricsEndpoint::Stop() {
  impl_->stopping = true;
  asio::error_code ec;
  impl_->acceptor.close(ec);
}

}  // namespace fastchat::server
