// fastchat-microbench: Google Benchmark timings of the per-message building
// blocks (framing, protobuf, crypto, the request service's decision). See
// docs/performance.md.
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include "fastchat.pb.h"
#include "fastchat/crypto.h"
#include "fastchat/deliver_frame.h"
#include "fastchat/frame.h"
#include "forward_frame.h"
#include "mesh.pb.h"
#include "request_service.h"

// Counts this program's operator new calls, so a benchmark can report
// allocations per item (BM_ServiceDecidesDirectSend). Atomic: other
// benchmarks allocate on helper threads.
namespace {
std::atomic<std::size_t> g_allocations{0};
}  // namespace

void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {

using namespace fastchat;

std::string DirectSendPayload() {
  wire::Envelope env;
  env.set_rid(12345);
  auto* d = env.mutable_direct_send();
  d->mutable_to()->set_id(4242);
  d->set_msg_id(crypto::RandomBytes(crypto::kMsgIdBytes));
  d->set_kind(wire::TEXT);
  d->set_chunk_index(0);
  d->set_chunk_count(1);
  d->set_nonce(crypto::RandomBytes(crypto::kAeadNonceBytes));
  d->set_ciphertext(crypto::RandomBytes(100));
  return env.SerializeAsString();
}

// AppendFrame of one DirectSend-sized payload.
void BM_FrameEncode(benchmark::State& state) {
  const std::string payload = DirectSendPayload();
  std::string out;
  for (auto _ : state) {
    out.clear();
    for (int i = 0; i < 1000; ++i) AppendFrame(payload, &out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * 1000);
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(out.size()));
}
BENCHMARK(BM_FrameEncode);

// FrameDecoder over a buffer of 1000 frames fed in 64 KiB reads.
void BM_FrameDecode(benchmark::State& state) {
  const std::string payload = DirectSendPayload();
  std::string buf;
  for (int i = 0; i < 1000; ++i) AppendFrame(payload, &buf);
  const std::size_t chunk = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    FrameDecoder dec;
    std::size_t frames = 0;
    for (std::size_t off = 0; off < buf.size(); off += chunk) {
      dec.Append(buf.data() + off, std::min(chunk, buf.size() - off));
      for (;;) {
        std::string_view p;
        bool have = false;
        if (!dec.Next(&p, &have).ok() || !have) break;
        benchmark::DoNotOptimize(p.data());
        ++frames;
      }
    }
    if (frames != 1000) state.SkipWithError("lost frames");
  }
  state.SetItemsProcessed(state.iterations() * 1000);
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(buf.size()));
}
BENCHMARK(BM_FrameDecode)->Arg(4096)->Arg(65536);

