#include "session.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <optional>
#include <span>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/post.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include "client_error.h"
#include "fastchat.pb.h"
#include "fastchat/crypto.h"
#include "fastchat/deliver_frame.h"
#include "fastchat/frame.h"
#include "mesh.h"
#include "offload.h"
#include "server_impl.h"
#include "validate.h"

namespace fastchat::server {
namespace {

using asio::use_awaitable;

Millis MsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - start);
}

std::uint64_t NowMs() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

// Counts a coroutine in `*running` while it lives (ServerMetrics).
class Running {
 public:
  explicit Running(std::uint64_t* running) : running_(running) { ++*running_; }
  ~Running() { --*running_; }
  Running(const Running&) = delete;
  Running& operator=(const Running&) = delete;

 private:
  std::uint64_t* running_;
};

}  // namespace

// Every logged-in connection holds one Session (allocated with make_shared:
// 16 bytes of control block before it). Past 368 bytes it moves from
// jemalloc's 384-byte class to the 448 one, and the idle cost per connection
// (docs/performance.md, "Idle connections") grows with it: a member added
// here should be made to fit, or the new cost measured and written down.
static_assert(sizeof(Session) <= 368, "Session outgrew jemalloc's 384-byte class (see the comment)");

Session::Session(Server::Impl& server, net::Socket socket)
    : server_(server), stream_(std::move(socket), server.config.tls) {}

Session::~Session() = default;

void Session::Start() {
  auto self = shared_from_this();
  const bool admitted = Admit();  // refused: CloseWith has queued why
  if (!stream_.tls()) {
    WriteOnDemand();
    if (admitted) ReadWhenReadable();
    return;
  }
  // TLS: the handshake first, and only then the writer (no write may
  // overlap the handshake). A refused connection is told why inside TLS
  // too, but only so many at once: past that it is just closed.
  if (!admitted) {
    if (server_.refusing_tls >= kMaxRefusingTls) {
      Close();
      return;
    }
    ++server_.refusing_tls;
    refusing_tls_ = true;
  }
  asio::co_spawn(server_.io, [self]() { return self->StartTls(); }, asio::detached);
}

void Session::DoneRefusing() {
  if (!refusing_tls_) return;
  refusing_tls_ = false;
  --server_.refusing_tls;
}

void Session::Close() {
  if (closed_) return;
  closed_ = true;
  live_ = false;
  DoneRefusing();
  ForgetLimits();
  stream_.Close();
  out_.Stop();
  LeavePresence();
  auto self = shared_from_this();  // keep alive past the erase below
  server_.sessions.erase(self);
}

void Session::CloseWith(const Status& why, std::uint32_t retry_after_ms) {
  if (closed_) return;
  LeavePresence();
  LeavePrelogin();
  if (!out_.stopping()) closing_since_ = std::chrono::steady_clock::now();
  if (why.code() == Code::kDisplaced) out_.DropUnsent();
  SendError(0, why, retry_after_ms);
  out_.StopAfterFlush();
}

void Session::LeavePresence() {
  if (!receiving_) return;
  receiving_ = false;
  live_ = false;
  held_.reset();
  hold_timer_.reset();
  if (server_.presence.Remove(user_id_, this) && server_.mesh) server_.mesh->UserOffline(user_id_);
}

void Session::SendEnvelope(const wire::Envelope& env) {
  std::string frame;
  frame.reserve(kFrameHeaderSize + env.ByteSizeLong());
  AppendFrame(env.SerializeAsString(), &frame);
  out_.Push(std::move(frame));
}

void Session::SendError(std::uint64_t rid, const Status& st, std::uint32_t retry_after_ms) {
  out_.Push(RequestService::ErrorFrame(rid, st, retry_after_ms));
}


void Session::WriteOnDemand() {
  // The queue is a member, and the writer holds `self`.
  out_.SetWriter(
      [](void* context) {
        auto self = static_cast<Session*>(context)->shared_from_this();
        asio::co_spawn(self->server_.io, [self]() { return self->WriteLoop(); }, asio::detached);
      },
      this);
}

asio::awaitable<void> Session::WriteLoop() {
  auto self = shared_from_this();
  const Running counted(&server_.metrics.session_writers);
  bool failed = false;
  try {
    // co_spawn runs this at once, inside the first Push of a burst: let the
    // rest of the burst queue first, so that one write gathers it all.
    co_await asio::post(server_.io, use_awaitable);
    co_await out_.Run(stream_);  // returns once the queue is empty
  } catch (const std::exception& e) {
    spdlog::debug("session write ended: {}", e.what());
    failed = true;
  }
  if (failed || out_.stopping()) Close();
}

void Session::ReadWhenReadable() {
  waiting_for_peer_ = true;
  stream_.socket().async_wait(stream_.ReadWaitsFor(), [self = shared_from_this()](const asio::error_code& ec) {
    self->waiting_for_peer_ = false;
    if (ec) {
      spdlog::debug("session read ended: {}", ec.message());
      self->ReadEnded();
      return;
    }
    asio::co_spawn(self->server_.io, [self]() { return self->ReadLoop(); }, asio::detached);
  });
}

void Session::ReadEnded() {
  if (!closed_ && out_.stopping()) return;  // the writer closes once flushed
  Close();
}

