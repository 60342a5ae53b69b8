#include "request_service.h"

#include <algorithm>
#include <charconv>
#include <initializer_list>
#include <span>
#include <string_view>
#include <utility>

#include "client_error.h"
#include "fastchat.pb.h"
#include "fastchat/crypto.h"
#include "fastchat/frame.h"
#include "validate.h"

namespace fastchat::server {
namespace {

constexpr std::size_t kMaxAckSeqs = 4096;

// The dedupe key of one chunk of a sender's message: `prefix`, each of
// `ids` and '/', the msg_id in lowercase hex, '/', the chunk index ("d/ME/
// HEX/CHUNK", "g/GROUP/ME/HEX/CHUNK"). Built in one string: this runs for
// every message. Keys are stored, so the format never changes.
std::string MessageKey(std::string_view prefix, std::initializer_list<std::uint64_t> ids, std::string_view msg_id,
                       std::uint32_t chunk) {
  static constexpr char kDigits[] = "0123456789abcdef";
  char number[24];
  std::string key;
  key.reserve(prefix.size() + ids.size() * 21 + msg_id.size() * 2 + 12);
  key.append(prefix);
  for (std::uint64_t id : ids) {
    key.append(number, std::to_chars(number, number + sizeof number, id).ptr);
    key.push_back('/');
  }
  const std::size_t hex_at = key.size();
  key.resize(hex_at + msg_id.size() * 2);
  for (std::size_t i = 0; i < msg_id.size(); ++i) {
    const auto b = static_cast<unsigned char>(msg_id[i]);
    key[hex_at + 2 * i] = kDigits[b >> 4];
    key[hex_at + 2 * i + 1] = kDigits[b & 0x0f];
  }
  key.push_back('/');
  key.append(number, std::to_chars(number, number + sizeof number, chunk).ptr);
  return key;
}
constexpr std::size_t kMaxWrappedKey = 256;
constexpr std::size_t kMaxAddsPerRequest = 1000;

std::string Frame(const wire::Envelope& env) {
  std::string frame;
  const std::size_t n = env.ByteSizeLong();
  frame.resize(kFrameHeaderSize + n);
  EncodeFrameHeader(static_cast<std::uint32_t>(n), frame.data());
  env.SerializeToArray(frame.data() + kFrameHeaderSize, static_cast<int>(n));
  return frame;
}

std::string Describe(const wire::UserRef& ref) {
  if (ref.ref_case() == wire::UserRef::kId) return "#" + std::to_string(ref.id());
  return ref.name();
}

void AddUserFact(const wire::UserRef& ref, Facts* f) {
  if (ref.ref_case() == wire::UserRef::kId) f->user_ids.push_back(ref.id());
  if (ref.ref_case() == wire::UserRef::kName) f->user_names.push_back(ref.name());
}

void FillUserInfo(const DirUser& u, wire::UserInfo* info) {
  info->set_id(u.id);
  info->set_name(u.name);
  info->set_x25519_public(u.x25519_public);
  info->set_ed25519_public(u.ed25519_public);
}

void FillGroupHead(const DirGroup& g, wire::GroupInfo* info) {
  info->set_id(g.id);
  info->set_name(g.name);
  info->set_admin_id(g.admin_id);
  info->set_epoch(g.epoch);
}

// ListPage: fills one page of a list reply, in ascending id order after a
// cursor, until the next entry would take the page past its byte budget (at
// least one entry per page, so a page always moves on).
class ListPage {
 public:
  explicit ListPage(std::size_t budget) : budget_(budget) {}
  // Adds the entries of `ids` (sorted copy) after `after` with add(id)
  // (which returns the bytes it added, 0 for an id it skipped). Returns
  // false if the page filled up first; *next is then the last id added.
  template <class Add>
  bool Fill(std::vector<std::uint64_t> ids, std::uint64_t after, Add add, std::uint64_t* next) {
    std::sort(ids.begin(), ids.end());
    for (auto it = std::upper_bound(ids.begin(), ids.end(), after); it != ids.end(); ++it) {
      if (full_ || (used_ > 0 && used_ >= budget_)) {
        full_ = true;
        return false;
      }
      used_ += add(*it);
      *next = *it;
    }
    return true;
  }
  bool full() const { return full_; }

