#include "fastchat/status.h"

#include <chrono>

#include "fastchat/store.h"

namespace fastchat {

std::uint64_t DedupeKeyExpiryMs() {
  const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::system_clock::now().time_since_epoch());
  return static_cast<std::uint64_t>(now.count()) + kDedupeRetentionMs;
}

// (Store's one non-pure method lives here, with the other small shared code.)
Status Store::AckMany(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& recipient_seqs) {
  std::size_t i = 0;
  while (i < recipient_seqs.size()) {
    const std::uint64_t recipient = recipient_seqs[i].first;
    std::vector<std::uint64_t> seqs;
    for (; i < recipient_seqs.size() && recipient_seqs[i].first == recipient; ++i) {
      seqs.push_back(recipient_seqs[i].second);
    }
    Status s = Ack(recipient, seqs);
    if (!s.ok()) return s;
  }
  return Status::OK();
}

Status Store::AckGroups(const std::vector<GroupCursorAck>& acks) {
  for (const GroupCursorAck& a : acks) {
    Status s = AckGroup(a.user, a.group, a.seq);
    if (!s.ok()) return s;
  }
  return Status::OK();
}

const char* CodeName(Code code) {
  switch (code) {
    case Code::kOk: return "OK";
    case Code::kBadFrame: return "BAD_FRAME";
    case Code::kFrameTooLarge: return "FRAME_TOO_LARGE";
    case Code::kUnknownType: return "UNKNOWN_TYPE";
    case Code::kUnsupportedVersion: return "UNSUPPORTED_VERSION";
    case Code::kNotLoggedIn: return "NOT_LOGGED_IN";
    case Code::kBadRequest: return "BAD_REQUEST";
    case Code::kNoSuchUser: return "NO_SUCH_USER";
    case Code::kNoSuchGroup: return "NO_SUCH_GROUP";
    case Code::kNameTaken: return "NAME_TAKEN";
    case Code::kBadCredentials: return "BAD_CREDENTIALS";
    case Code::kNotFriends: return "NOT_FRIENDS";
    case Code::kNotMember: return "NOT_MEMBER";
    case Code::kNotAdmin: return "NOT_ADMIN";
    case Code::kAlreadyMember: return "ALREADY_MEMBER";
    case Code::kStaleEpoch: return "STALE_EPOCH";
    case Code::kTooLarge: return "TOO_LARGE";
    case Code::kNoSuchRequest: return "NO_SUCH_REQUEST";
    case Code::kAlreadyFriends: return "ALREADY_FRIENDS";
    case Code::kDisplaced: return "DISPLACED";
    case Code::kInternal: return "INTERNAL";
    case Code::kHandshakeRequired: return "HANDSHAKE_REQUIRED";
    case Code::kAlreadyLoggedIn: return "ALREADY_LOGGED_IN";
    case Code::kBusy: return "BUSY";
    case Code::kRateLimited: return "RATE_LIMITED";
    case Code::kLimitReached: return "LIMIT_REACHED";
    case Code::kIOError: return "IO_ERROR";
    case Code::kCorruption: return "CORRUPTION";
    case Code::kCryptoFailed: return "CRYPTO_FAILED";
    case Code::kNotFound: return "NOT_FOUND";
    case Code::kLockOrder: return "LOCK_ORDER";
  }
  return "UNKNOWN";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string s = CodeName(code_);
  if (!message_.empty()) {
    s += ": ";
    s += message_;
  }
  return s;
}

}  // namespace fastchat

