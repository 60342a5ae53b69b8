// Session: one client connection (the transport side of a client).
//
// A reader coroutine decodes frames and hands each logged-in request to the
// RequestService, which decides it at once. Requests that need a durable
// write do not hold the reader up: the next frame is decided while the write
// waits for its store batch, so one connection's requests share group
// commits (at most kMaxInFlight writes outstanding per connection). Replies
// still leave in request order: each request takes a reply slot, and slots
// are released front first. A writer coroutine drains the write queue,
// gathering many queued frames into one write. The queue is bounded: a receiving session whose queue passes
// max_queue_bytes stops taking live deliveries ("lagging") and, once drained,
// catches up from the pending store, which holds every delivery until acked.
//
// Idle, a plain-TCP session runs no coroutine and holds no buffer or timer:
// a readiness callback starts the reader when bytes arrive, the write queue
// starts the writer when frames arrive, and each ends when done.
//
// Limits (session_limits.cc, peer_limits.h): a connection is admitted or refused
// when it starts; before login it has deadlines and a small frame limit;
// logged in, it is pinged when silent and dropped when it stops reading;
// logins, registrations and sends are rate-limited.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>

#include "net/stream.h"

#include "fastchat/frame.h"
#include "fastchat/status.h"
#include "catch_up_cursor.h"
#include "frame_queue.h"
#include "group_chain.h"
#include "group_hold.h"
#include "peer_limits.h"
#include "request_service.h"
#include "server.h"

namespace fastchat::wire {
class Envelope;
class Login;
class LoggedIn;
}

namespace fastchat::server {

class Session : public std::enable_shared_from_this<Session> {
 public:
  static constexpr std::uint32_t kMaxInFlight = 256;
  static constexpr std::size_t kSessionTokenBytes = 32;
  // Reads in a row before the reader lets the loop run other work (a plain
  // read takes up to 64 KiB, a TLS one a record of up to 16 KiB).
  static constexpr int kMaxReadsPerTurn = 16;
  // Refused TLS connections kept open at once to be told why (each until its
  // handshake ends, at most the handshake deadline); more are just closed.
  static constexpr std::size_t kMaxRefusingTls = 256;
  // A FetchPending re-reads everything pending from the store: at most one
  // per this long per session (more are RATE_LIMITED).
  static constexpr std::chrono::seconds kFetchPendingEvery{5};

  Session(Server::Impl& server, net::Socket socket);
  ~Session();

  // Starts the reader and writer coroutines.
  void Start();
  // Closes the connection; the coroutines end and the server forgets it.
  void Close();
  // Sends a serialized Error push then closes (e.g. DISPLACED); a displaced
  // session first drops what it had queued (the store has it all).
  void CloseWith(const Status& why, std::uint32_t retry_after_ms = 0);

  // A stored delivery for this session's user (receiving sessions only). An
  // entry of a group's log names the entry before it (prev_seq): one whose
  // predecessor this session has not sent is held back (GroupChain). It is
  // held for its predecessor, usually in flight on another mesh link, and
  // sent right after it (GroupHold); if the predecessor does not come within
  // the hold's deadline, or more is held than its bounds (Limits
  // group_hold_*), the session reads its pending rows from the store again.
  //
  // `forwarded`: the delivery came from another server, at a moment that has
  // nothing to do with this server's commits. If a reply of this
  // connection's own is waiting for its write, the delivery waits for it and
  // both leave in one write (as a local delivery and the replies of the same
  // commit do): without that, a user of a cluster who both sends and
  // receives costs a write and a read more per message
  // (docs/performance.md, "Cross-server DMs against local ones").
  //
  // `frame`, if given: the whole Deliver frame of this entry (DeliverFrame),
  // built once for all its local recipients (Router::Route), sent instead of
  // a prefix of this session's own before `event`.
  void Deliver(std::uint64_t seq, const std::shared_ptr<const std::string>& event, std::uint64_t group_id = 0,
               std::uint64_t prev_seq = 0, bool forwarded = false,
               const std::shared_ptr<const std::string>* frame = nullptr);
  // The user stored entry `seq` of `group`'s log (its own message, which it
  // does not read) after the entry `prev_seq`.
  void OwnGroupEntry(std::uint64_t group, std::uint64_t seq, std::uint64_t prev_seq);

  // Stops live pushes and reads deliveries from the store from `seq` on
  // (0: everything pending), for deliveries a mesh link could not carry.
  void CatchUpFromStore(std::uint64_t seq);

  std::uint64_t user_id() const { return user_id_; }
  // Bytes queued to this connection and not yet written.
  std::size_t queued_bytes() const { return out_.bytes(); }

