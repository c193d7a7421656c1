#include "engine/train/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "engine/error.h"

namespace engine {

Progress::Progress(std::ostream& log)
    : log_(log),
      tty_(isatty(STDERR_FILENO) && (&log == &std::cerr || (&log == &std::cout && isatty(STDOUT_FILENO)))) {}

void Progress::update(const std::string& line, bool keep) {
  if (tty_) {
    log_ << "\r\033[K" << line << (keep ? "\n" : "") << std::flush;
  } else if (keep) {
    log_ << line << "\n" << std::flush;
  }
}

void Progress::message(const std::string& line) {
  if (tty_) log_ << "\r\033[K";
  log_ << line << "\n" << std::flush;
}

std::string format_duration(double seconds) {
  const long long s = std::llround(std::max(seconds, 0.0));
  char out[32];
  if (s < 60)
    std::snprintf(out, sizeof out, "%llds", s);
  else if (s < 3600)
    std::snprintf(out, sizeof out, "%lldm%02llds", s / 60, s % 60);
  else
    std::snprintf(out, sizeof out, "%lldh%02lldm", s / 3600, s / 60 % 60);
  return out;
}

namespace {

// Seconds between lines when the log is not a terminal: 5, or ENGINE_PROGRESS_SECONDS.
double line_interval() {
  const char* env = std::getenv("ENGINE_PROGRESS_SECONDS");
  if (!env) return 5.0;
  char* end = nullptr;
  double v = std::strtod(env, &end);
  ENGINE_CHECK(end != env && *end == '\0' && v >= 0 && std::isfinite(v),
               "ENGINE_PROGRESS_SECONDS must be a number of seconds >= 0 (got '", env, "')");
  return v;
}

}  // namespace

RowProgress::RowProgress(std::ostream& log, std::string what, int64_t total)
    : progress_(log), what_(std::move(what)), total_(total), interval_(line_interval()) {
  start_ = last_line_ = last_draw_ = Clock::now();
}

void RowProgress::update(int64_t done) {
  const Clock::time_point now = Clock::now();
  const bool last = done >= total_;
  const bool line_due = std::chrono::duration<double>(now - last_line_).count() >= interval_;
  const bool draw_due = std::chrono::duration<double>(now - last_draw_).count() >= 0.1;
  // A pass too short to have shown anything ends silently too (predict for one line of input).
  if (last ? !shown_ : !(progress_.on_terminal() ? draw_due : line_due)) return;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double rate = elapsed > 0 ? double(done) / elapsed : 0.0;
  char line[256];
  if (last) {
    std::snprintf(line, sizeof line, "%s: %lld/%lld rows  %.1f rows/s  done in %s", what_.c_str(), (long long)done,
                  (long long)total_, rate, format_duration(elapsed).c_str());
  } else {
    const std::string left = rate > 0 ? format_duration(double(total_ - done) / rate) : "?";
    std::snprintf(line, sizeof line, "%s: %lld/%lld rows  %.1f rows/s  %s left", what_.c_str(), (long long)done,
                  (long long)total_, rate, left.c_str());
  }
  progress_.update(line, last || !progress_.on_terminal());
  shown_ = true;
  last_draw_ = now;
  if (line_due) last_line_ = now;
}

}  // namespace engine
