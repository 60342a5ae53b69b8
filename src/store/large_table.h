// LargeTableAllocator: the allocator of the store's in-memory hash tables
// (PendingIndex's and AckedKeys' slots), which grow to tens of megabytes
// and are written all over as soon as they are made.
//
// Promises:
//  - A block of 2 MiB or more is 2 MiB-aligned and asked to be backed by
//    transparent huge pages (madvise MADV_HUGEPAGE), so the kernel faults
//    it in 2 MiB at a time instead of 4 KiB: a fresh table's page faults
//    were 5% of the store thread in a login drain (docs/performance.md,
//    "Dead rows behind a drain, and the index's cache misses"). Where huge
//    pages are off, the hint does nothing.
//  - A smaller block is std::allocator's.
//  - Stateless: any two compare equal.
#pragma once
#include <sys/mman.h>

#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>

namespace fastchat {

template <class T>
class LargeTableAllocator {
 public:
  using value_type = T;
  static constexpr std::size_t kHugePage = std::size_t{2} << 20;

  LargeTableAllocator() = default;
  template <class U>
  LargeTableAllocator(const LargeTableAllocator<U>&) noexcept {}  // NOLINT(google-explicit-constructor)

  T* allocate(std::size_t n) {
    const std::size_t bytes = n * sizeof(T);
    if (bytes < kHugePage) return std::allocator<T>().allocate(n);
    const std::size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
    void* p = std::aligned_alloc(kHugePage, rounded);
    if (p == nullptr) throw std::bad_alloc();
    madvise(p, rounded, MADV_HUGEPAGE);  // a hint: its failure changes nothing
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t n) noexcept {
    if (n * sizeof(T) < kHugePage) {
      std::allocator<T>().deallocate(p, n);
    } else {
      std::free(p);
    }
  }
  template <class U>
  bool operator==(const LargeTableAllocator<U>&) const noexcept {
    return true;
  }
};

}  // namespace fastchat
