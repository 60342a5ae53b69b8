// fastchat-sanitizer-probe MODE: a program with one deliberate defect per
// MODE, built only in sanitizer builds. sanitizer_reports_test starts it
// through the test harness to show that a sanitizer finding in a child
// process fails the test that started it (see harness/process.h).
//   clean     no defect: exits 0 with no report
//   overflow  reads one byte past a heap buffer (ASan)
//   leak      loses a heap allocation (LSan, at exit)
//   ub        overflows a signed int (UBSan)
//   race      two threads write one int unsynchronised (TSan)
#include <cstdio>
#include <cstring>
#include <string_view>
#include <thread>

namespace {

// Values the optimiser cannot see through.
volatile int g_index = 16;  // (the leak stores it; ub adds it)
volatile int g_big = 2147483647;
int* g_lost = nullptr;
int g_shared = 0;

int Overflow() {
  char* buf = new char[16];
  std::memset(buf, 'x', 16);
  // strlen runs off the unterminated buffer: ASan's strlen reports it (an
  // array read past the end would meet UBSan's object-size check first).
  std::size_t n = std::strlen(buf);
  delete[] buf;
  return n == 16 ? 0 : 1;
}

int Leak() {
  g_lost = new int[64];
  g_lost[0] = g_index;
  g_lost = nullptr;
  return 0;
}

int Ub() {
  int big = g_big;
  int sum = big + g_index;
  return sum & 1;
}

int Race() {
  std::thread a([] {
    for (int i = 0; i < 1000; ++i) ++g_shared;
  });
  std::thread b([] {
    for (int i = 0; i < 1000; ++i) ++g_shared;
  });
  a.join();
  b.join();
  return g_shared > 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string_view mode = argc > 1 ? argv[1] : "";
  if (mode == "clean") return 0;
  if (mode == "overflow") return Overflow();
  if (mode == "leak") return Leak();
  if (mode == "ub") return Ub();
  if (mode == "race") return Race();
  std::fprintf(stderr, "usage: fastchat-sanitizer-probe clean|overflow|leak|ub|race\n");
  return 2;
}
