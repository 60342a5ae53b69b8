#include "log_sink.h"

#include <cstdio>
#include <mutex>
#include <string>

#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include "terminal_text.h"

namespace fastchat::client {

namespace {

class SafeStderrSink final : public spdlog::sinks::base_sink<std::mutex>, public LogLines {
 public:
  void SetLineOwner(LineOwner* owner) override {
    std::lock_guard<std::mutex> lock(mutex_);
    owner_ = owner;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t formatted;
    formatter_->format(msg, formatted);
    std::string_view text(formatted.data(), formatted.size());
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
    std::string line = SafeForTerminal(text) + "\n";
    if (owner_ != nullptr) owner_->Hide();
    std::fwrite(line.data(), 1, line.size(), stderr);
    std::fflush(stderr);
    if (owner_ != nullptr) owner_->Show();
  }
  void flush_() override { std::fflush(stderr); }

 private:
  LineOwner* owner_ = nullptr;
};

}  // namespace

LogLines* InstallSafeStderrLogger(const char* name) {
  auto sink = std::make_shared<SafeStderrSink>();
  auto logger = std::make_shared<spdlog::logger>(name, sink);
  spdlog::set_default_logger(logger);
  return sink.get();  // the logger keeps the sink for the life of the program
}

}  // namespace fastchat::client
