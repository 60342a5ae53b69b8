#include "client_error.h"

#include <string>

#include <spdlog/spdlog.h>

#include "fastchat/crypto.h"

namespace fastchat::server {
namespace {

// Codes a client may be sent with their message: those of the wire's
// ErrorCode (status.h numbers them alike) that answer the request.
bool Answers(Code code) {
  return code != Code::kOk && code != Code::kInternal && static_cast<int>(code) < static_cast<int>(Code::kIOError);
}

}  // namespace

Status ClientError(const Status& st) {
  if (st.ok() || Answers(st.code())) return st;
  const std::string incident = crypto::Hex(crypto::RandomBytes(4));
  spdlog::error("incident {}: {}", incident, st.ToString());
  return Status(Code::kInternal, "internal error (incident " + incident + ")");
}

Status StoreFailure(const Status& st, std::string_view context) {
  if (st.ok() || st.code() == Code::kNameTaken || st.code() == Code::kNoSuchRequest || st.code() == Code::kLimitReached) {
    return st;
  }
  return Status(Code::kInternal, std::string(context) + ": " + st.ToString());
}

}  // namespace fastchat::server