void BM_DeliverFramePrefix(benchmark::State& state) {
  std::uint64_t seq = 1000000;
  for (auto _ : state) {
    std::string p = DeliverFramePrefix(seq++, 190);
    benchmark::DoNotOptimize(p.data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_DeliverFramePrefix);

void BM_EnvelopeSerializeDirectSend(benchmark::State& state) {
  wire::Envelope env;
  env.ParseFromString(DirectSendPayload());
  std::string out;
  for (auto _ : state) {
    out.clear();
    env.SerializeToString(&out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_EnvelopeSerializeDirectSend);

void BM_EnvelopeParseDirectSend(benchmark::State& state) {
  const std::string payload = DirectSendPayload();
  wire::Envelope env;
  for (auto _ : state) {
    if (!env.ParseFromString(payload)) state.SkipWithError("parse failed");
    benchmark::DoNotOptimize(env.direct_send().ciphertext().data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_EnvelopeParseDirectSend);

// Allocations since `before`, per iteration, as the "allocs" counter.
void CountAllocations(benchmark::State& state, std::size_t before) {
  state.counters["allocs"] = benchmark::Counter(static_cast<double>(g_allocations.load() - before),
                                                benchmark::Counter::kAvgIterations);
  state.SetItemsProcessed(state.iterations());
}

// A mesh Forward of one stored event (a DirectSend-sized 190 bytes) to N
// recipients on one server: the bytes Mesh::Forward queues for the link.
// Prefix: ForwardFramePrefix, the event following from its shared buffer
// (what Mesh::Forward does). Serialize: a MeshFrame built, the event copied
// in, serialized and framed (what it did before 2026-12-04, kept here to
// compare). Allocations per Forward in the counter.
std::vector<server::Delivery> ForwardTargets(std::size_t n) {
  std::vector<server::Delivery> targets;
  for (std::size_t i = 0; i < n; ++i) targets.push_back({4242 + i, 9000000 + i, 0, 0});
  return targets;
}

void BM_MeshForwardPrefix(benchmark::State& state) {
  const auto targets = ForwardTargets(static_cast<std::size_t>(state.range(0)));
  const auto event = std::make_shared<const std::string>(190, 'e');
  const std::size_t before = g_allocations.load();
  for (auto _ : state) {
    std::string head = ForwardFramePrefix(targets, 0, 0, event->size());
    benchmark::DoNotOptimize(head.data());
  }
  CountAllocations(state, before);
}
BENCHMARK(BM_MeshForwardPrefix)->Arg(1)->Arg(333);

void BM_MeshForwardSerialize(benchmark::State& state) {
  const auto targets = ForwardTargets(static_cast<std::size_t>(state.range(0)));
  const auto event = std::make_shared<const std::string>(190, 'e');
  const std::size_t before = g_allocations.load();
  for (auto _ : state) {
    mesh::MeshFrame f;
    auto* fw = f.mutable_forward();
    for (const server::Delivery& d : targets) {
      auto* t = fw->add_targets();
      t->set_user(d.user);
      t->set_seq(d.seq);
    }
    fw->set_event(*event);
    std::string out;
    AppendFrame(f.SerializeAsString(), &out);
    benchmark::DoNotOptimize(out.data());
  }
  CountAllocations(state, before);
}
BENCHMARK(BM_MeshForwardSerialize)->Arg(1)->Arg(333);

// The receiving side of the same Forward: the frame's payload parsed into a
// MeshFrame and its event moved out into a shared buffer (ReadMeshFrame).
void BM_MeshForwardParse(benchmark::State& state) {
  const auto targets = ForwardTargets(static_cast<std::size_t>(state.range(0)));
  const std::string event(190, 'e');
  const std::string frame = ForwardFramePrefix(targets, 0, 0, event.size()) + event;
  const std::size_t before = g_allocations.load();
  mesh::MeshFrame f;
  for (auto _ : state) {
    if (!f.ParseFromArray(frame.data() + kFrameHeaderSize, static_cast<int>(frame.size() - kFrameHeaderSize))) {
      state.SkipWithError("parse failed");
    }
    auto shared = std::make_shared<const std::string>(std::move(*f.mutable_forward()->mutable_event()));
    std::uint64_t sum = 0;
    for (const mesh::Target& t : f.forward().targets()) sum += t.user() + t.seq();
    benchmark::DoNotOptimize(sum);
    benchmark::DoNotOptimize(shared->data());
  }
  CountAllocations(state, before);
}
BENCHMARK(BM_MeshForwardParse)->Arg(1)->Arg(333);

void BM_AeadEncrypt100(benchmark::State& state) {
  const std::string key = crypto::NewSymmetricKey();
  const std::string plain(100, 'x');
  const std::string ad(64, 'a');
  std::string nonce, ct;
  for (auto _ : state) {
    if (!crypto::AeadEncrypt(plain, ad, key, &nonce, &ct).ok()) state.SkipWithError("encrypt failed");
    benchmark::DoNotOptimize(ct.data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_AeadEncrypt100);

void BM_AeadDecrypt100(benchmark::State& state) {
  const std::string key = crypto::NewSymmetricKey();
  const std::string plain(100, 'x');
  const std::string ad(64, 'a');
  std::string nonce, ct, out;
  crypto::AeadEncrypt(plain, ad, key, &nonce, &ct);
  for (auto _ : state) {
    if (!crypto::AeadDecrypt(ct, ad, nonce, key, &out).ok()) state.SkipWithError("decrypt failed");
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_AeadDecrypt100);

// Signed message as in a GroupSend: AD (~73 B) + nonce + 116 B ciphertext.
void BM_Ed25519Sign(benchmark::State& state) {
  const crypto::SignKeyPair kp = crypto::NewSignKeyPair();
  const std::string msg(73 + 24 + 116, 'm');
  for (auto _ : state) {
    std::string sig = crypto::Sign(msg, kp.secret_key);
    benchmark::DoNotOptimize(sig.data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Ed25519Sign);

void BM_Ed25519Verify(benchmark::State& state) {
  const crypto::SignKeyPair kp = crypto::NewSignKeyPair();
  const std::string msg(73 + 24 + 116, 'm');
  const std::string sig = crypto::Sign(msg, kp.secret_key);
  for (auto _ : state) {
    if (!crypto::Verify(msg, sig, kp.public_key)) state.SkipWithError("verify failed");
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Ed25519Verify);

// What the event loop does per DM before the store, without the store or
// the socket: parse the frame, then RequestService::Handle decides the
// DirectSend between friends (friendship in memory, the dedupe key, the
// Deliver event built). Reports allocations per DM (operator new calls).
void BM_ServiceDecidesDirectSend(benchmark::State& state) {
  DirectoryState ds;
  for (std::uint64_t id = 1; id <= 1000; ++id) {
    UserRecord u;
    u.id = id;
    u.name = "user" + std::to_string(id);
    u.password_hash = "h";
    u.x25519_public = std::string(32, 'x');
    u.ed25519_public = std::string(32, 'e');
    ds.users.push_back(std::move(u));
  }
  ds.friendships.emplace_back(1, 2);
  server::Directory directory;
  directory.Load(ds);
  server::ServerConfig config;
  server::RequestService service(directory, config);
  const server::Caller me{1, "user1"};
  std::string frame;
  {
    wire::Envelope env;
    if (!env.ParseFromString(DirectSendPayload())) state.SkipWithError("parse");
    env.mutable_direct_send()->mutable_to()->set_id(2);
    frame = env.SerializeAsString();
  }
  std::uint64_t now = 1'000'000;
  const std::size_t allocations_before = g_allocations.load();
  for (auto _ : state) {
    wire::Envelope env;
    if (!env.ParseFromString(frame)) {
      state.SkipWithError("parse");
      break;
    }
    server::Outcome o = service.Handle(me, env, ++now);
    if (o.enqueue.size() != 1 || o.enqueue[0].payload.size() < 100) {
      state.SkipWithError("the DM was not decided as one enqueue");
      break;
    }
    benchmark::DoNotOptimize(o);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["allocs_per_dm"] = benchmark::Counter(
      static_cast<double>(g_allocations.load() - allocations_before) / static_cast<double>(state.iterations()));
}
BENCHMARK(BM_ServiceDecidesDirectSend);

}  // namespace

int main(int argc, char** argv) {
  if (!fastchat::crypto::Init()) return 1;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
