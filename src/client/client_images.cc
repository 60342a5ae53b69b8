// Images: sending a file as a stream of sealed chunks, and putting received
// chunks together in the downloads folder (kept in the local store between
// chunks, so an image survives a restart half-way).
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <fstream>
#include <string>
#include <system_error>
#include <utility>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client.h"
#include "client_impl.h"
#include "progress.h"
#include "filename.h"

namespace fastchat::client {

namespace {

constexpr std::size_t kSendWindow = 6;  // image chunks in flight

}  // namespace

Outcome CheckFile(const std::string& path) {
  std::error_code ec;
  auto st = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(st)) return Outcome{kCodeNoSuchFile, "no such file: " + path};
  if (!std::filesystem::is_regular_file(st)) return Outcome{kCodeNoSuchFile, "not a regular file: " + path};
  if (::access(path.c_str(), R_OK) != 0) return Outcome{kCodeNoSuchFile, "cannot read " + path + ": " + std::strerror(errno)};
  return Outcome::OK();
}

// ===================================================================== sending

awaitable<Outcome> ClientCore::Impl::SendFile(std::string path, ChunkMaker make, Json* result) {
  std::error_code ec;
  std::filesystem::path p(path);
  auto st = std::filesystem::status(p, ec);
  if (ec || !std::filesystem::exists(st)) co_return Err(kCodeNoSuchFile, "no such file: " + path);
  if (!std::filesystem::is_regular_file(st)) co_return Err(kCodeNoSuchFile, "not a regular file: " + path);
  std::uint64_t size = std::filesystem::file_size(p, ec);
  if (ec) co_return Err(kCodeNoSuchFile, "cannot read " + path + ": " + ec.message());
  std::ifstream in(p, std::ios::binary);
  if (!in) co_return Err(kCodeNoSuchFile, "cannot open " + path + ": " + std::strerror(errno));
  std::string title = p.filename().string();
  std::uint64_t count64 = ChunkCount(size);
  // The server's rule: at most 1 + ceil(max_image_bytes / 256 KiB) chunks.
  std::uint64_t max = max_image_bytes;
  if (count64 > 0xffffffffu || (max > 0 && count64 > ChunkCount(max)))
    co_return Err("TOO_LARGE", "file of " + std::to_string(size) + " bytes is over the server's limit of " +
                                   std::to_string(max) + " bytes");
  auto count = static_cast<std::uint32_t>(count64);

  // The chunks in flight, kept until answered so that they can be sent
  // again after a lost connection.
  std::deque<Pending> window;
  std::string buf;
  // Progress: bytes the server has taken (chunks answered; chunk 0 is the
  // header).
  ProgressMeter meter(size, Clock::now());
  std::uint32_t answered = 0;
  Json progress = {{"type", "progress"}, {"direction", "send"}, {"title", title}};
  if (result->contains("user")) progress["to"] = (*result)["user"];
  if (result->contains("group")) progress["group"] = (*result)["group"];
  for (std::uint32_t i = 0; i < count; ++i) {
    std::string plain;
    if (i == 0) {
      PutU64(&plain, size);
      plain += title;
    } else {
      plain.resize(DataChunkSize(size, i));
      in.read(plain.data(), static_cast<std::streamsize>(plain.size()));
      if (in.gcount() != static_cast<std::streamsize>(plain.size()))
        co_return Err("IO_ERROR", "read error or file changed while sending: " + path);
    }
    wire::Envelope env;
    Outcome o = make(i, count, plain, &env);
    if (!o.ok()) co_return o;
    Push(window, std::move(env));
    while (window.size() >= kSendWindow || (i + 1 == count && !window.empty())) {
      o = co_await Finish(window, nullptr, nullptr);
      if (!o.ok()) co_return o;
      ++answered;
      const std::uint64_t through = std::min<std::uint64_t>(size, std::uint64_t{answered - 1} * kChunkBytes);
      const Clock::time_point now = Clock::now();
      if (meter.Due(answered == count ? size : through, now)) {
        Json fields = meter.Fields(answered == count ? size : through, now);
        for (auto it = fields.begin(); it != fields.end(); ++it) progress[it.key()] = it.value();
        Emit(progress);
      }
    }
  }
  (*result)["title"] = title;
  (*result)["bytes"] = size;
  co_return Outcome::OK();
}

