// Whole-file reads and crash-safe writes. A checkpoint must never be half-written where the last
// good one was, so files are written to a temporary name next to the target, fsynced, and renamed
// over it (rename within a directory is atomic on POSIX filesystems); checkpoint directories are
// staged next to the final one and swapped in with two renames, with a documented recovery rule
// for a crash between them. Every failure throws engine::Error naming the path and strerror.
#pragma once
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <utility>

namespace engine::io {

// The whole content of a file. Throws engine::Error naming the path when it cannot be opened or
// read (missing, a directory, permission denied, ...).
std::string read_file(const std::string& path);

// Given to the callback of write_file_atomic: appends bytes to the temporary file.
class FileSink {
 public:
  // Writes all n bytes (retrying short writes and EINTR) or throws engine::Error.
  void write(const void* data, size_t n);
  void write(std::string_view bytes) { write(bytes.data(), bytes.size()); }
  size_t bytes_written() const { return written_; }

 private:
  friend void write_file_atomic(const std::string&, const std::function<void(FileSink&)>&);
  FileSink(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  int fd_;
  std::string path_;  // the temporary file's name, for error messages
  size_t written_ = 0;
};

// The name a temporary sibling of `path` gets in this process: path + ".tmp.<pid>". Also the
// suggested name for a checkpoint staging directory (see replace_directory_atomic).
std::string temp_path_for(const std::string& path);

// Writes `path` atomically: the callback fills path + ".tmp.<pid>" in the same directory, which is
// fsynced, renamed over `path`, and then the directory is fsynced so the rename itself is durable.
// Readers see either the old file or the complete new one, never a mix. On any failure (including
// an exception thrown by the callback, which is rethrown unchanged) the temporary file is removed
// and the previous `path`, if any, is left untouched. Two threads of one process must not write the
// same path at the same time (they would share the temporary name).
void write_file_atomic(const std::string& path, const std::function<void(FileSink&)>& fill);
void write_file_atomic(const std::string& path, const void* data, size_t size);
inline void write_file_atomic(const std::string& path, std::string_view bytes) {
  write_file_atomic(path, bytes.data(), bytes.size());
}

// Swaps a fully written staging directory into place as final_dir. staged_dir must be on the same
// filesystem as final_dir (a sibling, e.g. temp_path_for(final_dir)); its files should already be
// durable (written with write_file_atomic). Steps, each followed by an fsync of the parent:
//   0. recover_directory(final_dir), so leftovers of an earlier crash do not get in the way;
//   1. if final_dir exists, rename it to final_dir + ".old.<pid>";
//   2. rename staged_dir to final_dir;
//   3. remove the .old directory.
// At every moment either final_dir or final_dir.old.<pid> is a complete directory; the only crash
// window where final_dir is missing is between 1 and 2, which recover_directory repairs.
void replace_directory_atomic(const std::string& final_dir, const std::string& staged_dir);

enum class Recovery {
  nothing,            // final_dir was in place and no leftovers were found
  restored_old,       // final_dir was missing: the single final_dir.old.<pid> was renamed back
  removed_leftovers,  // nothing restored; stale .old.<pid> / .tmp.<pid> siblings removed
};

// The recovery rule, to call before loading final_dir (replace_directory_atomic calls it too):
//   - final_dir exists: it is complete (it only ever appears by rename of a complete staging
//     directory), so every sibling named final_dir.old.<digits> or final_dir.tmp.<digits> is a
//     leftover of an interrupted save and is removed.
//   - final_dir is missing and exactly one final_dir.old.<digits> exists: the crash came between
//     steps 1 and 2, so the old directory is renamed back to final_dir (the interrupted save is
//     lost; the previous checkpoint is restored) and stale staging siblings are removed.
//   - final_dir is missing and several .old siblings exist: ambiguous, throws engine::Error
//     listing them so a person can choose.
//   - neither exists: nothing to do (no checkpoint was ever completed).
// Siblings whose suffix after .old. / .tmp. is not all digits are never touched. When the pid in
// any sibling's name is a running process other than this one that runs the same program (its
// name in /proc; a pid reused by another program is a dead writer's), a save is in progress there
// and recover_directory does nothing (returns Recovery::nothing), so a reader never destroys the
// staging directory of a trainer saving into the same place. Two processes saving to the same
// final_dir at once are not supported. Paths are made absolute and normalised first, so "ckpt/",
// "./ckpt" and "." all work.
Recovery recover_directory(const std::string& final_dir);

}  // namespace engine::io
