// Latch and Signal: waiting points for coroutines on one io_context thread.
//
// Promises: a Latch, once Set(), stays set, and every Wait() (before or
// after) completes. Signal::NotifyAll() wakes every coroutine waiting at that
// moment; waiters re-check their condition (a condition variable for one
// thread). Neither is thread-safe.
#pragma once

#include <algorithm>
#include <system_error>
#include <vector>

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

namespace fastchat::client {

// Wakes every coroutine waiting in Wait() (a condition variable for one
// thread: waiters re-check their condition after each wake).
class Signal {
 public:
  explicit Signal(asio::io_context& ioc) : ioc_(ioc) {}
  void NotifyAll() {
    for (asio::steady_timer* t : waiters_) t->cancel();
  }
  asio::awaitable<void> Wait() {
    asio::steady_timer t(ioc_, asio::steady_timer::time_point::max());
    waiters_.push_back(&t);
    std::error_code ec;
    co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    std::erase(waiters_, &t);
  }

 private:
  asio::io_context& ioc_;
  std::vector<asio::steady_timer*> waiters_;
};

// A one-shot flag coroutines can wait for.
class Latch {
 public:
  explicit Latch(asio::io_context& ioc) : signal_(ioc) {}
  bool is_set() const { return set_; }
  void Set() {
    set_ = true;
    signal_.NotifyAll();
  }
  asio::awaitable<void> Wait() {
    while (!set_) co_await signal_.Wait();
  }

 private:
  bool set_ = false;
  Signal signal_;
};

}  // namespace fastchat::client