  // This connection's deadlines at `now` (peer_limits.h, CheckLiveness).
  Verdict CheckDeadlines(SteadyTime now) const;
  // Carries out a verdict: pings, or closes the connection.
  void Enforce(const Verdict& verdict, SteadyTime now);

 private:
  // TLS: the handshake, then the writer, then ReadLoop.
  asio::awaitable<void> StartTls();
  // Reads and handles frames; started by ReadWhenReadable each time the
  // socket becomes ready (and by StartTls); ends once it has read
  // everything that arrived.
  asio::awaitable<void> ReadLoop();
  // Waits for the socket to be ready for the next read (readable, or on TLS
  // rarely writable) holding only a callback (no coroutine, no buffer: the
  // idle state), then starts ReadLoop.
  void ReadWhenReadable();
  // The reader stopped (EOF, error, closing): closes unless the writer will.
  void ReadEnded();
  // Drains the write queue once and ends; started by out_ (WriteOnDemand)
  // whenever frames arrive at an idle queue. Closes the connection when the
  // queue stops or a write fails.
  asio::awaitable<void> WriteLoop();
  // Lets out_ start WriteLoop (after the TLS handshake: no write overlaps it).
  void WriteOnDemand();
  // Sends pending deliveries from where cursor_ says until none are left,
  // at most max_queue_bytes queued at a time, then goes live. Sends SyncDone at the end if one was asked for.
  asio::awaitable<void> CatchUp();
  void SendEnvelope(const wire::Envelope& env);
  // Sends Error{ClientError(st)} now (an internal failure's text stays in
  // the log); retry_after_ms goes with BUSY / RATE_LIMITED / LIMIT_REACHED.
  void SendError(std::uint64_t rid, const Status& st, std::uint32_t retry_after_ms = 0);
  // Sends a reply frame now, or queues it behind replies still waiting for
  // their writes.
  void Reply(std::string frame);
  // Starts a decided request: its reply now, or its write then its reply.
  void Dispatch(Outcome outcome);
  // What Finished needs of an Outcome once its write is done (the rest of
  // the Outcome is not carried through the store).
  struct AfterWrite {
    std::function<void(Directory&, const WriteResult&)> committed;
    Facts facts;
    std::shared_ptr<const std::string> event;
    std::uint64_t rid = 0;
  };
  // A write of this session's finished (committed or failed): routes its
  // deliveries and fills its reply slot.
  void Finished(std::uint64_t slot, bool reply, AfterWrite& o, WriteResult r);
  // Releases ready replies from the front of the slots.
  void FlushReplies();
  // Frees in_flight_ once no write is in flight and no reply waits.
  void EndInFlightIfDone();
  // Resumes once fewer than kMaxInFlight writes are outstanding.
  asio::awaitable<void> WaitForWriteSlots();
  void StartCatchUp(bool announce);
  // Reading pending deliveries for this connection: its user's receiving
  // session, or a send-only session doing a one-shot FetchPending.
  bool Reading() const { return receiving_ || fetching_; }
  // Stops being the user's receiving session (and tells the cluster).
  void LeavePresence();

  // ---- group-log entries past a gap (GroupChain, GroupHold)
  // Holds a live entry whose predecessor was not sent; false if it may not
  // be held (the hold is off, or its bounds are full).
  bool HoldForPredecessor(std::uint64_t seq, const std::shared_ptr<const std::string>& event, std::uint64_t group,
                          std::uint64_t prev);
  // Sends the held entries of `group` that now follow what was sent.
  void SendHeld(std::uint64_t group);
  // Forgets the held entries (not sent): the next read of the store includes them.
  void DropHeld();
  // The hold's deadline passed (or may have): reads the store if the oldest
  // held entry has waited group_hold_wait, else waits on.
  void HoldExpired();
  void ArmHoldTimer(SteadyTime at);
  // Gives up on a gap: reads every pending row again, from the start.
  void ReadPastGap();

  // One request. Returns after its reply has been queued.
  asio::awaitable<void> Handle(wire::Envelope& env);
  asio::awaitable<Refusal> HandleRegister(const wire::Envelope& env);
  asio::awaitable<Refusal> HandleLogin(const wire::Envelope& env);
  // Password login: Argon2id (rate-limited, queued). Token login: one store
  // read. Set *id, *name.
  asio::awaitable<Refusal> CheckPassword(const wire::Envelope& env, std::uint64_t* id, std::string* name);
  asio::awaitable<Status> CheckToken(const wire::Login& m, std::uint64_t* id, std::string* name);
  // Creates and stores a session token for the logged-in user; fills the
  // LoggedIn reply's token fields (left empty if the store fails).
  asio::awaitable<void> IssueToken(wire::LoggedIn* reply);
  asio::awaitable<Status> HandleLogout(const wire::Envelope& env);
  // Checks the current password like a login (the same per-account and
  // per-source failure limits, the same Argon2id queue), then stores the new
  // hash and revokes every session token of the user.
  asio::awaitable<Refusal> HandleChangePassword(const wire::Envelope& env);
  asio::awaitable<void> HandleLoggedIn(wire::Envelope& env);

