#include "harness/metrics_scrape.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace fastchat::testing {

std::uint16_t MetricsPort(const ServerProcess& server) {
  static const std::regex kLine(R"(metrics at http://127\.0\.0\.1:([0-9]+)/metrics)");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    std::smatch m;
    const std::string out = server.StdoutText();
    if (std::regex_search(out, m, kLine)) return static_cast<std::uint16_t>(std::stoi(m[1]));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  throw std::runtime_error("no 'metrics at' line on the server's stdout: " + server.StdoutText());
}

int DialLoopback(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    if (fd >= 0) ::close(fd);
    throw std::runtime_error("cannot connect to the metrics port");
  }
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

std::string ReadUntilClosed(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

std::string HttpExchange(std::uint16_t port, const std::string& request) {
  int fd = DialLoopback(port);
  std::size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may answer and close before reading it all
    sent += static_cast<std::size_t>(n);
  }
  std::string answer = ReadUntilClosed(fd);
  ::close(fd);
  return answer;
}

std::string HttpBody(const std::string& answer) {
  auto at = answer.find("\r\n\r\n");
  return at == std::string::npos ? "" : answer.substr(at + 4);
}

namespace {

// Every sample line: "name{labels}" -> value.
std::map<std::string, double> Parse(const std::string& body) {
  std::map<std::string, double> out;
  std::istringstream in(body);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    auto sp = line.rfind(' ');
    out[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
  }
  return out;
}

}  // namespace

double Get(const std::map<std::string, double>& m, const std::string& series) {
  auto it = m.find(series);
  if (it == m.end()) throw std::runtime_error("no series " + series);
  return it->second;
}

std::map<std::string, double> Scrape(std::uint16_t port) {
  const std::string answer = HttpExchange(port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
  if (answer.rfind("HTTP/1.1 200 OK\r\n", 0) != 0) throw std::runtime_error("scrape failed: " + answer);
  return Parse(HttpBody(answer));
}

}  // namespace fastchat::testing