asio::awaitable<Status> Session::TlsHandshake() {
  // The deadline closes the socket, which fails the handshake.
  auto expired = std::make_shared<bool>(false);
  asio::steady_timer deadline(server_.io, server_.config.tls_handshake_timeout);
  auto self = shared_from_this();
  deadline.async_wait([self, expired](const asio::error_code& ec) {
    if (ec) return;
    *expired = true;
    self->stream_.Close();
  });
  Status st = co_await stream_.Handshake(net::Stream::Role::kServer);
  deadline.cancel();
  if (*expired) co_return Status(Code::kIOError, "TLS handshake not finished within the deadline");
  co_return st;
}

asio::awaitable<void> Session::StartTls() {
  auto self = shared_from_this();
  Status hs = co_await TlsHandshake();
  DoneRefusing();
  if (!hs.ok() || closed_) {
    spdlog::debug("closing connection: {}", hs.ToString());
    Close();
    co_return;
  }
  WriteOnDemand();
  if (out_.stopping()) co_return;  // refused or pushed out meanwhile: the writer says why, then closes
  // Records may have come with the handshake's last flight: read before
  // waiting for the socket.
  co_await ReadLoop();
}

asio::awaitable<void> Session::ReadLoop() {
  auto self = shared_from_this();
  const Running counted(&server_.metrics.session_readers);
  try {
    for (int reads = 0; !closed_ && !out_.stopping(); ++reads) {
      // Back-pressure: a peer that does not read its replies stops being read.
      co_await out_.WaitBelow(QueueLimit());
      if (closed_ || out_.stopping()) break;
      if (reads == kMaxReadsPerTurn) {
        // A peer that keeps sending gets its turn like everyone else.
        reads = 0;
        co_await asio::post(server_.io, asio::use_awaitable);
        if (closed_ || out_.stopping()) break;
      }
      // Read what has arrived into the server's one shared buffer (it is
      // copied into the decoder before anything can wait). Nothing left to
      // read: wait for the socket again with no coroutine and no buffer, so
      // an idle connection holds neither. TLS decrypts here too.
      asio::error_code ec;
      std::vector<char>& shared = server_.read_buffer;
      const std::size_t n = stream_.ReadNow(asio::buffer(shared), ec);
      if (ec == asio::error::would_block) {
        ReadWhenReadable();
        co_return;
      }
      if (ec) throw asio::system_error(ec);
      const char* data = shared.data();
      HeardFromPeer();
      if (!decoder_) decoder_ = std::make_unique<FrameDecoder>(FrameLimit());
      decoder_->Append(data, n);
      for (;;) {
        std::string_view payload;
        bool have = false;
        Status st = decoder_->Next(&payload, &have);
        if (!st.ok()) {
          spdlog::warn("closing connection: {}", st.ToString());
          CloseWith(st);
          co_return;
        }
        if (!have) break;
        last_frame_ = last_bytes_;
        wire::Envelope env;
        if (!env.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
          SendError(0, Status(Code::kBadFrame, "frame is not a valid Envelope"));
          continue;
        }
        ++server_.frames_handled;
        if (user_id_ != 0 && in_flight_ && in_flight_->writes >= kMaxInFlight) co_await WaitForWriteSlots();
        if (closed_ || out_.stopping()) co_return;
        co_await Handle(env);
        if (closed_ || out_.stopping()) co_return;
        decoder_->set_max_frame(FrameLimit());  // larger once logged in
      }
      if (decoder_->buffered() == 0) decoder_.reset();  // no partial frame: hold no decoder
      if (!stream_.tls() && n < server_.read_buffer.size()) {
        // A short plain read took everything that had arrived (TLS reads
        // one record at a time: it goes on until would_block).
        if (closed_ || out_.stopping()) break;
        ReadWhenReadable();
        co_return;
      }
    }
  } catch (const std::exception& e) {
    spdlog::debug("session read ended: {}", e.what());
  }
  ReadEnded();
}

void Session::StartCatchUp(bool announce) {
  DropHeld();  // read from the store with everything else
  if (announce) announce_pending_ = true;
  if (catching_up_) return;
  catching_up_ = true;
  auto self = shared_from_this();
  asio::co_spawn(server_.io, [self]() { return self->CatchUp(); }, asio::detached);
}