  // Remembers the hash of the token of this login (for Logout).
  void KeepTokenHash(const std::string& hash);
  // The logged-in user's name, from the server's Directory.
  std::string UserName() const;
  // TLS: the handshake, with the configured deadline.
  asio::awaitable<Status> TlsHandshake();
  // No longer one of the refused TLS connections being told why.
  void DoneRefusing();

  // ---- limits (session_limits.cc)
  // Counts this connection in, closing the oldest not-logged-in one if there
  // are too many; false if refused (its Error frame is queued, then it closes).
  bool Admit();
  // No longer among the connections waiting to log in.
  void LeavePrelogin();
  // Closing: no longer counted at all.
  void ForgetLimits();
  // The largest frame and write queue accepted now (smaller before login).
  std::uint32_t FrameLimit() const;
  std::size_t QueueLimit() const;
  // Bytes arrived from the peer.
  void HeardFromPeer();
  // The answer to a Ping.
  void Pong(std::uint64_t rid);
  // RATE_LIMITED if `env` is a send over this user's rate.
  Refusal CheckSendRate(const wire::Envelope& env);
  // Logs a failed login (warn: source and account).
  void LogFailedLogin(const wire::Envelope& env, bool known);

  Server::Impl& server_;
  net::Stream stream_;
  FrameQueue out_;
  std::unique_ptr<FrameDecoder> decoder_;  // only while a frame is partly read

  std::uint64_t user_id_ = 0;  // 0 until login
  // Hash (crypto::Hash) of the token this session logged in with or was
  // issued, if has_token_. Inline: a std::string would put 48 bytes on the
  // heap for every idle session.
  std::array<char, 32> token_hash_{};
  bool has_token_ = false;
  bool closed_ = false;
  bool handshaken_ = false;
  bool refusing_tls_ = false;  // refused, kept for its handshake to say why (counted in refusing_tls)
  bool receiving_ = false;
  bool live_ = false;           // receiving and caught up: take live deliveries
  bool fetching_ = false;       // send-only: a one-shot FetchPending is being answered
  bool catching_up_ = false;    // a CatchUp coroutine is running
  bool announce_pending_ = false;  // send SyncDone when the catch-up ends
  bool missed_ = false;            // a push was skipped while catching up
  bool resend_all_ = false;        // this pass answers a FetchPending: send sent rows again too
  // Limits (beside the flags above: no padding between them).
  bool admitted_ = false;          // counted in server_.connections
  bool in_prelogin_ = false;       // in server_.prelogin (at prelogin_)
  bool waiting_for_peer_ = false;  // the reader waits for the peer's bytes
  bool ping_outstanding_ = false;
  CatchUpCursor cursor_;           // where the next read of the store starts
  GroupChain groups_;              // how far each group log was sent without a gap
  std::unique_ptr<GroupHold> held_;  // entries waiting for their predecessor (only while there are some)
  std::unique_ptr<asio::steady_timer> hold_timer_;  // their deadline (only while there are some)
  SteadyTime last_fetch_pending_{};  // the last FetchPending honoured (one per kFetchPendingEvery)

  // Writes in flight and the replies waiting behind them, only while there
  // are any (an idle session holds none). Replies in request order:
  // slots[reply_head..] are waiting, in order; an empty frame is a write
  // still in flight.
  struct Slot {
    bool ready = false;
    std::string frame;
  };
  struct InFlight {
    std::vector<Slot> slots;
    std::size_t reply_head = 0;
    std::uint64_t slot_base = 0;  // number of slots[0] (from 0 in each InFlight)
    std::uint32_t writes = 0;
    std::unique_ptr<asio::steady_timer> slot_wait;  // only while the reader waits for a slot
  };
  std::unique_ptr<InFlight> in_flight_;

  // Limits.
  std::string source_;             // SourceKey of the peer
  std::list<Session*>::iterator prelogin_;
  SteadyTime accepted_;
  SteadyTime last_frame_;
  SteadyTime last_bytes_;
  SteadyTime ping_sent_;
  SteadyTime closing_since_;
};

// Checks every session's deadlines, and expires rate buckets, every
// second (more often when a deadline is under 4 s), until the server stops.
asio::awaitable<void> SweepLoop(Server::Impl& server);

}  // namespace fastchat::server
