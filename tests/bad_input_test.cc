// Hostile and malformed input against a real fastchat-server: raw frames over
// TCP (RawConn), and refused requests through the real client. After each
// abuse, the server must still serve a fresh, normal client.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "harness/fastchat.h"
#include "harness/raw_conn.h"

namespace fastchat::testing {
namespace {

constexpr std::uint32_t kMaxFrame = 64 * 1024;

class BadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerOptions o;
    o.max_frame = kMaxFrame;
    w_ = std::make_unique<World>(o);
  }
  void TearDown() override {
    // Whatever the test did, the server is alive and a normal client can
    // register, befriend, and message.
    if (!HasFatalFailure()) ExpectServerStillServes();
    w_.reset();
  }

  void ExpectServerStillServes() {
    ASSERT_TRUE(w_->server().Running()) << "server died\n" << w_->server().StderrTail();
    std::string suffix = RandomToken(6);
    {
      RawConn raw(port());
      wire::Envelope h = raw.Hello();
      ASSERT_TRUE(h.has_hello_ok()) << Describe(h);
      wire::Envelope r = raw.Register("raw" + suffix, "password-raw");
      ASSERT_TRUE(r.has_ok()) << Describe(r);
      wire::Envelope l = raw.Login("raw" + suffix, "password-raw", true);
      ASSERT_TRUE(l.has_logged_in()) << Describe(l);
    }
    User x = w_->Register("after" + suffix);
    User y = w_->Register("other" + suffix);
    auto cx = w_->Chat(x);
    auto cy = w_->Chat(y);
    w_->MakeFriends(*cx, x, *cy, y);
    cx->CommandOk("single_message " + y.name + " still alive");
    cy->WaitFor(Like({{"type", "message"}, {"text", "still alive"}}), "message after abuse");
  }

  std::uint16_t port() { return w_->server().port(); }

  // A connection that has done Hello.
  std::unique_ptr<RawConn> Greeted() {
    auto c = std::make_unique<RawConn>(port());
    wire::Envelope r = c->Hello();
    EXPECT_TRUE(r.has_hello_ok()) << Describe(r);
    return c;
  }
  // A connection logged in as a freshly registered user.
  std::unique_ptr<RawConn> LoggedIn(const std::string& name, bool receive) {
    auto c = Greeted();
    wire::Envelope reg = c->Register(name, "password-" + name);
    EXPECT_TRUE(reg.has_ok()) << Describe(reg);
    wire::Envelope li = c->Login(name, "password-" + name, receive);
    EXPECT_TRUE(li.has_logged_in()) << Describe(li);
    return c;
  }

  std::unique_ptr<World> w_;
};

// Bytes that protobuf cannot parse as an Envelope: tag with wire type 7.
const std::string kGarbage = std::string("\x0f\xff\xff\xff\xff\xff\x07garbage", 14);

TEST_F(BadInput, HelloOkAnnouncesLimits) {
  auto c = std::make_unique<RawConn>(port());
  wire::Envelope r = c->Hello();
  ASSERT_TRUE(r.has_hello_ok()) << Describe(r);
  EXPECT_EQ(r.hello_ok().version(), 1u);
  EXPECT_EQ(r.hello_ok().max_frame(), kMaxFrame);
  EXPECT_GT(r.hello_ok().max_image_bytes(), 0u);
}

TEST_F(BadInput, GarbageFrameGetsBadFrameAndConnectionStaysUsable) {
  wire::Envelope probe;
  ASSERT_FALSE(probe.ParseFromString(kGarbage)) << "test bytes must not parse";

  auto c = Greeted();
  ASSERT_TRUE(c->SendFrame(kGarbage));
  wire::Envelope e = c->Expect();
  EXPECT_EQ(ErrorName(e), "BAD_FRAME") << Describe(e);

  // Still usable: register and log in on the same connection.
  wire::Envelope reg = c->Register("survivor", "password-survivor");
  EXPECT_TRUE(reg.has_ok()) << Describe(reg);
  wire::Envelope li = c->Login("survivor", "password-survivor", false);
  EXPECT_TRUE(li.has_logged_in()) << Describe(li);

  // And again after login.
  ASSERT_TRUE(c->SendFrame(kGarbage));
  wire::Envelope e2 = c->Expect();
  EXPECT_EQ(ErrorName(e2), "BAD_FRAME") << Describe(e2);
  wire::Envelope lf;
  lf.mutable_list_friends();
  wire::Envelope fl = c->Request(lf);
  EXPECT_TRUE(fl.has_friend_list()) << Describe(fl);
}

