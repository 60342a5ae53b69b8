// File-name sanitising (src/client/filename.h): a title chosen by a remote
// sender becomes a local file name. Checks every promise of filename.h on
// hostile titles: what SanitizeTitle keeps out (invalid UTF-8, controls,
// bidi controls, separators), its byte limit and leading dot;
// DownloadPath and PublishDownload stay directly inside the folder, never
// pick a taken name and never replace an existing file.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "filename.h"

namespace fs = std::filesystem;
using fastchat::client::kMaxTitleBytes;

namespace {

void Check(bool ok, const char* what, std::string_view title) {
  if (!ok) {
    std::fprintf(stderr, "filename_fuzz: %s (title of %zu bytes)\n", what, title.size());
    std::abort();
  }
}

// Valid UTF-8 without a control (C0, DEL, C1), a path separator or an
// invisible character that reorders or breaks text (bidi embeddings,
// overrides, isolates and marks; line and paragraph separators).
bool SafeName(const std::string& s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    const std::size_t len = b0 < 0x80 ? 1 : b0 >= 0xc2 && b0 <= 0xdf ? 2 : b0 >= 0xe0 && b0 <= 0xef ? 3
                            : b0 >= 0xf0 && b0 <= 0xf4                ? 4
                                                                      : 0;
    if (len == 0 || i + len > s.size()) return false;
    std::uint32_t c = len == 1 ? b0 : b0 & (0xffu >> (len + 1));
    for (std::size_t k = 1; k < len; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xc0) != 0x80) return false;
      c = (c << 6) | (b & 0x3fu);
    }
    // Overlong forms, surrogates, above U+10FFFF.
    if ((len == 3 && c < 0x800) || (len == 4 && (c < 0x10000 || c > 0x10ffff)) || (c >= 0xd800 && c <= 0xdfff))
      return false;
    if (c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0x9f) || c == '/' || c == '\\') return false;
    if (c == 0x061c || c == 0x200e || c == 0x200f || (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069) ||
        c == 0x2028 || c == 0x2029)
      return false;
    i += len;
  }
  return true;
}

// A folder with a few names already taken (files, a directory, a dangling
// symlink), made once per process.
const fs::path& Folder() {
  static const fs::path dir = [] {
    char tmpl[] = "/tmp/fastchat_filename_fuzz.XXXXXX";
    if (mkdtemp(tmpl) == nullptr) std::abort();
    fs::path d = tmpl;
    std::ofstream(d / "received_image") << "taken";
    std::ofstream(d / "received_a.txt") << "taken";
    std::ofstream(d / "received_a-1.txt") << "taken";
    fs::create_directory(d / "received_dir");
    fs::create_symlink("/nonexistent", d / "received_link");
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view title(reinterpret_cast<const char*>(data), size);
  const std::string s = fastchat::client::SanitizeTitle(title);
  Check(!s.empty(), "empty name", title);
  Check(s.size() <= kMaxTitleBytes, "name too long", title);
  Check(SafeName(s), "invalid UTF-8 or an unsafe character in the name", title);
  Check(s.front() != '.', "name starts with a dot", title);
  Check(fastchat::client::SanitizeTitle(s) == s, "sanitising is not idempotent", title);

  const fs::path& dir = Folder();
  const fs::path p = fastchat::client::DownloadPath(dir, title);
  Check(p.parent_path() == dir, "download path outside the folder", title);
  const std::string name = p.filename().string();
  Check(name.rfind("received_", 0) == 0 && SafeName(name), "download name", title);
  std::error_code ec;
  Check(!fs::exists(fs::symlink_status(p, ec)), "download path is taken", title);

  // Publishing never replaces what is there and leaves the file in `dir`.
  const fs::path tmp = dir / ".partial";
  std::ofstream(tmp) << "new";
  fs::path final_path;
  std::string error;
  Check(fastchat::client::PublishDownload(tmp, dir, title, &final_path, &error), "publish failed", title);
  Check(final_path.parent_path() == dir, "published outside the folder", title);
  Check(!fs::exists(tmp), "temporary file left behind", title);
  for (const char* taken : {"received_image", "received_a.txt", "received_a-1.txt"}) {
    Check(fs::file_size(dir / taken) == 5, "an existing file was replaced", title);
  }
  Check(fs::is_directory(dir / "received_dir") && fs::is_symlink(fs::symlink_status(dir / "received_link")),
        "an existing entry was replaced", title);
  Check(fs::file_size(final_path) == 3, "published file", title);
  fs::remove(final_path);
  return 0;
}
