// The stored form of one acknowledgement's dedupe keys: SqliteStore keeps
// the keys of the pending rows one AckMany (or Ack) deletes in one row of
// `acked_batches`, not one row per key, so an acknowledgement writes one
// row however many deliveries it names (docs/performance.md, "Acknowledged
// keys in one row per acknowledgement").
//
// The text is one record per key, one after another: the recipient and the
// seq in decimal, each followed by a space, then the key's length in bytes
// in decimal, ':' and the key's bytes ("12 3456 14:d/7/00ff0a1b/0"). The
// length prefix makes any byte safe in a key. Schema migration 9 writes the
// same form in SQL.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace fastchat {

struct AckedRecord {
  std::uint64_t recipient = 0;
  std::uint64_t seq = 0;
  std::string_view key;
};

// Appends one record to `out`.
void AppendAckedRecord(std::string* out, std::uint64_t recipient, std::uint64_t seq, std::string_view key);

// Calls `fn` with each record of `text`, in order, until it returns false.
// Returns false if `text` is not a sequence of whole records (a record that
// is cut short, a number out of range or a missing separator); the records
// before the fault have been passed to `fn`.
bool ForEachAckedRecord(std::string_view text, const std::function<bool(const AckedRecord&)>& fn);

}  // namespace fastchat