 private:
  std::size_t budget_;
  std::size_t used_ = 0;
  bool full_ = false;
};

// Bytes of `m` in its list (a repeated field: tag, length, body).
std::size_t EntryBytes(const google::protobuf::MessageLite& m) { return m.ByteSizeLong() + 6; }

Status CheckCipherFields(wire::Kind kind, std::uint32_t index, std::uint32_t count, const std::string& msg_id,
                         const std::string& nonce, const std::string& ciphertext, std::uint64_t max_image_bytes) {
  if (msg_id.size() != crypto::kMsgIdBytes) return Status(Code::kBadRequest, "msg_id must be 16 bytes");
  if (nonce.size() != crypto::kAeadNonceBytes) return Status(Code::kBadRequest, "nonce must be 24 bytes");
  if (ciphertext.size() < crypto::kAeadTagBytes) return Status(Code::kBadRequest, "ciphertext too short");
  if (ciphertext.size() > kMaxChunkCiphertext) {
    return Status(Code::kTooLarge, "ciphertext over " + std::to_string(kMaxChunkCiphertext) + " bytes");
  }
  if (kind == wire::TEXT || kind == wire::RECEIPT) {
    if (index != 0 || count > 1) return Status(Code::kBadRequest, "text and receipts are a single chunk");
  } else if (kind == wire::IMAGE) {
    if (count == 0 || index >= count) return Status(Code::kBadRequest, "bad chunk index/count");
    const std::uint64_t max_chunks = 1 + (max_image_bytes + kImageChunkBytes - 1) / kImageChunkBytes;
    if (count > max_chunks) {
      return Status(Code::kTooLarge, "image over the server's limit of " + std::to_string(max_image_bytes) + " bytes");
    }
  } else {
    return Status(Code::kBadRequest, "unknown message kind");
  }
  return Status::OK();
}

// The deliveries to route after an enqueue: new rows, and rows a resend
// found still pending. A resend means the sender never saw its Ok (say the
// server that stored the row died before routing it); routing the existing
// row again, under its seq, brings it to the recipient now, ahead of the
// sender's next messages, instead of at the recipient's next catch-up. The
// recipient drops a seq it already has. A row the recipient acknowledged
// already (Enqueued::kDelivered) is not routed: it got it; nor is one the
// store refused (Enqueued::kRefused: nothing stored).
void RouteEnqueued(std::span<const std::uint64_t> recipients, std::span<const std::uint64_t> seqs,
                   std::span<const Enqueued> how, WriteResult* r) {
  for (std::size_t i = 0; i < recipients.size() && i < seqs.size() && i < how.size(); ++i) {
    if (how[i] != Enqueued::kDelivered && how[i] != Enqueued::kRefused) {
      r->routed.push_back(Delivery{recipients[i], seqs[i]});
    }
  }
}

// Stores one payload for each recipient (idempotent on `dedupe`) and
// records the deliveries to route (RouteEnqueued).
Status EnqueueFor(Store& s, const std::vector<std::uint64_t>& recipients, const std::string& dedupe,
                  const std::string& payload, WriteResult* r) {
  std::vector<PendingItem> items;
  items.reserve(recipients.size());
  for (std::uint64_t u : recipients) items.push_back(PendingItem{u, dedupe, payload});
  std::vector<std::uint64_t> seqs;
  std::vector<Enqueued> how;
  Status st = s.Enqueue(items, &seqs, &how);
  if (!st.ok()) return st;
  RouteEnqueued(recipients, seqs, how, r);
  return Status::OK();
}

// Builds Outcomes.
class Decision {
 public:
  explicit Decision(std::uint64_t rid) { out_.rid = rid; }

  // A refusal by the request's own fields.
  Outcome Refuse(Status st) {
    out_.reply = RequestService::ErrorFrame(out_.rid, st);
    out_.refusal = std::move(st);
    return std::move(out_);
  }
  // A refusal by Directory state: worth deciding again with fresher facts.
  Outcome RefuseByState(Status st) {
    out_.state_refusal = true;
    return Refuse(std::move(st));
  }
  Outcome Reply(const wire::Envelope& env) {
    out_.reply = Frame(env);
    return std::move(out_);
  }
  Outcome Write(std::function<WriteResult(Store&)> w, std::shared_ptr<const std::string> event = nullptr) {
    out_.write = std::move(w);
    out_.event = std::move(event);
    return std::move(out_);
  }
  Facts& facts() { return out_.facts; }
  Outcome& outcome() { return out_; }

