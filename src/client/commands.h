// Commands: the user-level command language shared by interactive mode and
// one-shot invocations ("fastchat single_message bob hi there").
//
// Promises: parsing never fails on any input (unknown commands and wrong
// arities become USAGE results when run); the last TEXT/PATH/NAME argument
// takes the rest of the line verbatim; RunCommand emits exactly one "result"
// event per command; every command and session mode has a help entry with
// usage, a description and an example (HelpFor).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <asio/awaitable.hpp>

namespace fastchat::client {

class ClientCore;
class Output;

struct Command {
  std::string name;               // canonical name ("help" for "\help")
  std::vector<std::string> args;  // as parsed
  bool arity_ok = false;          // args match the command's signature
};

// Command names: the seed's (single_message), "/" and the seed's name
// (/single_message), and short aliases (/msg; HelpText lists them) are
// the same command.

// Parses one line typed in interactive mode. Returns false for a blank line.
// Words may be "double quoted"; the last argument takes the rest of the line
// (surrounding quotes removed).
bool ParseLine(std::string_view line, Command* cmd);

// Command-line words after the options: the first "--" ends the options
// (CLI11 passes it on) and is removed; any later "--" is an ordinary word.
// Lines typed in chat are never option-parsed: there "--" is text.
void DropEndOfOptions(std::vector<std::string>* words);

// Builds a command from argv words: words[0] is the name; surplus words are
// joined with spaces into the last argument.
Command FromWords(const std::vector<std::string>& words);

// True for names handled by RunCommand (not register/chat/listen/...).
bool IsKnownCommand(const std::string& name);
bool IsQuit(const std::string& name);
// True for commands that read the local store only (no login needed).
bool IsLocalCommand(const std::string& name);

// "usage: single_message USER TEXT..." for a known command.
std::string Usage(const std::string& name);
// The list of every command.
std::string HelpText();
// Every name `help NAME` explains: the commands, then the session modes.
std::vector<std::string> HelpTopics();
// Usage, what it does and an example for a command or session mode; false
// for an unknown name.
bool HelpFor(const std::string& topic, std::string* text);
// What the line editor completes: every command name, /name and alias.
std::vector<std::string> CompletionWords();
// What argument `index` (0-based) of `command` names, for completion.
enum class ArgKind { kNone, kUser, kGroup, kUserOrGroup, kCommand, kPath };
ArgKind KindOfArgument(const std::string& command, std::size_t index);
// One entry of the help, as data (for the man page).
struct HelpEntry {
  std::string name;       // "single_message", "chat", "\\q"
  std::string signature;  // "single_message USER TEXT..."
  std::string summary;    // one line
  std::string details;
  std::string example;    // a command: as typed in chat; a session mode: a fastchat command line
  std::string aliases;    // "/msg" ("" if none; /NAME always works)
  bool session = false;   // a mode of the fastchat program, not a command
};
// Every topic of HelpTopics(), in that order.
std::vector<HelpEntry> HelpEntries();
// Emits the result of `help [TOPIC]` (the list if `topic` is empty), or a
// USAGE error for an unknown topic; returns whether it was ok.
bool EmitHelp(Output& out, const std::string& topic);

// Runs `cmd` and emits its result event; returns true on success.
asio::awaitable<bool> RunCommand(ClientCore& core, Output& out, Command cmd);

// Emits {"type":"result","cmd":cmd,"ok":false,"code":code,"error":message}.
void EmitError(Output& out, const std::string& cmd, const std::string& code, const std::string& message);

}  // namespace fastchat::client