TEST_F(BadInput, GarbageBeforeHelloIsAnsweredNotFatal) {
  auto c = std::make_unique<RawConn>(port());
  ASSERT_TRUE(c->SendFrame(kGarbage));
  wire::Envelope e = c->Expect();
  ASSERT_TRUE(e.has_error()) << Describe(e);
  EXPECT_TRUE(ErrorName(e) == "BAD_FRAME" || ErrorName(e) == "HANDSHAKE_REQUIRED") << Describe(e);
  wire::Envelope r = c->Hello();
  EXPECT_TRUE(r.has_hello_ok()) << Describe(r);
}

TEST_F(BadInput, OversizedFrameGetsFrameTooLargeAndIsClosed) {
  auto c = Greeted();
  // Only the header: the server must not wait for the body. (Sending no
  // body also keeps unread data out of the server's socket, so its close is
  // a FIN, not a reset that could eat the Error frame.)
  char hdr[kFrameHeaderSize];
  EncodeFrameHeader(kMaxFrame + 1, hdr);
  ASSERT_TRUE(c->SendBytes(std::string_view(hdr, sizeof hdr)));
  wire::Envelope e = c->Expect();
  EXPECT_EQ(ErrorName(e), "FRAME_TOO_LARGE") << Describe(e);
  EXPECT_TRUE(c->WaitClosed()) << "server kept the connection open";
}

TEST_F(BadInput, HugeLengthHeaderBeforeHello) {
  auto c = std::make_unique<RawConn>(port());
  ASSERT_TRUE(c->SendBytes(std::string("\xff\xff\xff\xff", 4)));
  wire::Envelope e = c->Expect();
  EXPECT_EQ(ErrorName(e), "FRAME_TOO_LARGE") << Describe(e);
  EXPECT_TRUE(c->WaitClosed());
}

TEST_F(BadInput, FrameExactlyAtTheLimitIsAccepted) {
  auto c = Greeted();
  // An Envelope of exactly kMaxFrame bytes: a second Hello with a long
  // agent string (any reply but FRAME_TOO_LARGE or a close is fine).
  wire::Envelope env = HelloOfSize(kMaxFrame, 7);
  ASSERT_EQ(env.ByteSizeLong(), kMaxFrame);
  ASSERT_TRUE(c->Send(env));
  wire::Envelope r = c->Expect();
  EXPECT_EQ(r.rid(), 7u) << Describe(r);
  EXPECT_NE(ErrorName(r), "FRAME_TOO_LARGE") << Describe(r);
  // Connection still open and usable.
  wire::Envelope reg = c->Register("limitok", "password-limitok");
  EXPECT_TRUE(reg.has_ok()) << Describe(reg);
}

TEST_F(BadInput, TruncatedFrameThenCloseLeavesServerServing) {
  for (int i = 0; i < 20; ++i) {
    auto c = Greeted();
    char hdr[kFrameHeaderSize];
    EncodeFrameHeader(1000, hdr);
    std::string partial(hdr, sizeof hdr);
    partial += std::string(10, 'x');
    ASSERT_TRUE(c->SendBytes(partial));
    // closed by destruction with the frame incomplete
  }
  {
    // Half a header.
    auto c = std::make_unique<RawConn>(port());
    c->SendBytes(std::string("\x00\x00", 2));
  }
  {
    // Mid-login: a logged-in receiving session vanishing abruptly.
    auto c = LoggedIn("vanisher", true);
    c->SendBytes(std::string("\x00\x00\x01", 3));
  }
  // A session left half-closed (we stop writing, keep reading).
  auto c = Greeted();
  c->ShutdownWrite();
  EXPECT_TRUE(c->WaitClosed()) << "server should close a connection the peer stopped writing to";
}

