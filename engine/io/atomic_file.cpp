// Whole-file reads, atomic file writes (temp + fsync + rename + fsync dir) and the two-rename swap
// of checkpoint directories with its recovery rule. See atomic_file.h for the guarantees.
#include "engine/io/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <vector>

#include "engine/error.h"

namespace fs = std::filesystem;

namespace engine::io {

namespace {

std::string errno_text(int err) { return std::strerror(err); }

// "a/b/" -> "a/b": rename() and the sibling names below need the path without a trailing slash.
std::string strip_trailing_slashes(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

std::string parent_dir(const std::string& path) {
  std::string parent = fs::path(path).parent_path().string();
  return parent.empty() ? std::string(".") : parent;
}

bool path_exists(const std::string& path, bool* is_dir = nullptr) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return false;
  if (is_dir) *is_dir = S_ISDIR(st.st_mode);
  return true;
}

// Makes a rename (or creation) inside `dir` durable. Some filesystems cannot fsync a directory
// and say so with EINVAL/ENOTSUP; there is nothing better to do there, so that is not an error.
void fsync_directory(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail("cannot open directory '", dir, "' to fsync it: ", errno_text(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0 && err != EINVAL && err != ENOTSUP) fail("cannot fsync directory '", dir, "': ", errno_text(err));
}

void rename_or_fail(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    fail("cannot rename '", from, "' to '", to, "': ", errno_text(errno));
  }
}

// True when `name` is base + tag + one or more digits: the only sibling names this file creates
// (".old.<pid>", ".tmp.<pid>"), so nothing a user named by hand is ever removed.
bool is_pid_sibling(const std::string& name, const std::string& base, const std::string& tag) {
  std::string prefix = base + tag;
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return false;
  for (size_t i = prefix.size(); i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
  }
  return true;
}

// The name of the program process `pid` runs ("self": this one), from /proc on Linux; empty where
// it cannot be read.
std::string program_of(const std::string& pid) {
  std::string comm;
  try {
    comm = read_file("/proc/" + pid + "/comm");
  } catch (const Error&) {
    return "";
  }
  while (!comm.empty() && comm.back() == '\n') comm.pop_back();
  return comm;
}

// The process id in a sibling's name (the digits after its last '.'), and whether that process is
// still running this program: then the sibling is a save in progress (say a trainer writing a
// checkpoint while an eval reads the directory), not a leftover, and must not be touched. Our own
// pid counts as not running: one process does not save and recover the same directory at once. A
// live process that runs another program only reuses the pid of a writer that died (pids recycle
// fast in containers), so its name does not protect the leftover.
bool owner_alive(const std::string& name) {
  std::string digits = name.substr(name.rfind('.') + 1);
  if (digits.size() > 9) return false;  // larger than any pid
  long pid = std::stol(digits);
  if (pid <= 0 || pid == long(::getpid())) return false;
  if (::kill(pid_t(pid), 0) != 0 && errno != EPERM) return false;
  const std::string ours = program_of("self"), theirs = program_of(std::to_string(pid));
  return ours.empty() || theirs.empty() || ours == theirs;
}

// Absolute, normalised, no trailing slash: "ckpt/", "./ckpt" and "/abs/ckpt" name the same
// directory, and its siblings are found by its last component.
std::string normalize_dir(const std::string& p) {
  ENGINE_CHECK(!p.empty(), "empty directory path");
  return strip_trailing_slashes(fs::absolute(fs::path(p)).lexically_normal().string());
}

bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  return !b.empty() && fs::equivalent(a, b, ec) && !ec;
}

void remove_tree_or_fail(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) fail("cannot remove '", path, "': ", ec.message());
}

