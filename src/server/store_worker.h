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
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>

#include "fastchat/store.h"
#include "offload.h"

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

  // Runs f(store) on the store thread; resumes the caller with its result.
  // Call as `auto job = [..](Store& s) {..}; co_await worker.Run(std::move(job));`
  // (see offload.h for why the job is named first).
  template <class F>
  auto Run(F&& f) -> asio::awaitable<std::invoke_result_t<std::decay_t<F>&, Store&>> {
    Store* store = store_.get();
    auto bound = [store, f = std::decay_t<F>(std::move(f))]() mutable { return f(*store); };
    return Offload(ctx_.get_executor(), std::move(bound));
  }

 private:
  std::unique_ptr<Store> store_;
  asio::io_context ctx_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  std::thread thread_;
};

}  // namespace fastchat::server
