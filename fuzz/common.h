// What the fuzz targets share: failing a check (abort, so libFuzzer keeps
// the input) and silencing protobuf's logging, which hostile inputs trigger
// on nearly every run (e.g. invalid UTF-8 in a string field) at more cost than
// the run itself.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#include <google/protobuf/stubs/logging.h>

namespace fastchat::fuzz {

[[noreturn]] inline void Fail(const std::string& what) {
  std::fprintf(stderr, "fuzz check failed: %s\n", what.c_str());
  std::abort();
}

inline void Check(bool ok, const std::string& what) {
  if (!ok) Fail(what);
}

inline void QuietProtobuf() {
  google::protobuf::SetLogHandler([](google::protobuf::LogLevel, const char*, int, const std::string&) {});
}

}  // namespace fastchat::fuzz
