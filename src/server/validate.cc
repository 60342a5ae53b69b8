#include "validate.h"

#include <algorithm>

namespace fastchat::server {

Status ValidateUserName(std::string_view name) {
  if (name.empty() || name.size() > 32) {
    return Status(Code::kBadRequest, "user name must be 1 to 32 characters");
  }
  bool all_digits = true;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '.' || c == '-';
    if (!ok) return Status(Code::kBadRequest, "user name may use only A-Z a-z 0-9 _ . -");
    if (c < '0' || c > '9') all_digits = false;
  }
  if (all_digits) return Status(Code::kBadRequest, "user name must not be all digits (digits mean an ID)");
  return Status::OK();
}

Status ValidatePassword(std::string_view password) {
  if (password.size() < 8) return Status(Code::kBadRequest, "password must be at least 8 bytes");
  if (password.size() > 1024) return Status(Code::kBadRequest, "password must be at most 1024 bytes");
  return Status::OK();
}

Status ValidateGroupName(std::string_view name) {
  if (name.empty() || name.size() > 64) return Status(Code::kBadRequest, "group name must be 1 to 64 bytes");
  bool control = std::any_of(name.begin(), name.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
  if (control) return Status(Code::kBadRequest, "group name must not contain control characters");
  return Status::OK();
}

}  // namespace fastchat::server
