// Validation of user-supplied fields the server stores in clear.
#pragma once

#include <string_view>

#include "fastchat/status.h"

namespace fastchat::server {

// 1..32 chars of [A-Za-z0-9_.-], not all digits (digits mean an ID).
Status ValidateUserName(std::string_view name);
// 8..1024 bytes.
Status ValidatePassword(std::string_view password);
// 1..64 bytes, no control characters.
Status ValidateGroupName(std::string_view name);

}  // namespace fastchat::server
