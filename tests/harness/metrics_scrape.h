// Test harness: reading a server's /metrics endpoint (--metrics-listen) the
// way a Prometheus scraper does, over plain HTTP on loopback.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "harness/fastchat.h"

namespace fastchat::testing {

// The port of the "metrics at http://127.0.0.1:PORT/metrics" line on the
// server's stdout (waits up to 10 s for it). Throws if it does not come.
std::uint16_t MetricsPort(const ServerProcess& server);

// Connects to 127.0.0.1:port, sends `request` as is, and returns whatever
// comes back until the peer closes (or 10 s pass).
std::string HttpExchange(std::uint16_t port, const std::string& request);

// A blocking TCP connection to 127.0.0.1:port (reads time out after 10 s);
// throws if it cannot connect.
int DialLoopback(std::uint16_t port);
// Reads from `fd` until the peer closes (or a read times out): all of it.
std::string ReadUntilClosed(int fd);

// The body of an HTTP answer ("" if it has none).
std::string HttpBody(const std::string& answer);

// Every sample of a scrape: "name{labels}" -> value. Throws unless the
// answer is 200.
std::map<std::string, double> Scrape(std::uint16_t port);

// m[series], or throws naming the missing series.
double Get(const std::map<std::string, double>& m, const std::string& series);

}  // namespace fastchat::testing
