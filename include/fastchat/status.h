// Status: the result of an operation that can fail, LevelDB style.
//
// A Status is either OK or carries a code and a human-readable message.
// Codes mirror the wire ErrorCode values (proto/fastchat.proto) so a server
// can turn a failed Status into an Error frame without translation tables.
#pragma once

#include <string>
#include <utility>

namespace fastchat {

enum class Code : int {
  kOk = 0,
  kBadFrame = 1,
  kFrameTooLarge = 2,
  kUnknownType = 3,
  kUnsupportedVersion = 4,
  kNotLoggedIn = 5,
  kBadRequest = 6,
  kNoSuchUser = 7,
  kNoSuchGroup = 8,
  kNameTaken = 9,
  kBadCredentials = 10,
  kNotFriends = 11,
  kNotMember = 12,
  kNotAdmin = 13,
  kAlreadyMember = 14,
  kStaleEpoch = 15,
  kTooLarge = 16,
  kNoSuchRequest = 17,
  kAlreadyFriends = 18,
  kDisplaced = 19,
  kInternal = 20,
  kHandshakeRequired = 21,
  kAlreadyLoggedIn = 22,
  kBusy = 23,
  kRateLimited = 24,
  kLimitReached = 25,
  // Codes below never go on the wire.
  kIOError = 100,
  kCorruption = 101,  // stored data failed an integrity check
  kCryptoFailed = 102,  // decryption / verification failed
  kNotFound = 103,
  // A store call inside a batch would have had to wait for a lock out of
  // the batch's lock order (a deadlock risk): it changed nothing; run it
  // again first in a new batch (server/store_worker.h does).
  kLockOrder = 104,
};

// What a refused password login says, whichever side refused it (the
// server, or the client's local key store): one wording and one code
// (kBadCredentials), and no hint of which check failed.
inline constexpr const char* kBadCredentialsMessage = "unknown user or wrong password";

// Returns a short stable name for `code`, e.g. "NOT_FRIENDS".
const char* CodeName(Code code);

class Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status OK() { return Status(); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

  // "OK" or "NOT_FRIENDS: bob is not your friend".
  std::string ToString() const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

}  // namespace fastchat
