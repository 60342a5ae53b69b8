// Groups: resolving them, their members, their keys (made by the admin,
// rotated when membership changes, handed to each member sealed to them) and
// group messages.
#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "client.h"
#include "client_impl.h"

namespace fastchat::client {

// ===================================================================== groups

awaitable<Outcome> ClientCore::Impl::ListAllGroups(std::vector<wire::GroupInfo>* groups) {
  groups->clear();
  std::uint64_t after = 0;
  for (;;) {
    wire::Envelope req, reply;
    req.mutable_list_groups()->set_after(after);
    Outcome o = co_await Call(req, &reply);
    if (!o.ok()) co_return o;
    if (!reply.has_group_list()) co_return Err("BAD_FRAME", "unexpected reply to ListGroups");
    const wire::GroupList& page = reply.group_list();
    for (const auto& gi : page.groups()) groups->push_back(gi);
    // A page must move on (a server that repeats itself would loop forever).
    if (!page.more() || page.next_after() <= after) co_return Outcome::OK();
    after = page.next_after();
  }
}

awaitable<Outcome> ClientCore::Impl::FindUnknownGroup(std::string name, std::uint64_t* gid,
                                                      std::uint64_t* epoch) {
  *gid = 0;
  std::vector<wire::GroupInfo> groups;
  Outcome o = co_await ListAllGroups(&groups);
  if (!o.ok()) co_return o;
  for (const auto& gi : groups) {
    LocalGroup known;
    if (gi.name() != name || gi.admin_id() != me().user_id || store->GetGroup(gi.id(), &known).ok()) continue;
    if (gi.id() > *gid) {
      *gid = gi.id();
      *epoch = gi.epoch();
    }
  }
  co_return Outcome::OK();
}

awaitable<Outcome> ClientCore::Impl::ResolveGroup(std::string arg, LocalGroup* g) {
  if (AllDigits(arg)) {
    std::uint64_t id = std::stoull(arg);
    if (!store->GetGroup(id, g).ok()) {
      *g = LocalGroup();
      g->id = id;
    }
    co_return Outcome::OK();
  }
  std::vector<LocalGroup> all;
  Status s = store->FindGroupsByName(arg, &all);
  if (!s.ok()) co_return Outcome::From(s);
  std::vector<LocalGroup> active;
  for (const auto& x : all)
    if (!x.left) active.push_back(x);
  auto ambiguous = [&](const std::vector<LocalGroup>& v) {
    std::string ids;
    for (const auto& x : v) ids += (ids.empty() ? "" : ", ") + std::to_string(x.id);
    return Err(kCodeAmbiguous, "several groups are named '" + arg + "' (ids " + ids + "); use the id");
  };
  if (active.size() == 1) {
    *g = active[0];
    co_return Outcome::OK();
  }
  if (active.size() > 1) co_return ambiguous(active);
  // Not known locally: ask the server for my groups.
  std::vector<wire::GroupInfo> groups;
  Outcome o = co_await ListAllGroups(&groups);
  if (o.ok()) {
    std::vector<LocalGroup> found;
    for (const auto& gi : groups) {
      LocalGroup lg{gi.id(), gi.name(), gi.admin_id(), gi.epoch(), false};
      store->PutGroup(lg);
      if (gi.name() == arg) found.push_back(lg);
    }
    if (found.size() == 1) {
      *g = found[0];
      co_return Outcome::OK();
    }
    if (found.size() > 1) co_return ambiguous(found);
  }
  if (all.size() == 1) {
    *g = all[0];
    co_return Outcome::OK();
  }
  if (all.size() > 1) co_return ambiguous(all);
  co_return Err("NO_SUCH_GROUP", "no group named '" + arg + "'");
}

awaitable<Outcome> ClientCore::Impl::TargetGroup(std::string arg, LocalGroup* g, Json* result) {
  Outcome o = co_await ResolveGroup(arg, g);
  if (!o.ok()) co_return o;
  (*result)["group_id"] = g->id;
  (*result)["group"] = g->name;
  co_return o;
}

awaitable<Outcome> ClientCore::Impl::TargetGroupAndUser(std::string group, std::string user, LocalGroup* g,
                                                        wire::UserInfo* info, Json* result) {
  Outcome o = co_await TargetGroup(group, g, result);
  if (!o.ok()) co_return o;
  co_return co_await LookUpUser(user, info);
}

awaitable<Outcome> ClientCore::Impl::RefreshGroup(std::uint64_t gid, wire::GroupInfo* info) {
  info->Clear();
  std::uint64_t after = 0;
  for (bool first = true;; first = false) {
    wire::Envelope req, reply;
    req.mutable_get_group()->set_group_id(gid);
    req.mutable_get_group()->set_after_member(after);
    Outcome o = co_await Call(req, &reply);
    if (!o.ok()) co_return o;
    if (!reply.has_group_info()) co_return Err("BAD_FRAME", "unexpected reply to GetGroup");
    wire::GroupInfo* page = reply.mutable_group_info();
    // A page must move on (a server that repeats itself would loop forever).
    const bool more = page->more_members() && page->next_after_member() > after;
    const std::uint64_t next = page->next_after_member();
    if (first) {
      info->Swap(page);
    } else {
      for (auto& member : *page->mutable_members()) *info->add_members() = std::move(member);
    }
    if (!more) break;
    after = next;
  }
  info->clear_more_members();
  info->clear_next_after_member();
  LocalGroup lg{info->id(), info->name(), info->admin_id(), info->epoch(), false};
  Status s = store->PutGroup(lg);
  if (!s.ok()) co_return Outcome::From(s);
  for (const auto& m : info->members()) {
    Contact pinned;
    PinUser(m, &pinned);  // warns on a change; the key send checks again
  }
  co_return Outcome::OK();
}

std::string ClientCore::Impl::GroupNameOf(std::uint64_t gid) {
  LocalGroup g;
  if (store->GetGroup(gid, &g).ok()) return g.name;
  return std::string();
}

// ===================================================================== keys

awaitable<Outcome> ClientCore::Impl::SendGroupKeys(std::uint64_t gid, std::uint64_t epoch, const std::string& key,
                                                   std::vector<wire::UserInfo> members) {
  std::string plain;
  PutU64(&plain, gid);
  PutU64(&plain, epoch);
  plain += key;
  Outcome first;
  std::deque<Pending> calls;
  std::vector<wire::UserInfo> to;
  auto fail = [&](const wire::UserInfo& who, const Outcome& o) {
    Json w = {{"type", "warning"}, {"code", o.code}, {"user", who.name()}, {"user_id", who.id()},
              {"group_id", gid}, {"group", GroupNameOf(gid)},
              {"message", "could not send the key of epoch " + std::to_string(epoch) + " to " +
                              who.name() + ": " + o.message}};
    Emit(w);
    if (first.ok()) first = o;
  };
  for (const auto& m : members) {
    if (m.id() == me().user_id) continue;
    Contact c;
    Outcome o = PinUser(m, &c);
    if (!o.ok()) {
      fail(m, o);
      continue;
    }
    std::string nonce, wrapped;
    Status s = crypto::BoxSeal(plain, c.x25519_public, me().x25519_secret, &nonce, &wrapped);
    if (!s.ok()) {
      fail(m, Outcome::From(s));
      continue;
    }
    wire::Envelope req;
    auto* ks = req.mutable_group_key_send();
    ks->set_group_id(gid);
    ks->mutable_to()->set_id(c.id);
    ks->set_epoch(epoch);
    ks->set_nonce(nonce);
    ks->set_wrapped_key(wrapped);
    Push(calls, std::move(req));
    to.push_back(m);
  }
  for (std::size_t i = 0; i < to.size(); ++i) {
    Outcome o = co_await Finish(calls, nullptr, nullptr);
    if (!o.ok()) fail(to[i], o);
  }
  co_return first;
}

awaitable<Outcome> ClientCore::Impl::RotateKey(std::uint64_t gid, bool force, std::uint64_t* epoch_out,
                                               bool* created, std::uint64_t removed, std::uint64_t must_exceed) {
  *created = false;
  wire::GroupInfo info;
  Outcome o = co_await RefreshGroup(gid, &info);
  if (!o.ok()) co_return o;
  if (info.admin_id() != me().user_id) co_return Err("NOT_ADMIN", "only the group's admin can rotate its key");
  std::uint64_t epoch = info.epoch();
  *epoch_out = epoch;
  if (epoch <= must_exceed) {
    // A removed member holds every key up to must_exceed: handing one of
    // them out again would let them read what follows.
    std::string msg = "the server says group " + std::to_string(gid) + " is still at epoch " +
                      std::to_string(epoch) + " after a member was removed (keys up to epoch " +
                      std::to_string(must_exceed) +
                      " are known to them); no key sent. The server may be hostile.";
    Json w = {{"type", "warning"}, {"code", kCodeEpochNotAdvanced}, {"group_id", gid},
              {"group", GroupNameOf(gid)}, {"epoch", epoch}, {"message", msg}};
    Emit(w);
    LogWarn(msg);
    co_return Err(kCodeEpochNotAdvanced, msg);
  }
  std::string key;
  Status s = store->GetGroupKey(gid, epoch, &key);
  if (s.ok() && !force) co_return Outcome::OK();
  if (!s.ok()) {
    if (s.code() != Code::kNotFound) co_return Outcome::From(s);
    s = store->PutGroupKey(gid, epoch, crypto::NewSymmetricKey(), &key);
    if (!s.ok()) co_return Outcome::From(s);
    *created = true;
  }
  std::vector<wire::UserInfo> members;
  for (const auto& m : info.members())
    if (m.id() != removed) members.push_back(m);
  co_return co_await SendGroupKeys(gid, epoch, key, std::move(members));
}

// ===================================================================== group messages

ClientCore::Impl::ChunkMaker ClientCore::Impl::GroupMaker(std::uint64_t gid, std::uint64_t epoch,
                                                         const std::string& key, const std::string& msg_id,
                                                         wire::Kind kind) {
  std::uint64_t my_id = me().user_id;
  std::string sign_key = me().ed25519_secret;
  return [=](std::uint32_t index, std::uint32_t count, const std::string& plain, wire::Envelope* env) {
    std::string ad = GroupAd(gid, epoch, my_id, msg_id, kind, index, count);
    std::string nonce, ct;
    Status s = crypto::AeadEncrypt(plain, ad, key, &nonce, &ct);
    if (!s.ok()) return Outcome::From(s);
    auto* g = env->mutable_group_send();
    g->set_group_id(gid);
    g->set_epoch(epoch);
    g->set_msg_id(msg_id);
    g->set_kind(kind);
    g->set_chunk_index(index);
    g->set_chunk_count(count);
    g->set_nonce(nonce);
    g->set_signature(crypto::Sign(ad + nonce + ct, sign_key));
    g->set_ciphertext(std::move(ct));
    return Outcome::OK();
  };
}

awaitable<Outcome> ClientCore::Impl::SendToGroup(std::string group, bool is_file, std::string payload,
                                                 Json* result) {
  LocalGroup g;
  Outcome o = co_await TargetGroup(group, &g, result);
  if (!o.ok()) co_return o;
  for (int attempt = 0;; ++attempt) {
    std::uint64_t epoch = 0;
    std::string key;
    Status s = store->LatestGroupKey(g.id, &epoch, &key);
    if (s.code() == Code::kNotFound) {
      // Let the server say why (no such group, not a member) if it can.
      wire::GroupInfo info;
      Outcome r = co_await RefreshGroup(g.id, &info);
      if (!r.ok()) co_return r;
      co_return Err(kCodeNoKey, "no key for group " + (info.name().empty() ? std::to_string(g.id) : info.name()) +
                                    " yet (the admin sends it; run listen or chat to receive it)");
    }
    if (!s.ok()) co_return Outcome::From(s);
    std::string msg_id = crypto::PublicRandomBytes(crypto::kMsgIdBytes);
    if (is_file) {
      o = co_await SendFile(payload, GroupMaker(g.id, epoch, key, msg_id, wire::IMAGE), result);
    } else {
      wire::Envelope env, reply;
      o = GroupMaker(g.id, epoch, key, msg_id, wire::TEXT)(0, 1, payload, &env);
      if (o.ok()) o = co_await Call(env, &reply);
    }
    if (o.ok()) {
      (*result)["epoch"] = epoch;
      if (is_file) {
        RememberSentFile(true, g.id, msg_id, payload, *result);
      } else {
        Json body = {{"text", payload}};
        RememberSent(true, g.id, "message", msg_id, body);
      }
      co_return o;
    }
    if (o.code != "STALE_EPOCH") co_return o;
    wire::GroupInfo info;
    Outcome r = co_await RefreshGroup(g.id, &info);
    if (!r.ok()) co_return r;
    if (attempt > 0 || info.admin_id() != me().user_id) {
      o.message = "epoch " + std::to_string(epoch) + " is stale: the group is at epoch " +
                  std::to_string(info.epoch()) + " and its key has not arrived yet";
      co_return o;
    }
    std::uint64_t new_epoch;
    bool created;
    r = co_await RotateKey(g.id, false, &new_epoch, &created);
    if (!r.ok()) co_return o;
  }
}

// ===================================================================== commands

awaitable<Outcome> ClientCore::CreateGroup(std::string name, Json* result) {
  Impl& m = *impl_;
  wire::Envelope req, reply;
  req.mutable_group_create()->set_name(name);
  std::uint64_t gid = 0, epoch = 0;
  Outcome o;
  for (;;) {
    // Not idempotent: after a lost connection, look for the group before
    // asking again.
    o = co_await m.CallOnce(req, &reply);
    if (o.code != kReplyLost) break;
    o = co_await m.FindUnknownGroup(name, &gid, &epoch);
    if (!o.ok() || gid != 0) break;
  }
  if (!o.ok()) co_return o;
  if (gid == 0) {
    if (!reply.has_ok() || reply.ok().id() == 0) co_return Err("BAD_FRAME", "unexpected reply to GroupCreate");
    gid = reply.ok().id();
    epoch = reply.ok().epoch();
  }
  if (epoch == 0) epoch = 1;
  Status s = m.store->PutGroup(LocalGroup{gid, name, m.me().user_id, epoch, false});
  if (s.ok()) s = m.store->PutGroupKey(gid, epoch, crypto::NewSymmetricKey(), nullptr);
  if (!s.ok()) co_return Outcome::From(s);
  (*result)["group_id"] = gid;
  (*result)["group"] = name;
  (*result)["epoch"] = epoch;
  Json body = {{"notice", "group_created"}, {"text", "you created the group " + name}};
  m.RememberSent(true, gid, "notice", std::string(), body);
  co_return Outcome::OK();
}

awaitable<Outcome> ClientCore::AddMember(std::string group, std::string user, Json* result) {
  Impl& m = *impl_;
  LocalGroup g;
  wire::UserInfo member;
  Outcome o = co_await m.TargetGroupAndUser(group, user, &g, &member, result);
  if (!o.ok()) co_return o;
  Contact c;
  o = m.PinUser(member, &c);
  if (!o.ok()) co_return o;
  (*result)["user"] = c.name;
  (*result)["user_id"] = c.id;

  wire::Envelope req, reply;
  req.mutable_group_add()->set_group_id(g.id);
  req.mutable_group_add()->mutable_user()->set_id(c.id);
  o = co_await m.CallRepeatable(req, &reply, "ALREADY_MEMBER");
  if (!o.ok()) co_return o;
  std::uint64_t epoch = reply.has_ok() ? reply.ok().epoch() : 0;
  std::string key;
  if (epoch != 0 && m.store->GetGroupKey(g.id, epoch, &key).ok()) {
    std::vector<wire::UserInfo> just_them(1, member);
    o = co_await m.SendGroupKeys(g.id, epoch, key, std::move(just_them));
  } else {
    bool created;
    o = co_await m.RotateKey(g.id, true, &epoch, &created);
  }
  (*result)["epoch"] = epoch;
  if (!o.ok()) LogWarn("add_member: key hand-over failed: " + o.code + ": " + o.message);
  co_return Outcome::OK();  // the member was added; key problems were reported as warnings
}

awaitable<Outcome> ClientCore::GroupMessage(std::string group, std::string text, Json* result) {
  if (text.size() > kMaxTextBytes) co_return Err("TOO_LARGE", "message too long; send it as a file");
  co_return co_await impl_->SendToGroup(std::move(group), false, std::move(text), result);
}

awaitable<Outcome> ClientCore::GroupImage(std::string group, std::string path, Json* result) {
  Outcome f = CheckFile(path);
  if (!f.ok()) co_return f;
  co_return co_await impl_->SendToGroup(std::move(group), true, std::move(path), result);
}

awaitable<Outcome> ClientCore::Kick(std::string group, std::string user, Json* result) {
  Impl& m = *impl_;
  LocalGroup g;
  wire::UserInfo info;
  Outcome o = co_await m.TargetGroupAndUser(group, user, &g, &info, result);
  if (!o.ok()) co_return o;
  std::uint64_t uid = info.id();
  (*result)["user"] = info.name();
  (*result)["user_id"] = uid;

  // The kicked member may hold every key up to the newest one I have.
  std::uint64_t known_epoch = 0;
  std::string known_key;
  Status ks = m.store->LatestGroupKey(g.id, &known_epoch, &known_key);
  if (!ks.ok() && ks.code() != Code::kNotFound) co_return Outcome::From(ks);

  wire::Envelope req, reply;
  req.mutable_group_kick()->set_group_id(g.id);
  req.mutable_group_kick()->mutable_user()->set_id(uid);
  o = co_await m.CallRepeatable(req, &reply, "NOT_MEMBER");
  if (!o.ok()) co_return o;
  std::uint64_t epoch = reply.has_ok() ? reply.ok().epoch() : 0;
  bool created;
  std::uint64_t rotated_epoch = epoch;
  // Only a kick answered Ok moved the epoch just now (after NOT_MEMBER, a
  // repeat, the new key may already be mine).
  const std::uint64_t must_exceed = reply.has_ok() ? known_epoch : 0;
  o = co_await m.RotateKey(g.id, true, &rotated_epoch, &created, uid, must_exceed);
  if (o.code == kCodeEpochNotAdvanced) co_return o;
  if (!o.ok()) LogWarn("kick: key rotation incomplete: " + o.code + ": " + o.message);
  (*result)["epoch"] = epoch != 0 ? epoch : rotated_epoch;
  co_return Outcome::OK();
}

awaitable<Outcome> ClientCore::Groups(Json* result) {
  Impl& m = *impl_;
  std::vector<wire::GroupInfo> groups;
  Outcome o = co_await m.ListAllGroups(&groups);
  if (!o.ok()) co_return o;
  Json list = Json::array();
  std::vector<LocalGroup> local;
  m.store->ListGroups(&local);
  for (const auto& gi : groups) {
    m.store->PutGroup(LocalGroup{gi.id(), gi.name(), gi.admin_id(), gi.epoch(), false});
    std::string admin;
    co_await m.UserNameOf(gi.admin_id(), &admin);
    list.push_back(Json{{"id", gi.id()},
                        {"name", gi.name()},
                        {"admin_id", gi.admin_id()},
                        {"admin", admin},
                        {"epoch", gi.epoch()}});
  }
  for (const auto& lg : local) {
    bool listed =
        std::any_of(groups.begin(), groups.end(), [&](const wire::GroupInfo& gi) { return gi.id() == lg.id; });
    if (!listed && !lg.left) m.store->SetGroupLeft(lg.id, true);
  }
  (*result)["groups"] = std::move(list);
  co_return Outcome::OK();
}

awaitable<Outcome> ClientCore::Members(std::string group, Json* result) {
  Impl& m = *impl_;
  LocalGroup g;
  Outcome o = co_await m.ResolveGroup(group, &g);
  if (!o.ok()) co_return o;
  wire::GroupInfo info;
  o = co_await m.RefreshGroup(g.id, &info);
  if (!o.ok()) co_return o;
  Json list = Json::array();
  for (const auto& u : info.members()) list.push_back(Json{{"id", u.id()}, {"name", u.name()}});
  (*result)["group_id"] = info.id();
  (*result)["group"] = info.name();
  (*result)["admin_id"] = info.admin_id();
  for (const auto& u : info.members())
    if (u.id() == info.admin_id()) (*result)["admin"] = u.name();
  (*result)["epoch"] = info.epoch();
  (*result)["members"] = std::move(list);
  co_return Outcome::OK();
}

awaitable<Outcome> ClientCore::Leave(std::string group, Json* result) {
  Impl& m = *impl_;
  LocalGroup g;
  Outcome o = co_await m.TargetGroup(group, &g, result);
  if (!o.ok()) co_return o;
  wire::Envelope req, reply;
  req.mutable_group_leave()->set_group_id(g.id);
  o = co_await m.CallRepeatable(req, &reply, "NOT_MEMBER", "NO_SUCH_GROUP");
  if (!o.ok()) co_return o;
  m.store->SetGroupLeft(g.id, true);
  co_return Outcome::OK();
}

}  // namespace fastchat::client
