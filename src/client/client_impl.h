// ClientCore::Impl: the state of one client session and the operations the
// public commands are made of. Private to src/client; the pieces live in:
//   client.cc          life cycle, connections, requests that survive a lost
//                      connection, reconnecting
//   client_friends.cc  users and their pinned keys, friends, direct messages
//   client_groups.cc   groups, their keys (rotation and hand-over), group
//                      messages
//   client_images.cc   sending an image in chunks; assembling received ones
//   client_events.cc   processing deliveries, one at a time, into events
//   client_history.cc  keeping what was sent and received; history, search
//   client_receipts.cc delivery receipts: sending them, checking them
//
// Promises (besides those of client.h):
// - Every member runs on the io_context thread; nothing here is shared with
//   another thread (except the balancer query, see AskBalancers).
// - Keys and other state are read from `store` when used, never cached here.
//
// GCC 12 miscompiles some coroutines. In every coroutine here: no temporary
// that is not trivially destructible inside a co_await full-expression (name
// the value first); no `if (co_await ...)`; no braced-init-list arguments in
// a call that is awaited; logging goes through LogWarn/LogInfo/LogDebug (not
// fmt's compile-time format strings).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <nlohmann/json.hpp>

#include "client.h"
#include "connection.h"
#include "fastchat.pb.h"
#include "latch.h"
#include "local_store.h"
#include "log.h"
#include "message_format.h"
#include "progress.h"