asio::awaitable<void> Session::CatchUp() {
  auto self = shared_from_this();
  struct Fetched {
    Status st;
    std::vector<PendingRow> rows;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> heads;  // read first (receiving sessions)
  };
  // Where this pass reads from: past the last row sent, but below any row
  // missed meanwhile (CatchUpCursor).
  std::uint64_t read_after = cursor_.last_sent();
  groups_.StartPass();
  while (!closed_ && Reading()) {
    co_await out_.WaitBelow(server_.config.max_queue_bytes / 2);
    if (closed_ || !Reading()) break;
    read_after = cursor_.ReadAfter(read_after);
    groups_.Reading(read_after);
    const std::uint64_t user = user_id_, after = read_after;
    missed_ = false;
    const std::size_t limit = server_.config.sync_page_rows;
    const bool heads = receiving_;
    auto job = [user, after, limit, heads](Store& s) {
      Fetched r;
      // The heads first: an entry up to a head is then in the rows or below
      // `after` (GroupChain::EndPass).
      if (heads) r.st = s.GroupHeads(user, &r.heads);
      if (r.st.ok()) r.st = s.FetchPending(user, after, limit, &r.rows);
      return r;
    };
    Fetched f = co_await server_.store.Run(std::move(job));
    if (closed_ || !Reading()) break;
    if (!f.st.ok()) {
      CloseWith(StoreFailure(f.st, "fetching pending deliveries of user " + std::to_string(user_id_)));
      break;
    }
    if (f.rows.empty()) {
      // A delivery pushed to us while this fetch ran may have committed
      // after the fetch's snapshot (another server's write): read again.
      if (missed_) continue;
      // Nothing left in the store past what was sent: from here on, live
      // deliveries arrive after everything fetched. (A one-shot fetch just
      // ends: it never takes pushes.)
      if (receiving_) groups_.EndPass(after, f.heads);
      live_ = receiving_;
      resend_all_ = false;
      break;
    }
    // Rows below the highest sent may be repeats of live pushes (after a
    // rewind); clients drop repeats by seq. A page stops at the queue limit
    // (a page of image chunks is ~16 MiB); the rest is read again once the
    // queue has drained. A group entry whose predecessor may not have been
    // sent (this pass began above it) ends the page: the next read starts
    // from the beginning, below the gap.
    for (PendingRow& row : f.rows) {
      if (row.group_id != 0 && !resend_all_ && groups_.IsRepeat(row.group_id, row.seq)) {
        // Sent on this connection already (live, or by an earlier read) and
        // not acknowledged yet: a read from the start for the server's own
        // reasons (a mesh link came or went) need not send it again; the
        // connection still carries it. A client's FetchPending does ask.
        ++server_.metrics.group_store_repeats_skipped;
        cursor_.Sent(row.seq);
        read_after = row.seq;
        continue;
      }
      if (row.group_id != 0 && !groups_.FromStore(row.group_id, row.seq, row.prev_seq)) {
        cursor_.Restart();  // as for a live gap (Deliver)
        ++server_.metrics.group_gaps;
        break;
      }
      auto event = std::make_shared<const std::string>(std::move(row.payload));
      out_.Push(DeliverFramePrefix(row.seq, event->size(), row.group_id), event);
      ++server_.metrics.deliveries_from_store;
      cursor_.Sent(row.seq);
      read_after = row.seq;
      if (out_.bytes() >= server_.config.max_queue_bytes) break;
    }
  }
  catching_up_ = false;
  if (announce_pending_ && !closed_ && Reading()) {
    announce_pending_ = false;
    wire::Envelope env;
    env.mutable_sync_done();
    SendEnvelope(env);
  }
  fetching_ = false;
}

void Session::CatchUpFromStore(std::uint64_t seq) {
  if (closed_ || !receiving_) return;
  live_ = false;
  if (seq == 0) {
    cursor_.Restart();
  } else {
    cursor_.Missed(seq);
  }
  StartCatchUp(false);
}

void Session::OwnGroupEntry(std::uint64_t group, std::uint64_t seq, std::uint64_t prev_seq) {
  if (closed_ || !receiving_) return;
  if (!groups_.Own(group, seq, prev_seq)) {
    // Its predecessor (another server's entry) has not reached this session
    // yet: hold it, as an entry not to send, so that it counts once that
    // one is sent and entries naming it do not wait for a re-read.
    // (Not held: an entry naming it is then a gap of its own.)
    if (live_) HoldForPredecessor(seq, nullptr, group, prev_seq);
    return;
  }
  if (held_) SendHeld(group);  // an entry naming this one may be waiting
}

void Session::Deliver(std::uint64_t seq, const std::shared_ptr<const std::string>& event, std::uint64_t group_id,
                      std::uint64_t prev_seq, bool forwarded, const std::shared_ptr<const std::string>* frame) {
  if (closed_ || !receiving_) return;
  if (!live_) {
    if (group_id != 0 && groups_.IsRepeat(group_id, seq)) {
      // A catch-up pass sent it already (it read the entry committed before
      // its forward came): rewinding for it would send it again.
      ++server_.metrics.group_repeats_dropped;
      return;
    }
    missed_ = true;  // CatchUp reads the store again before going live ...
    cursor_.Missed(seq);  // ... from below this row if it arrived out of order
    return;
  }
  // No "seq <= last sent" filter here: in a cluster, forwards from different
  // servers may arrive out of seq order, and dropping one would hold it back
  // until the next login. A rare repeat of a direct message is harmless
  // (clients de-duplicate); a group entry's chain tells a repeat (below).
  // Catch-up paging stays correct because the store commits one recipient's
  // rows in seq order.
  if (out_.bytes() + event->size() > server_.config.max_queue_bytes) {
    // Lagging: stop live pushes; catch up from the store once drained.
    live_ = false;
    cursor_.Missed(seq);
    StartCatchUp(false);
    return;
  }
  if (group_id != 0) {
    const GroupChain::Verdict v = groups_.Push(group_id, seq, prev_seq);
    if (v == GroupChain::Verdict::kRepeat) {
      // Sent already: by a store read that found it committed before its
      // forward came (a catch-up racing the forward), or forwarded twice.
      ++server_.metrics.group_repeats_dropped;
      return;
    }
    if (v == GroupChain::Verdict::kGap) {
      // An entry of this group before this one has not reached this
      // session: sending this one would let the client's cumulative ack
      // pass the missing one. Usually the missing one is in flight on
      // another mesh link (senders on different servers race): hold this
      // one for it.
      if (HoldForPredecessor(seq, event, group_id, prev_seq)) return;
      ReadPastGap();
      return;
    }
  }
  std::string head;
  if (frame == nullptr) head = DeliverFramePrefix(seq, event->size(), group_id);
  const std::shared_ptr<const std::string>& body = frame != nullptr ? *frame : event;
  if (forwarded && in_flight_ && in_flight_->reply_head < in_flight_->slots.size()) {
    // A reply of this connection's own is waiting for its write: the
    // delivery leaves with it, in one write (FlushReplies pushes it).
    out_.PushHeld(std::move(head), body);
  } else {
    out_.Push(std::move(head), body);
  }
  ++server_.metrics.deliveries_live;
  cursor_.Sent(seq);
  if (group_id != 0 && held_) SendHeld(group_id);
}

