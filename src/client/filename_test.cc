#include "filename.h"

#include <fstream>
#include <string>

#include <gtest/gtest.h>

namespace fastchat::client {
namespace {

namespace fs = std::filesystem;

bool OnlySafeChars(const std::string& s) {
  for (char c : s) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

void ExpectSafe(const std::string& title) {
  std::string s = SanitizeTitle(title);
  EXPECT_FALSE(s.empty()) << title;
  EXPECT_LE(s.size(), kMaxTitleChars) << title;
  EXPECT_TRUE(OnlySafeChars(s)) << s;
  EXPECT_NE(s.front(), '.') << s;
  EXPECT_EQ(s.find('/'), std::string::npos) << s;
}

TEST(SanitizeTitle, KeepsOrdinaryNames) {
  EXPECT_EQ(SanitizeTitle("holiday.jpg"), "holiday.jpg");
  EXPECT_EQ(SanitizeTitle("my-file_v2.tar.gz"), "my-file_v2.tar.gz");
}

TEST(SanitizeTitle, PathTraversalCannotEscape) {
  EXPECT_EQ(SanitizeTitle("../../.bashrc"), "_.._.bashrc");
  EXPECT_EQ(SanitizeTitle("/etc/passwd"), "_etc_passwd");
  EXPECT_EQ(SanitizeTitle(".."), "image");
  EXPECT_EQ(SanitizeTitle("."), "image");
  EXPECT_EQ(SanitizeTitle("...bashrc"), "bashrc");
  EXPECT_EQ(SanitizeTitle("..\\..\\win.ini"), "_.._win.ini");
  for (const char* t : {"../../.bashrc", "/etc/passwd", "..", ".", "...", "a/../../b"}) ExpectSafe(t);
}

TEST(SanitizeTitle, EmptyBecomesImage) { EXPECT_EQ(SanitizeTitle(""), "image"); }

TEST(SanitizeTitle, ControlNulAndNonAsciiBytesAreReplaced) {
  std::string nul("a\0b", 3);
  EXPECT_EQ(SanitizeTitle(nul), "a_b");
  EXPECT_EQ(SanitizeTitle("line\nbreak\t"), "line_break_");
  EXPECT_EQ(SanitizeTitle("a b;$(x)"), "a_b___x_");
  EXPECT_EQ(SanitizeTitle("\xc3\xbc.png"), "__.png");  // "ü.png"
  ExpectSafe(std::string("\0\0\0", 3));
  ExpectSafe("\x7f\xff\x80");
}

TEST(SanitizeTitle, LongNamesAreCappedKeepingTheExtension) {
  std::string s = SanitizeTitle(std::string(500, 'x') + ".png");
  EXPECT_EQ(s.size(), kMaxTitleChars);
  EXPECT_EQ(s.substr(s.size() - 4), ".png");
  std::string t = SanitizeTitle(std::string(5000, 'y'));
  EXPECT_EQ(t, std::string(kMaxTitleChars, 'y'));
  ExpectSafe(std::string(300, '.') + std::string(300, '/'));
}

class DownloadPathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("fastchat-filename-test-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void Touch(const fs::path& p) { std::ofstream(p) << "x"; }
  fs::path dir_;
};

TEST_F(DownloadPathTest, AddsCountersBeforeTheExtension) {
  EXPECT_EQ(DownloadPath(dir_, "pic.png"), dir_ / "received_pic.png");
  Touch(dir_ / "received_pic.png");
  EXPECT_EQ(DownloadPath(dir_, "pic.png"), dir_ / "received_pic-1.png");
  Touch(dir_ / "received_pic-1.png");
  EXPECT_EQ(DownloadPath(dir_, "pic.png"), dir_ / "received_pic-2.png");
  Touch(dir_ / "received_noext");
  EXPECT_EQ(DownloadPath(dir_, "noext"), dir_ / "received_noext-1");
}

TEST_F(DownloadPathTest, AlwaysDirectlyInsideTheFolder) {
  for (const char* t : {"../../.bashrc", "/etc/passwd", "..", "", "a/b/c"}) {
    fs::path p = DownloadPath(dir_, t);
    EXPECT_EQ(p.parent_path(), dir_) << t;
    EXPECT_EQ(p.filename().string().rfind("received_", 0), 0u) << t;
  }
}

TEST_F(DownloadPathTest, PublishNeverOverwrites) {
  Touch(dir_ / "received_a.txt");
  fs::path tmp = dir_ / ".partial";
  std::ofstream(tmp) << "new";
  fs::path final_path;
  std::string err;
  ASSERT_TRUE(PublishDownload(tmp, dir_, "a.txt", &final_path, &err)) << err;
  EXPECT_EQ(final_path, dir_ / "received_a-1.txt");
  EXPECT_FALSE(fs::exists(tmp));
  std::ifstream in(dir_ / "received_a.txt");
  std::string old;
  in >> old;
  EXPECT_EQ(old, "x");
}

}  // namespace
}  // namespace fastchat::client