TEST_F(BadInput, EnvelopeWithoutBodyGetsUnknownType) {
  auto c = Greeted();
  wire::Envelope env;
  env.set_rid(42);
  ASSERT_TRUE(c->Send(env));
  wire::Envelope e = c->Expect();
  EXPECT_EQ(ErrorName(e), "UNKNOWN_TYPE") << Describe(e);
  EXPECT_EQ(e.rid(), 42u) << Describe(e);

  // A body this server does not know (field 1000, varint) is the same.
  std::string unknown;
  unknown += static_cast<char>(0x08);  // rid, varint
  unknown += static_cast<char>(43);
  unknown += std::string("\xc0\x3e\x01", 3);  // field 1000, wire type 0, value 1
  ASSERT_TRUE(c->SendFrame(unknown));
  wire::Envelope e2 = c->Expect();
  EXPECT_EQ(ErrorName(e2), "UNKNOWN_TYPE") << Describe(e2);
  EXPECT_EQ(e2.rid(), 43u) << Describe(e2);

  // An empty frame (zero-length Envelope) too.
  ASSERT_TRUE(c->SendFrame(""));
  wire::Envelope e3 = c->Expect();
  EXPECT_EQ(ErrorName(e3), "UNKNOWN_TYPE") << Describe(e3);

  // Server-to-client bodies sent by a client are not requests either.
  for (int which = 0; which < 3; ++which) {
    wire::Envelope odd;
    if (which == 0) odd.mutable_hello_ok()->set_version(1);
    if (which == 1) odd.mutable_deliver()->set_seq(1);
    if (which == 2) odd.mutable_sync_done();
    wire::Envelope reply = c->Request(odd);
    EXPECT_TRUE(reply.has_error()) << Describe(reply);
  }
  wire::Envelope reg = c->Register("stillfine", "password-stillfine");
  EXPECT_TRUE(reg.has_ok()) << Describe(reg);
}

TEST_F(BadInput, RequestsBeforeHelloGetHandshakeRequired) {
  auto c = std::make_unique<RawConn>(port());
  wire::Envelope login;
  login.mutable_login()->mutable_user()->set_name("nobody");
  login.mutable_login()->set_password("whatever-password");
  wire::Envelope e = c->Request(login);
  EXPECT_EQ(ErrorName(e), "HANDSHAKE_REQUIRED") << Describe(e);

  wire::Envelope reg;
  reg.mutable_register_()->set_name("early");
  reg.mutable_register_()->set_password("password-early");
  reg.mutable_register_()->set_x25519_public(RandomBytes(32));
  reg.mutable_register_()->set_ed25519_public(RandomBytes(32));
  wire::Envelope e2 = c->Request(reg);
  EXPECT_EQ(ErrorName(e2), "HANDSHAKE_REQUIRED") << Describe(e2);

  wire::Envelope lf;
  lf.mutable_list_friends();
  EXPECT_EQ(ErrorName(c->Request(lf)), "HANDSHAKE_REQUIRED");

  // The handshake still works afterwards, and "early" was not registered.
  wire::Envelope h = c->Hello();
  EXPECT_TRUE(h.has_hello_ok()) << Describe(h);
  wire::Envelope r = c->Register("early", "password-early");
  EXPECT_TRUE(r.has_ok()) << Describe(r);
}

TEST_F(BadInput, RequestsBeforeLoginGetNotLoggedIn) {
  auto c = Greeted();
  std::vector<wire::Envelope> reqs(8);
  reqs[0].mutable_list_friends();
  reqs[1].mutable_friend_request()->mutable_to()->set_name("x");
  reqs[2].mutable_direct_send()->mutable_to()->set_name("x");
  reqs[3].mutable_group_create()->set_name("g");
  reqs[4].mutable_list_groups();
  reqs[5].mutable_fetch_pending();
  reqs[6].mutable_get_user()->mutable_user()->set_name("x");
  reqs[7].mutable_group_send()->set_group_id(1);
  for (auto& r : reqs) {
    wire::Envelope e = c->Request(r);
    EXPECT_EQ(ErrorName(e), "NOT_LOGGED_IN") << "request " << Describe(r) << " → " << Describe(e);
  }
  // Ack gets no reply, but must not break anything either.
  wire::Envelope ack;
  ack.mutable_ack()->add_seqs(1);
  ack.mutable_ack()->add_seqs(999999);
  c->Send(ack);
  wire::Envelope reg = c->Register("later", "password-later");
  EXPECT_TRUE(reg.has_ok()) << Describe(reg);
  wire::Envelope li = c->Login("later", "password-later", false);
  EXPECT_TRUE(li.has_logged_in()) << Describe(li);
}

