// fastchat-man: prints the fastchat(1) manual page (man_page.h).
#include <cstdio>

#include "man_page.h"

int main() {
  std::string page = fastchat::client::ManPage();
  std::fwrite(page.data(), 1, page.size(), stdout);
  return 0;
}