bool Session::HoldForPredecessor(std::uint64_t seq, const std::shared_ptr<const std::string>& event,
                                 std::uint64_t group, std::uint64_t prev) {
  const Limits& limits = server_.config.limits;
  if (limits.group_hold_wait.count() <= 0) return false;
  if (!held_) held_ = std::make_unique<GroupHold>(limits.group_hold_entries, limits.group_hold_bytes);
  const SteadyTime now = std::chrono::steady_clock::now();
  if (!held_->Hold(GroupHold::Entry{group, seq, prev, event, now})) return false;  // bounds full: ReadPastGap
  ++server_.metrics.group_entries_held;
  if (!hold_timer_) ArmHoldTimer(now + limits.group_hold_wait);
  return true;
}

void Session::SendHeld(std::uint64_t group) {
  while (held_ && live_) {
    std::optional<GroupHold::Entry> e = held_->Next(group, groups_.Known(group));
    if (!e) break;
    if (!e->event) {  // the user's own: known now, not sent
      groups_.Own(group, e->seq, e->prev);
      continue;
    }
    if (out_.bytes() + e->event->size() > server_.config.max_queue_bytes) {
      // Lagging (as in Deliver): the store has it and everything held.
      live_ = false;
      cursor_.Missed(e->seq);
      StartCatchUp(false);
      return;
    }
    if (groups_.Push(group, e->seq, e->prev) == GroupChain::Verdict::kRepeat) {  // its predecessor is known now
      ++server_.metrics.group_repeats_dropped;
      continue;
    }
    out_.Push(DeliverFramePrefix(e->seq, e->event->size(), group), e->event);
    ++server_.metrics.deliveries_live;
    cursor_.Sent(e->seq);
  }
  if (held_ && held_->empty()) {
    held_.reset();
    hold_timer_.reset();
  }
}

void Session::DropHeld() {
  if (!held_) return;
  for (std::uint64_t seq : held_->Clear()) cursor_.Missed(seq);
  held_.reset();
  hold_timer_.reset();
}

void Session::ArmHoldTimer(SteadyTime at) {
  hold_timer_ = std::make_unique<asio::steady_timer>(server_.io);
  hold_timer_->expires_at(at);
  std::weak_ptr<Session> weak = weak_from_this();
  hold_timer_->async_wait([weak](const asio::error_code& ec) {
    if (ec) return;  // cancelled: nothing held any more, or a newer timer
    if (auto self = weak.lock()) self->HoldExpired();
  });
}

void Session::HoldExpired() {
  hold_timer_.reset();
  if (closed_ || !live_ || !held_ || held_->empty()) {
    held_.reset();
    return;
  }
  const SteadyTime due = held_->Oldest() + server_.config.limits.group_hold_wait;
  if (due > std::chrono::steady_clock::now()) {
    ArmHoldTimer(due);  // the entries held first were sent; a later one waits on
    return;
  }
  ReadPastGap();
}

void Session::ReadPastGap() {
  // The missing entry's forward was lost (with a peer killed after its
  // commit, or in a silently cut link), or never made (the user's own entry
  // sent through another server). The store
  // has the missing entries and the held ones, in order. Read from the
  // start, as when a link drops: a lost forward's link may have lost other
  // rows too (DMs, other groups' entries) below this group's gap; read only
  // from the gap, later ones of those would reach the client before them.
  live_ = false;
  cursor_.Restart();
  ++server_.metrics.group_gaps;
  StartCatchUp(false);
}

// ------------------------------------------------------------------ replies

void Session::Reply(std::string frame) {
  if (!in_flight_ || in_flight_->reply_head == in_flight_->slots.size()) {
    out_.Push(std::move(frame));
    return;
  }
  in_flight_->slots.push_back(Slot{true, std::move(frame)});
}

void Session::FlushReplies() {
  InFlight& f = *in_flight_;
  while (f.reply_head < f.slots.size() && f.slots[f.reply_head].ready) {
    out_.Push(std::move(f.slots[f.reply_head].frame));
    ++f.reply_head;
  }
  if (f.reply_head == f.slots.size()) {
    f.slot_base += f.slots.size();
    f.slots.clear();
    f.reply_head = 0;
    if (f.slots.capacity() > 64) std::vector<Slot>().swap(f.slots);
  }
  EndInFlightIfDone();
}

void Session::EndInFlightIfDone() {
  // No write can name a slot any more: numbering may start again at 0.
  const InFlight& f = *in_flight_;
  if (f.writes == 0 && f.reply_head == f.slots.size() && !f.slot_wait) in_flight_.reset();
}

asio::awaitable<void> Session::WaitForWriteSlots() {
  auto self = shared_from_this();
  while (!closed_ && in_flight_->writes >= kMaxInFlight) {
    InFlight& f = *in_flight_;  // kept while slot_wait is set
    if (!f.slot_wait) f.slot_wait = std::make_unique<asio::steady_timer>(server_.io);
    f.slot_wait->expires_at(asio::steady_timer::time_point::max());
    asio::error_code ec;
    co_await f.slot_wait->async_wait(asio::redirect_error(use_awaitable, ec));
  }
  in_flight_->slot_wait.reset();
  EndInFlightIfDone();
}

