// Output: where the client's events and command results go (stdout).
//
// Every event is a JSON object with a "type" (see the JSON contract in the
// client's docs). Promises: in JSON mode each event is exactly one line of
// compact JSON, flushed at once; in text mode each event becomes one or more
// friendly lines. Invalid UTF-8 in strings never aborts output (it is
// replaced). Warnings go to stdout too, so they are seen. No byte that can
// steer a terminal is written in either mode (terminal_text.h): in text mode
// every field is shown through SafeForTerminal, in JSON mode such characters
// are \u-escaped. If a LineOwner is set (the line editor of chat), each
// event is written between its Hide() and Show(), so it appears above the
// line being typed.
#pragma once

#include <string>

#include <nlohmann/json_fwd.hpp>

namespace fastchat::client {

using Json = nlohmann::ordered_json;

// Something that keeps a line at the bottom of the terminal (the prompt and
// what is being typed): Hide() takes it off the screen, leaving the cursor
// at the start of a line; Show() draws it again where the cursor is.
class LineOwner {
 public:
  virtual ~LineOwner() = default;
  virtual void Hide() = 0;
  virtual void Show() = 0;
};

class Output {
 public:
  // Text-mode "progress" events are drawn (one line, redrawn in place)
  // only when stdout is a terminal.
  explicit Output(bool json);
  bool json() const { return json_; }

  // Events are written around `owner` from now on (nullptr: none). The
  // owner must outlive its registration.
  void SetLineOwner(LineOwner* owner) { line_owner_ = owner; }

  void Emit(const Json& event);

  // Text-mode rendering of one event (exposed for tests).
  static std::string Human(const Json& event);

 private:
  bool json_;
  LineOwner* line_owner_ = nullptr;
  bool tty_;
  bool progress_open_ = false;    // a progress line is on the screen, unfinished
  int last_printed_percent_ = -1;  // chat: the last progress report printed (-1: none open)
};

}  // namespace fastchat::client
