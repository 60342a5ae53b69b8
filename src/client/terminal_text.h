// Terminal text: what may reach a terminal from text other people chose
// (messages, user names, file titles, group names).
//
// Promises:
// - SafeForTerminal returns valid UTF-8 with no C0 control character, no
//   DEL, no C1 control (U+0080..U+009F), and no bidirectional formatting
//   character (U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069) nor
//   line/paragraph separator (U+2028, U+2029): so no escape sequence (ESC,
//   CSI, OSC, DCS, ...) can start, no line can be faked and no text can be
//   shown reversed. A tab becomes a space; a line break becomes U+21B5 (↵);
//   anything else removed becomes U+FFFD (�), as do bytes that are not UTF-8.
//   Everything else (letters of any script, emoji) is kept as is.
// - SafeJsonLine takes one line of compact JSON (as nlohmann's dump with
//   ensure_ascii=false and the replace error handler makes it: valid UTF-8,
//   C0 characters already escaped) and writes DEL, the C1 controls and the
//   characters above as \uXXXX escapes: the line parses to the same value,
//   and no byte of it can drive a terminal.
#pragma once

#include <string>
#include <string_view>

namespace fastchat::client {

std::string SafeForTerminal(std::string_view text);

std::string SafeJsonLine(std::string_view json);

}  // namespace fastchat::client
