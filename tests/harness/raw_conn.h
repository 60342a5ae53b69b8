// Test harness: a blocking TCP connection speaking raw frames, for poking the
// server with well-formed and malformed input. TLS by default (the server's
// default), certificate not checked; kPlain for --insecure-plain-tcp servers
// and for showing that a default server refuses plain TCP.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fastchat.pb.h"
#include "fastchat/frame.h"
#include "harness/process.h"

typedef struct ssl_st SSL;

namespace fastchat::testing {

class RawConn {
 public:
  enum class Transport { kTls, kPlain };
  // Connects to 127.0.0.1:port, from the local address `source` (e.g.
  // "127.0.0.2": any 127/8 address is this machine) or, if empty, whichever
  // the system picks, and does the TLS handshake (unless kPlain). Throws on
  // failure.
  explicit RawConn(std::uint16_t port, const std::string& source = "", Transport transport = Transport::kTls);
  RawConn(std::uint16_t port, Transport transport);
  ~RawConn();
  RawConn(const RawConn&) = delete;
  RawConn& operator=(const RawConn&) = delete;

  // Writes bytes as they are. False if the peer has gone.
  bool SendBytes(std::string_view bytes);
  // Writes one frame with `payload`.
  bool SendFrame(std::string_view payload);
  // Serializes and writes `env` as one frame.
  bool Send(const wire::Envelope& env);

  enum class Recv { kOk, kTimeout, kClosed, kGarbage };
  // Reads the next frame that parses as an Envelope (first any pushes that
  // Request() skipped while waiting for its reply).
  Recv Receive(wire::Envelope* env, Millis timeout = kDefaultTimeout);
  // Receive, throwing unless a frame arrives.
  wire::Envelope Expect(Millis timeout = kDefaultTimeout);
  // Sends `env` with a fresh rid and returns the reply carrying that rid,
  // skipping pushes (rid 0). Throws on timeout/close.
  wire::Envelope Request(wire::Envelope env, Millis timeout = kDefaultTimeout);
  // True if the server closes the connection within `timeout` (frames that
  // arrive meanwhile are discarded).
  bool WaitClosed(Millis timeout = kDefaultTimeout);

  // Hello{version} and return the reply.
  wire::Envelope Hello(std::uint32_t version = kProtocolVersion);
  // Register with random 32-byte keys; returns the reply.
  wire::Envelope Register(const std::string& name, const std::string& password);
  // The same Register, sent without waiting for its reply.
  bool SendRegister(const std::string& name, const std::string& password);
  wire::Envelope Login(const std::string& name, const std::string& password, bool receive);

  // If `env` is the server's Ping, answers it with a Pong; says whether it was.
  bool AnswerPing(const wire::Envelope& env);

  void ShutdownWrite();
  std::uint64_t NextRid() { return ++rid_; }

 private:
  Recv ReceiveFromSocket(wire::Envelope* env, Millis timeout);

  int fd_ = -1;
  SSL* ssl_ = nullptr;
  std::uint64_t rid_ = 1000;
  FrameDecoder decoder_{1u << 30};
  bool closed_ = false;
  std::vector<wire::Envelope> pushes_;  // rid-0 frames skipped by Request()
};

// "BAD_FRAME" etc.
std::string ErrorName(const wire::Envelope& env);
// Short text form of an envelope, for failure messages.
std::string Describe(const wire::Envelope& env);
// A Hello (version 1, rid `rid`) whose serialized size is exactly `size`
// bytes, padded with its agent string: a frame of a chosen size.
wire::Envelope HelloOfSize(std::size_t size, std::uint64_t rid);

}  // namespace fastchat::testing
