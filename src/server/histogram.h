// Histogram: observations counted into fixed buckets, as Prometheus
// histograms are: each bucket counts the observations <= its upper bound,
// one more bucket (+Inf) takes the rest, and the sum and count of all
// observations are kept. Observe() is O(buckets); nothing is allocated after
// construction. Not thread-safe: its owner guards it.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace fastchat::server {

class Histogram {
 public:
  // `bounds`: the buckets' upper bounds, ascending.
  explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

  void Observe(double v) {
    const std::size_t i = static_cast<std::size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
    ++counts_[i];
    sum_ += v;
    ++count_;
  }

  const std::vector<double>& bounds() const { return bounds_; }
  // Observations per bucket, not cumulative; the last is the +Inf bucket.
  const std::vector<std::uint64_t>& counts() const { return counts_; }
  std::uint64_t count() const { return count_; }
  double sum() const { return sum_; }

 private:
  std::vector<double> bounds_;
  std::vector<std::uint64_t> counts_;
  double sum_ = 0;
  std::uint64_t count_ = 0;
};

}  // namespace fastchat::server
