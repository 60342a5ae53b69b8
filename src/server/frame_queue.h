// FrameQueue: the outgoing side of one connection (client session or mesh
// link): a queue of whole frames and the coroutine that writes them.
//
// Push() never blocks. Run() writes queued frames in order, gathering up to
// 512 frames (or ~1 MiB) into one write, so a burst costs few syscalls. A frame
// may be split into an owned head and a shared body, so one stored event can
// go to many connections without being copied. Used from one thread only.
//
// Idle, a queue holds no frames, no timers and (with SetWriter) no writer
// coroutine: an idle client connection's queue is the FrameQueue object alone.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>

#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>

#include "net/stream.h"

namespace fastchat::server {

class FrameQueue {
 public:
  FrameQueue();
  ~FrameQueue();
  FrameQueue(const FrameQueue&) = delete;
  FrameQueue& operator=(const FrameQueue&) = delete;

  // Writer on demand: from now on, whenever frames arrive at a queue with no
  // writer running (or StopAfterFlush() is called on one), `start` is called
  // and must start a coroutine that co_awaits Run(), which then returns once
  // the queue is empty. Called at once if frames already wait. Without a
  // SetWriter, Run() waits for more frames instead of returning.
  // (`start(context)`: a function pointer and its argument, 16 bytes, where
  // a std::function would take 32 in every idle connection.)
  void SetWriter(void (*start)(void* context), void* context);

  // Appends a frame (head bytes followed by *body, if any). Ignored once
  // stopping.
  void Push(std::string head, std::shared_ptr<const std::string> body = nullptr);
  // Appends a frame like Push but starts no writer for it: it leaves with
  // the next frame Pushed (or with a writer already running), in one write.
  // The caller must know that a Push follows.
  void PushHeld(std::string head, std::shared_ptr<const std::string> body);
  std::size_t bytes() const { return bytes_; }
  // When bytes last left (or, if none since, when the queue stopped being
  // empty): a queue holding bytes since long ago is stalled.
  std::chrono::steady_clock::time_point last_progress() const { return last_progress_; }
  // Drops the queued frames that are not being written right now (a
  // connection being closed whose pushes are in the store anyway).
  void DropUnsent();

  // Writes frames until Stop(), or until empty after StopAfterFlush(), or
  // (with SetWriter) until empty. Throws asio::system_error on a socket error.
  asio::awaitable<void> Run(net::Stream& stream);
  // Ends Run() now; queued frames are dropped.
  void Stop();
  // Ends Run() once everything queued so far is written; later pushes are dropped.
  void StopAfterFlush();
  bool stopping() const { return stop_ || stop_after_flush_; }

  // Resumes once the queue holds at most `bytes` (or Run() has ended).
  asio::awaitable<void> WaitBelow(std::size_t bytes);

 private:
  struct Frame {
    std::string head;
    std::shared_ptr<const std::string> body;
    std::size_t size() const { return head.size() + (body ? body->size() : 0); }
  };
  // Allocated while frames wait and freed once all are written: an idle
  // connection holds no queue (an empty std::deque still costs ~600 bytes).
  // A deque because queued frames must not move while a write gathers them.
  std::unique_ptr<std::deque<Frame>> frames_;
  std::size_t bytes_ = 0;
  std::chrono::steady_clock::time_point last_progress_;
  void (*start_writer_)(void*) = nullptr;  // SetWriter
  void* writer_context_ = nullptr;
  // Timers exist only while someone waits on them.
  std::unique_ptr<asio::steady_timer> more_;     // wakes Run() when frames arrive or on stop (no SetWriter)
  std::unique_ptr<asio::steady_timer> drained_;  // wakes WaitBelow() when frames leave
  // 16 bits each, so that they and the flags fill one 8-byte word.
  std::uint16_t writing_ = 0;        // frames at the front taken by the write in progress (<= kMaxGatherFrames)
  std::uint16_t drain_waiters_ = 0;  // coroutines in WaitBelow() (a session has at most two)
  bool stop_ = false;
  bool stop_after_flush_ = false;
  bool running_ = false;  // a writer is in Run() (or about to enter it)
  // Starts the SetWriter writer if there is one, none runs, and it has work.
  void Wake();
};

}  // namespace fastchat::server
