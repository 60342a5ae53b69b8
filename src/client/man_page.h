// The manual page of the fastchat program (roff, man(7) macros), made from
// the same entries as `fastchat help COMMAND` (commands.h), so the two
// cannot disagree. docs/fastchat.1 is its output (a test keeps it so;
// regenerate with build/default/src/client/fastchat-man > docs/fastchat.1).
//
// Promises: every topic of HelpTopics() has an entry that starts with
// ".TP\n.B NAME" and holds its usage, summary, details and example; every
// option of the fastchat program is described under OPTIONS.
#pragma once

#include <string>

namespace fastchat::client {

std::string ManPage();

}  // namespace fastchat::client
