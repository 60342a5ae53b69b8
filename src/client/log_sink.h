// The client's log (spdlog) as it reaches standard error: one line per
// message, shown through SafeForTerminal (log lines quote servers' error
// messages and other users' names), and written around the LineOwner if
// one is set, so that a warning during chat appears above the line being
// typed instead of through it.
#pragma once

#include <memory>

#include "output.h"

namespace fastchat::client {

class LogLines {
 public:
  virtual ~LogLines() = default;
  // From now on (nullptr: none).
  virtual void SetLineOwner(LineOwner* owner) = 0;
};

// Makes the default spdlog logger (named `name`) write to standard error
// this way; the returned handle stays valid for the life of the program.
LogLines* InstallSafeStderrLogger(const char* name);

}  // namespace fastchat::client
