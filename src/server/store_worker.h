// StoreWorker: runs Store calls on one dedicated thread so the event loop
// never blocks on the database.
//
// `co_await worker.Run([](Store& s) { ...; return result; })` runs the
// function on the store thread and resumes the caller on its own executor
// with the result. Calls run one at a time in submission order, so two calls
// made in order by the event loop take effect in that order.
#pragma once

#include <memory>
#include <thread>
#include <type_traits>
#include <utility>

#include <asio/awaitable.hpp>
#include <asio/co_spawn.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>

#include "fastchat/store.h"

namespace fastchat::server {

class StoreWorker {
 public:
  explicit StoreWorker(std::unique_ptr<Store> store)
      : store_(std::move(store)), guard_(asio::make_work_guard(ctx_)), thread_([this] { ctx_.run(); }) {}

  ~StoreWorker() {
    guard_.reset();
    thread_.join();  // finishes queued calls first
  }

  StoreWorker(const StoreWorker&) = delete;
  StoreWorker& operator=(const StoreWorker&) = delete;

  template <class F>
  auto Run(F f) -> asio::awaitable<std::invoke_result_t<F&, Store&>> {
    using R = std::invoke_result_t<F&, Store&>;
    Store* store = store_.get();
    co_return co_await asio::co_spawn(
        ctx_, [store, f = std::move(f)]() mutable -> asio::awaitable<R> { co_return f(*store); },
        asio::use_awaitable);
  }

 private:
  std::unique_ptr<Store> store_;
  asio::io_context ctx_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  std::thread thread_;
};

}  // namespace fastchat::server