namespace fastchat::client {

using asio::awaitable;

inline constexpr std::size_t kMaxTextBytes = 262144;  // longer texts: send a file
inline constexpr std::size_t kMaxReceivedTitleBytes = 4096;  // a received image's title (before sanitising)
// The inbox: pushes read, not yet processed. At kInboxPause* the reader
// stops reading (Connection::set_push_full) until the inbox is down to half
// of both, unless a request waits for its reply (the reply may be behind
// pushes, and processing may be what waits for it). Then reading goes on,
// and a push that would take the inbox past kInboxMax* is not kept: from it
// on every push is dropped, and once the inbox is processed the session
// takes them again from the server (it reconnects: the server keeps every
// delivery until it is acknowledged, and sends them in order).
inline constexpr std::size_t kInboxPauseFrames = 1024;
inline constexpr std::size_t kInboxPauseBytes = 8u << 20;
inline constexpr std::size_t kInboxMaxFrames = 4096;
inline constexpr std::size_t kInboxMaxBytes = 32u << 20;

// Outcome code of CallOnce: sent, then the link broke before any reply.
inline constexpr const char* kReplyLost = "REPLY_LOST";

using Clock = std::chrono::steady_clock;

inline long long MsSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

inline bool AllDigits(const std::string& s) {
  if (s.empty() || s.size() > 19) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// USER (a name, or digits: an id) as a UserRef.
inline void SetRef(wire::UserRef* ref, const std::string& user) {
  if (AllDigits(user))
    ref->set_id(std::stoull(user));
  else
    ref->set_name(user);
}

inline Outcome Err(const char* code, std::string message) { return Outcome{code, std::move(message)}; }

inline std::string Display(const Contact& c) { return c.name.empty() ? "#" + std::to_string(c.id) : c.name; }

// Wall-clock time, ms since the epoch (client_history.cc).
std::int64_t WallMs();

// NO_SUCH_FILE unless `path` is a readable regular file.
Outcome CheckFile(const std::string& path);

// One recorded or live delivery, for the Open* functions.
struct Opened {
  std::string plaintext;
  std::string detail;  // e.g. "signature not checked"
};

struct ClientCore::Impl {
  Impl(asio::io_context& c, ClientConfig config, Output* o)
      : ioc(c), cfg(std::move(config)), out(o), inbox_wake(c), synced(c), closed(c), link_signal(c),
        receipts_signal(c) {}
  ~Impl();

  asio::io_context& ioc;
  ClientConfig cfg;
  Output* out;
  std::unique_ptr<LocalStore> store;
  // The current connection. Requests in flight hold their own reference, so
  // a lost connection lives on until they have seen it fail.
  std::shared_ptr<Connection> conn;
  std::string session_token;  // from the last password login: reconnects use it
  SessionMode mode = SessionMode::kOneShot;
  std::filesystem::path downloads;

  // Pushes read, not yet processed (bounded: see kInboxPauseFrames), with
  // their sizes on the wire.
  struct Received {
    wire::Envelope env;
    std::size_t bytes = 0;
  };
  std::deque<Received> inbox;
  std::size_t inbox_bytes = 0;
  bool inbox_full = false;     // at the pause bound, not yet down to half
  bool inbox_dropped = false;  // a push was not kept: take the rest again once these are processed
  std::size_t inbox_high_frames = 0, inbox_high_bytes = 0;  // the most it held (logged at the end)
  asio::steady_timer inbox_wake;
  // Processed deliveries not yet acknowledged: one-by-one seqs, and the
  // newest processed seq per group log (cumulative acks).
  std::vector<std::uint64_t> acks;
  std::map<std::uint64_t, std::uint64_t> group_acks;
  // Group logs with a delivery this session could not process: their
  // cumulative ack must not pass it, so they are not acknowledged again
  // until the next session (the server sends them again).
  std::set<std::uint64_t> group_ack_held;
  Latch synced;  // set on the first SyncDone, or when the session ends
  Latch closed;
  bool sync_done = false;
  bool stopping = false;
  bool lost = false;  // connection ended by the server / network
  std::string lost_reason;  // why requests cannot be sent now
  std::string displaced;       // the server's last words (an Error push), if any
  bool was_displaced = false;  // ... and they were DISPLACED: another login took over
  std::uint64_t processed = 0;
  std::FILE* record = nullptr;

  // Reconnecting (chat, listen): when the link is lost the session goes on;
  // requests wait for the link and are sent again, with the same bytes.
  bool reconnect = false;    // this session gets back to a server by itself
  bool established = false;  // logged in at least once
  bool link_up = false;      // `conn` is logged in and usable
  bool over = false;         // the session has ended for good
  bool catching_up = false;  // reconnected (or reconnecting), SyncDone not seen yet
  Clock::time_point lost_at;
  std::string server_id;     // HelloOk.server_id of `conn`
  std::string server_addr;   // host:port of `conn`
  std::uint64_t max_image_bytes = 0;
  Signal link_signal;        // link_up, over or stopping changed

  // One-shot sessions (send-only): a FetchPending was asked (pushes are
  // taken from then on), and whether only what one-shot commands need is
  // processed (Waiting) while the rest stays pending for a receiving session.
  bool fetch_asked = false;
  bool only_waiting = false;

  // Receipts being sent (client_receipts.cc); Shutdown waits for them a
  // little while.
  int receipts_out = 0;
  Signal receipts_signal;

  const Identity& me() const { return store->identity(); }

  void Emit(const Json& e) { out->Emit(e); }

  // ------------------------------------------------------------ requests (client.cc)
  //
  // A Pending keeps the request's bytes until it is answered. Queues of them
  // keep this shape: [started on one connection]* [not started]*, so that
  // after a loss everything is sent again in the original order.
  struct Pending {
    wire::Envelope env;
    std::shared_ptr<Connection> conn;  // where it was last started
    std::shared_ptr<Connection::Call> call;
    bool sent = false;    // queued on some connection at least once
    bool resent = false;  // sent again after a loss: the server may have seen it before
  };

  bool CanSend() const { return conn != nullptr && (!reconnect || link_up); }
  void StartOn(Pending& p);
  // Appends `env` to `q` and sends it now if everything before it has been
  // sent on the current connection.
  void Push(std::deque<Pending>& q, wire::Envelope env);
  // Waits until the link is up (true) or the session is over (false).
  awaitable<bool> WaitLink();
  Status LostStatus() const;
  // Waits for the reply to q.front() and pops it. In a session that
  // reconnects, a request whose connection is lost is sent again (with all
  // of `q`, in order) once the link is back, until it is answered or the
  // session ends; with resend_sent false, a request that had been sent is
  // not sent again: it completes with kReplyLost once the link is back.
  // *resent tells whether the request went out more than once.
  awaitable<Outcome> Finish(std::deque<Pending>& q, wire::Envelope* reply, bool* resent, bool resend_sent = true);
  // One request and its reply (sent again after a lost connection, see
  // Finish).
  awaitable<Outcome> Call(const wire::Envelope& req, wire::Envelope* reply, bool* resent = nullptr);
  // Like Call, for a request the server refuses with `done` (or `done2`)
  // once it has been carried out: that refusal of a request that was sent
  // again means the first one got through, and counts as success.
  awaitable<Outcome> CallRepeatable(const wire::Envelope& req, wire::Envelope* reply, const char* done,
                                    const char* done2 = nullptr);
  // Like Call, but never sends the request twice: kReplyLost if the link
  // broke after it was sent (for requests that are not idempotent).
  awaitable<Outcome> CallOnce(const wire::Envelope& req, wire::Envelope* reply);
  void FlushAcks();
  void OnPush(wire::Envelope& env, std::string_view raw);

  // ------------------------------------------------------------ connections (client.cc)

  // A connection whose pushes and end reach this session.
  std::shared_ptr<Connection> NewConnection(bool session);
  // Asks the balancers (a blocking query, run on a thread of its own).
  awaitable<Status> AskBalancers(std::string* host, std::string* port, std::string* sid);
  // Connects `c` (Hello included) to --server, or to the server the
  // balancers name. *where = "host:port". *stale: the balancers could not
  // offer a server, or offered one that could not be reached (worth asking
  // again soon: their table lags a server's end by a few seconds).
  awaitable<Status> Dial(std::shared_ptr<Connection> c, std::string* where, bool* stale = nullptr);
  // A fresh connected connection. Through balancers, keeps trying for a
  // while (one may name a server that has just gone).
  awaitable<Status> DialFresh(bool session, std::shared_ptr<Connection>* made, std::string* where);
  // Login{receive} on `c`.
  awaitable<Outcome> LoginOn(std::shared_ptr<Connection> c);
  void Install(std::shared_ptr<Connection> c, const std::string& where);
  void OnConnClosed(Connection* which, const Status& why);
  // The session is over for good: "disconnected", and everyone waiting is
  // released.
  void EndSession(const std::string& reason);
  // One try at getting back: a server, Hello, receiving Login.
  awaitable<Outcome> Attempt(std::shared_ptr<Connection>* made, std::string* where);
  // Chat and listen: makes sure a quiet link is still alive (see
  // kHeartbeatEvery). A probe left unanswered ends the connection, which
  // starts a reconnect.
  awaitable<void> Heartbeat();
  // Gets the session back onto a server (the same one, or whichever the
  // balancers name), with backoff, for up to kReconnectFor.
  awaitable<void> Reconnect(std::string reason);

  // ------------------------------------------------------------ users (client_friends.cc)

  // Pins (or checks) the keys of `u`; KEY_CHANGED (after a loud warning) if
  // they differ from the pinned ones.
  Outcome PinUser(const wire::UserInfo& u, Contact* pinned);
  // GetUser, without pinning. `user` is a name or an id.
  awaitable<Outcome> LookUpUser(std::string user, wire::UserInfo* info);
  // GetUser + pin/check. `user` is a name or an id.
  awaitable<Outcome> FetchUser(std::string user, Contact* c);
  // FetchUser, and the user named in the command's result.
  awaitable<Outcome> TargetUser(std::string user, Contact* c, Json* result);
  // The recipient of a direct message: TargetUser, then FriendKey.
  awaitable<Outcome> DirectTarget(std::string user, Contact* c, std::string* key, Json* result);
  // A pinned contact, fetched from the server if not known yet.
  awaitable<Outcome> KnownUser(std::uint64_t id, Contact* c);
  std::string ContactName(std::uint64_t id, const std::string& fallback);
  // The name of user `id`: mine, a contact's, else the server's; "" if none
  // of them knows it.
  awaitable<void> UserNameOf(std::uint64_t id, std::string* name);
  // The friend key for `c`, or NOT_FRIENDS / NO_KEY explaining why not.
  awaitable<Outcome> FriendKey(const Contact& c, std::string* key);
  // Whether `id` is among my friends (ListFriends).
  awaitable<Outcome> IsFriend(std::uint64_t id, bool* yes);

  // ------------------------------------------------------------ groups (client_groups.cc)

  // After a GroupCreate whose answer was lost: a group named `name` that I
  // administer and this store does not know (the newest such), or *gid = 0.
  awaitable<Outcome> FindUnknownGroup(std::string name, std::uint64_t* gid, std::uint64_t* epoch);
  // Every group I am in (ListGroups, page by page; no members).
  awaitable<Outcome> ListAllGroups(std::vector<wire::GroupInfo>* groups);
  // Resolves GROUP: digits are an id; otherwise a name known locally (or, if
  // none, in the server's list of my groups).
  awaitable<Outcome> ResolveGroup(std::string arg, LocalGroup* g);
  // ResolveGroup, and the group named in the command's result.
  awaitable<Outcome> TargetGroup(std::string arg, LocalGroup* g, Json* result);
  // TargetGroup, then LookUpUser (a member to add or to kick).
  awaitable<Outcome> TargetGroupAndUser(std::string group, std::string user, LocalGroup* g,
                                        wire::UserInfo* info, Json* result);
  // GetGroup (page by page: every member); updates the local record and
  // pins the members' keys.
  awaitable<Outcome> RefreshGroup(std::uint64_t gid, wire::GroupInfo* info);
  std::string GroupNameOf(std::uint64_t gid);
  // Sends (admin) the key of `epoch` to each of `members` except me. Emits a
  // warning per member that could not be given the key; returns the first
  // failure.
  awaitable<Outcome> SendGroupKeys(std::uint64_t gid, std::uint64_t epoch, const std::string& key,
                                   std::vector<wire::UserInfo> members);
  // Admin: makes sure a key exists for the group's current epoch (making one
  // if needed) and hands it to every other member if it is new or `force`.
  // *created tells whether this call made the key. After a removal:
  // `removed` (a user ID, 0 for none) gets no key even if the server still
  // lists them, and the epoch must be above `must_exceed`, else nothing is
  // sent and the server's lie is reported (EPOCH_NOT_ADVANCED).
  awaitable<Outcome> RotateKey(std::uint64_t gid, bool force, std::uint64_t* epoch_out, bool* created,
                               std::uint64_t removed = 0, std::uint64_t must_exceed = 0);
  // Group text or file with the latest epoch key; on STALE_EPOCH refresh and,
  // as admin, rotate and retry once.
  awaitable<Outcome> SendToGroup(std::string group, bool is_file, std::string payload, Json* result);

  // ------------------------------------------------------------ sealing and sending chunks

  // Seals chunk `index` of `count` of one message into a request.
  using ChunkMaker = std::function<Outcome(std::uint32_t index, std::uint32_t count,
                                           const std::string& plaintext, wire::Envelope* env)>;
  // A direct message to `c` (client_friends.cc).
  ChunkMaker DirectMaker(const Contact& c, const std::string& key, const std::string& msg_id, wire::Kind kind);
  // A signed group message (client_groups.cc).
  ChunkMaker GroupMaker(std::uint64_t gid, std::uint64_t epoch, const std::string& key,
                        const std::string& msg_id, wire::Kind kind);
  // Streams `path` as an image: chunk 0 = u64be(size) || title, then 256 KiB
  // pieces, with at most kSendWindow requests in flight (client_images.cc).
  awaitable<Outcome> SendFile(std::string path, ChunkMaker make, Json* result);

  // ------------------------------------------------------------ receiving (client_events.cc)

  awaitable<void> ProcessLoop();
  // Whether the inbox is at its pause bound (see kInboxPauseFrames; with
  // hysteresis: full until down to half).
  bool InboxFull();
  void ClearInbox();
  // The inbox was processed after pushes were dropped: acknowledges what
  // was processed, then drops the connection, so that the session logs in
  // again (or ends, if it does not reconnect) and the server sends the rest.
  awaitable<void> TakeDroppedAgain();
  // What a one-shot command takes from the pending deliveries before it
  // runs: friend requests and answers, group keys, receipts (not messages,
  // files or group log entries: those wait for pending, listen or chat).
  static bool Waiting(const wire::Event& ev);
  // Returns false if processing must stop (connection lost).
  awaitable<bool> ProcessDeliver(std::uint64_t seq, const std::string& bytes, std::uint64_t group_id);
  // Records a processed delivery for the next Ack.
  void AckLater(std::uint64_t seq, std::uint64_t group_id);
  std::size_t PendingAcks() const { return acks.size() + group_acks.size(); }
  Json Base(const char* type, std::uint64_t seq, const wire::Event& ev);
  Json GroupBase(const char* type, std::uint64_t seq, const wire::Event& ev, std::uint64_t gid,
                 std::uint64_t epoch);
  void Undecryptable(std::uint64_t seq, const char* kind, const wire::Event& ev, const std::string& reason,
                     std::uint64_t group_id = 0);
  // The sender's name, or #id.
  std::string Who(const wire::Event& ev);
  // Keeps the notice delivered as `seq` in the history: {"notice", "text"}.
  Status RememberNotice(std::uint64_t seq, const wire::Event& ev, bool group, std::uint64_t conv, const char* notice,
                        const std::string& text);
  static bool Transport(const Outcome& o) { return o.code == "IO_ERROR"; }
  awaitable<Outcome> OnFriendRequest(std::uint64_t seq, const wire::Event& ev);
  awaitable<Outcome> OnFriendAnswer(std::uint64_t seq, const wire::Event& ev);
  awaitable<Outcome> OnDirect(std::uint64_t seq, const wire::Event& ev);
  awaitable<Outcome> OnGroupMessage(std::uint64_t seq, const wire::Event& ev);
  // What OnDirect (group false) and OnGroupMessage (group true) do with a
  // message once `opened` tells whether it opened into `plain`: drop repeats,
  // emit texts, hand image chunks to OnImageChunk, report what did not open.
  Outcome OnMessage(std::uint64_t seq, const wire::Event& ev, bool group, const Outcome& opened,
                    const std::string& plain);
  awaitable<Outcome> OnGroupNotice(std::uint64_t seq, const wire::Event& ev);
  awaitable<Outcome> OnGroupKey(std::uint64_t seq, const wire::Event& ev);
  // Opening sealed content (also used by DecryptFrames, offline).
  Outcome OpenFriendAnswer(const wire::Event& ev, const Contact& answerer, std::string* key);
  Outcome OpenDirect(const wire::Event& ev, std::string* plain);
  // Verifies (if `sender` is known) and decrypts a group message.
  Outcome OpenGroup(const wire::Event& ev, const Contact* sender, Opened* opened);
  Outcome OpenGroupKey(const wire::Event& ev, const Contact& admin, std::string* key);

  // ------------------------------------------------------------ receipts (client_receipts.cc)

  static constexpr std::chrono::seconds kReceiptWait{10};
  // Sends `to` a receipt for their message `msg_id` (in the background;
  // Shutdown waits for it, see WaitReceipts).
  void QueueReceipt(std::uint64_t to, const std::string& msg_id);
  awaitable<void> SendReceipt(std::uint64_t to, std::string msg_id, std::int64_t at);
  // Until the receipts queued are answered, the link is down, or kReceiptWait.
  awaitable<void> WaitReceipts();
  // A RECEIPT from ev.from_id: opened with their friend key (else reported
  // as undecryptable and dropped), recorded, emitted as a "receipt" event.
  Outcome OnReceipt(std::uint64_t seq, const wire::Event& ev);

  // ------------------------------------------------------------ history (client_history.cc)

  // Keeps one entry of a conversation (a group's, or the direct one with
  // user `conv`) in the store's history; `body` is sealed there. `key`: see
  // HistoryEntry::msg_id.
  Status Remember(bool group, std::uint64_t conv, std::uint64_t sender, const char* kind, std::int64_t at_ms,
                  const std::string& key, const Json& body);
  // Remember, for what this user has just sent: a failure is only logged
  // (what was sent stays sent).
  void RememberSent(bool group, std::uint64_t conv, const char* kind, const std::string& msg_id, const Json& body);
  // RememberSent of the file at `path`, as SendFile described it in `sent`.
  void RememberSentFile(bool group, std::uint64_t conv, const std::string& msg_id, const std::string& path,
                        const Json& sent);
  // The key under which the notice delivered as `seq` is kept once.
  static std::string NoticeKey(std::uint64_t seq);
  // When the server accepted the event (now, if it does not say).
  static std::int64_t EventTime(const wire::Event& ev);
  // This user's name, or a contact's ("" if unknown).
  std::string SenderName(std::uint64_t id);
  // An entry as shown by history and search.
  Json HistoryJson(const HistoryEntry& e);
  // USER|GROUP of history: a known contact or group (name or id), or
  // user:X / group:X. Names it in *result.
  Outcome ResolveConversation(const std::string& arg, bool* group, std::uint64_t* id, Json* result);

  // ------------------------------------------------------------ receiving images (client_images.cc)

  std::filesystem::path TempPathFor(std::uint64_t scope, std::uint64_t sender, const std::string& msg_id);
  // One decrypted image chunk (scope 0: direct; else the group id).
  Outcome OnImageChunk(std::uint64_t seq, const wire::Event& ev, std::uint64_t scope, std::uint64_t epoch,
                       const std::string& msg_id, std::uint32_t index, std::uint32_t count,
                       const std::string& plain);
  // Records (in one transaction) that chunk `index` of `p` has been written.
  Outcome SavePartial(const PartialImage& p, std::uint32_t index);
  Outcome FinishImage(std::uint64_t seq, const wire::Event& ev, std::uint64_t scope, std::uint64_t epoch,
                      const PartialImage& p);
  // Emits a "progress" event for image `p` (`through` bytes written), at
  // most every ProgressMeter::kEvery and when done.
  void ReceiveProgress(const wire::Event& ev, const PartialImage& p, std::uint64_t through);
  // The meters of the images being received, by scope/sender/msg_id.
  std::map<std::string, ProgressMeter> receiving;
};

}  // namespace fastchat::client
