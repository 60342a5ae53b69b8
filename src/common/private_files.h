// Private files and folders: what FastChat keeps its databases and keys in
// may be used by their owner only, whatever the umask of the process that
// made them.
#pragma once

#include <functional>
#include <string>

#include "fastchat/status.h"

namespace fastchat {

// Creates the folder `dir` and any of its missing parents with mode 0700.
// Folders that exist are left as they are. kIOError (naming the folder) if
// one cannot be made.
Status MakePrivateDirs(const std::string& dir);

// Creates `path` as an empty file with mode 0600 if nothing is there
// (*created = true); leaves an existing file alone (*created = false).
// kIOError if it cannot be created.
Status CreatePrivateFile(const std::string& path, bool* created);

// If `path` exists and its group or others have any permission on it, sets
// its mode to 0600 (owner read and write) and sets *old_mode to the
// permission bits it had; otherwise leaves it and sets *old_mode to 0. A
// missing file is OK (nothing to do). kIOError if it cannot be changed.
Status MakeOwnerOnly(const std::string& path, unsigned* old_mode);

// MakeOwnerOnly for the SQLite database `db` and each file SQLite keeps
// beside it (db-wal, db-shm, db-journal). For each file whose mode it
// changed it calls `report` with a line for the log, e.g. "server.db was open
// to other users (mode 0644); set its mode to 0600".
Status MakeDatabaseOwnerOnly(const std::string& db, const std::function<void(const std::string& line)>& report);

// "0644": permission bits as chmod writes them.
std::string ModeString(unsigned mode);

}  // namespace fastchat
