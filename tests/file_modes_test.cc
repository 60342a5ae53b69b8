// The server's data folder and database files, and the client's key store,
// are their owner's only, whatever the umask they were started with: real
// processes, run here under umask 022 (which leaves new files readable by
// everyone unless the programs see to it).
#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdio>
#include <map>
#include <string>

#include "harness/fastchat.h"

namespace fastchat::testing {
namespace {

// Sets the umask for the life of the object (children inherit it).
class ScopedUmask {
 public:
  explicit ScopedUmask(mode_t mask) : old_(::umask(mask)) {}
  ~ScopedUmask() { ::umask(old_); }

 private:
  mode_t old_;
};

// Permission bits of `path` as chmod writes them ("0600"); throws if it
// does not exist.
std::string ModeOf(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw std::runtime_error("no " + path);
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", st.st_mode & 07777u);
  return buf;
}

// The permission bits of every file in the folder `dir`, by name.
std::map<std::string, std::string> FileModes(const std::string& dir) {
  std::map<std::string, std::string> modes;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) throw std::runtime_error("cannot list " + dir);
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") modes[name] = ModeOf(dir + "/" + name);
  }
  ::closedir(d);
  return modes;
}

std::string Describe(const std::map<std::string, std::string>& modes) {
  std::string s;
  for (const auto& [name, mode] : modes) s += " " + name + "=" + mode;
  return s;
}

TEST(FileModes, ServerDataFolderAndDatabaseAreOwnerOnly) {
  ScopedUmask umask(022);
  TempDir data("fastchat-modes");
  const std::string top = data.Sub("srv");  // made by the server, with the folder in it
  const std::string folder = top + "/db";
  ServerOptions o;
  o.db_path = folder + "/server.db";
  World w(o);
  User alice = w.Register("alice");
  User bob = w.Register("bob");
  ASSERT_TRUE(w.RunOk(alice, {"add_friend", "bob"}).is_object());

  EXPECT_EQ(ModeOf(top), "0700");
  EXPECT_EQ(ModeOf(folder), "0700");
  // Whatever files SQLite keeps there (the server's exclusive locking mode
  // keeps the WAL index in memory, so there may be no -shm): all 0600.
  const auto modes = FileModes(folder);
  EXPECT_TRUE(modes.count("server.db") == 1 && modes.count("server.db-wal") == 1) << Describe(modes);
  for (const auto& [name, mode] : modes) EXPECT_EQ(mode, "0600") << name << " in" << Describe(modes);

  // A database file made readable by others (by hand, or by an older
  // version) is made owner-only again at start, and the log says so.
  ASSERT_EQ(w.server().Stop(), 0);
  ASSERT_EQ(::chmod(o.db_path.c_str(), 0644), 0);
  w.RestartServer(false);
  EXPECT_EQ(ModeOf(o.db_path), "0600");
  EXPECT_NE(w.server().StderrTail().find(o.db_path + " was open to other users (mode 0644); set its mode to 0600"),
            std::string::npos)
      << w.server().StderrTail();
  EXPECT_TRUE(w.Run(bob, {"accept", "alice"}).ok());  // the data is all there
  for (const auto& [name, mode] : FileModes(folder)) EXPECT_EQ(mode, "0600") << name;
}

TEST(FileModes, ClientKeyStoreIsOwnerOnly) {
  ScopedUmask umask(022);
  World w;
  TempDir data("fastchat-modes");
  User alice = w.MakeUser("alice");
  const std::string top = data.Sub("client");  // made by the client, with the home in it
  alice.home = top + "/home";
  RunResult r = w.Run(alice, {"register", "alice"}, Millis(60000), std::string());
  ASSERT_TRUE(r.ok()) << r.Describe();

  EXPECT_EQ(ModeOf(top), "0700");
  EXPECT_EQ(ModeOf(alice.home), "0700");
  {
    // While a session has the store open, SQLite keeps -wal and -shm beside it.
    auto chat = w.Chat(alice);
    const auto modes = FileModes(alice.home);
    EXPECT_TRUE(modes.count("alice.fcdb") == 1 && modes.count("alice.fcdb-wal") == 1 &&
                modes.count("alice.fcdb-shm") == 1)
        << Describe(modes);
    for (const auto& [name, mode] : modes) EXPECT_EQ(mode, "0600") << name << " in" << Describe(modes);
    EXPECT_EQ(chat->Quit(), 0);
  }

  // A store made readable by others is made owner-only when next opened.
  const std::string store = alice.home + "/alice.fcdb";
  ASSERT_EQ(::chmod(store.c_str(), 0644), 0);
  r = w.Run(alice, {"friends"});
  EXPECT_TRUE(r.ok()) << r.Describe();
  EXPECT_EQ(ModeOf(store), "0600");
  EXPECT_NE(r.err.find(store + " was open to other users (mode 0644); set its mode to 0600"), std::string::npos)
      << r.Describe();
}

}  // namespace
}  // namespace fastchat::testing
