#include "common/secret_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/private_files.h"

namespace fastchat {
namespace {

Status SystemError(const std::string& what, const std::string& path) {
  return Status(Code::kIOError, what + " " + path + ": " + std::strerror(errno));
}

}  // namespace

Status ReadSecretFile(const std::string& path, std::string* out) {
  // O_NONBLOCK: a FIFO named by mistake is refused below instead of blocking
  // the open. The checks are on the opened file, not on the path again.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return SystemError("cannot open the secret file", path);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return SystemError("cannot stat the secret file", path);
  if (!S_ISREG(st.st_mode)) {
    return Status(Code::kBadRequest, "the secret file " + path + " is not a regular file");
  }
  if ((st.st_mode & 077) != 0) {
    return Status(Code::kBadRequest, "the secret file " + path + " may be read or changed by other users (mode " +
                                         ModeString(st.st_mode) + "); make it the owner's only: chmod 600 " + path);
  }
  std::string data;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      return SystemError("cannot read the secret file", path);
    }
    data.append(buf, static_cast<std::size_t>(n));
  }
  if (!data.empty() && data.back() == '\n') {
    data.pop_back();
    if (!data.empty() && data.back() == '\r') data.pop_back();
  }
  if (data.size() < kMinSecretBytes) {
    return Status(Code::kBadRequest, "the secret in " + path + " is " + std::to_string(data.size()) +
                                         " bytes; at least " + std::to_string(kMinSecretBytes) + " are needed");
  }
  *out = std::move(data);
  return Status::OK();
}

Status LoadClusterSecret(const std::string& file, std::string* secret) {
  if (!file.empty()) return ReadSecretFile(file, secret);
  if (secret->size() >= kMinSecretBytes) return Status::OK();
  return Status(Code::kBadRequest,
                (secret->empty() ? std::string("no cluster secret given")
                                 : "the cluster secret is " + std::to_string(secret->size()) + " bytes") +
                    ": give --cluster-secret-file FILE (or --cluster-secret) with at least " +
                    std::to_string(kMinSecretBytes) + " bytes");
}

bool FlagOnCommandLine(int argc, char** argv, const std::string& flag) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == flag || arg.rfind(flag + "=", 0) == 0) return true;
  }
  return false;
}

}  // namespace fastchat
