// Filename: turning a title chosen by a remote sender into a safe local path.
//
// Promises: SanitizeTitle's result is never empty, is valid UTF-8 of at most
// kMaxTitleBytes bytes (never cut inside a character), holds no path
// separator ('/', '\\'), no control character (C0, DEL, C1) and no
// invisible character that reorders or breaks the text around it (bidi
// overrides, isolates and marks, line and paragraph separators), and never
// starts with a dot: it cannot name a directory, climb out of one, hide
// itself, or display as another name. Every other character of the title,
// letters of any script included, is kept.
// DownloadPath's result always lies directly inside the given folder.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

namespace fastchat::client {

// In bytes. "received_" + a title + "-<counter>" stays well below the 255
// bytes a Linux file name may have.
inline constexpr std::size_t kMaxTitleBytes = 200;

// Maps each unsafe character (see above) and each invalid UTF-8 sequence (a
// maximal invalid subpart, as Unicode defines it) to one '_', drops leading
// dots, caps the length at kMaxTitleBytes on a character boundary (keeping
// an extension of up to 16 bytes), and returns "image" for an empty result.
std::string SanitizeTitle(std::string_view title);

// Returns `dir`/received_<SanitizeTitle(title)>, or, if that name is taken,
// the first free name with -1, -2, ... inserted before the extension.
std::filesystem::path DownloadPath(const std::filesystem::path& dir, std::string_view title);

// Publishes the finished file `tmp` under a fresh DownloadPath name without
// ever replacing an existing file (hard link + unlink; the name is re-chosen
// if another writer wins the race). Sets *final_path.
bool PublishDownload(const std::filesystem::path& tmp, const std::filesystem::path& dir,
                     std::string_view title, std::filesystem::path* final_path, std::string* error);

}  // namespace fastchat::client