void Session::Dispatch(Outcome o) {
  if (!o.refusal.ok()) server_.metrics.CountRefusal(o.refusal.code());  // a group or membership limit
  if (o.ack_only) {
    // The trim of an acknowledged log runs a second later, after this ack's
    // batch (a trim that comes first only trims less).
    for (const auto& [group, seq] : o.ack_groups) server_.trim_due.insert(group);
    server_.store.SubmitAck(user_id_, std::move(o.ack_seqs), std::move(o.ack_groups));
    return;
  }
  if (!o.write && o.enqueue.empty()) {
    if (!o.reply.empty()) Reply(std::move(o.reply));
    return;
  }
  // The reply waits for the write; later replies queue behind it.
  const bool reply = o.reply_after_write;
  if (!in_flight_) in_flight_ = std::make_unique<InFlight>();
  InFlight& f = *in_flight_;
  const std::uint64_t slot = f.slot_base + f.slots.size();
  if (reply) f.slots.push_back(Slot{});
  ++f.writes;
  auto self = shared_from_this();
  AfterWrite after{std::move(o.committed), std::move(o.facts), std::move(o.event), o.rid};
  if (!o.enqueue.empty()) {
    std::vector<std::uint64_t> recipients;
    recipients.reserve(o.enqueue.size());
    for (const PendingItem& item : o.enqueue) recipients.push_back(item.recipient);
    server_.store.SubmitEnqueue(
        std::move(o.enqueue),
        [self, slot, reply, recipients = std::move(recipients), after = std::move(after)](
            const Status& st, std::span<const std::uint64_t> seqs, std::span<const Enqueued> how) mutable {
          self->Finished(slot, reply, after, RequestService::EnqueueResult(recipients, st, seqs, how));
        });
    return;
  }
  const bool own_unit = !o.single_call;
  server_.store.Submit(
      std::move(o.write),
      [self, slot, reply, after = std::move(after)](WriteResult r) mutable {
        self->Finished(slot, reply, after, std::move(r));
      },
      own_unit);
}

void Session::Finished(std::uint64_t slot, bool reply, AfterWrite& o, WriteResult r) {
  Server::Impl& srv = server_;
  if (o.committed) o.committed(srv.directory, r);
  if (r.st.ok()) {
    srv.AnnounceChanged(o.facts);
    if (o.event && !r.routed.empty()) srv.router.Route(r.routed, o.event);
    if (r.own_entry.group_id != 0) {
      srv.cap_due.insert(r.own_entry.group_id);
      if (Session* mine = srv.presence.Find(user_id_)) {
        mine->OwnGroupEntry(r.own_entry.group_id, r.own_entry.seq, r.own_entry.prev_seq);
      }
    }
  } else {
    if (r.st.code() == Code::kLimitReached) srv.metrics.CountRefusal(r.st.code());  // a full mailbox
    // The directory ran ahead of a write that did not happen: read back
    // what the store holds.
    if (!o.facts.empty()) srv.RefreshDirectory(std::move(o.facts));
    r.st = StoreFailure(r.st, "request of user " + std::to_string(user_id_) + " failed in the store");
    // A reply logs it with its incident id (ClientError); without one, here.
    if (!reply || closed_) spdlog::warn("{}", r.st.ToString());
  }
  InFlight& f = *in_flight_;
  --f.writes;
  if (f.slot_wait && f.writes < kMaxInFlight) f.slot_wait->cancel();
  if (!reply || closed_) {
    EndInFlightIfDone();
    return;
  }
  f.slots[slot - f.slot_base] = Slot{true, RequestService::WriteReply(o.rid, r)};
  FlushReplies();
}

// ------------------------------------------------------------------ dispatch

asio::awaitable<void> Session::Handle(wire::Envelope& env) {
  const std::uint64_t rid = env.rid();
  const auto body = env.body_case();
  if (body == wire::Envelope::BODY_NOT_SET) {
    SendError(rid, Status(Code::kUnknownType, "envelope has no body this server understands"));
    co_return;
  }
  if (!handshaken_) {
    if (body != wire::Envelope::kHello) {
      SendError(rid, Status(Code::kHandshakeRequired, "send Hello first"));
      co_return;
    }
    if (env.hello().version() != kProtocolVersion) {
      SendError(rid, Status(Code::kUnsupportedVersion, "server speaks protocol version " +
                                                           std::to_string(kProtocolVersion)));
      co_return;
    }
    handshaken_ = true;
    wire::Envelope reply;
    reply.set_rid(rid);
    auto* ok = reply.mutable_hello_ok();
    ok->set_version(kProtocolVersion);
    ok->set_max_frame(server_.config.max_frame);
    ok->set_max_image_bytes(server_.config.max_image_bytes);
    ok->set_server_id(server_.config.server_id);
    SendEnvelope(reply);
    co_return;
  }
  Refusal st;
  switch (body) {
    case wire::Envelope::kHello:
      st = Status(Code::kBadRequest, "already said Hello");
      break;
    case wire::Envelope::kPing:
      Pong(rid);
      break;
    case wire::Envelope::kPong:
      break;  // being heard from was the point
    case wire::Envelope::kRegister:
      st = co_await HandleRegister(env);
      server_.metrics.CountRegistration(st.status);
      break;
    case wire::Envelope::kLogin:
      st = co_await HandleLogin(env);
      server_.metrics.CountLogin(!env.login().token().empty(), st.status);
      break;
    case wire::Envelope::kLogout:
      st = co_await HandleLogout(env);
      break;
    case wire::Envelope::kChangePassword:
      st = co_await HandleChangePassword(env);
      break;
    default:
      if (user_id_ == 0) {
        st = Status(Code::kNotLoggedIn, "log in first");
      } else {
        co_await HandleLoggedIn(env);
      }
  }
  if (st.retry_after_ms > 0) server_.NoteRefusal(st.status);
  if (!st.ok()) SendError(rid, st.status, st.retry_after_ms);
}