 private:
  Outcome out_;
};

}  // namespace

std::string RequestService::ErrorFrame(std::uint64_t rid, const Status& failure, std::uint32_t retry_after_ms) {
  const Status st = ClientError(failure);
  wire::Envelope env;
  env.set_rid(rid);
  env.mutable_error()->set_code(static_cast<wire::ErrorCode>(static_cast<int>(st.code())));
  env.mutable_error()->set_message(st.message());
  if (retry_after_ms > 0) env.mutable_error()->set_retry_after_ms(retry_after_ms);
  return Frame(env);
}

std::string RequestService::OkFrame(std::uint64_t rid, std::uint64_t id, std::uint64_t epoch) {
  wire::Envelope env;
  env.set_rid(rid);
  env.mutable_ok()->set_id(id);
  env.mutable_ok()->set_epoch(epoch);
  return Frame(env);
}

WriteResult RequestService::EnqueueResult(std::span<const std::uint64_t> recipients, const Status& st,
                                         std::span<const std::uint64_t> seqs, std::span<const Enqueued> how) {
  WriteResult r;
  r.st = st;
  if (!st.ok()) return r;
  // A direct message to a full mailbox (the only capped item: one per request).
  for (std::size_t i = 0; i < how.size() && i < recipients.size(); ++i) {
    if (how[i] != Enqueued::kRefused) continue;
    r.st = Status(Code::kLimitReached, "user " + std::to_string(recipients[i]) +
                                           " has the most undelivered messages this server keeps; try later");
    return r;
  }
  RouteEnqueued(recipients, seqs, how, &r);
  return r;
}

Status RequestService::CheckGroupsOf(std::uint64_t user, const std::string& who) const {
  const std::size_t max = config_.limits.max_groups_per_user;
  if (max == 0 || dir_.GroupsOf(user).size() < max) return Status::OK();
  return Status(Code::kLimitReached, who + " in " + std::to_string(dir_.GroupsOf(user).size()) +
                                         " groups, the most this server allows");
}

std::string RequestService::WriteReply(std::uint64_t rid, const WriteResult& r) {
  if (!r.st.ok()) return ErrorFrame(rid, r.st);
  return OkFrame(rid, r.id, r.epoch);
}

Outcome RequestService::Handle(const Caller& me_caller, wire::Envelope& env, std::uint64_t now_ms) {
  const std::uint64_t me = me_caller.id;
  Decision d(env.rid());
  wire::Event event;
  event.set_from_id(me);
  event.set_from_name(me_caller.name);
  event.set_time_ms(now_ms);
  auto serialized = [&event]() { return std::make_shared<const std::string>(event.SerializeAsString()); };
  // Looks up a user named by a request; records it as a fact either way.
  auto find_user = [&](const wire::UserRef& ref, const DirUser** out) -> Status {
    AddUserFact(ref, &d.facts());
    const DirUser* u = nullptr;
    switch (ref.ref_case()) {
      case wire::UserRef::kId: u = dir_.FindUser(ref.id()); break;
      case wire::UserRef::kName: u = dir_.FindUser(ref.name()); break;
      default: return Status(Code::kBadRequest, "no user named");
    }
    if (u == nullptr) return Status(Code::kNoSuchUser, "no such user: " + Describe(ref));
    *out = u;
    return Status::OK();
  };
  auto find_group = [&](std::uint64_t gid, const DirGroup** out) -> Status {
    d.facts().groups.push_back(gid);
    const DirGroup* g = dir_.FindGroup(gid);
    if (g == nullptr) return Status(Code::kNoSuchGroup, "no such group: " + std::to_string(gid));
    *out = g;
    return Status::OK();
  };
  // A refusal from a lookup: by state unless the request named nobody.
  auto refuse = [&](Status st) {
    if (st.code() == Code::kBadRequest) return d.Refuse(std::move(st));
    return d.RefuseByState(std::move(st));
  };

  switch (env.body_case()) {
    case wire::Envelope::kGetUser: {
      const DirUser* u = nullptr;
      if (Status st = find_user(env.get_user().user(), &u); !st.ok()) return refuse(std::move(st));
      wire::Envelope reply;
      reply.set_rid(env.rid());
      FillUserInfo(*u, reply.mutable_user_info());
      return d.Reply(reply);
    }

    case wire::Envelope::kListFriends: {
      wire::Envelope reply;
      reply.set_rid(env.rid());
      auto* list = reply.mutable_friend_list();
      const wire::ListFriends& q = env.list_friends();
      ListPage page(ListBudget());
      std::uint64_t next_friend = q.after_friend(), next_request = q.after_request();
      auto into = [this](auto* repeated) {
        return [this, repeated](std::uint64_t id) -> std::size_t {
          const DirUser* u = dir_.FindUser(id);
          if (u == nullptr) return 0;
          wire::UserInfo* info = repeated->Add();
          FillUserInfo(*u, info);
          return EntryBytes(*info);
        };
      };
      if (page.Fill(dir_.FriendsOf(me), q.after_friend(), into(list->mutable_friends()), &next_friend)) {
        page.Fill(dir_.RequestsTo(me), q.after_request(), into(list->mutable_incoming_requests()), &next_request);
      }
      if (page.full()) {
        list->set_more(true);
        list->set_next_after_friend(next_friend);
        list->set_next_after_request(next_request);
      }
      return d.Reply(reply);
    }

    case wire::Envelope::kFriendRequest: {
      const DirUser* to = nullptr;
      if (Status st = find_user(env.friend_request().to(), &to); !st.ok()) return refuse(std::move(st));
      if (to->id == me) return d.Refuse(Status(Code::kBadRequest, "you cannot befriend yourself"));
      d.facts().friendships.emplace_back(me, to->id);
      d.facts().requests_to.push_back(to->id);
      if (dir_.AreFriends(me, to->id)) {
        return d.RefuseByState(Status(Code::kAlreadyFriends, "already friends with " + to->name));
      }
      dir_.AddRequest(me, to->id);
      event.mutable_friend_request();
      auto payload = serialized();
      const std::uint64_t to_id = to->id;
      return d.Write(
          [me, to_id, payload](Store& s) {
            WriteResult r;
            if (!(r.st = s.AddFriendRequest(me, to_id)).ok()) return r;
            // One undelivered request per pair: asking again (or a resend
            // after a lost Ok) does not show the recipient a second request.
            r.st = EnqueueFor(s, {to_id}, "fr/" + std::to_string(me), *payload, &r);
            return r;
          },
          payload);
    }

    case wire::Envelope::kFriendAnswer: {
      const wire::FriendAnswer& m = env.friend_answer();
      if (m.accept() && (m.nonce().size() != crypto::kBoxNonceBytes || m.wrapped_key().empty() ||
                         m.wrapped_key().size() > kMaxWrappedKey)) {
        return d.Refuse(Status(Code::kBadRequest, "accept needs a 24-byte nonce and a wrapped key"));
      }
      const DirUser* to = nullptr;
      if (Status st = find_user(m.to(), &to); !st.ok()) return refuse(std::move(st));
      d.facts().requests_to.push_back(me);
      d.facts().friendships.emplace_back(me, to->id);
      if (!dir_.TakeRequest(to->id, me)) {
        return d.RefuseByState(Status(Code::kNoSuchRequest, to->name + " has not asked to be your friend"));
      }
      if (m.accept()) dir_.AddFriendship(me, to->id);
      auto* a = event.mutable_friend_answer();
      a->set_accept(m.accept());
      a->set_nonce(m.nonce());
      a->set_wrapped_key(m.wrapped_key());
      auto payload = serialized();
      const std::uint64_t to_id = to->id;
      const bool accept = m.accept();
      return d.Write(
          [me, to_id, accept, payload, now_ms](Store& s) {
            WriteResult r;
            r.st = s.TakeFriendRequest(to_id, me);
            if (r.st.code() == Code::kNoSuchRequest) r.st = Status(Code::kNoSuchRequest, "no such friend request");
            if (!r.st.ok()) return r;
            if (accept && !(r.st = s.AddFriendship(me, to_id)).ok()) return r;
            r.st = EnqueueFor(s, {to_id}, "fa/" + std::to_string(me) + "/" + std::to_string(now_ms), *payload, &r);
            return r;
          },
          payload);
    }

    case wire::Envelope::kDirectSend: {
      const wire::DirectSend& m = env.direct_send();
      if (Status st = CheckCipherFields(m.kind(), m.chunk_index(), m.chunk_count(), m.msg_id(), m.nonce(),
                                        m.ciphertext(), config_.max_image_bytes);
          !st.ok()) {
        return d.Refuse(std::move(st));
      }
      const DirUser* to = nullptr;
      if (Status st = find_user(m.to(), &to); !st.ok()) return refuse(std::move(st));
      d.facts().friendships.emplace_back(me, to->id);
      if (to->id == me || !dir_.AreFriends(me, to->id)) {
        return d.RefuseByState(Status(Code::kNotFriends, to->name + " is not your friend"));
      }
      std::string dedupe = MessageKey("d/", {me}, m.msg_id(), m.chunk_index());
      auto* dm = event.mutable_direct();
      dm->set_kind(m.kind());
      dm->set_chunk_index(m.chunk_index());
      dm->set_chunk_count(m.chunk_count());
      // Accepted: the request's bytes fields move into the event (no copy,
      // no allocation).
      wire::DirectSend& taken = *env.mutable_direct_send();
      dm->set_allocated_msg_id(taken.release_msg_id());
      dm->set_allocated_nonce(taken.release_nonce());
      dm->set_allocated_ciphertext(taken.release_ciphertext());
      auto payload = serialized();
      const std::uint64_t to_id = to->id;
      d.facts() = Facts();  // changes nothing other servers keep
      const std::size_t cap = std::min<std::size_t>(config_.limits.max_waiting_per_user, UINT32_MAX);
      d.outcome().enqueue.push_back(PendingItem{to_id, std::move(dedupe), *payload, static_cast<std::uint32_t>(cap),
                                                config_.limits.max_waiting_bytes_per_user});
      d.outcome().event = payload;
      return std::move(d.outcome());
    }

    case wire::Envelope::kGroupCreate: {
      const std::string& name = env.group_create().name();
      if (Status st = ValidateGroupName(name); !st.ok()) return d.Refuse(std::move(st));
      if (Status st = CheckGroupsOf(me, "you are"); !st.ok()) return d.Refuse(std::move(st));
      d.outcome().committed = [name, me](Directory& dir, const WriteResult& r) {
        if (!r.st.ok()) return;
        DirGroup g;
        g.id = r.id;
        g.name = name;
        g.admin_id = me;
        g.epoch = 1;
        g.members = {me};
        dir.PutGroup(std::move(g));
      };
      return d.Write([name, me](Store& s) {
        WriteResult r;
        r.st = s.CreateGroup(name, me, &r.id);
        r.epoch = 1;
        return r;
      });
    }

    case wire::Envelope::kGroupAdd:
    case wire::Envelope::kGroupKick:
    case wire::Envelope::kGroupLeave: {
      const auto body = env.body_case();
      std::uint64_t gid = 0;
      std::vector<const wire::UserRef*> refs;
      wire::UserRef self_ref;
      if (body == wire::Envelope::kGroupAdd) {
        gid = env.group_add().group_id();
        refs.push_back(&env.group_add().user());
        for (const wire::UserRef& r : env.group_add().more_users()) refs.push_back(&r);
        if (refs.size() > kMaxAddsPerRequest) {
          return d.Refuse(Status(Code::kBadRequest, "at most " + std::to_string(kMaxAddsPerRequest) +
                                                        " users per GroupAdd"));
        }
      } else if (body == wire::Envelope::kGroupKick) {
        gid = env.group_kick().group_id();
        refs.push_back(&env.group_kick().user());
      } else {
        gid = env.group_leave().group_id();
        self_ref.set_id(me);
        refs.push_back(&self_ref);
      }
      const DirGroup* g = nullptr;
      if (Status st = find_group(gid, &g); !st.ok()) return refuse(std::move(st));
      std::vector<const DirUser*> subjects;
      for (const wire::UserRef* ref : refs) {
        const DirUser* u = nullptr;
        if (Status st = find_user(*ref, &u); !st.ok()) return refuse(std::move(st));
        subjects.push_back(u);
      }
      const bool me_member = g->HasMember(me);
      const std::string group_name = g->name;
      const std::uint64_t admin = g->admin_id;
      wire::GroupNoticeEvent::What what = wire::GroupNoticeEvent::WHAT_UNSPECIFIED;
      std::vector<std::uint64_t> recipients;  // who reads the notice
      std::vector<std::uint64_t> subject_ids;
      for (const DirUser* u : subjects) subject_ids.push_back(u->id);
      std::uint64_t epoch = g->epoch;
      if (body == wire::Envelope::kGroupLeave) {
        if (!me_member) {
          return d.RefuseByState(Status(Code::kNotMember, "you are not a member of group " + std::to_string(gid)));
        }
        if (admin == me) {
          if (g->members.size() > 1) {
            return d.RefuseByState(
                Status(Code::kBadRequest, "the admin cannot leave while others remain; kick them first"));
          }
          dir_.DeleteGroup(gid);
          return d.Write([gid](Store& s) {
            WriteResult r;
            r.st = s.DeleteGroup(gid);
            return r;
          });
        }
        recipients = g->members;
        epoch = dir_.RemoveMember(gid, me);
        what = wire::GroupNoticeEvent::LEFT;
      } else {
        if (admin != me) {
          return d.RefuseByState(
              Status(Code::kNotAdmin, "only the admin of group " + std::to_string(gid) + " can do that"));
        }
        if (body == wire::Envelope::kGroupAdd) {
          for (std::size_t i = 0; i < subjects.size(); ++i) {
            if (g->HasMember(subjects[i]->id)) {
              return d.RefuseByState(Status(Code::kAlreadyMember, subjects[i]->name + " is already a member"));
            }
            if (std::find(subject_ids.begin(), subject_ids.begin() + static_cast<std::ptrdiff_t>(i),
                          subjects[i]->id) != subject_ids.begin() + static_cast<std::ptrdiff_t>(i)) {
              return d.Refuse(Status(Code::kBadRequest, subjects[i]->name + " is named twice"));
            }
          }
          const std::size_t max_members = config_.limits.max_group_members;
          if (max_members > 0 && g->members.size() + subjects.size() > max_members) {
            return d.RefuseByState(Status(Code::kLimitReached,
                                          "group " + std::to_string(gid) + " would have " +
                                              std::to_string(g->members.size() + subjects.size()) +
                                              " members; this server allows " + std::to_string(max_members)));
          }
          for (const DirUser* u : subjects) {
            if (Status st = CheckGroupsOf(u->id, u->name + " is"); !st.ok()) return d.Refuse(std::move(st));
          }
          for (std::uint64_t u : subject_ids) dir_.AddMember(gid, u);
          recipients = dir_.FindGroup(gid)->members;
          what = wire::GroupNoticeEvent::ADDED;
        } else {
          const DirUser* subject = subjects.front();
          if (!g->HasMember(subject->id)) {
            return d.RefuseByState(
                Status(Code::kNotMember, subject->name + " is not a member of group " + std::to_string(gid)));
          }
          if (subject->id == me) return d.Refuse(Status(Code::kBadRequest, "the admin cannot kick themselves"));
          recipients = g->members;
          epoch = dir_.RemoveMember(gid, subject->id);
          what = wire::GroupNoticeEvent::KICKED;
        }
      }
      auto* n = event.mutable_group_notice();
      n->set_group_id(gid);
      n->set_group_name(group_name);
      n->set_admin_id(admin);
      n->set_what(what);
      n->set_subject_id(subjects.front()->id);
      n->set_subject_name(subjects.front()->name);
      for (std::size_t i = 1; i < subjects.size(); ++i) {
        n->add_more_subject_ids(subjects[i]->id);
        n->add_more_subject_names(subjects[i]->name);
      }
      n->set_epoch(epoch);
      auto payload = serialized();
      std::string dedupe = "gn/" + std::to_string(static_cast<int>(what)) + "/" + std::to_string(subject_ids.front()) +
                           "/" + std::to_string(now_ms);
      d.facts() = Facts();
      d.facts().groups.push_back(gid);
      // The notice is one entry of the group's log, from no member (so the
      // actor reads it too): added members join first and read it; a removed
      // member's cursor ends after it.
      return d.Write(
          [gid, subject_ids = std::move(subject_ids), what, epoch, recipients = std::move(recipients), payload,
           dedupe = std::move(dedupe), shared = shared_store_](Store& s) {
            WriteResult r;
            r.epoch = epoch;
            const bool added = what == wire::GroupNoticeEvent::ADDED;
            if (added) {
              for (std::uint64_t u : subject_ids) {
                if (!(r.st = s.AddMember(gid, u)).ok()) return r;
              }
            }
            std::uint64_t seq = 0, prev = 0;
            bool fresh = false;
            std::vector<std::uint64_t> readers;
            if (!(r.st = s.AppendGroup(gid, 0, recipients, dedupe, *payload, &seq, &fresh,
                                       shared ? &readers : nullptr, &prev))
                     .ok()) {
              return r;
            }
            if (!added) {
              std::uint64_t stored_epoch = 0;
              if (!(r.st = s.RemoveMember(gid, subject_ids.front(), &stored_epoch)).ok()) return r;
            }
            if (fresh) {
              for (std::uint64_t u : shared ? readers : recipients) {
                // An added member's cursor starts at the log's newest entry
                // before this notice (the group's row stays locked from
                // AddMember to this append): it reads no entry before the
                // notice, so for it the notice names none (no false gap).
                const bool joins =
                    added && std::find(subject_ids.begin(), subject_ids.end(), u) != subject_ids.end();
                r.routed.push_back(Delivery{u, seq, gid, joins ? 0 : prev});
              }
            }
            return r;
          },
          payload);
    }

    case wire::Envelope::kGroupKeySend: {
      const wire::GroupKeySend& m = env.group_key_send();
      if (m.nonce().size() != crypto::kBoxNonceBytes || m.wrapped_key().empty() ||
          m.wrapped_key().size() > kMaxWrappedKey) {
        return d.Refuse(Status(Code::kBadRequest, "group key needs a 24-byte nonce and a wrapped key"));
      }
      const DirGroup* g = nullptr;
      if (Status st = find_group(m.group_id(), &g); !st.ok()) return refuse(std::move(st));
      if (g->admin_id != me) return d.RefuseByState(Status(Code::kNotAdmin, "only the admin hands out group keys"));
      const DirUser* to = nullptr;
      if (Status st = find_user(m.to(), &to); !st.ok()) return refuse(std::move(st));
      if (!g->HasMember(to->id)) {
        return d.RefuseByState(
            Status(Code::kNotMember, to->name + " not a member of group " + std::to_string(m.group_id())));
      }
      if (m.epoch() != g->epoch) {
        return d.RefuseByState(Status(m.epoch() < g->epoch ? Code::kStaleEpoch : Code::kBadRequest,
                                      "group " + std::to_string(g->id) + " is at epoch " + std::to_string(g->epoch)));
      }
      auto* k = event.mutable_group_key();
      k->set_group_id(m.group_id());
      k->set_epoch(m.epoch());
      k->set_nonce(m.nonce());
      k->set_wrapped_key(m.wrapped_key());
      auto payload = serialized();
      std::string dedupe = "gk/" + std::to_string(m.group_id()) + "/" + std::to_string(m.epoch());
      const std::uint64_t to_id = to->id;
      d.facts() = Facts();
      d.outcome().enqueue.push_back(PendingItem{to_id, std::move(dedupe), *payload});
      d.outcome().event = payload;
      return std::move(d.outcome());
    }

    case wire::Envelope::kGroupSend: {
      const wire::GroupSend& m = env.group_send();
      if (Status st = CheckCipherFields(m.kind(), m.chunk_index(), m.chunk_count(), m.msg_id(), m.nonce(),
                                        m.ciphertext(), config_.max_image_bytes);
          !st.ok()) {
        return d.Refuse(std::move(st));
      }
      if (m.signature().size() != crypto::kSignatureBytes) {
        return d.Refuse(Status(Code::kBadRequest, "signature must be 64 bytes"));
      }
      const DirGroup* g = nullptr;
      if (Status st = find_group(m.group_id(), &g); !st.ok()) return refuse(std::move(st));
      if (!g->HasMember(me)) {
        return d.RefuseByState(Status(Code::kNotMember, "you are not a member of group " + std::to_string(g->id)));
      }
      if (m.epoch() != g->epoch) {
        return d.RefuseByState(Status(m.epoch() < g->epoch ? Code::kStaleEpoch : Code::kBadRequest,
                                      "group " + std::to_string(g->id) + " is at epoch " + std::to_string(g->epoch)));
      }
      std::vector<std::uint64_t> others;
      others.reserve(g->members.size());
      for (std::uint64_t u : g->members) {
        if (u != me) others.push_back(u);
      }
      std::string dedupe = MessageKey("g/", {m.group_id(), me}, m.msg_id(), m.chunk_index());
      auto* ge = event.mutable_group();
      ge->set_group_id(m.group_id());
      ge->set_epoch(m.epoch());
      ge->set_kind(m.kind());
      ge->set_chunk_index(m.chunk_index());
      ge->set_chunk_count(m.chunk_count());
      // Accepted: the request's bytes fields move into the event.
      wire::GroupSend& taken = *env.mutable_group_send();
      ge->set_allocated_msg_id(taken.release_msg_id());
      ge->set_allocated_nonce(taken.release_nonce());
      ge->set_allocated_ciphertext(taken.release_ciphertext());
      ge->set_allocated_signature(taken.release_signature());
      auto payload = serialized();
      d.facts() = Facts();
      d.outcome().single_call = true;
      const std::uint64_t gid = g->id;
      // Stored once in the group's log; each member reads it after its cursor.
      return d.Write(
          [gid, me, others = std::move(others), payload, dedupe = std::move(dedupe),
           shared = shared_store_](Store& s) {
            WriteResult r;
            std::uint64_t seq = 0, prev = 0;
            bool fresh = false;
            std::vector<std::uint64_t> readers;
            r.st = s.AppendGroup(gid, me, others, dedupe, *payload, &seq, &fresh, shared ? &readers : nullptr,
                                 &prev);
            if (r.st.ok() && fresh) {
              // With other servers changing the group too, route to the
              // members the store has; alone, this server's list is exact.
              const std::vector<std::uint64_t>& to = shared ? readers : others;
              r.routed.reserve(to.size());
              for (std::uint64_t u : to) r.routed.push_back(Delivery{u, seq, gid, prev});
              r.own_entry = Delivery{me, seq, gid, prev};
            }
            return r;
          },
          payload);
    }

    case wire::Envelope::kListGroups: {
      wire::Envelope reply;
      reply.set_rid(env.rid());
      auto* list = reply.mutable_group_list();
      ListPage page(ListBudget());
      std::uint64_t next = env.list_groups().after();
      auto add = [this, list](std::uint64_t id) -> std::size_t {
        const DirGroup* g = dir_.FindGroup(id);
        if (g == nullptr) return 0;
        wire::GroupInfo* info = list->add_groups();
        FillGroupHead(*g, info);  // members: GetGroup
        return EntryBytes(*info);
      };
      if (!page.Fill(dir_.GroupsOf(me), env.list_groups().after(), add, &next)) {
        list->set_more(true);
        list->set_next_after(next);
      }
      return d.Reply(reply);
    }

    case wire::Envelope::kGetGroup: {
      const DirGroup* g = nullptr;
      if (Status st = find_group(env.get_group().group_id(), &g); !st.ok()) return refuse(std::move(st));
      if (!g->HasMember(me)) {
        return d.RefuseByState(Status(Code::kNotMember, "you are not a member of group " + std::to_string(g->id)));
      }
      wire::Envelope reply;
      reply.set_rid(env.rid());
      wire::GroupInfo* info = reply.mutable_group_info();
      FillGroupHead(*g, info);
      ListPage page(ListBudget());
      std::uint64_t next = env.get_group().after_member();
      auto add = [this, info](std::uint64_t id) -> std::size_t {
        const DirUser* u = dir_.FindUser(id);
        if (u == nullptr) return 0;
        wire::UserInfo* m = info->add_members();
        FillUserInfo(*u, m);
        return EntryBytes(*m);
      };
      if (!page.Fill(g->members, env.get_group().after_member(), add, &next)) {
        info->set_more_members(true);
        info->set_next_after_member(next);
      }
      return d.Reply(reply);
    }

    case wire::Envelope::kAck: {
      const wire::Ack& ack = env.ack();
      if (ack.seqs_size() + ack.groups_size() > static_cast<int>(kMaxAckSeqs)) {
        return d.Refuse(Status(Code::kBadRequest, "at most " + std::to_string(kMaxAckSeqs) + " acks per Ack"));
      }
      std::vector<std::uint64_t> v(ack.seqs().begin(), ack.seqs().end());
      std::vector<std::pair<std::uint64_t, std::uint64_t>> groups;
      for (const wire::GroupAck& g : ack.groups()) {
        if (g.group_id() != 0) groups.emplace_back(g.group_id(), g.seq());
      }
      // No write of its own: the store worker merges the acks of a batch
      // (StoreWorker::SubmitAck). Acked group logs may now be trimmed.
      d.outcome().reply_after_write = false;
      d.outcome().ack_only = true;
      d.outcome().ack_seqs = std::move(v);
      d.outcome().ack_groups = std::move(groups);
      return std::move(d.outcome());
    }

    default:
      return d.Refuse(Status(Code::kUnknownType, "not a request this server handles"));
  }
}

}  // namespace fastchat::server
