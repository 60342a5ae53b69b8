#include "filename.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <system_error>

#include <unistd.h>

namespace fastchat::client {

namespace {

// Characters a received file name never holds (besides invalid UTF-8).
bool Unsafe(char32_t c) {
  if (c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0x9f)) return true;  // C0, DEL, C1
  if (c == '/' || c == '\\') return true;                                // path separators
  if (c == 0x061c || c == 0x200e || c == 0x200f) return true;           // bidi marks (ALM, LRM, RLM)
  if (c >= 0x202a && c <= 0x202e) return true;                          // bidi embeddings, overrides
  if (c >= 0x2066 && c <= 0x2069) return true;                          // bidi isolates
  if (c == 0x2028 || c == 0x2029) return true;                          // line, paragraph separators
  return false;
}

// Decodes the UTF-8 character starting at s[i]. Returns its length and sets
// *c, or returns 0 and sets *bad to the length of the maximal invalid
// subpart there (at least 1), as Unicode's "U+FFFD substitution of maximal
// subparts" counts it.
std::size_t DecodeUtf8(std::string_view s, std::size_t i, char32_t* c, std::size_t* bad) {
  auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
  unsigned char lead = b(0);
  if (lead < 0x80) {
    *c = lead;
    return 1;
  }
  std::size_t len;
  unsigned char lo = 0x80, hi = 0xbf;  // the allowed range of the second byte
  if (lead >= 0xc2 && lead <= 0xdf) {
    len = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    len = 3;
    if (lead == 0xe0) lo = 0xa0;  // no overlong forms
    if (lead == 0xed) hi = 0x9f;  // no surrogates
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    len = 4;
    if (lead == 0xf0) lo = 0x90;  // no overlong forms
    if (lead == 0xf4) hi = 0x8f;  // nothing above U+10FFFF
  } else {
    *bad = 1;  // a continuation byte, or a byte that never starts a character
    return 0;
  }
  auto v = static_cast<char32_t>(lead & (0xffu >> (len + 1)));
  for (std::size_t k = 1; k < len; ++k) {
    bool ok = i + k < s.size() && b(k) >= (k == 1 ? lo : 0x80) && b(k) <= (k == 1 ? hi : 0xbf);
    if (!ok) {
      *bad = k;
      return 0;
    }
    v = static_cast<char32_t>((v << 6) | (b(k) & 0x3fu));
  }
  *c = v;
  return len;
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

// The longest prefix of valid UTF-8 `s` of at most `max` bytes that does not
// end inside a character.
std::string CutAtCharBoundary(const std::string& s, std::size_t max) {
  if (s.size() <= max) return s;
  std::size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xc0) == 0x80) --n;  // s[n] continues a character
  return s.substr(0, n);
}

}  // namespace

std::string SanitizeTitle(std::string_view title) {
  std::string out;
  out.reserve(title.size());
  for (std::size_t i = 0; i < title.size();) {
    char32_t c = 0;
    std::size_t bad = 0;
    std::size_t len = DecodeUtf8(title, i, &c, &bad);
    if (len == 0) {
      out.push_back('_');
      i += bad;
      continue;
    }
    if (Unsafe(c))
      out.push_back('_');
    else
      out.append(title.substr(i, len));
    i += len;
  }
  std::size_t first = out.find_first_not_of('.');
  out.erase(0, first == std::string::npos ? out.size() : first);
  if (out.size() > kMaxTitleBytes) {
    std::string stem, ext;
    SplitExtension(out, &stem, &ext);
    out = CutAtCharBoundary(stem, kMaxTitleBytes - ext.size()) + ext;
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
