#include "man_page.h"

#include <vector>

#include "commands.h"

namespace fastchat::client {

namespace {

// Text as roff shows it: backslashes escaped, hyphens as minus signs where
// they start an option, and no line starting with a control character.
std::string Roff(const std::string& text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '\\') {
      out += "\\e";
    } else if (c == '-' && (i == 0 || text[i - 1] == ' ' || text[i - 1] == '-')) {
      out += "\\-";
    } else {
      out += c;
    }
  }
  if (!out.empty() && (out[0] == '.' || out[0] == '\'')) out = "\\&" + out;
  return out;
}

// "single_message USER TEXT..." as "\fBsingle_message\fR \fIUSER TEXT...\fR".
std::string Usage(const HelpEntry& e) {
  std::string rest = e.signature.substr(e.name.size());
  std::string out = "\\fB" + Roff(e.name) + "\\fR";
  if (!rest.empty()) out += " \\fI" + Roff(rest.substr(1)) + "\\fR";
  return out;
}

struct Option {
  const char* flags;
  const char* text;
};

// The options of main.cc (the man page test checks them against --help).
const std::vector<Option>& Options() {
  static const std::vector<Option> options = {
      {"--server HOST:PORT", "The server (default 127.0.0.1:7400; $FASTCHAT_SERVER)."},
      {"--balancer HOST:PORT",
       "A balancer to ask for a server (repeatable, or comma-separated; $FASTCHAT_BALANCER); used unless "
       "--server is given."},
      {"--home DIR", "Folder of local key stores (default $HOME/.fastchat; $FASTCHAT_HOME)."},
      {"--user NAME|ID", "Your user name or id ($FASTCHAT_USER)."},
      {"--password PASSWORD", "Your password ($FASTCHAT_PASSWORD); asked on the terminal if not given."},
      {"--new-password PASSWORD",
       "change_password: the new password ($FASTCHAT_NEW_PASSWORD); else asked twice on the terminal."},
      {"--downloads DIR", "Where received files go (default <home>/downloads/<name>)."},
      {"--json", "One JSON object per line on standard output, for programs."},
      {"--kdf min|interactive|moderate", "Argon2id cost for a new local key store (default interactive)."},
      {"--record FILE", "Append every received Deliver frame to FILE (see decrypt-frames)."},
      {"-v, --verbose", "Log details to standard error."},
      {"--tls-pin SHA256",
       "Accept only the server certificate with this SHA-256 fingerprint ($FASTCHAT_TLS_PIN)."},
      {"--tls-ca FILE", "Verify the server's certificate chain and name against this CA file ($FASTCHAT_TLS_CA)."},
      {"--insecure-plain-tcp", "No TLS, for a server started so (tests only): passwords cross the network in clear."},
      {"--", "Ends the options: what follows is the command and its text, even if it starts with a dash."},
  };
  return options;
}

std::string Entry(const HelpEntry& e) {
  std::string s = ".TP\n.B " + Roff(e.name) + "\n";
  s += e.session ? "fastchat [\\fIoptions\\fR] " + Usage(e) + "\n.br\n" : Usage(e) + "\n.br\n";
  s += Roff(e.summary) + ".\n" + Roff(e.details) + "\n";
  if (!e.session && e.name != "\\q")
    s += ".br\nIn chat also \\fB/" + Roff(e.name) + "\\fR" + (e.aliases.empty() ? "" : ", \\fB" + Roff(e.aliases) + "\\fR") +
         ".\n";
  s += ".br\nExample: \\fB" + Roff(e.example) + "\\fR\n";
  return s;
}

}  // namespace

std::string ManPage() {
  std::string s;
  s += ".\\\" Generated from the help of fastchat (src/client/commands.cc) by fastchat-man: do not edit.\n";
  s += ".TH FASTCHAT 1 \"\" \"FastChat\" \"User Commands\"\n";
  s += ".SH NAME\nfastchat \\- end-to-end encrypted chat client\n";
  s += ".SH SYNOPSIS\n";
  s += ".B fastchat\n[\\fIoptions\\fR] \\fBregister\\fR \\fINAME\\fR\n.br\n";
  s += ".B fastchat\n[\\fIoptions\\fR] \\fBchat\\fR | \\fBlisten\\fR | \\fBpending\\fR | \\fBchange_password\\fR\n.br\n";
  s += ".B fastchat\n[\\fIoptions\\fR] [\\fB\\-\\-\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR...]\n.br\n";
  s += ".B fastchat help\n[\\fICOMMAND\\fR]\n";
  s += ".SH DESCRIPTION\n";
  s += "FastChat is an end-to-end encrypted chat system. \\fBfastchat\\fR registers users, keeps their keys in a "
       "local store sealed under their password, and sends and receives messages and files to friends and "
       "groups through a FastChat server, which never sees their content.\n";
  s += ".PP\nEvery command can be typed in \\fBchat\\fR or given on the command line (one-shot). A USER is a "
       "name or numeric id; a GROUP is a group id or name. The last argument takes the rest of the line.\n";
  s += ".SH OPTIONS\n";
  for (const auto& o : Options()) s += ".TP\n.B " + Roff(o.flags) + "\n" + Roff(o.text) + "\n";
  s += ".SH COMMANDS\n";
  for (const auto& e : HelpEntries())
    if (!e.session) s += Entry(e);
  s += ".SH SESSION MODES\n";
  for (const auto& e : HelpEntries())
    if (e.session) s += Entry(e);
  s += ".SH INTERACTIVE CHAT\n";
  s += "On a terminal, \\fBchat\\fR shows a prompt with line editing (emacs keys). Tab completes command "
       "names, then friend names, group names and file paths as the command expects them; Up and Down go through the lines "
       "typed in this session (kept in memory only). Messages that arrive are printed above the line being "
       "typed, which is drawn again intact below them. Ctrl-D on an empty line, or \\fB\\eq\\fR, ends the "
       "session. When standard input or output is not a terminal, or with \\fB\\-\\-json\\fR, \\fBchat\\fR "
       "reads plain lines, one command each.\n";
  s += ".PP\nText chosen by other users (messages, names, file titles, group names) is shown without the "
       "characters that steer a terminal: control characters, escape sequences, C1 controls and "
       "bidirectional overrides become \\(u+FFFD (\\(u+21B5 for a line break); with \\fB\\-\\-json\\fR they "
       "are written as \\eu escapes.\n";
  s += ".SH EXIT STATUS\n0 if the command succeeded, 1 if it failed, 2 for a command line that does not parse.\n";
  s += ".SH FILES\n.TP\n.I ~/.fastchat/NAME.fcdb\nThe local store of user NAME: keys and history, sealed under "
       "the password.\n.TP\n.I ~/.fastchat/known_servers\nServer certificates trusted on first use.\n";
  s += ".SH SEE ALSO\n\\fBfastchat\\-server\\fR(1), \\fBfastchat help\\fR \\fICOMMAND\\fR\n";
  return s;
}

}  // namespace fastchat::client