asio::awaitable<Refusal> Session::HandleRegister(const wire::Envelope& env) {
  const wire::Register& m = env.register_();
  if (Status st = ValidateUserName(m.name()); !st.ok()) co_return st;
  if (Status st = ValidatePassword(m.password()); !st.ok()) co_return st;
  if (m.x25519_public().size() != crypto::kKeyBytes || m.ed25519_public().size() != crypto::kKeyBytes) {
    co_return Status(Code::kBadRequest, "public keys must be 32 bytes each");
  }
  if (server_.directory.FindUser(m.name()) != nullptr) co_return Status(Code::kNameTaken, "name taken: " + m.name());
  if (Refusal r = server_.rates.TakeRegistration(source_); !r.ok()) co_return r;
  if (Refusal busy = server_.hashes.Enter(); !busy.ok()) {
    server_.rates.GiveRegistration(source_);
    co_return busy;
  }
  // Argon2id off the event loop.
  struct Hashed {
    Status st;
    std::string hash;
  };
  const crypto::PwhashCost cost = server_.config.pwhash;
  auto hash_job = [password = m.password(), cost]() {
    Hashed r;
    r.st = crypto::PasswordHash(password, cost, &r.hash);
    return r;
  };
  const auto hash_start = std::chrono::steady_clock::now();
  Hashed h = co_await Offload(server_.hash_pool.get_executor(), std::move(hash_job));
  server_.hashes.Leave(MsSince(hash_start));
  if (!h.st.ok()) co_return h.st;
  UserRecord rec;
  rec.name = m.name();
  rec.password_hash = std::move(h.hash);
  rec.x25519_public = m.x25519_public();
  rec.ed25519_public = m.ed25519_public();
  auto create_job = [rec](Store& s) {
    WriteResult j;
    j.st = s.CreateUser(rec, &j.id);
    if (j.st.code() == Code::kNameTaken) j.st = Status(Code::kNameTaken, "name taken: " + rec.name);
    return j;
  };
  WriteResult r = co_await server_.store.Run(std::move(create_job));
  if (!r.st.ok()) co_return StoreFailure(r.st, "registering " + rec.name);
  rec.id = r.id;
  server_.directory.PutUser(rec);
  Facts changed;
  changed.user_ids.push_back(r.id);
  server_.AnnounceChanged(changed);
  spdlog::info("registered user {} ({})", r.id, m.name());
  Reply(RequestService::OkFrame(env.rid(), r.id));
  co_return Status::OK();
}

asio::awaitable<Refusal> Session::CheckPassword(const wire::Envelope& env, std::uint64_t* id_out,
                                                std::string* name_out) {
  const wire::Login& m = env.login();
  auto find = [this, &m]() -> const DirUser* {
    switch (m.user().ref_case()) {
      case wire::UserRef::kId: return server_.directory.FindUser(m.user().id());
      case wire::UserRef::kName: return server_.directory.FindUser(m.user().name());
      default: return nullptr;
    }
  };
  const DirUser* found = find();
  if (found == nullptr && server_.config.mesh_enabled && m.user().ref_case() != wire::UserRef::REF_NOT_SET) {
    // Registered on another server moments ago? Read it from the shared store.
    Facts facts;
    if (m.user().ref_case() == wire::UserRef::kId) facts.user_ids.push_back(m.user().id());
    if (m.user().ref_case() == wire::UserRef::kName) facts.user_names.push_back(m.user().name());
    co_await server_.Refresh(facts);
    found = find();
  }
  const bool known = found != nullptr;
  std::string hash = known ? found->password_hash : server_.decoy_hash;
  const std::uint64_t id = known ? found->id : 0;
  std::string name = known ? found->name : std::string();
  const Status bad(Code::kBadCredentials, kBadCredentialsMessage);
  // Failed logins are limited per account and per source, and Argon2id work
  // is queued only so deep: both are checked before any hashing. An unknown
  // account is counted by the name or id asked for, like a known one.
  const std::string account = known ? "#" + std::to_string(id) : m.user().SerializeAsString();
  if (Refusal r = server_.rates.BeginLogin(source_, account); !r.ok()) co_return r;
  if (Refusal busy = server_.hashes.Enter(); !busy.ok()) {
    server_.rates.EndLogin(source_, account, /*failed=*/false);
    co_return busy;
  }
  // An unknown user is checked against a decoy hash of the same cost, so the
  // answer takes as long as for a wrong password (no user enumeration by timing).
  auto verify_job = [hash = std::move(hash), password = m.password()]() {
    return crypto::PasswordVerify(hash, password);
  };
  const auto hash_start = std::chrono::steady_clock::now();
  bool ok = co_await Offload(server_.hash_pool.get_executor(), std::move(verify_job));
  server_.hashes.Leave(MsSince(hash_start));
  server_.rates.EndLogin(source_, account, /*failed=*/!ok || !known);
  if (!ok || !known) {
    LogFailedLogin(env, known);
    co_return bad;
  }
  *id_out = id;
  *name_out = std::move(name);
  co_return Status::OK();
}

