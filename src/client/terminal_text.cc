#include "terminal_text.h"

#include <cstdint>
#include <cstdio>

namespace fastchat::client {

namespace {

// Decodes the UTF-8 sequence at s[*i]; advances *i. Returns false (and
// advances by one byte) for a byte that does not start a valid sequence.
bool NextCodePoint(std::string_view s, std::size_t* i, char32_t* cp) {
  auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char b0 = byte(*i);
  std::size_t len = 0;
  char32_t v = 0;
  char32_t min = 0;
  if (b0 < 0x80) {
    *cp = b0;
    ++*i;
    return true;
  } else if ((b0 & 0xe0) == 0xc0) {
    len = 2, v = b0 & 0x1f, min = 0x80;
  } else if ((b0 & 0xf0) == 0xe0) {
    len = 3, v = b0 & 0x0f, min = 0x800;
  } else if ((b0 & 0xf8) == 0xf0) {
    len = 4, v = b0 & 0x07, min = 0x10000;
  } else {
    ++*i;
    return false;
  }
  if (*i + len > s.size()) {
    ++*i;
    return false;
  }
  for (std::size_t k = 1; k < len; ++k) {
    unsigned char b = byte(*i + k);
    if ((b & 0xc0) != 0x80) {
      ++*i;
      return false;
    }
    v = (v << 6) | (b & 0x3f);
  }
  if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) {
    ++*i;
    return false;
  }
  *i += len;
  *cp = v;
  return true;
}

// Characters that steer a terminal or the direction of text.
bool Unsafe(char32_t c) {
  return c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0x9f) || c == 0x061c || c == 0x200e || c == 0x200f ||
         (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069) || c == 0x2028 || c == 0x2029;
}

constexpr std::string_view kReplacement = "\xef\xbf\xbd";  // U+FFFD
constexpr std::string_view kReturnSymbol = "\xe2\x86\xb5";  // U+21B5

}  // namespace

std::string SafeForTerminal(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    std::size_t start = i;
    char32_t c = 0;
    if (!NextCodePoint(text, &i, &c)) {
      out += kReplacement;
    } else if (c == '\t') {
      out += ' ';
    } else if (c == '\n' || c == '\r') {
      // "\r\n" is one line break.
      if (c == '\r' && i < text.size() && text[i] == '\n') ++i;
      out += kReturnSymbol;
    } else if (Unsafe(c)) {
      out += kReplacement;
    } else {
      out.append(text.substr(start, i - start));
    }
  }
  return out;
}

std::string SafeJsonLine(std::string_view json) {
  std::string out;
  out.reserve(json.size());
  std::size_t i = 0;
  while (i < json.size()) {
    std::size_t start = i;
    char32_t c = 0;
    if (!NextCodePoint(json, &i, &c)) {
      out += "\\ufffd";  // not expected from dump(): keep the line valid anyway
    } else if (Unsafe(c)) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
      out += buf;
    } else {
      out.append(json.substr(start, i - start));
    }
  }
  return out;
}

}  // namespace fastchat::client
