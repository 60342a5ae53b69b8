// Output: where the client's events and command results go (stdout).
//
// Every event is a JSON object with a "type" (see the JSON contract in the
// client's docs). Promises: in JSON mode each event is exactly one line of
// compact JSON, flushed at once; in text mode each event becomes one or more
// friendly lines. Invalid UTF-8 in strings never aborts output (it is
// replaced). Warnings go to stdout too, so they are seen.
#pragma once

#include <string>

#include <nlohmann/json_fwd.hpp>

namespace fastchat::client {

using Json = nlohmann::ordered_json;

class Output {
 public:
  // Text-mode "progress" events are drawn (one line, redrawn in place)
  // only when stdout is a terminal.
  explicit Output(bool json);
  bool json() const { return json_; }

  void Emit(const Json& event);

  // Text-mode rendering of one event (exposed for tests).
  static std::string Human(const Json& event);

 private:
  bool json_;
  bool tty_;
  bool progress_open_ = false;  // a progress line is on the screen, unfinished
};

}  // namespace fastchat::client