asio::awaitable<Status> Session::CheckToken(const wire::Login& m, std::uint64_t* id, std::string* name) {
  const Status bad(Code::kBadCredentials, "unknown, expired or revoked session token");
  if (!m.password().empty()) co_return Status(Code::kBadRequest, "give a password or a token, not both");
  if (m.token().size() != kSessionTokenBytes) co_return bad;
  struct Checked {
    Status st;
    std::uint64_t user = 0;
  };
  const std::string hash = crypto::Hash(m.token());
  const std::uint64_t now = NowMs();
  auto job = [hash, now](Store& s) {
    Checked c;
    c.st = s.CheckSessionToken(hash, now, &c.user);
    return c;
  };
  Checked c = co_await server_.store.Run(std::move(job));
  if (c.st.code() == Code::kNotFound) co_return bad;
  if (!c.st.ok()) co_return StoreFailure(c.st, "checking a session token");
  const DirUser* u = server_.directory.FindUser(c.user);
  if (u == nullptr && server_.config.mesh_enabled) {
    Facts facts;
    facts.user_ids.push_back(c.user);
    co_await server_.Refresh(facts);
    u = server_.directory.FindUser(c.user);
  }
  if (u == nullptr) co_return bad;
  const bool matches = m.user().ref_case() == wire::UserRef::REF_NOT_SET ||
                       (m.user().ref_case() == wire::UserRef::kId && m.user().id() == u->id) ||
                       (m.user().ref_case() == wire::UserRef::kName && m.user().name() == u->name);
  if (!matches) co_return bad;
  *id = u->id;
  *name = u->name;
  KeepTokenHash(hash);
  co_return Status::OK();
}

void Session::KeepTokenHash(const std::string& hash) {
  has_token_ = hash.size() == token_hash_.size();
  if (has_token_) std::copy(hash.begin(), hash.end(), token_hash_.begin());
}

asio::awaitable<void> Session::IssueToken(wire::LoggedIn* reply) {
  const std::string token = crypto::RandomBytes(kSessionTokenBytes);
  const std::string hash = crypto::Hash(token);
  const std::uint64_t now = NowMs();
  const std::uint64_t expires =
      now + static_cast<std::uint64_t>(
                std::chrono::duration_cast<std::chrono::milliseconds>(server_.config.session_token_ttl).count());
  const std::uint64_t user = user_id_;
  auto job = [hash, user, expires, now](Store& s) {
    WriteResult r;
    r.st = s.AddSessionToken(hash, user, expires, now);
    return r;
  };
  WriteResult w = co_await server_.store.Run(std::move(job));
  if (!w.st.ok()) {
    spdlog::warn("storing a session token for user {}: {}", user, w.st.ToString());
    co_return;
  }
  KeepTokenHash(hash);
  reply->set_session_token(token);
  reply->set_token_expires_ms(expires);
}

std::string Session::UserName() const {
  // Logged-in users are always in the directory (a login puts them there;
  // nothing removes a user); not kept in the Session: 32 bytes per idle
  // connection.
  const DirUser* u = server_.directory.FindUser(user_id_);
  return u != nullptr ? u->name : std::string();
}

asio::awaitable<Refusal> Session::HandleLogin(const wire::Envelope& env) {
  if (user_id_ != 0) co_return Status(Code::kAlreadyLoggedIn, "this connection is already logged in");
  const wire::Login& m = env.login();
  std::uint64_t id = 0;
  std::string name;
  const bool by_token = !m.token().empty();
  Refusal checked;
  if (by_token) {
    checked = co_await CheckToken(m, &id, &name);
  } else {
    checked = co_await CheckPassword(env, &id, &name);
  }
  if (!checked.ok()) co_return checked;
  if (closed_ || out_.stopping()) co_return Status::OK();  // closed (a deadline, ...) while checking
  user_id_ = id;
  LeavePrelogin();
  wire::Envelope reply;
  reply.set_rid(env.rid());
  reply.mutable_logged_in()->set_user_id(user_id_);
  reply.mutable_logged_in()->set_name(name);
  if (!by_token) co_await IssueToken(reply.mutable_logged_in());
  if (closed_) co_return Status::OK();
  SendEnvelope(reply);
  if (m.receive()) {
    receiving_ = true;
    std::shared_ptr<Session> old = server_.presence.Put(user_id_, shared_from_this());
    if (old && old.get() != this) {
      spdlog::info("user {} logged in again; displacing the older session", user_id_);
      old->CloseWith(Status(Code::kDisplaced, "you logged in from somewhere else"));
    }
    if (server_.mesh) {
      // Catch up only once every peer knows this user is here (mesh.proto,
      // Presence.ack_token): from then on peers forward new deliveries live.
      std::weak_ptr<Session> weak = shared_from_this();
      server_.mesh->UserOnline(user_id_, [weak] {
        if (auto self = weak.lock()) self->StartCatchUp(true);
      });
    } else {
      StartCatchUp(true);
    }
  }
  spdlog::debug("user {} logged in (receive={})", user_id_, m.receive());
  co_return Status::OK();
}

asio::awaitable<Status> Session::HandleLogout(const wire::Envelope& env) {
  if (user_id_ == 0) co_return Status(Code::kNotLoggedIn, "log in first");
  if (has_token_) {
    auto job = [hash = std::string(token_hash_.data(), token_hash_.size())](Store& s) {
      WriteResult r;
      r.st = s.RevokeSessionToken(hash);
      return r;
    };
    WriteResult w = co_await server_.store.Run(std::move(job));
    if (!w.st.ok()) co_return StoreFailure(w.st, "revoking a session token");
    has_token_ = false;
  }
  spdlog::info("user {} logged out", user_id_);
  Reply(RequestService::OkFrame(env.rid()));
  LeavePresence();
  out_.StopAfterFlush();
  co_return Status::OK();
}

