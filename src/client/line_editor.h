// LineEditor: the prompt of interactive chat on a terminal, with line
// editing, a history of the lines typed and tab completion (libedit).
//
// Promises:
// - Next() completes with each line typed (without its newline), or false
//   at the end of input (Ctrl-D on an empty line, the terminal gone) or
//   after Cancel(). It never blocks the io_context: keys are read as the
//   terminal has them.
// - While a prompt is shown, Hide() takes the prompt and the partial line
//   off the screen and Show() draws them again below what was written in
//   between, intact (text, cursor position): so events appear above the
//   line being typed (Output::SetLineOwner). Between lines (a command
//   running) both do nothing; keys typed then are not echoed, and show
//   after the next prompt as if typed there.
// - Tab completes the word before the cursor from Completer's candidates:
//   one candidate replaces it, with a space after it unless it ends with
//   '/' (a folder), several are shortened
//   to their common prefix or, if that adds nothing, listed above the line.
// - The lines typed are remembered for Up/Down in memory only, never on
//   disk (they hold message text, which is kept sealed elsewhere).
// - The terminal is put back the way it was when the editor is destroyed.
// Single-threaded: use it on the io_context's thread.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <asio/awaitable.hpp>

#include "output.h"

namespace asio {
class io_context;
}  // namespace asio

namespace fastchat::client {

class LineEditor : public LineOwner {
 public:
  // Candidates for the word that starts at `before_cursor`'s last word (the
  // whole text before the cursor is given).
  using Completer = std::function<std::vector<std::string>(const std::string& before_cursor)>;

  // Uses the process's standard input and output, which must be terminals.
  LineEditor(asio::io_context& ioc, std::string prompt, Completer completer);
  ~LineEditor() override;
  LineEditor(const LineEditor&) = delete;
  LineEditor& operator=(const LineEditor&) = delete;

  asio::awaitable<bool> Next(std::string* line);
  void Cancel();

  void Hide() override;
  void Show() override;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// True if chat should use a LineEditor: standard input and output are
// terminals.
bool InteractiveTerminal();

// The completion rule of chat, given the text before the cursor: the first
// word from `commands`; then by the command's argument (KindOfArgument):
// `users`, `groups`, both, `commands` again (help), or the files whose path
// starts with the word (PATH; folders end with '/', hidden files only if the
// word's file part starts with a dot). Only candidates that start with the
// word being typed, and hold no blank, are returned, sorted.
std::vector<std::string> ChatCompletions(const std::string& before_cursor, const std::vector<std::string>& commands,
                                         const std::vector<std::string>& users,
                                         const std::vector<std::string>& groups);

}  // namespace fastchat::client
