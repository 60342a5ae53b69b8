#include "man_page.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "commands.h"

namespace fastchat::client {
namespace {

std::string Escaped(std::string name) {
  std::string out;
  for (char c : name) out += c == '\\' ? std::string("\\e") : std::string(1, c);
  return out;
}

TEST(ManPage, HasAnEntryForEveryCommandAndMode) {
  std::string page = ManPage();
  for (const auto& topic : HelpTopics()) {
    SCOPED_TRACE(topic);
    EXPECT_NE(page.find(".TP\n.B " + Escaped(topic) + "\n"), std::string::npos);
  }
  for (const auto& e : HelpEntries()) {
    SCOPED_TRACE(e.name);
    EXPECT_NE(page.find(e.summary.substr(1)), std::string::npos) << "the summary of help " << e.name;
  }
}

TEST(ManPage, DocsFileIsTheGeneratedPage) {
  std::ifstream f(std::string(FASTCHAT_SOURCE_DIR) + "/docs/fastchat.1", std::ios::binary);
  ASSERT_TRUE(f) << "docs/fastchat.1 is missing";
  std::ostringstream text;
  text << f.rdbuf();
  EXPECT_EQ(text.str(), ManPage())
      << "docs/fastchat.1 differs from the help: regenerate it with "
         "build/default/src/client/fastchat-man > docs/fastchat.1";
}

// Every option `fastchat --help` lists is described in the page.
TEST(ManPage, DescribesEveryOptionOfTheProgram) {
  const char* bin = std::getenv("FASTCHAT_BIN_DIR");
  ASSERT_NE(bin, nullptr);
  std::string cmd = std::string(bin) + "/src/client/fastchat --help 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string help;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) help.append(buf, n);
  ::pclose(p);
  std::set<std::string> options;
  std::regex option("(^|[ ,])(--[a-z][a-z-]*)");
  for (auto it = std::sregex_iterator(help.begin(), help.end(), option); it != std::sregex_iterator(); ++it)
    options.insert((*it)[2]);
  ASSERT_GE(options.size(), 10u) << help;
  std::string page = ManPage();
  std::size_t from = page.find(".SH OPTIONS\n"), to = page.find(".SH COMMANDS\n");
  ASSERT_LT(from, to);
  std::string section = page.substr(from, to - from);
  for (const auto& o : options) {
    if (o == "--help") continue;
    std::string roff = "\\-\\-" + o.substr(2);
    bool described = false;
    std::istringstream lines(section);
    for (std::string line; std::getline(lines, line);) {
      std::size_t at = line.find(roff);
      described = described || (line.rfind(".B ", 0) == 0 && at != std::string::npos &&
                                (at + roff.size() == line.size() || line[at + roff.size()] == ' '));
    }
    EXPECT_TRUE(described) << o << " is not described under OPTIONS";
  }
}

}  // namespace
}  // namespace fastchat::client
