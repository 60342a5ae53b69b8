// store_fault_shim: an LD_PRELOAD library that makes the disk under a
// database fail on demand, for tests of what a server does then
// (tests/store_fault_test.cc).
//
// Environment:
//   FASTCHAT_FAULT_PATH     files whose path starts with this (the database
//                           and its -wal, -shm and -journal files) are hit
//   FASTCHAT_FAULT_CONTROL  a file; while it exists the fault is on. Its
//                           first word names the errno (ENOSPC, EIO, EROFS);
//                           an optional second word "sync" limits the fault
//                           to fsync/fdatasync (the data reached the page
//                           cache but not the disk).
//
// While the fault is on, writes (write, pwrite, writev, pwritev), syncs,
// truncations and fallocate on those files fail with that errno, and so do
// opens of them for writing. Everything else passes through untouched.
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

enum Op { kWrite, kSync, kOpen };

// The errno to fail `op` with, or 0. `path` is the file's path if known
// (opens), otherwise it is read from /proc/self/fd.
int FaultFor(enum Op op, int fd, const char* path) {
  const char* control = getenv("FASTCHAT_FAULT_CONTROL");
  const char* prefix = getenv("FASTCHAT_FAULT_PATH");
  if (control == nullptr || prefix == nullptr || prefix[0] == '\0') return 0;
  const int saved = errno;
  int fault = 0;
  auto real_open = reinterpret_cast<int (*)(const char*, int, ...)>(dlsym(RTLD_NEXT, "open"));
  auto real_read = reinterpret_cast<ssize_t (*)(int, void*, size_t)>(dlsym(RTLD_NEXT, "read"));
  const int cfd = real_open(control, O_RDONLY | O_CLOEXEC);
  if (cfd >= 0) {
    char word[64] = {};
    const ssize_t n = real_read(cfd, word, sizeof word - 1);
    close(cfd);
    if (n > 0) word[n] = '\0';
    char linkpath[64];
    char target[4096];
    if (path == nullptr) {
      snprintf(linkpath, sizeof linkpath, "/proc/self/fd/%d", fd);
      const ssize_t len = readlink(linkpath, target, sizeof target - 1);
      target[len > 0 ? len : 0] = '\0';
      path = target;
    }
    const bool sync_only = strstr(word, "sync") != nullptr;
    if (strncmp(path, prefix, strlen(prefix)) == 0 && (!sync_only || op == kSync)) {
      if (strncmp(word, "ENOSPC", 6) == 0) fault = ENOSPC;
      else if (strncmp(word, "EROFS", 5) == 0) fault = EROFS;
      else fault = EIO;
    }
  }
  errno = saved;
  return fault;
}

}  // namespace

// Declares real_NAME, the next definition of NAME (libc's).
#define REAL(name, type) \
  static const auto real_##name = reinterpret_cast<type>(dlsym(RTLD_NEXT, #name))
#define FAIL_IF(op, fd, path)       \
  do {                              \
    const int e = FaultFor(op, fd, path); \
    if (e != 0) {                   \
      errno = e;                    \
      return -1;                    \
    }                               \
  } while (0)

extern "C" {

ssize_t write(int fd, const void* buf, size_t n) {
  REAL(write, ssize_t (*)(int, const void*, size_t));
  if (fd > 2) FAIL_IF(kWrite, fd, nullptr);
  return real_write(fd, buf, n);
}

ssize_t pwrite(int fd, const void* buf, size_t n, off_t off) {
  REAL(pwrite, ssize_t (*)(int, const void*, size_t, off_t));
  FAIL_IF(kWrite, fd, nullptr);
  return real_pwrite(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void* buf, size_t n, off64_t off) {
  REAL(pwrite64, ssize_t (*)(int, const void*, size_t, off64_t));
  FAIL_IF(kWrite, fd, nullptr);
  return real_pwrite64(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec* iov, int cnt) {
  REAL(writev, ssize_t (*)(int, const struct iovec*, int));
  if (fd > 2) FAIL_IF(kWrite, fd, nullptr);
  return real_writev(fd, iov, cnt);
}

ssize_t pwritev(int fd, const struct iovec* iov, int cnt, off_t off) {
  REAL(pwritev, ssize_t (*)(int, const struct iovec*, int, off_t));
  FAIL_IF(kWrite, fd, nullptr);
  return real_pwritev(fd, iov, cnt, off);
}

int fsync(int fd) {
  REAL(fsync, int (*)(int));
  FAIL_IF(kSync, fd, nullptr);
  return real_fsync(fd);
}

int fdatasync(int fd) {
  REAL(fdatasync, int (*)(int));
  FAIL_IF(kSync, fd, nullptr);
  return real_fdatasync(fd);
}

int ftruncate(int fd, off_t len) {
  REAL(ftruncate, int (*)(int, off_t));
  FAIL_IF(kWrite, fd, nullptr);
  return real_ftruncate(fd, len);
}

int ftruncate64(int fd, off64_t len) {
  REAL(ftruncate64, int (*)(int, off64_t));
  FAIL_IF(kWrite, fd, nullptr);
  return real_ftruncate64(fd, len);
}

int fallocate(int fd, int mode, off_t off, off_t len) {
  REAL(fallocate, int (*)(int, int, off_t, off_t));
  FAIL_IF(kWrite, fd, nullptr);
  return real_fallocate(fd, mode, off, len);
}

int posix_fallocate(int fd, off_t off, off_t len) {
  REAL(posix_fallocate, int (*)(int, off_t, off_t));
  const int e = FaultFor(kWrite, fd, nullptr);
  if (e != 0) return e;  // posix_fallocate returns the error number
  return real_posix_fallocate(fd, off, len);
}

}  // extern "C"

namespace {
// Opens for writing of a hit file fail too, as on a read-only file system:
// one that would write (or create a missing file); an exclusive create of
// a file that exists is left to fail with EEXIST.
int OpenFault(const char* path, int flags) {
  const bool exists = access(path, F_OK) == 0;
  const bool writes = (flags & (O_WRONLY | O_RDWR | O_TRUNC)) != 0;
  if (exists && (flags & O_CREAT) != 0 && (flags & O_EXCL) != 0) return 0;
  if (!writes && (exists || (flags & O_CREAT) == 0)) return 0;
  return FaultFor(kOpen, -1, path);
}
}  // namespace

extern "C" {

#define OPEN_LIKE(name, ...)                                                \
  va_list ap;                                                               \
  va_start(ap, flags);                                                      \
  const mode_t mode = (flags & (O_CREAT | O_TMPFILE)) != 0 ? va_arg(ap, mode_t) : 0; \
  va_end(ap);                                                               \
  const int e = OpenFault(path, flags);                                     \
  if (e != 0) {                                                             \
    errno = e;                                                              \
    return -1;                                                              \
  }                                                                         \
  return real_##name(__VA_ARGS__, flags, mode)

int open(const char* path, int flags, ...) {
  REAL(open, int (*)(const char*, int, ...));
  OPEN_LIKE(open, path);
}

int open64(const char* path, int flags, ...) {
  REAL(open64, int (*)(const char*, int, ...));
  OPEN_LIKE(open64, path);
}

int openat(int dirfd, const char* path, int flags, ...) {
  REAL(openat, int (*)(int, const char*, int, ...));
  OPEN_LIKE(openat, dirfd, path);
}

int openat64(int dirfd, const char* path, int flags, ...) {
  REAL(openat64, int (*)(int, const char*, int, ...));
  OPEN_LIKE(openat64, dirfd, path);
}

}  // extern "C"
