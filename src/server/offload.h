// Offload: run a blocking function on another executor and resume the
// awaiting coroutine on its own executor with the result.
//
// `R r = co_await Offload(pool.get_executor(), [..]() { return ...; });`
// The function runs exactly once, on `ex`.
//
// GCC 12 destroys some non-trivial temporaries of a co_await full-expression
// twice (a lambda with captured strings passed straight into the awaited call
// crashed the server). So callers name the callable first and pass it by
// reference; nothing non-trivial is a temporary of the co_await expression.
#pragma once

#include <type_traits>
#include <utility>

#include <asio/async_result.hpp>
#include <asio/awaitable.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>
#include <asio/use_awaitable.hpp>

namespace fastchat::server {

// Takes `f` by reference and moves from it: call as
//   auto job = [...]() {...};
//   R r = co_await Offload(ex, std::move(job));
// so no callable temporary lives across the co_await (see above).
template <class Executor, class F>
auto Offload(const Executor& ex, F&& f) -> asio::awaitable<std::invoke_result_t<std::decay_t<F>&>> {
  using Fn = std::decay_t<F>;
  using R = std::invoke_result_t<Fn&>;
  return asio::async_initiate<const asio::use_awaitable_t<>&, void(R)>(
      [ex](auto handler, Fn fn) {
        auto work = asio::make_work_guard(asio::get_associated_executor(handler));
        asio::post(ex, [fn = std::move(fn), handler = std::move(handler), work = std::move(work)]() mutable {
          R result = fn();
          auto home = work.get_executor();
          asio::post(home, [handler = std::move(handler), result = std::move(result)]() mutable {
            std::move(handler)(std::move(result));
          });
        });
      },
      asio::use_awaitable, Fn(std::move(f)));
}

}  // namespace fastchat::server
