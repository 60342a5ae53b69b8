// What the fuzz targets share: failing a check (abort, so libFuzzer keeps
// the input) and silencing protobuf's logging, which hostile inputs trigger
// on nearly every run (e.g. invalid UTF-8 in a string field) at more cost than
// the run itself.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include <stdlib.h>
#include <unistd.h>

#include <google/protobuf/stubs/logging.h>

#include "fastchat/frame.h"

namespace fastchat::fuzz {

[[noreturn]] inline void Fail(const std::string& what) {
  std::fprintf(stderr, "fuzz check failed: %s\n", what.c_str());
  std::abort();
}

inline void Check(bool ok, const std::string& what) {
  if (!ok) Fail(what);
}

// The record most targets read their input as: [op][4-byte big-endian
// length][bytes], a length past the end taking what is left. Reads the one
// at *pos and moves *pos past it; false at the end of the input.
inline bool NextRecord(const std::uint8_t* data, std::size_t size, std::size_t* pos, std::uint8_t* op,
                       std::string_view* bytes) {
  if (size - *pos < 1 + kFrameHeaderSize) return false;
  *op = data[*pos];
  const std::size_t len = DecodeFrameHeader(reinterpret_cast<const char*>(data + *pos + 1));
  *pos += 1 + kFrameHeaderSize;
  *bytes = std::string_view(reinterpret_cast<const char*>(data + *pos), std::min(len, size - *pos));
  *pos += bytes->size();
  return true;
}

// A new empty directory for one input's files, named `prefix`.XXXXXX, in
// $FASTCHAT_FUZZ_TMPDIR, else in /dev/shm (memory: no disk syncs, which
// otherwise take a quarter of the time of the targets that make a store per
// input), else in /tmp.
inline std::string FreshDir(const std::string& prefix) {
  const char* env = std::getenv("FASTCHAT_FUZZ_TMPDIR");
  std::string dir = env != nullptr && *env != '\0' ? env : ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  std::string tmpl = dir + "/" + prefix + ".XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) Fail("mkdtemp in " + dir);
  return tmpl;
}

inline void QuietProtobuf() {
  google::protobuf::SetLogHandler([](google::protobuf::LogLevel, const char*, int, const std::string&) {});
}

}  // namespace fastchat::fuzz