asio::awaitable<Refusal> Session::HandleChangePassword(const wire::Envelope& env) {
  if (user_id_ == 0) co_return Status(Code::kNotLoggedIn, "log in first");
  const wire::ChangePassword& m = env.change_password();
  if (Status st = ValidatePassword(m.new_password()); !st.ok()) co_return st;
  const DirUser* me = server_.directory.FindUser(user_id_);
  if (me == nullptr) co_return Status(Code::kNoSuchUser, "this account is gone");
  struct Hashed {
    bool old_ok = false;
    Status st;
    std::string hash;
  };
  // A stolen session token must not become a way to guess the password:
  // wrong current passwords count as failed logins of the account.
  const std::string account = "#" + std::to_string(user_id_);
  if (Refusal r = server_.rates.BeginLogin(source_, account); !r.ok()) co_return r;
  if (Refusal busy = server_.hashes.Enter(); !busy.ok()) {
    server_.rates.EndLogin(source_, account, /*failed=*/false);
    co_return busy;
  }
  const crypto::PwhashCost cost = server_.config.pwhash;
  auto hash_job = [current = me->password_hash, old_pw = m.old_password(), new_pw = m.new_password(), cost]() {
    Hashed h;
    h.old_ok = crypto::PasswordVerify(current, old_pw);
    if (h.old_ok) h.st = crypto::PasswordHash(new_pw, cost, &h.hash);
    return h;
  };
  const auto hash_start = std::chrono::steady_clock::now();
  Hashed h = co_await Offload(server_.hash_pool.get_executor(), std::move(hash_job));
  server_.hashes.Leave(MsSince(hash_start));
  server_.rates.EndLogin(source_, account, /*failed=*/!h.old_ok);
  if (!h.old_ok) {
    spdlog::warn("user {}: password change refused (wrong current password)", user_id_);
    co_return Status(Code::kBadCredentials, "the current password is wrong");
  }
  if (!h.st.ok()) co_return h.st;
  const std::uint64_t user = user_id_;
  auto set_job = [user, hash = h.hash](Store& s) {
    WriteResult r;
    r.st = s.SetPassword(user, hash);
    return r;
  };
  WriteResult w = co_await server_.store.Run(std::move(set_job));
  if (!w.st.ok()) co_return StoreFailure(w.st, "changing a password");
  if (const DirUser* again = server_.directory.FindUser(user); again != nullptr) {
    UserRecord rec;
    rec.id = again->id;
    rec.name = again->name;
    rec.password_hash = h.hash;
    rec.x25519_public = again->x25519_public;
    rec.ed25519_public = again->ed25519_public;
    server_.directory.PutUser(rec);
  }
  Facts changed;
  changed.user_ids.push_back(user);
  server_.AnnounceChanged(changed);
  spdlog::info("user {} changed their password; every session token revoked", user);
  has_token_ = false;
  wire::Envelope reply;
  reply.set_rid(env.rid());
  reply.mutable_logged_in()->set_user_id(user_id_);
  reply.mutable_logged_in()->set_name(UserName());
  co_await IssueToken(reply.mutable_logged_in());
  std::string frame;
  AppendFrame(reply.SerializeAsString(), &frame);
  Reply(std::move(frame));  // in order behind replies still waiting for writes
  co_return Status::OK();
}

asio::awaitable<void> Session::HandleLoggedIn(wire::Envelope& env) {
  if (env.body_case() == wire::Envelope::kFetchPending) {
    // Re-reads everything pending from the store: metered. On a send-only
    // session this is a one-shot fetch: the pending deliveries and SyncDone,
    // without becoming the user's receiving session (no presence, nobody
    // displaced, no live pushes afterwards).
    const SteadyTime now = std::chrono::steady_clock::now();
    if (last_fetch_pending_ != SteadyTime{} && now - last_fetch_pending_ < kFetchPendingEvery) {
      const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(kFetchPendingEvery -
                                                                              (now - last_fetch_pending_));
      const Status why(Code::kRateLimited, "FetchPending re-reads everything pending: at most one every " +
                                               std::to_string(kFetchPendingEvery.count()) + " s");
      server_.NoteRefusal(why);
      Reply(RequestService::ErrorFrame(env.rid(), why, static_cast<std::uint32_t>(std::max<long long>(1, wait.count()))));
      co_return;
    }
    last_fetch_pending_ = now;
    Reply(RequestService::OkFrame(env.rid()));
    live_ = false;
    if (!receiving_) fetching_ = true;
    cursor_.Restart();
    resend_all_ = true;  // rows this connection carried already too
    missed_ = true;      // a pass whose last read is in flight reads again
    StartCatchUp(true);
    co_return;
  }
  if (Refusal r = CheckSendRate(env); !r.ok()) {
    server_.NoteRefusal(r.status);
    Reply(RequestService::ErrorFrame(env.rid(), r.status, r.retry_after_ms));
    co_return;
  }
  const Caller me{user_id_, UserName()};
  Outcome o = server_.service.Handle(me, env, NowMs());
  if (o.state_refusal && server_.config.mesh_enabled) {
    // Another server may have changed what this was refused on (a friendship,
    // a membership): read those facts from the shared store and decide again.
    const Facts facts = o.facts;
    co_await server_.Refresh(facts);
    if (closed_) co_return;
    o = server_.service.Handle(me, env, NowMs());
  }
  Dispatch(std::move(o));
}

}  // namespace fastchat::server