TEST_F(BadInput, WrongProtocolVersionIsRefused) {
  for (std::uint32_t v : {0u, 2u, 99u, 0xffffffffu}) {
    SCOPED_TRACE("version " + std::to_string(v));
    auto c = std::make_unique<RawConn>(port());
    wire::Envelope e = c->Hello(v);
    EXPECT_EQ(ErrorName(e), "UNSUPPORTED_VERSION") << Describe(e);
    // Whatever the server does next (close or wait for a good Hello), it
    // must not treat the session as greeted.
    wire::Envelope lf;
    lf.mutable_list_friends();
    lf.set_rid(c->NextRid());
    if (c->Send(lf)) {
      wire::Envelope reply;
      auto st = c->Receive(&reply, Millis(5000));
      if (st == RawConn::Recv::kOk) {
        EXPECT_TRUE(reply.has_error()) << Describe(reply);
        EXPECT_NE(ErrorName(reply), "NOT_LOGGED_IN") << "session treated as greeted";
      }
    }
  }
}

TEST_F(BadInput, InvalidRegistrationsAreRefused) {
  auto c = Greeted();
  auto reg = [&](const std::string& name, const std::string& pw, std::size_t xlen,
                 std::size_t elen) {
    wire::Envelope env;
    auto* r = env.mutable_register_();
    r->set_name(name);
    r->set_password(pw);
    r->set_x25519_public(RandomBytes(xlen));
    r->set_ed25519_public(RandomBytes(elen));
    return ErrorName(c->Request(env));
  };
  EXPECT_EQ(reg("12345", "password-ok", 32, 32), "BAD_REQUEST") << "all-digit name";
  EXPECT_EQ(reg("", "password-ok", 32, 32), "BAD_REQUEST") << "empty name";
  EXPECT_EQ(reg(std::string(33, 'n'), "password-ok", 32, 32), "BAD_REQUEST") << "33-char name";
  EXPECT_EQ(reg("sp ace", "password-ok", 32, 32), "BAD_REQUEST") << "space in name";
  EXPECT_EQ(reg("../etc", "password-ok", 32, 32), "BAD_REQUEST") << "slash in name";
  EXPECT_EQ(reg("short", "1234567", 32, 32), "BAD_REQUEST") << "7-byte password";
  EXPECT_EQ(reg("badkey", "password-ok", 31, 32), "BAD_REQUEST") << "31-byte x25519 key";
  EXPECT_EQ(reg("badkey2", "password-ok", 32, 0), "BAD_REQUEST") << "missing ed25519 key";
  // A valid one works, and a second time is NAME_TAKEN.
  wire::Envelope ok = c->Register(std::string(32, 'n'), "12345678");
  EXPECT_TRUE(ok.has_ok()) << Describe(ok);
  EXPECT_EQ(ErrorName(c->Register(std::string(32, 'n'), "12345678")), "NAME_TAKEN");
}

