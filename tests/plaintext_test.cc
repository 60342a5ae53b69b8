// The server never stores plaintext: run a conversation full of distinctive
// markers, then search every byte the server wrote (server.db, its WAL,
// anything else in its directory) for them.
//
// Group names are not encrypted by design (the server shows them in
// GroupList), so they are not checked; user names are the positive control
// that proves the search sees the database's contents.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "harness/fastchat.h"

namespace fastchat::testing {
namespace {

namespace fs = std::filesystem;

struct Hit {
  std::string file;
  std::string marker;
};

// Searches every regular file under `dir` for each marker (raw bytes).
std::vector<Hit> Search(const std::string& dir, const std::vector<std::string>& markers,
                        std::vector<std::string>* files_read) {
  std::vector<Hit> hits;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::string name = e.path().filename().string();
    // Our own captures of the server's stdout/stderr are not server data.
    if (name.rfind("server-", 0) == 0) continue;
    std::string data = ReadFile(e.path().string());
    files_read->push_back(name + " (" + std::to_string(data.size()) + " bytes)");
    for (const auto& m : markers) {
      if (data.find(m) != std::string::npos) hits.push_back({name, m});
    }
  }
  return hits;
}

std::string Join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += "  " + x + "\n";
  return s;
}

TEST(Plaintext, ServerStoresNoMessageTextImageOrTitle) {
  World w;
  std::string tag = RandomToken(12);
  // Distinctive, never-otherwise-occurring strings.
  const std::string text_marker = "TXTMARK" + tag + "direct";
  const std::string offline_marker = "OFFMARK" + tag + "queued";
  const std::string group_marker = "GRPMARK" + tag + "group";
  const std::string image_marker = "IMGMARK" + tag + "bytes";
  const std::string title_marker = "TTLMARK" + tag;
  const std::string gimage_marker = "GIMMARK" + tag + "bytes";
  const std::string password_marker = "PWDMARK" + tag;
  const std::vector<std::string> secrets = {text_marker,  offline_marker, group_marker, image_marker,
                                            title_marker, gimage_marker,  password_marker};

  const std::string alice_name = "alice" + tag.substr(0, 6);
  User a = w.MakeUser(alice_name);
  a.password = password_marker + "-alice";
  {
    RunResult r = w.Run(a, {"register", a.name}, Millis(60000), std::string());
    ASSERT_TRUE(r.ok()) << r.Describe();
  }
  User b = w.Register("bob");
  User c = w.Register("carol");
  auto ca = w.Chat(a);
  auto cb = w.Chat(b);
  auto cc = w.Chat(c);
  w.MakeFriends(*ca, a, *cb, b);

  // Direct text, both ways.
  ca->CommandOk("single_message bob " + text_marker);
  cb->WaitFor(Like({{"type", "message"}, {"text", text_marker}}), "text marker");
  cb->CommandOk("single_message " + a.name + " re " + text_marker);
  ca->WaitFor(Like({{"type", "message"}, {"text", "re " + text_marker}}), "reply");

  // An image whose bytes are full of the marker and whose title is one.
  std::string img_path = w.tmp().Sub(title_marker + ".png");
  std::string img;
  while (img.size() < 300 * 1024) img += image_marker + "\n";
  WriteFile(img_path, img);
  ca->CommandOk("single_image bob " + img_path);
  json got = cb->WaitFor(Like({{"type", "image"}, {"from", a.name}}), "image");
  ASSERT_EQ(ReadFile(got.value("path", "")), img);

  // Group traffic (text and image).
  std::uint64_t gid = AsU64(ca->CommandOk("create_group plaintextclub")["group_id"]);
  std::string G = std::to_string(gid);
  ca->CommandOk("add_member " + G + " bob");
  ca->CommandOk("add_member " + G + " carol");
  cb->WaitFor(Like({{"type", "group_key"}, {"group_id", gid}}), "bob's key");
  cc->WaitFor(Like({{"type", "group_key"}, {"group_id", gid}}), "carol's key");
  cb->CommandOk("group_message " + G + " " + group_marker);
  cc->WaitFor(Like({{"type", "group_message"}, {"text", group_marker}}), "group marker");
  std::string gimg_path = w.tmp().Sub("gimage.bin");
  std::string gimg;
  while (gimg.size() < 100 * 1024) gimg += gimage_marker;
  WriteFile(gimg_path, gimg);
  cc->CommandOk("group_image " + G + " " + gimg_path);
  cb->WaitFor(Like({{"type", "group_image"}, {"from", "carol"}}), "group image");

  // Something left queued for an offline recipient (still in the database
  // at shutdown, not just deleted after delivery).
  EXPECT_EQ(cb->Quit(), 0);
  ca->CommandOk("single_message bob " + offline_marker);
  ca->CommandOk("single_image bob " + img_path);

  // The search works: every marker is found in a file we wrote ourselves.
  {
    TempDir ctl_dir("fastchat-ctl");
    std::string all;
    for (const auto& m : secrets) all += "xx" + m + "yy";
    WriteFile(ctl_dir.path() + "/control.txt", all);
    std::vector<std::string> ctl_read;
    EXPECT_EQ(Search(ctl_dir.path(), secrets, &ctl_read).size(), secrets.size());
  }

  // While the server runs (WAL not yet checkpointed) ...
  std::vector<std::string> read_live;
  auto live = Search(w.server().dir(), secrets, &read_live);
  for (const auto& h : live) {
    ADD_FAILURE() << "plaintext marker " << h.marker << " found in " << h.file
                  << " while the server runs";
  }
  // ... and after it stopped.
  ca->Quit();
  cc->Quit();
  EXPECT_EQ(w.server().Stop(), 0) << w.server().StderrTail();
  std::vector<std::string> read_after;
  auto after = Search(w.server().dir(), secrets, &read_after);
  for (const auto& h : after) {
    ADD_FAILURE() << "plaintext marker " << h.marker << " found in " << h.file << " after shutdown";
  }

  // Positive control on the real files: the user names (stored in clear by
  // design) are found, so we did read the database's contents.
  std::vector<std::string> read_ctl;
  auto names = Search(w.server().dir(), {alice_name}, &read_ctl);
  EXPECT_FALSE(names.empty()) << "user name not found in the server's files; files read:\n"
                              << Join(read_ctl);
  // Group names are stored in clear by design: written during the
  // conversation, so the search sees more than the registrations.
  std::vector<std::string> read_grp;
  EXPECT_FALSE(Search(w.server().dir(), {"plaintextclub"}, &read_grp).empty())
      << "group name not found in the server's files";
  bool saw_db = false;
  for (const auto& f : read_ctl) {
    if (f.rfind("server.db", 0) == 0) saw_db = true;
  }
  EXPECT_TRUE(saw_db) << "no server.db in " << w.server().dir() << "; files:\n" << Join(read_ctl);
  std::cout << "[ info ] searched while running:\n"
            << Join(read_live) << "[ info ] searched after shutdown:\n"
            << Join(read_after);
}

}  // namespace
}  // namespace fastchat::testing
