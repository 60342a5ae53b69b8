// Deletion from an open-addressing table with linear probing, shared by the
// store's in-memory hash tables (PendingIndex, RecentRowKeys).
//
// Promise: EraseSlot(slots, mask, i, is_empty, home_of) empties slot i and
// moves up each later slot of i's run whose home slot is not in (i, j]
// (backward-shift deletion), so every entry left is still found by probing
// from its home; no tombstones. `mask` is the table's size minus one (a
// power of two); is_empty(slot) says whether a slot is empty, home_of(slot)
// gives an occupied slot's home index; Slot{} is an empty slot.
#pragma once

#include <cstddef>

namespace fastchat {

template <class Slot, class IsEmpty, class HomeOf>
void EraseSlot(Slot* slots, std::size_t mask, std::size_t i, IsEmpty is_empty, HomeOf home_of) {
  std::size_t j = i;
  for (;;) {
    j = (j + 1) & mask;
    if (is_empty(slots[j])) break;
    const std::size_t home = home_of(slots[j]);
    const bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
    if (stays) continue;
    slots[i] = slots[j];
    i = j;
  }
  slots[i] = Slot{};
}

}  // namespace fastchat