TEST_F(BadInput, RawLoginErrorsAndRefusedRequests) {
  auto a = LoggedIn("rawalice", true);
  auto b = LoggedIn("rawbob", false);

  auto fresh = Greeted();
  EXPECT_EQ(ErrorName(fresh->Login("rawalice", "wrong-password", false)), "BAD_CREDENTIALS");
  EXPECT_EQ(ErrorName(fresh->Login("nosuchuser", "wrong-password", false)), "BAD_CREDENTIALS");

  // A receiving session gets SyncDone after its (empty) pending set.
  wire::Envelope sync = a->Expect();
  EXPECT_TRUE(sync.has_sync_done()) << Describe(sync);

  // Direct send to a stranger; bad nonce sizes and oversize ciphertexts.
  wire::Envelope ds;
  auto* d = ds.mutable_direct_send();
  d->mutable_to()->set_name("rawalice");
  d->set_msg_id(RandomBytes(16));
  d->set_kind(wire::TEXT);
  d->set_chunk_count(1);
  d->set_nonce(RandomBytes(24));
  d->set_ciphertext(RandomBytes(40));
  EXPECT_EQ(ErrorName(b->Request(ds)), "NOT_FRIENDS");
  d->mutable_to()->set_name("nosuchuser");
  std::string err = ErrorName(b->Request(ds));
  EXPECT_TRUE(err == "NO_SUCH_USER" || err == "NOT_FRIENDS") << err;

  // Friend requests: to self, to nobody; answering a request never made.
  wire::Envelope fr;
  fr.mutable_friend_request()->mutable_to()->set_name("rawbob");
  EXPECT_EQ(ErrorName(b->Request(fr)), "BAD_REQUEST");
  fr.mutable_friend_request()->mutable_to()->set_name("nosuchuser");
  EXPECT_EQ(ErrorName(b->Request(fr)), "NO_SUCH_USER");
  wire::Envelope fa;
  fa.mutable_friend_answer()->mutable_to()->set_name("rawalice");
  fa.mutable_friend_answer()->set_accept(true);
  fa.mutable_friend_answer()->set_nonce(RandomBytes(24));
  fa.mutable_friend_answer()->set_wrapped_key(RandomBytes(48));
  EXPECT_EQ(ErrorName(b->Request(fa)), "NO_SUCH_REQUEST");

  // Groups: unknown group, non-member send, non-admin key send.
  wire::Envelope gs;
  auto* g = gs.mutable_group_send();
  g->set_group_id(987654);
  g->set_epoch(1);
  g->set_msg_id(RandomBytes(16));
  g->set_kind(wire::TEXT);
  g->set_chunk_count(1);
  g->set_nonce(RandomBytes(24));
  g->set_ciphertext(RandomBytes(40));
  g->set_signature(RandomBytes(64));
  EXPECT_EQ(ErrorName(b->Request(gs)), "NO_SUCH_GROUP");
  wire::Envelope gc;
  gc.mutable_group_create()->set_name("rawgroup");
  wire::Envelope created = a->Request(gc);
  ASSERT_TRUE(created.has_ok()) << Describe(created);
  std::uint64_t gid = created.ok().id();
  EXPECT_EQ(created.ok().epoch(), 1u);
  g->set_group_id(gid);
  EXPECT_EQ(ErrorName(b->Request(gs)), "NOT_MEMBER");
  wire::Envelope ga;
  ga.mutable_group_add()->set_group_id(gid);
  ga.mutable_group_add()->mutable_user()->set_name("rawbob");
  EXPECT_EQ(ErrorName(b->Request(ga)), "NOT_ADMIN");
  wire::Envelope added = a->Request(ga);
  EXPECT_TRUE(added.has_ok()) << Describe(added);
  // Stale and future epochs.
  wire::Envelope kick;
  kick.mutable_group_kick()->set_group_id(gid);
  kick.mutable_group_kick()->mutable_user()->set_name("rawbob");
  EXPECT_EQ(ErrorName(b->Request(kick)), "NOT_ADMIN");
  g->set_epoch(5);
  EXPECT_EQ(ErrorName(b->Request(gs)), "BAD_REQUEST");
  wire::Envelope rot = a->Request(kick);
  ASSERT_TRUE(rot.has_ok()) << Describe(rot);
  EXPECT_EQ(rot.ok().epoch(), 2u);
  wire::Envelope add2 = a->Request(ga);
  ASSERT_TRUE(add2.has_ok()) << Describe(add2);
  g->set_epoch(1);
  EXPECT_EQ(ErrorName(b->Request(gs)), "STALE_EPOCH");
  // Key send by a non-admin.
  wire::Envelope ks;
  auto* k = ks.mutable_group_key_send();
  k->set_group_id(gid);
  k->mutable_to()->set_name("rawalice");
  k->set_epoch(2);
  k->set_nonce(RandomBytes(24));
  k->set_wrapped_key(RandomBytes(64));
  EXPECT_EQ(ErrorName(b->Request(ks)), "NOT_ADMIN");
}

