#include "common/secret_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

namespace fastchat {
namespace {

class SecretFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "secret-file-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Writes `contents` to a new file with `mode`; returns its path.
  std::string Write(const std::string& contents, mode_t mode = 0600) {
    const std::string path = dir_ + "/secret-" + std::to_string(++n_);
    std::ofstream(path, std::ios::binary) << contents;
    EXPECT_EQ(::chmod(path.c_str(), mode), 0);
    return path;
  }

  // The secret read from a 0600 file holding `contents` (fails the test if
  // the read fails).
  std::string Read(const std::string& contents) {
    std::string out;
    Status s = ReadSecretFile(Write(contents), &out);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }

  std::string dir_;
  int n_ = 0;
};

const std::string k16 = "0123456789abcdef";

TEST_F(SecretFileTest, StripsExactlyOneTrailingNewline) {
  EXPECT_EQ(Read(k16), k16);
  EXPECT_EQ(Read(k16 + "\n"), k16);
  EXPECT_EQ(Read(k16 + "\r\n"), k16);
  EXPECT_EQ(Read(k16 + "\n\n"), k16 + "\n");
  EXPECT_EQ(Read(k16 + "\r\n\r\n"), k16 + "\r\n");
}

TEST_F(SecretFileTest, KeepsEverythingElse) {
  EXPECT_EQ(Read(k16 + "  "), k16 + "  ");
  EXPECT_EQ(Read(k16 + " \t\n"), k16 + " \t");
  EXPECT_EQ(Read(k16 + "\r"), k16 + "\r");
  EXPECT_EQ(Read("  " + k16), "  " + k16);
  EXPECT_EQ(Read(std::string("with\0nul-and\nline", 17) + k16), std::string("with\0nul-and\nline", 17) + k16);
}

TEST_F(SecretFileTest, OwnerOnlyModesAreAccepted) {
  for (mode_t mode : {0600, 0400, 0700}) {
    std::string out;
    Status s = ReadSecretFile(Write(k16 + "\n", mode), &out);
    EXPECT_TRUE(s.ok()) << std::oct << mode << ": " << s.ToString();
    EXPECT_EQ(out, k16);
  }
}

TEST_F(SecretFileTest, RefusesAnyPermissionForGroupOrOthers) {
  for (mode_t mode : {0644, 0640, 0604, 0620, 0602, 0610, 0601, 0666}) {
    std::string out = "untouched";
    const std::string path = Write(k16 + "\n", mode);
    Status s = ReadSecretFile(path, &out);
    EXPECT_EQ(s.code(), Code::kBadRequest) << std::oct << mode << ": " << s.ToString();
    EXPECT_NE(s.message().find("chmod 600 " + path), std::string::npos) << s.ToString();
    EXPECT_EQ(out, "untouched");
  }
}

TEST_F(SecretFileTest, RefusesShortAndEmptySecrets) {
  for (const std::string& contents : {std::string(), std::string("\n"), std::string("\r\n"), k16.substr(1) + "\n",
                                      k16.substr(1) + "\r\n"}) {
    std::string out = "untouched";
    Status s = ReadSecretFile(Write(contents), &out);
    EXPECT_EQ(s.code(), Code::kBadRequest) << "'" << contents << "': " << s.ToString();
    EXPECT_NE(s.message().find("at least 16"), std::string::npos) << s.ToString();
    EXPECT_EQ(out, "untouched");
  }
}

TEST_F(SecretFileTest, RefusesWhatIsNotARegularFile) {
  std::string out = "untouched";
  Status s = ReadSecretFile(dir_, &out);
  EXPECT_EQ(s.code(), Code::kBadRequest) << s.ToString();
  EXPECT_NE(s.message().find("not a regular file"), std::string::npos) << s.ToString();

  const std::string fifo = dir_ + "/fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  s = ReadSecretFile(fifo, &out);  // refused at once, not blocked waiting for a writer
  EXPECT_EQ(s.code(), Code::kBadRequest) << s.ToString();
  EXPECT_EQ(out, "untouched");
}

TEST_F(SecretFileTest, MissingFileIsAnIOError) {
  std::string out = "untouched";
  Status s = ReadSecretFile(dir_ + "/no-such-file", &out);
  EXPECT_EQ(s.code(), Code::kIOError) << s.ToString();
  EXPECT_NE(s.message().find("no-such-file"), std::string::npos) << s.ToString();
  EXPECT_EQ(out, "untouched");
}

TEST_F(SecretFileTest, LoadClusterSecretPrefersTheFileAndChecksLength) {
  std::string secret = "from the command line";
  Status s = LoadClusterSecret(Write(k16 + "\n"), &secret);
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(secret, k16);

  secret = "ignored";
  EXPECT_EQ(LoadClusterSecret(Write(k16 + "\n", 0644), &secret).code(), Code::kBadRequest);
  EXPECT_EQ(secret, "ignored");

  secret = k16;  // no file: the value given stands, if long enough
  EXPECT_TRUE(LoadClusterSecret("", &secret).ok());
  EXPECT_EQ(secret, k16);
  secret = k16.substr(1);
  s = LoadClusterSecret("", &secret);
  EXPECT_EQ(s.code(), Code::kBadRequest);
  EXPECT_NE(s.message().find("15 bytes"), std::string::npos) << s.ToString();
  secret.clear();
  s = LoadClusterSecret("", &secret);
  EXPECT_EQ(s.code(), Code::kBadRequest);
  EXPECT_NE(s.message().find("no cluster secret"), std::string::npos) << s.ToString();
}

TEST(FlagOnCommandLine, SeparateOrJoinedValue) {
  std::string a0 = "prog", a1 = "--cluster-secret-file", a2 = "f", a3 = "--cluster-secret=x";
  char* with_joined[] = {a0.data(), a1.data(), a2.data(), a3.data()};
  EXPECT_TRUE(FlagOnCommandLine(4, with_joined, "--cluster-secret"));
  EXPECT_TRUE(FlagOnCommandLine(4, with_joined, "--cluster-secret-file"));
  char* file_only[] = {a0.data(), a1.data(), a2.data()};
  EXPECT_FALSE(FlagOnCommandLine(3, file_only, "--cluster-secret"));
  std::string b1 = "--cluster-secret", b2 = "s";
  char* separate[] = {a0.data(), b1.data(), b2.data()};
  EXPECT_TRUE(FlagOnCommandLine(3, separate, "--cluster-secret"));
  char* program_only[] = {b1.data()};  // argv[0] is the program, never a flag
  EXPECT_FALSE(FlagOnCommandLine(1, program_only, "--cluster-secret"));
}

}  // namespace
}  // namespace fastchat
