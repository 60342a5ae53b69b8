// Filename: turning a title chosen by a remote sender into a safe local path.
//
// Promises: SanitizeTitle's result is never empty, is at most
// kMaxTitleChars bytes, contains only [A-Za-z0-9._-] and never starts with a
// dot, so it cannot name a directory, climb out of one, or hide itself.
// DownloadPath's result always lies directly inside the given folder.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

namespace fastchat::client {

inline constexpr std::size_t kMaxTitleChars = 100;

// Keeps [A-Za-z0-9._-], maps every other byte (/, \, spaces, control and
// non-ASCII bytes, NUL) to '_', drops leading dots, caps the length at
// kMaxTitleChars (keeping a short extension), and returns "image" for an
// empty result.
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