// ------------------------------------------------------------------ via clients

TEST_F(BadInput, ClientLevelRefusals) {
  World& w = *w_;
  User a = w.Register("alice");
  User b = w.Register("bob");
  User c = w.Register("carol");
  auto ca = w.Chat(a);
  auto cb = w.Chat(b);

  auto expect_code = [](const json& r, const std::string& code) {
    EXPECT_FALSE(r.value("ok", true)) << r.dump();
    EXPECT_EQ(Str(r, "code"), code) << r.dump();
  };
  expect_code(ca->Command("add_friend nosuchuser"), "NO_SUCH_USER");
  expect_code(ca->Command("add_friend 987654"), "NO_SUCH_USER");
  expect_code(ca->Command("single_message nosuchuser hi"), "NO_SUCH_USER");
  expect_code(ca->Command("single_message bob hi stranger"), "NOT_FRIENDS");
  expect_code(ca->Command("group_message 987654 hi"), "NO_SUCH_GROUP");
  expect_code(ca->Command("members 987654"), "NO_SUCH_GROUP");

  std::uint64_t gid = AsU64(ca->CommandOk("create_group g")["group_id"]);
  std::string G = std::to_string(gid);
  ca->CommandOk("add_member " + G + " bob");
  cb->WaitFor(Like({{"type", "group_key"}, {"group_id", gid}}), "bob's key");
  expect_code(w.Run(c, {"group_message", G, "let", "me", "in"}).result(), "NOT_MEMBER");
  expect_code(cb->Command("add_member " + G + " carol"), "NOT_ADMIN");
  expect_code(cb->Command("kick " + G + " alice"), "NOT_ADMIN");
  expect_code(ca->Command("kick " + G + " carol"), "NOT_MEMBER");

  RunResult dup = w.Run(w.MakeUser("bob2"), {"register", "bob"}, Millis(60000), std::string());
  EXPECT_EQ(dup.exit_code, 1) << dup.Describe();
  EXPECT_EQ(dup.code(), "NAME_TAKEN") << dup.Describe();

  // Unknown command: an error result, and the session goes on.
  json unk = ca->Command("frobnicate now");
  EXPECT_FALSE(unk.value("ok", true)) << unk.dump();
  ca->CommandOk("friends");
}

TEST(BadInputImages, OversizedImageIsRefusedWithTooLarge) {
  ServerOptions o;
  o.max_image_bytes = 1u << 20;
  World w(o);
  User a = w.Register("alice");
  User b = w.Register("bob");
  auto ca = w.Chat(a);
  auto cb = w.Chat(b);
  w.MakeFriends(*ca, a, *cb, b);

  std::string big = w.tmp().Sub("three-mib.bin");
  WriteFile(big, RandomBytes(3u << 20));
  json r = ca->Command("single_image bob " + big, Millis(60000));
  EXPECT_FALSE(r.value("ok", true)) << r.dump();
  EXPECT_EQ(Str(r, "code"), "TOO_LARGE") << r.dump();

  // An image under the limit goes through, and is the first thing bob gets
  // (no partial 3 MiB image appeared).
  std::string small = w.tmp().Sub("small.bin");
  WriteFile(small, RandomBytes(512 * 1024));
  ca->CommandOk("single_image bob " + small);
  json img = cb->WaitFor([](const json& j) {
    std::string t = j.value("type", "");
    return t == "image" || t == "undecryptable" || t == "message";
  }, "bob's next event");
  EXPECT_EQ(Str(img, "type"), "image") << img.dump();
  EXPECT_EQ(Str(img, "title"), "small.bin") << img.dump();
  std::string why;
  EXPECT_TRUE(SameFile(small, b.downloads + "/received_small.bin", &why)) << why;
  EXPECT_FALSE(std::filesystem::exists(b.downloads + "/received_three-mib.bin"));
}

}  // namespace
}  // namespace fastchat::testing
