#include "frame_queue.h"

#include <vector>

#include <asio/completion_condition.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

namespace fastchat::server {
namespace {
constexpr std::size_t kMaxGatherFrames = 64;
constexpr std::size_t kMaxGatherBytes = 1u << 20;
}  // namespace

FrameQueue::FrameQueue(const asio::any_io_executor& ex) : more_(ex), drained_(ex) {
  more_.expires_at(asio::steady_timer::time_point::max());
  drained_.expires_at(asio::steady_timer::time_point::max());
}

void FrameQueue::Push(std::string head, std::shared_ptr<const std::string> body) {
  if (stopping()) return;
  Frame f{std::move(head), std::move(body)};
  if (bytes_ == 0) last_progress_ = std::chrono::steady_clock::now();
  bytes_ += f.size();
  if (!frames_) frames_ = std::make_unique<std::deque<Frame>>();
  frames_->push_back(std::move(f));
  more_.cancel_one();
}

void FrameQueue::DropUnsent() {
  if (!frames_) return;
  while (frames_->size() > writing_) {
    bytes_ -= frames_->back().size();
    frames_->pop_back();
  }
  drained_.cancel();
}

void FrameQueue::Stop() {
  stop_ = true;
  more_.cancel();
  drained_.cancel();
}

void FrameQueue::StopAfterFlush() {
  stop_after_flush_ = true;
  more_.cancel();
}

asio::awaitable<void> FrameQueue::Run(net::Stream& stream) {
  std::vector<asio::const_buffer> bufs;
  while (!stop_) {
    if (!frames_ || frames_->empty()) {
      if (stop_after_flush_) break;
      // Idle: hold no queue and no gather buffer while waiting.
      frames_.reset();
      std::vector<asio::const_buffer>().swap(bufs);
      asio::error_code ec;
      co_await more_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    bufs.clear();
    std::size_t n = 0, total = 0;
    for (const Frame& f : *frames_) {
      if (n == kMaxGatherFrames || (n > 0 && total >= kMaxGatherBytes)) break;
      bufs.emplace_back(f.head.data(), f.head.size());
      if (f.body) bufs.emplace_back(f.body->data(), f.body->size());
      total += f.size();
      ++n;
    }
    // Deque elements do not move when others are pushed (or dropped behind
    // the `writing_` frames), so the buffers stay valid.
    writing_ = n;
    co_await stream.Write(bufs, [this] { last_progress_ = std::chrono::steady_clock::now(); });
    writing_ = 0;
    if (stop_) break;
    for (std::size_t i = 0; i < n; ++i) {
      bytes_ -= frames_->front().size();
      frames_->pop_front();
    }
    drained_.cancel();
  }
  stop_ = true;
  drained_.cancel();
}

asio::awaitable<void> FrameQueue::WaitBelow(std::size_t limit) {
  while (!stop_ && bytes_ > limit) {
    asio::error_code ec;
    co_await drained_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

}  // namespace fastchat::server
