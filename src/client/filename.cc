#include "filename.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <system_error>

#include <unistd.h>

namespace fastchat::client {

namespace {

bool SafeChar(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

// Splits "name.ext" into stem and ".ext" (the extension only if short and
// not the whole name).
void SplitExtension(const std::string& name, std::string* stem, std::string* ext) {
  std::size_t dot = name.rfind('.');
  if (dot == std::string::npos || dot == 0 || name.size() - dot > 16) {
    *stem = name;
    ext->clear();
    return;
  }
  *stem = name.substr(0, dot);
  *ext = name.substr(dot);
}

}  // namespace

std::string SanitizeTitle(std::string_view title) {
  std::string out;
  out.reserve(title.size());
  for (char ch : title) {
    unsigned char c = static_cast<unsigned char>(ch);
    out.push_back(SafeChar(c) ? ch : '_');
  }
  std::size_t first = out.find_first_not_of('.');
  out.erase(0, first == std::string::npos ? out.size() : first);
  if (out.size() > kMaxTitleChars) {
    std::string stem, ext;
    SplitExtension(out, &stem, &ext);
    if (ext.size() >= kMaxTitleChars) ext.clear();
    stem.resize(kMaxTitleChars - ext.size());
    out = stem + ext;
  }
  if (out.empty()) out = "image";
  return out;
}

std::filesystem::path DownloadPath(const std::filesystem::path& dir, std::string_view title) {
  std::string base = "received_" + SanitizeTitle(title);
  std::filesystem::path p = dir / base;
  std::error_code ec;
  if (!std::filesystem::exists(std::filesystem::symlink_status(p, ec))) return p;
  std::string stem, ext;
  SplitExtension(base, &stem, &ext);
  for (unsigned n = 1;; ++n) {
    p = dir / (stem + "-" + std::to_string(n) + ext);
    if (!std::filesystem::exists(std::filesystem::symlink_status(p, ec))) return p;
  }
}

bool PublishDownload(const std::filesystem::path& tmp, const std::filesystem::path& dir,
                     std::string_view title, std::filesystem::path* final_path, std::string* error) {
  for (int attempt = 0; attempt < 1000; ++attempt) {
    std::filesystem::path p = DownloadPath(dir, title);
    if (::link(tmp.c_str(), p.c_str()) == 0) {
      ::unlink(tmp.c_str());
      *final_path = p;
      return true;
    }
    if (errno == EEXIST) continue;  // somebody took the name meanwhile
    // File systems without hard links: fall back to rename (still checked
    // for existence just above).
    if (errno == EPERM || errno == EOPNOTSUPP || errno == EXDEV) {
      std::error_code ec;
      std::filesystem::rename(tmp, p, ec);
      if (!ec) {
        *final_path = p;
        return true;
      }
      *error = ec.message();
      return false;
    }
    *error = std::strerror(errno);
    return false;
  }
  *error = "no free file name";
  return false;
}

}  // namespace fastchat::client
