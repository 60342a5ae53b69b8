// What a client is told when its request fails.
//
// A Status's message is written for whoever reads the server's log: it may
// carry a database's error text, a host and port, a file path. Every Error
// the server sends a client goes through ClientError, and every failure of
// the store on a client's behalf through StoreFailure first.
#pragma once

#include <string_view>

#include "fastchat/status.h"

namespace fastchat::server {

// The Status to send a client for the failure `st` (OK stays OK).
//
// Promises:
//  - A code that answers the request (BAD_REQUEST, NOT_FRIENDS, NAME_TAKEN,
//    ...: every wire code but INTERNAL) goes out as it is, message included.
//  - INTERNAL and every code that never goes on the wire (IO_ERROR,
//    CORRUPTION, CRYPTO_FAILED, NOT_FOUND) become INTERNAL
//    "internal error (incident 3f9a2c71)", with a fresh random incident id
//    of 8 hex digits, and the whole of `st` is logged at error level as
//    "incident 3f9a2c71: <st.ToString()>": what a user reports finds the
//    log line, and nothing of the cause reaches the user.
Status ClientError(const Status& st);

// A failure the store reported for a client's request, made ready for
// ClientError. The store's answers that the request logic words for clients
// stay as they are (NAME_TAKEN: the name was registered meanwhile;
// NO_SUCH_REQUEST: the friend request was answered meanwhile;
// LIMIT_REACHED: the recipient has the most messages waiting that the
// server keeps, Enqueued::kRefused); any other
// failure becomes INTERNAL "<context>: <st.ToString()>" (for the log).
Status StoreFailure(const Status& st, std::string_view context);

}  // namespace fastchat::server
