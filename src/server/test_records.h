// Test helper for the server's unit tests: store records with placeholder
// contents (tests only; never linked into the server).
#pragma once

#include <string>
#include <utility>

#include "fastchat/store.h"

namespace fastchat::server {

// A user named `name` with a placeholder password hash and public keys.
inline UserRecord TestUserRecord(std::string name) {
  UserRecord u;
  u.name = std::move(name);
  u.password_hash = "h";
  u.x25519_public = std::string(32, 'x');
  u.ed25519_public = std::string(32, 'e');
  return u;
}

}  // namespace fastchat::server
