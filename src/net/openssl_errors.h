// OpenSSL's error queue as text, for messages (tls.cc). Cheap to include: no
// OpenSSL headers.
#pragma once

#include <string>

namespace fastchat::net {

// Every error OpenSSL has queued on this thread, oldest first, joined with
// "; "; empties the queue. Empty if none was queued.
std::string OpensslErrors();

}  // namespace fastchat::net
