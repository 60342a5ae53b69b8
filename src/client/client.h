// ClientCore: everything a FastChat client does, above the wire and below
// the user interface.
//
// Promises:
// - Every operation returns an Outcome (a wire/Status code name or a client
//   code such as NO_KEY, KEY_CHANGED, USAGE, NO_SUCH_FILE) and fills in the
//   extra fields of its JSON result; it never throws and never crashes on
//   bad input from the user, the server or other clients.
// - Public keys are pinned the first time they are seen; if the server later
//   presents different keys a KEY_CHANGED warning is emitted and they are
//   not used.
// - A user's clients coexist: chat and listen are the user's one receiving
//   session (a newer one displaces the older); pending and one-shot
//   commands log in send-only and fetch what is pending once, displacing
//   nobody (docs/architecture.md, "Displacement").
// - In a receiving session, deliveries are processed one at a time in server
//   order; each is stored, then acknowledged; repeats (by seq and by the
//   sender's msg_id) are ignored; anything that cannot be opened becomes an
//   "undecryptable" event. After SyncDone a "ready" event is emitted (chat
//   and listen).
// - Chat and listen sessions survive a lost connection (not a displacement):
//   "reconnecting", then the same server or the one the balancers name is
//   tried with backoff for up to 60 s (else "disconnected"); after logging
//   in again and processing the pending deliveries, "reconnected". Requests
//   that had no answer are sent again, byte for byte (same msg_id), and
//   requests made meanwhile wait; each command still ends exactly once.
// - Keys and other state are re-read from the LocalStore for every use, so a
//   one-shot process and a receiving process of the same user cooperate.
// - Every message, file and notice sent or received is kept in the local
//   store's history (sealed like the keys): a received one in the same
//   transaction that marks it processed, a sent one once the server has
//   taken it.
// Single-threaded: runs on one io_context thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <asio/awaitable.hpp>

#include "fastchat/crypto.h"
#include "fastchat/status.h"
#include "server_trust.h"
#include "output.h"

namespace asio {
class io_context;
}  // namespace asio

namespace fastchat::client {

// The result of a command: OK, or a machine-readable code and a message.
struct Outcome {
  std::string code;  // empty: success
  std::string message;

  bool ok() const { return code.empty(); }
  static Outcome OK() { return Outcome(); }
  static Outcome From(const Status& s) {
    return s.ok() ? Outcome() : Outcome{CodeName(s.code()), s.message()};
  }
};

// Client-side codes (besides the wire/Status names from CodeName).
inline constexpr const char* kCodeNoKey = "NO_KEY";
inline constexpr const char* kCodeKeyChanged = "KEY_CHANGED";
inline constexpr const char* kCodeUsage = "USAGE";
inline constexpr const char* kCodeNoSuchFile = "NO_SUCH_FILE";
inline constexpr const char* kCodeAmbiguous = "AMBIGUOUS";
inline constexpr const char* kCodeNoStore = "NO_STORE";
// A hostile server's doing, reported as a warning (docs/security.md).
inline constexpr const char* kCodeReplayed = "REPLAYED";
inline constexpr const char* kCodeEpochNotAdvanced = "EPOCH_NOT_ADVANCED";

struct ClientConfig {
  std::string host = "127.0.0.1";  // the server (unless balancers are given)
  std::string port = "7400";
  // HOST:PORT of balancers: if not empty, every connection goes to the
  // server they name (asked anew for each connection).
  std::vector<std::string> balancers;
  std::filesystem::path home;       // where <name>.fcdb live
  std::string user;                 // name or id
  std::string password;
  std::filesystem::path downloads;  // empty: <home>/downloads/<name>
  crypto::PwhashCost kdf = crypto::PwhashCost::Interactive();
  std::filesystem::path record;     // empty: do not record Deliver frames
  TlsTrust tls;                     // how servers are checked (server_trust.h)
};

enum class SessionMode {
  kOneShot,  // receive=false: replies, and what TakePending(true) fetches
  kChat,     // receiving session, interactive
  kListen,   // receiving session, prints events
  kPending,  // receive=false: what TakePending(false) fetches, until SyncDone
};

class ClientCore {
 public:
  ClientCore(asio::io_context& ioc, ClientConfig config, Output* out);
  ~ClientCore();
  ClientCore(const ClientCore&) = delete;
  ClientCore& operator=(const ClientCore&) = delete;

