#include "common/private_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

namespace fastchat {
namespace {

Status SystemError(const std::string& what, const std::string& path) {
  return Status(Code::kIOError, what + " " + path + ": " + std::strerror(errno));
}

}  // namespace

Status MakePrivateDirs(const std::string& dir) {
  if (dir.empty()) return Status::OK();
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return Status::OK();
    return Status(Code::kIOError, "cannot create the folder " + dir + ": something else is there");
  }
  // Parents first.
  const std::string parent = std::filesystem::path(dir).parent_path().string();
  if (!parent.empty() && parent != dir) {
    Status s = MakePrivateDirs(parent);
    if (!s.ok()) return s;
  }
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return SystemError("cannot create the folder", dir);
  // mkdir's mode is filtered by the umask; a private folder must not depend
  // on it being 0700 exactly, nor be left less than that.
  if (::chmod(dir.c_str(), 0700) != 0) return SystemError("cannot set the mode of", dir);
  return Status::OK();
}

Status CreatePrivateFile(const std::string& path, bool* created) {
  *created = false;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) return Status::OK();
    return SystemError("cannot create", path);
  }
  // open's mode is filtered by the umask: set it exactly.
  const bool ok = ::fchmod(fd, 0600) == 0;
  Status s = ok ? Status::OK() : SystemError("cannot set the mode of", path);
  ::close(fd);
  *created = true;
  return s;
}

Status MakeOwnerOnly(const std::string& path, unsigned* old_mode) {
  *old_mode = 0;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::OK();
    return SystemError("cannot stat", path);
  }
  const unsigned mode = st.st_mode & 07777u;
  if ((mode & 077u) == 0) return Status::OK();
  if (::chmod(path.c_str(), 0600) != 0) return SystemError("cannot set the mode of", path);
  *old_mode = mode;
  return Status::OK();
}

Status MakeDatabaseOwnerOnly(const std::string& db, const std::function<void(const std::string& line)>& report) {
  for (const std::string& path : {db, db + "-wal", db + "-shm", db + "-journal"}) {
    unsigned old_mode = 0;
    Status s = MakeOwnerOnly(path, &old_mode);
    if (!s.ok()) return s;
    if (old_mode != 0) {
      report(path + " was open to other users (mode " + ModeString(old_mode) + "); set its mode to 0600");
    }
  }
  return Status::OK();
}

std::string ModeString(unsigned mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", mode & 07777u);
  return buf;
}

}  // namespace fastchat
