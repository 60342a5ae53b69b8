#include "acked_batch.h"

#include <charconv>

namespace fastchat {
namespace {

// Reads a decimal number at *at, then `sep`; moves *at past both.
bool ReadNumber(std::string_view text, std::size_t* at, char sep, std::uint64_t* value) {
  const char* begin = text.data() + *at;
  const char* end = text.data() + text.size();
  const auto [p, ec] = std::from_chars(begin, end, *value);
  if (ec != std::errc() || p == begin || p == end || *p != sep) return false;
  *at = static_cast<std::size_t>(p - text.data()) + 1;
  return true;
}

}  // namespace

void AppendAckedRecord(std::string* out, std::uint64_t recipient, std::uint64_t seq, std::string_view key) {
  char number[24];
  out->append(number, std::to_chars(number, number + sizeof number, recipient).ptr);
  out->push_back(' ');
  out->append(number, std::to_chars(number, number + sizeof number, seq).ptr);
  out->push_back(' ');
  out->append(number, std::to_chars(number, number + sizeof number, key.size()).ptr);
  out->push_back(':');
  out->append(key);
}

bool ForEachAckedRecord(std::string_view text, const std::function<bool(const AckedRecord&)>& fn) {
  std::size_t at = 0;
  while (at < text.size()) {
    AckedRecord r;
    std::uint64_t length = 0;
    if (!ReadNumber(text, &at, ' ', &r.recipient) || !ReadNumber(text, &at, ' ', &r.seq) ||
        !ReadNumber(text, &at, ':', &length) || length > text.size() - at) {
      return false;
    }
    r.key = text.substr(at, static_cast<std::size_t>(length));
    at += static_cast<std::size_t>(length);
    if (!fn(r)) return true;
  }
  return true;
}

}  // namespace fastchat
