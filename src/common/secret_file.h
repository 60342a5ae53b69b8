// Cluster secrets: read from a file only its owner can read, and checked
// the same way by every program that needs one (fastchat-server,
// fastchat-balancer).
#pragma once

#include <cstddef>
#include <string>

#include "fastchat/status.h"

namespace fastchat {

// The shortest cluster secret accepted, in bytes.
inline constexpr std::size_t kMinSecretBytes = 16;

// Reads the secret in the file `path` into *out.
//
// Promises:
//  - *out is the file's bytes with one trailing newline ("\n" or "\r\n")
//    removed if there is one, and nothing else: spaces, tabs, a lone "\r" and
//    any newline before the last are part of the secret.
//  - Refused with kBadRequest (the message names the file and the fix): a
//    path that is not a regular file; a file whose mode gives its group or
//    others any permission (mode & 077); a secret shorter than
//    kMinSecretBytes (an empty file included).
//  - A file that cannot be opened or read: kIOError with the system's reason.
//  - *out is set only on success.
Status ReadSecretFile(const std::string& path, std::string* out);

// A program's cluster secret from its two settings: read from `file`
// (--cluster-secret-file) if that is not empty, otherwise the value already
// in *secret (--cluster-secret, on the command line or in a --config file).
// Either way it is checked: kBadRequest if shorter than kMinSecretBytes, and
// ReadSecretFile's refusals for the file. The message says what to fix.
Status LoadClusterSecret(const std::string& file, std::string* secret);

// What a program logs (as a warning) when its cluster secret was given on
// the command line.
inline constexpr char kSecretOnCommandLineWarning[] =
    "--cluster-secret on the command line is visible to every local user in the process list; put the secret "
    "in a file only this user can read and pass --cluster-secret-file";

// True if `flag` (e.g. "--cluster-secret") is among the program's arguments,
// as "--flag VALUE" or "--flag=VALUE": a value given there is visible to
// every local user in the process list, unlike one from a file.
bool FlagOnCommandLine(int argc, char** argv, const std::string& flag);

}  // namespace fastchat
