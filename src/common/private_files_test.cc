#include "common/private_files.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace fastchat {
namespace {

class PrivateFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "private-files-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    old_umask_ = ::umask(022);  // the common default: new files readable by all
  }
  void TearDown() override {
    ::umask(old_umask_);
    std::filesystem::remove_all(dir_);
  }

  static unsigned ModeOf(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
    return st.st_mode & 07777u;
  }
  void Touch(const std::string& path, mode_t mode) {
    std::ofstream(path) << "x";
    ASSERT_EQ(::chmod(path.c_str(), mode), 0);
  }

  std::string dir_;
  mode_t old_umask_ = 0;
};

TEST_F(PrivateFilesTest, MakePrivateDirsMakesEveryMissingLevel0700) {
  ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
  const std::string deep = dir_ + "/a/b/c";
  Status s = MakePrivateDirs(deep + "/");
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(ModeOf(dir_ + "/a"), 0700u);
  EXPECT_EQ(ModeOf(dir_ + "/a/b"), 0700u);
  EXPECT_EQ(ModeOf(deep), 0700u);
  EXPECT_EQ(ModeOf(dir_), 0755u);  // it existed: left as it was
  EXPECT_TRUE(MakePrivateDirs(deep).ok());
  EXPECT_TRUE(MakePrivateDirs("").ok());

  ::umask(0777);  // even a umask that would leave the owner nothing
  ASSERT_TRUE(MakePrivateDirs(dir_ + "/d").ok());
  EXPECT_EQ(ModeOf(dir_ + "/d"), 0700u);
}

TEST_F(PrivateFilesTest, MakePrivateDirsRefusesAFileInTheWay) {
  Touch(dir_ + "/file", 0600);
  EXPECT_EQ(MakePrivateDirs(dir_ + "/file").code(), Code::kIOError);
  EXPECT_EQ(MakePrivateDirs(dir_ + "/file/below").code(), Code::kIOError);
}

TEST_F(PrivateFilesTest, CreatePrivateFileIs0600WhateverTheUmask) {
  for (mode_t mask : {0000, 0022, 0077, 0277}) {
    ::umask(mask);
    const std::string path = dir_ + "/new-" + std::to_string(mask);
    bool created = false;
    Status s = CreatePrivateFile(path, &created);
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_TRUE(created);
    EXPECT_EQ(ModeOf(path), 0600u) << "umask " << std::oct << mask;
  }
}

TEST_F(PrivateFilesTest, CreatePrivateFileLeavesAnExistingFileAlone) {
  const std::string path = dir_ + "/old";
  Touch(path, 0644);
  bool created = true;
  ASSERT_TRUE(CreatePrivateFile(path, &created).ok());
  EXPECT_FALSE(created);
  EXPECT_EQ(ModeOf(path), 0644u);
  std::ifstream in(path);
  std::string contents;
  in >> contents;
  EXPECT_EQ(contents, "x");
  EXPECT_EQ(CreatePrivateFile(dir_ + "/missing/file", &created).code(), Code::kIOError);
}

TEST_F(PrivateFilesTest, MakeOwnerOnlyTightensOnlyWhatOthersMayUse) {
  for (mode_t mode : {0644, 0640, 0604, 0660, 0666, 0601}) {
    const std::string path = dir_ + "/f-" + std::to_string(mode);
    Touch(path, mode);
    unsigned old_mode = 0;
    ASSERT_TRUE(MakeOwnerOnly(path, &old_mode).ok());
    EXPECT_EQ(old_mode, static_cast<unsigned>(mode));
    EXPECT_EQ(ModeOf(path), 0600u) << std::oct << mode;
  }
  for (mode_t mode : {0600, 0400}) {
    const std::string path = dir_ + "/g-" + std::to_string(mode);
    Touch(path, mode);
    unsigned old_mode = 1;
    ASSERT_TRUE(MakeOwnerOnly(path, &old_mode).ok());
    EXPECT_EQ(old_mode, 0u);
    EXPECT_EQ(ModeOf(path), static_cast<unsigned>(mode));
  }
  unsigned old_mode = 1;
  EXPECT_TRUE(MakeOwnerOnly(dir_ + "/missing", &old_mode).ok());
  EXPECT_EQ(old_mode, 0u);
}

TEST_F(PrivateFilesTest, MakeDatabaseOwnerOnlyCoversSqlitesFilesAndReportsEach) {
  const std::string db = dir_ + "/x.db";
  Touch(db, 0644);
  Touch(db + "-wal", 0640);
  Touch(db + "-shm", 0600);  // already private: not reported
  Touch(db + "-journal", 0604);
  Touch(dir_ + "/x.db-other", 0644);  // not SQLite's: not touched
  std::vector<std::string> lines;
  Status s = MakeDatabaseOwnerOnly(db, [&lines](const std::string& line) { lines.push_back(line); });
  ASSERT_TRUE(s.ok()) << s.ToString();
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) EXPECT_EQ(ModeOf(db + suffix), 0600u) << suffix;
  EXPECT_EQ(ModeOf(dir_ + "/x.db-other"), 0644u);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], db + " was open to other users (mode 0644); set its mode to 0600");
  EXPECT_EQ(lines[1], db + "-wal was open to other users (mode 0640); set its mode to 0600");
  EXPECT_EQ(lines[2], db + "-journal was open to other users (mode 0604); set its mode to 0600");
}

TEST(ModeString, AsChmodWritesIt) {
  EXPECT_EQ(ModeString(0600), "0600");
  EXPECT_EQ(ModeString(0644), "0644");
  EXPECT_EQ(ModeString(0100644), "0644");  // file type bits are not permission bits
}

}  // namespace
}  // namespace fastchat
