#include "engine/io/result_path.h"

#include <filesystem>

namespace engine::io {

namespace fs = std::filesystem;

namespace {

// `path` relative to `dir` when it lies under it (both absolute and normalised), else empty.
fs::path relative_if_under(const fs::path& path, const fs::path& dir) {
  auto p = path.begin();
  for (auto d = dir.begin(); d != dir.end(); ++d, ++p) {
    if (d->empty()) continue;  // the empty last component of a path ending in '/'
    if (p == path.end() || *p != *d) return {};
  }
  fs::path rest;
  for (; p != path.end(); ++p) rest /= *p;
  return rest.empty() ? fs::path(".") : rest;
}

fs::path without_trailing_slash(fs::path p) {
  while (p.has_relative_path() && p.filename().empty()) p = p.parent_path();
  return p;
}

}  // namespace

std::string result_path(const std::string& path) {
  if (path.empty()) return path;
  const fs::path p = without_trailing_slash(fs::path(path).lexically_normal());
  if (p.is_relative()) return p.string();
  std::error_code ec;
  const fs::path cwd = fs::current_path(ec);
  if (!ec) {
    fs::path under = relative_if_under(p, cwd.lexically_normal());
    if (!under.empty()) return under.string();
  }
  return p.has_filename() ? p.filename().string() : p.string();
}

}  // namespace engine::io