// ===================================================================== receiving

std::filesystem::path ClientCore::Impl::TempPathFor(std::uint64_t scope, std::uint64_t sender,
                                                    const std::string& msg_id) {
  return downloads / (".partial-" + std::to_string(scope) + "-" + std::to_string(sender) + "-" +
                      crypto::Hex(msg_id) + ".tmp");
}

Outcome ClientCore::Impl::OnImageChunk(std::uint64_t seq, const wire::Event& ev, std::uint64_t scope,
                                       std::uint64_t epoch, const std::string& msg_id, std::uint32_t index,
                                       std::uint32_t count, const std::string& plain) {
  const char* kind = scope == 0 ? "direct" : "group";
  std::uint64_t sender = ev.from_id();
  auto bad = [&](const std::string& why) {
    Undecryptable(seq, kind, ev, why, scope);
    return Outcome::OK();
  };
  PartialImage p;
  Status s = store->GetPartial(scope, sender, msg_id, &p);
  bool have = s.ok();
  if (!have && s.code() != Code::kNotFound) return Outcome::From(s);

  if (index == 0) {
    if (have) return Outcome::OK();  // repeat
    if (plain.size() < 8) return bad("malformed image header");
    std::uint64_t size = GetU64(plain);
    if (count == 0 || size > (std::uint64_t{1} << 40) || ChunkCount(size) != count)
      return bad("image header does not match its chunk count");
    // No file system makes names this long (NAME_MAX is 255 bytes); only a
    // hostile sender does, to flood the screen and the store.
    if (plain.size() - 8 > kMaxReceivedTitleBytes)
      return bad("image title of " + std::to_string(plain.size() - 8) + " bytes (at most " +
                 std::to_string(kMaxReceivedTitleBytes) + ")");
    p.scope = scope;
    p.sender = sender;
    p.msg_id = msg_id;
    p.title = plain.substr(8);
    p.size = size;
    p.chunk_count = count;
    p.next_chunk = 1;
    std::error_code ec;
    std::filesystem::create_directories(downloads, ec);
    std::filesystem::path tmp = TempPathFor(scope, sender, msg_id);
    p.temp_path = tmp.string();
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return bad("cannot create " + tmp.string() + ": " + std::strerror(errno));
    ::close(fd);
    if (count == 1) return FinishImage(seq, ev, scope, epoch, p);
    ReceiveProgress(ev, p, 0);
    return SavePartial(p, 0);
  }

  if (!have) {
    LogInfo("seq " + std::to_string(seq) + ": image chunk " + std::to_string(index) + " without a started image; ignored");
    return Outcome::OK();
  }
  if (index < p.next_chunk) return Outcome::OK();  // repeat
  auto abort_image = [&](const std::string& why) {
    store->DeletePartial(scope, sender, msg_id);
    ::unlink(p.temp_path.c_str());
    return bad(why);
  };
  if (count != p.chunk_count || index >= p.chunk_count) return abort_image("image chunk out of range");
  if (index > p.next_chunk) return abort_image("image chunk " + std::to_string(p.next_chunk) + " is missing");
  if (plain.size() != DataChunkSize(p.size, index)) return abort_image("image chunk of wrong size");
  int fd = ::open(p.temp_path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return abort_image("cannot open " + p.temp_path + ": " + std::strerror(errno));
  std::size_t done = 0;
  auto offset = static_cast<off_t>((index - 1) * kChunkBytes);
  while (done < plain.size()) {
    ssize_t n = ::pwrite(fd, plain.data() + done, plain.size() - done, offset + static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      std::string err = std::strerror(errno);
      ::close(fd);
      return abort_image("cannot write " + p.temp_path + ": " + err);
    }
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  ReceiveProgress(ev, p, std::min<std::uint64_t>(p.size, std::uint64_t{index} * kChunkBytes));
  if (index + 1 == p.chunk_count) return FinishImage(seq, ev, scope, epoch, p);
  p.next_chunk = index + 1;
  return SavePartial(p, index);
}

void ClientCore::Impl::ReceiveProgress(const wire::Event& ev, const PartialImage& p, std::uint64_t through) {
  const std::string key = std::to_string(p.scope) + "/" + std::to_string(p.sender) + "/" + p.msg_id;
  const Clock::time_point now = Clock::now();
  auto it = receiving.try_emplace(key, p.size, now).first;
  if (!it->second.Due(through, now)) return;
  Json e = {{"type", "progress"}, {"direction", "receive"}, {"title", SanitizeTitle(p.title)},
            {"from", ContactName(ev.from_id(), ev.from_name())}, {"from_id", ev.from_id()}};
  if (p.scope != 0) {
    e["group_id"] = p.scope;
    e["group"] = GroupNameOf(p.scope);
  }
  Json fields = it->second.Fields(through, now);
  for (auto f = fields.begin(); f != fields.end(); ++f) e[f.key()] = f.value();
  Emit(e);
  if (through >= p.size) receiving.erase(it);
}

Outcome ClientCore::Impl::SavePartial(const PartialImage& p, std::uint32_t index) {
  Status s = store->Begin();
  if (s.ok()) s = store->PutPartial(p);
  if (s.ok()) s = store->MarkMsg(p.sender, p.msg_id, index);
  if (s.ok()) s = store->Commit();
  if (!s.ok()) store->Rollback();
  return Outcome::From(s);
}

Outcome ClientCore::Impl::FinishImage(std::uint64_t seq, const wire::Event& ev, std::uint64_t scope,
                                      std::uint64_t epoch, const PartialImage& p) {
  const char* kind = scope == 0 ? "direct" : "group";
  std::error_code ec;
  std::uint64_t actual = std::filesystem::file_size(p.temp_path, ec);
  if (ec || actual != p.size) {
    ::unlink(p.temp_path.c_str());
    store->DeletePartial(scope, p.sender, p.msg_id);
    Undecryptable(seq, kind, ev, "received image has the wrong size", scope);
    return Outcome::OK();
  }
  std::filesystem::path final_path;
  std::string err;
  if (!PublishDownload(p.temp_path, downloads, p.title, &final_path, &err)) {
    store->DeletePartial(scope, p.sender, p.msg_id);
    Undecryptable(seq, kind, ev, "cannot save the image: " + err, scope);
    return Outcome::OK();
  }
  const std::string saved_as = std::filesystem::absolute(final_path, ec).string();
  Json body = {{"title", p.title}, {"path", saved_as}, {"bytes", p.size}};
  Status s = store->Begin();
  if (s.ok()) s = store->DeletePartial(scope, p.sender, p.msg_id);
  if (s.ok()) s = store->MarkMsg(p.sender, p.msg_id, p.chunk_count - 1);
  if (s.ok()) s = Remember(scope != 0, scope != 0 ? scope : p.sender, p.sender, "image", EventTime(ev), p.msg_id, body);
  if (s.ok()) s = store->Commit();
  if (!s.ok()) {
    store->Rollback();
    LogWarn("received " + saved_as + ", but could not record it: " + s.ToString());
  }
  Json e = scope == 0 ? Base("image", seq, ev) : GroupBase("group_image", seq, ev, scope, epoch);
  e["title"] = p.title;
  e["path"] = saved_as;
  e["bytes"] = p.size;
  Emit(e);
  if (scope == 0) QueueReceipt(p.sender, p.msg_id);
  return Outcome::OK();
}

}  // namespace fastchat::client
