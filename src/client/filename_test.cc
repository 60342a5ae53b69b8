#include "filename.h"

#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

namespace fastchat::client {
namespace {

namespace fs = std::filesystem;

// Valid UTF-8, by the JSON library's strict encoder (independent of the code
// under test).
bool ValidUtf8(const std::string& s) {
  try {
    (void)nlohmann::json(s).dump();
    return true;
  } catch (const nlohmann::json::exception&) {
    return false;
  }
}

// Code points of valid UTF-8 `s`.
std::vector<char32_t> CodePoints(const std::string& s) {
  std::vector<char32_t> out;
  for (std::size_t i = 0; i < s.size();) {
    auto b = static_cast<unsigned char>(s[i]);
    std::size_t len = b < 0x80 ? 1 : b < 0xe0 ? 2 : b < 0xf0 ? 3 : 4;
    auto c = static_cast<char32_t>(len == 1 ? b : b & (0xffu >> (len + 1)));
    for (std::size_t k = 1; k < len; ++k)
      c = static_cast<char32_t>((c << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3fu));
    out.push_back(c);
    i += len;
  }
  return out;
}

void ExpectSafe(const std::string& title) {
  std::string s = SanitizeTitle(title);
  EXPECT_FALSE(s.empty()) << title;
  EXPECT_LE(s.size(), kMaxTitleBytes) << title;
  ASSERT_TRUE(ValidUtf8(s)) << s;
  EXPECT_NE(s.front(), '.') << s;
  for (char32_t c : CodePoints(s)) {
    EXPECT_FALSE(c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0x9f)) << "control U+" << std::hex << +c << " in " << s;
    EXPECT_FALSE((c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069)) << "bidi U+" << std::hex << +c;
    EXPECT_FALSE(c == '/' || c == '\\') << s;
  }
}

TEST(SanitizeTitle, KeepsOrdinaryNames) {
  EXPECT_EQ(SanitizeTitle("holiday.jpg"), "holiday.jpg");
  EXPECT_EQ(SanitizeTitle("my-file_v2.tar.gz"), "my-file_v2.tar.gz");
  // Spaces and punctuation a file name may have are kept.
  EXPECT_EQ(SanitizeTitle("a b;$(x) [1] & 'q'.txt"), "a b;$(x) [1] & 'q'.txt");
}

TEST(SanitizeTitle, KeepsLettersOfEveryScript) {
  for (const char* t : {"Привет мир.jpg", "日本語のファイル.png", "ünï ☃.png", "Ελληνικά.pdf", "שלום.txt",
                        "emoji 😀🎉.gif", "e\xcc\x81t\xc3\xa9.txt" /* combining accent, then precomposed */}) {
    EXPECT_EQ(SanitizeTitle(t), t);
  }
}

TEST(SanitizeTitle, PathTraversalCannotEscape) {
  EXPECT_EQ(SanitizeTitle("../../.bashrc"), "_.._.bashrc");
  EXPECT_EQ(SanitizeTitle("/etc/passwd"), "_etc_passwd");
  EXPECT_EQ(SanitizeTitle(".."), "image");
  EXPECT_EQ(SanitizeTitle("."), "image");
  EXPECT_EQ(SanitizeTitle("...bashrc"), "bashrc");
  EXPECT_EQ(SanitizeTitle("..\\..\\win.ini"), "_.._win.ini");
  // A fullwidth solidus is a letter-like character, not a separator.
  EXPECT_EQ(SanitizeTitle("a\xef\xbc\x8f" "b"), "a\xef\xbc\x8f" "b");
  for (const char* t : {"../../.bashrc", "/etc/passwd", "..", ".", "...", "a/../../b"}) ExpectSafe(t);
}

TEST(SanitizeTitle, EmptyBecomesImage) { EXPECT_EQ(SanitizeTitle(""), "image"); }

TEST(SanitizeTitle, ControlCharactersAreReplaced) {
  std::string nul("a\0b", 3);
  EXPECT_EQ(SanitizeTitle(nul), "a_b");
  EXPECT_EQ(SanitizeTitle("line\nbreak\t"), "line_break_");
  EXPECT_EQ(SanitizeTitle("esc\x1b[31mred\x7f"), "esc_[31mred_");
  // C1 controls, encoded as UTF-8: NEL (U+0085) and CSI (U+009B).
  EXPECT_EQ(SanitizeTitle("a\xc2\x85" "b\xc2\x9b" "c"), "a_b_c");
  // U+00A0 (no-break space) is just after C1: kept.
  EXPECT_EQ(SanitizeTitle("a\xc2\xa0" "b"), "a\xc2\xa0" "b");
}

TEST(SanitizeTitle, BidiControlsAreReplaced) {
  // "invoice<RLO>gpj.exe" would display as "invoiceexe.jpg".
  EXPECT_EQ(SanitizeTitle("invoice\xe2\x80\xae" "gpj.exe"), "invoice_gpj.exe");
  for (char32_t c : {U'\u202a', U'\u202b', U'\u202c', U'\u202d', U'\u202e', U'\u2066', U'\u2067', U'\u2068',
                     U'\u2069'}) {
    std::string enc = {static_cast<char>(0xe0 | (c >> 12)), static_cast<char>(0x80 | ((c >> 6) & 0x3f)),
                       static_cast<char>(0x80 | (c & 0x3f))};
    EXPECT_EQ(SanitizeTitle("x" + enc + "y"), "x_y") << std::hex << +c;
  }
  // Their neighbours are ordinary punctuation: kept.
  EXPECT_EQ(SanitizeTitle("a\xe2\x80\xaf" "b\xe2\x81\xa0" "c"), "a\xe2\x80\xaf" "b\xe2\x81\xa0" "c");  // U+202F, U+2060
}

TEST(SanitizeTitle, InvalidUtf8IsReplaced) {
  EXPECT_EQ(SanitizeTitle("bad\xff.png"), "bad_.png");
  EXPECT_EQ(SanitizeTitle("\xc3.png"), "_.png");                  // truncated two-byte character
  EXPECT_EQ(SanitizeTitle("a\xe2\x82" "b"), "a_b");              // truncated three-byte character: one '_'
  EXPECT_EQ(SanitizeTitle("\xc0\xaf" "etc"), "__etc");           // overlong '/'
  EXPECT_EQ(SanitizeTitle("\xed\xa0\x80" "x"), "___x");          // a surrogate
  EXPECT_EQ(SanitizeTitle("\xf4\x90\x80\x80" "x"), "____x");     // above U+10FFFF
  EXPECT_EQ(SanitizeTitle("\x80\xbf" "x"), "__x");               // stray continuation bytes
  ExpectSafe("\xe2\x80");
  ExpectSafe("\xf0\x9f\x98");
}

TEST(SanitizeTitle, LongNamesAreCutOnACharacterBoundaryKeepingTheExtension) {
  std::string s = SanitizeTitle(std::string(500, 'x') + ".png");
  EXPECT_EQ(s, std::string(kMaxTitleBytes - 4, 'x') + ".png");
  std::string t = SanitizeTitle(std::string(5000, 'y'));
  EXPECT_EQ(t, std::string(kMaxTitleBytes, 'y'));
  // Three-byte characters: 196 bytes of room before ".png" hold 65 of them
  // (195 bytes); the 66th would be cut in the middle.
  std::string kanji;
  for (int i = 0; i < 100; ++i) kanji += "日";
  std::string k = SanitizeTitle(kanji + ".png");
  std::string want;
  for (int i = 0; i < 65; ++i) want += "日";
  EXPECT_EQ(k, want + ".png");
  // Four-byte characters, no extension: exactly 50 fit.
  std::string emoji;
  for (int i = 0; i < 60; ++i) emoji += "😀";
  EXPECT_EQ(SanitizeTitle(emoji), emoji.substr(0, 200));
  // Two-byte characters with a one-byte offset: the cut backs off by one.
  std::string cyr = "x";
  for (int i = 0; i < 150; ++i) cyr += "я";
  std::string c = SanitizeTitle(cyr);
  EXPECT_EQ(c.size(), kMaxTitleBytes - 1);
  ExpectSafe(cyr);
  ExpectSafe(std::string(300, '.') + std::string(300, '/'));
}

TEST(SanitizeTitle, AnyBytesGiveASafeName) {
  std::mt19937 rng(8);
  std::uniform_int_distribution<int> byte(0, 255), len(0, 300);
  for (int i = 0; i < 20000; ++i) {
    std::string t(static_cast<std::size_t>(len(rng)), '\0');
    for (char& ch : t) ch = static_cast<char>(byte(rng));
    ExpectSafe(t);
    if (::testing::Test::HasFailure()) break;
  }
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
