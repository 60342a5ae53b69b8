// File-name sanitising (src/client/filename.h): a title chosen by a remote
// sender becomes a local file name. Checks every promise of filename.h on
// hostile titles: SanitizeTitle's alphabet, length and leading dot;
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
using fastchat::client::kMaxTitleChars;

namespace {

void Check(bool ok, const char* what, std::string_view title) {
  if (!ok) {
    std::fprintf(stderr, "filename_fuzz: %s (title of %zu bytes)\n", what, title.size());
    std::abort();
  }
}

bool SafeName(const std::string& s) {
  for (unsigned char c : s) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-';
    if (!ok) return false;
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
  Check(s.size() <= kMaxTitleChars, "name too long", title);
  Check(SafeName(s), "unsafe byte in name", title);
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
