#include "frame_queue.h"

#include <vector>

#include <asio/redirect_error.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

namespace fastchat::server {
namespace {
constexpr std::size_t kMaxGatherFrames = 512;
static_assert(kMaxGatherFrames <= UINT16_MAX, "FrameQueue::writing_ is 16 bits");
constexpr std::size_t kMaxGatherBytes = 1u << 20;
}  // namespace

FrameQueue::FrameQueue() = default;
FrameQueue::~FrameQueue() = default;

void FrameQueue::SetWriter(void (*start)(void* context), void* context) {
  start_writer_ = start;
  writer_context_ = context;
  Wake();
}

void FrameQueue::Wake() {
  if (more_) more_->cancel_one();
  if (!start_writer_ || running_ || stop_) return;
  if ((frames_ && !frames_->empty()) || stop_after_flush_) {
    running_ = true;
    start_writer_(writer_context_);
  }
}

void FrameQueue::Push(std::string head, std::shared_ptr<const std::string> body) {
  if (stopping()) return;
  PushHeld(std::move(head), std::move(body));
  Wake();
}

void FrameQueue::PushHeld(std::string head, std::shared_ptr<const std::string> body) {
  if (stopping()) return;
  Frame f{std::move(head), std::move(body)};
  if (bytes_ == 0) last_progress_ = std::chrono::steady_clock::now();
  bytes_ += f.size();
  if (!frames_) frames_ = std::make_unique<std::deque<Frame>>();
  frames_->push_back(std::move(f));
}

void FrameQueue::DropUnsent() {
  if (!frames_) return;
  while (frames_->size() > writing_) {
    bytes_ -= frames_->back().size();
    frames_->pop_back();
  }
  if (drained_) drained_->cancel();
}

void FrameQueue::Stop() {
  stop_ = true;
  if (more_) more_->cancel();
  if (drained_) drained_->cancel();
}

void FrameQueue::StopAfterFlush() {
  stop_after_flush_ = true;
  if (more_) more_->cancel();
  Wake();
}

asio::awaitable<void> FrameQueue::Run(net::Stream& stream) {
  running_ = true;
  std::vector<asio::const_buffer> bufs;
  while (!stop_) {
    if (!frames_ || frames_->empty()) {
      if (stop_after_flush_) break;
      frames_.reset();  // idle: hold no queue
      if (start_writer_) {
        // The next Push starts a writer again: none waits while idle.
        running_ = false;
        co_return;
      }
      std::vector<asio::const_buffer>().swap(bufs);
      if (!more_) {
        const auto ex = co_await asio::this_coro::executor;
        more_ = std::make_unique<asio::steady_timer>(ex, asio::steady_timer::time_point::max());
      }
      asio::error_code ec;
      co_await more_->async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    bufs.clear();
    std::size_t n = 0, total = 0;
    for (const Frame& f : *frames_) {
      if (n == kMaxGatherFrames || (n > 0 && total >= kMaxGatherBytes)) break;
      if (!f.head.empty()) bufs.emplace_back(f.head.data(), f.head.size());
      if (f.body) bufs.emplace_back(f.body->data(), f.body->size());
      total += f.size();
      ++n;
    }
    // Deque elements do not move when others are pushed (or dropped behind
    // the `writing_` frames), so the buffers stay valid.
    writing_ = static_cast<std::uint16_t>(n);
    co_await stream.Write(bufs, [this] { last_progress_ = std::chrono::steady_clock::now(); });
    writing_ = 0;
    if (stop_) break;
    for (std::size_t i = 0; i < n; ++i) {
      bytes_ -= frames_->front().size();
      frames_->pop_front();
    }
    if (drained_) drained_->cancel();
  }
  stop_ = true;
  if (drained_) drained_->cancel();
}

asio::awaitable<void> FrameQueue::WaitBelow(std::size_t limit) {
  if (stop_ || bytes_ <= limit) co_return;
  if (!drained_) {
    const auto ex = co_await asio::this_coro::executor;
    drained_ = std::make_unique<asio::steady_timer>(ex, asio::steady_timer::time_point::max());
  }
  ++drain_waiters_;
  while (!stop_ && bytes_ > limit) {
    asio::error_code ec;
    co_await drained_->async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  if (--drain_waiters_ == 0) drained_.reset();
}

}  // namespace fastchat::server