// recover_directory, sparing `keep` (the staging directory of a save in progress in this process,
// which may itself be named final.tmp.<pid>).
Recovery recover_directory_keeping(const std::string& final_path, const std::string& keep) {
  const std::string parent = parent_dir(final_path);
  const std::string base = fs::path(final_path).filename().string();
  if (base.empty() || base == "." || base == "..") return Recovery::nothing;  // "/": no siblings

  std::vector<std::string> olds, tmps;
  std::error_code ec;
  fs::directory_iterator it(parent, ec), end;
  if (ec) {
    // No parent: nothing to recover. An unlistable parent (a read-only model store) with final_dir
    // in place: nothing needs recovering either, so loading goes on.
    if (ec == std::errc::no_such_file_or_directory || path_exists(final_path)) return Recovery::nothing;
    fail("cannot list directory '", parent, "': ", ec.message());
  }
  for (; it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    std::string full = (fs::path(parent) / name).string();
    if (is_pid_sibling(name, base, ".old.")) olds.push_back(full);
    if (is_pid_sibling(name, base, ".tmp.") && !same_file(full, keep)) tmps.push_back(full);
  }
  if (ec) fail("cannot list directory '", parent, "': ", ec.message());
  // Another running process is saving here: leave everything as it is (a reader that finds
  // final_dir missing in that instant fails with a clear error and can retry).
  for (const auto* list : {&olds, &tmps}) {
    for (const std::string& p : *list) {
      if (owner_alive(p)) return Recovery::nothing;
    }
  }

  Recovery result = Recovery::nothing;
  if (!path_exists(final_path)) {
    if (olds.size() > 1) {
      std::string list;
      for (const std::string& o : olds) list += "\n  " + o;
      fail("cannot recover '", final_path, "': it is missing and several old copies exist; keep one by "
           "renaming it to '", final_path, "' and delete the others:", list);
    }
    if (olds.size() == 1) {
      rename_or_fail(olds[0], final_path);
      fsync_directory(parent);
      olds.clear();
      result = Recovery::restored_old;
    }
  }
  // Here final_path exists (or never did): every .old and .tmp sibling is a leftover.
  for (const std::string& p : olds) remove_tree_or_fail(p);
  for (const std::string& p : tmps) remove_tree_or_fail(p);
  if (!olds.empty() || !tmps.empty()) {
    fsync_directory(parent);
    if (result == Recovery::nothing) result = Recovery::removed_leftovers;
  }
  return result;
}

}  // namespace

std::string read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open '", path, "': ", errno_text(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    fail("cannot stat '", path, "': ", errno_text(err));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    fail("cannot read '", path, "': it is a directory");
  }
  std::string out;
  if (st.st_size > 0) out.reserve(size_t(st.st_size));
  // Read to EOF rather than trusting st_size: pipes and /proc files report 0.
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      fail("cannot read '", path, "': ", errno_text(err));
    }
    if (n == 0) break;
    out.append(buf, size_t(n));
  }
  ::close(fd);
  return out;
}

void FileSink::write(const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("cannot write '", path_, "': ", errno_text(errno));
    }
    p += w;
    n -= size_t(w);
    written_ += size_t(w);
  }
}

std::string temp_path_for(const std::string& path) {
  return strip_trailing_slashes(path) + ".tmp." + std::to_string(::getpid());
}

void write_file_atomic(const std::string& path, const std::function<void(FileSink&)>& fill) {
  ENGINE_CHECK(!path.empty(), "write_file_atomic: empty path");
  const std::string tmp = temp_path_for(path);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot create '", tmp, "' to write '", path, "': ", errno_text(errno));
  try {
    FileSink sink(fd, tmp);
    fill(sink);
    // fsync before rename: otherwise a crash can leave the new name pointing at unwritten blocks.
    if (::fsync(fd) != 0) fail("cannot fsync '", tmp, "': ", errno_text(errno));
    int rc = ::close(fd);
    fd = -1;
    if (rc != 0) fail("cannot close '", tmp, "': ", errno_text(errno));
    rename_or_fail(tmp, path);
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  fsync_directory(parent_dir(path));
}

void write_file_atomic(const std::string& path, const void* data, size_t size) {
  write_file_atomic(path, [&](FileSink& sink) { sink.write(data, size); });
}

void replace_directory_atomic(const std::string& final_dir, const std::string& staged_dir) {
  const std::string final_path = normalize_dir(final_dir);
  const std::string staged = normalize_dir(staged_dir);
  bool is_dir = false;
  ENGINE_CHECK(path_exists(staged, &is_dir) && is_dir, "replace_directory_atomic: staging directory '", staged,
               "' does not exist or is not a directory");
  ENGINE_CHECK(!same_file(staged, final_path), "replace_directory_atomic: '", staged, "' is already '",
               final_path, "'");
  const std::string parent = parent_dir(final_path);

  recover_directory_keeping(final_path, staged);
  fsync_directory(staged);  // the staged directory's own entries, in case the caller did not

  std::string old;
  if (path_exists(final_path, &is_dir)) {
    ENGINE_CHECK(is_dir, "replace_directory_atomic: '", final_path, "' exists and is not a directory");
    old = final_path + ".old." + std::to_string(::getpid());
    rename_or_fail(final_path, old);
    fsync_directory(parent);
  }
  if (::rename(staged.c_str(), final_path.c_str()) != 0) {
    int err = errno;
    if (!old.empty()) ::rename(old.c_str(), final_path.c_str());  // put the old one back
    fail("cannot rename '", staged, "' to '", final_path, "': ", errno_text(err));
  }
  fsync_directory(parent);
  if (!old.empty()) {
    // The new directory is in place and durable, so the save has succeeded; if the old copy cannot
    // be removed now, the next recover_directory removes it.
    std::error_code ec;
    fs::remove_all(old, ec);
  }
}

Recovery recover_directory(const std::string& final_dir) {
  return recover_directory_keeping(normalize_dir(final_dir), "");
}

}  // namespace engine::io
