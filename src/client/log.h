#pragma once
// The client's log lines (spdlog), through plain functions: GCC 12
// miscompiles fmt's compile-time format strings inside coroutines, so
// coroutine code formats its text first and logs it through these.

#include <string>

namespace fastchat::client {

void LogWarn(const std::string& m);
void LogInfo(const std::string& m);
void LogDebug(const std::string& m);

}  // namespace fastchat::client