  // ---- life cycle
  // Generates keys, registers `name`, creates the local store. Sets
  // result["user_id"].
  asio::awaitable<Outcome> Register(std::string name, Json* result);
  // Opens the local store of config.user (runs the key derivation).
  Outcome OpenStore();
  // Without a local store: asks the server whether config.user and the
  // password are valid (send-only login), so a bad login reads as such.
  asio::awaitable<Outcome> ProbeLogin();
  // Changes the password of config.user, on the server and in the local key
  // store (OpenStore first, no Login): logs in with the current password,
  // asks the server to change it (which revokes every session token), then
  // re-seals the local store under the new one. If the server already takes
  // the new password (an earlier run whose local half failed or whose reply
  // was lost), only the local store is re-sealed. Sets result["server"] to
  // "changed" or "already changed".
  asio::awaitable<Outcome> ChangePassword(std::string new_password, Json* result);
  // Connects and logs in (receiving unless kOneShot); receiving sessions start
  // processing deliveries.
  asio::awaitable<Outcome> Login(SessionMode mode);
  // Completes after the first SyncDone has been processed, or when the
  // session ends (synced() tells which).
  asio::awaitable<void> WaitSynced();
  // Completes when the connection has ended or Shutdown() finished.
  asio::awaitable<void> WaitClosed();
  // Acknowledges what was processed, flushes, closes. Safe to call twice.
  asio::awaitable<void> Shutdown();
  // True if the session ended because of the server or the network (for a
  // chat or listen session: displaced, or could not reconnect).
  bool disconnected() const;
  bool synced() const;
  // Deliveries processed in this session.
  std::uint64_t processed() const;

  // Offline: tries to open each recorded Deliver frame in `file` with this
  // user's keys, emitting one "decrypt" event per frame and a summary.
  // Reads the local store only.
  Outcome DecryptFrames(const std::filesystem::path& file);

  // ---- commands (USER: name or id; GROUP: id or a locally known name)
  asio::awaitable<Outcome> AddFriend(std::string user, Json* result);
  asio::awaitable<Outcome> Accept(std::string user, Json* result);
  asio::awaitable<Outcome> Decline(std::string user, Json* result);
  asio::awaitable<Outcome> Friends(Json* result);
  asio::awaitable<Outcome> SingleMessage(std::string user, std::string text, Json* result);
  asio::awaitable<Outcome> SingleImage(std::string user, std::string path, Json* result);
  asio::awaitable<Outcome> CreateGroup(std::string name, Json* result);
  asio::awaitable<Outcome> AddMember(std::string group, std::string user, Json* result);
  asio::awaitable<Outcome> GroupMessage(std::string group, std::string text, Json* result);
  asio::awaitable<Outcome> GroupImage(std::string group, std::string path, Json* result);
  asio::awaitable<Outcome> Kick(std::string group, std::string user, Json* result);
  asio::awaitable<Outcome> Groups(Json* result);
  asio::awaitable<Outcome> Members(std::string group, Json* result);
  asio::awaitable<Outcome> Leave(std::string group, Json* result);
  asio::awaitable<Outcome> Fingerprint(std::string user, Json* result);
  // Asks the server to resend pending deliveries (receiving sessions).
  asio::awaitable<Outcome> FetchPending(Json* result);
  // pending and one-shot sessions (after Login): asks the server once for
  // what is pending, without becoming the user's receiving session (a
  // running chat or listen is not displaced), and processes it until
  // SyncDone: everything (pending), or with waiting_only only what a
  // one-shot command needs first (friend requests and answers, group keys,
  // receipts); messages, files and group entries then stay pending for a
  // receiving session. A server that refuses the fetch (BAD_REQUEST: older
  // than one-shot fetches) leaves everything pending.
  asio::awaitable<Outcome> TakePending(bool waiting_only);

  // ---- history (the local store only: no server needed, OpenStore is enough)
  // The newest `count` (default 20) entries of the conversation with a user
  // or a group, oldest first, in result["entries"].
  Outcome History(std::string target, std::string count, Json* result);
  // Entries whose text or file name holds `text` (ASCII letters in any
  // case), among the newest 10,000 (their text is sealed: each is opened
  // and matched here); at most 100 are shown.
  Outcome Search(std::string text, Json* result);

  // ---- for the line editor (the local store only)
  // Names a command argument may be: friends and users asking to be
  // friends (users), and groups not left (groups). Empty lists if the
  // store is not open.
  void KnownNames(std::vector<std::string>* users, std::vector<std::string>* groups);

  // The session's state (client_impl.h). Named here, not private, so that
  // fuzz/client_fuzz.cc can run a receiving session against a played server.
  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace fastchat::client
