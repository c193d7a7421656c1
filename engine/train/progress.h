// Progress lines on a log stream, for the trainer's steps and for passes over rows (evaluation,
// prediction). On a terminal one line is redrawn in place; otherwise (a file, a pipe, a CI log)
// lines are written only when they are meant to stay, so logs do not fill with redraws.
#pragma once
#include <chrono>
#include <cstdint>
#include <ostream>
#include <string>

namespace engine {

class Progress {
 public:
  // The log is a terminal when it is standard error (or standard output) and that is one.
  explicit Progress(std::ostream& log);
  // On a terminal: redraws the line, and ends it when keep. Otherwise: writes it only when keep.
  void update(const std::string& line, bool keep);
  // A line that always stays (clearing a redrawn line first).
  void message(const std::string& line);
  bool on_terminal() const { return tty_; }

 private:
  std::ostream& log_;
  bool tty_;
};

// Progress through `total` rows: "eval: 1200/7600 rows  85.3 rows/s  1m15s left". Call update()
// after every batch with the rows done so far. On a terminal the line is redrawn (at most ten times
// a second); otherwise a line is written every 5 seconds, or every ENGINE_PROGRESS_SECONDS when
// that is set in the environment (0: after every batch, which tests use); the last line, written
// when all rows are done, says how long the pass took. A pass that ends before its first line is
// due shows nothing at all.
class RowProgress {
 public:
  RowProgress(std::ostream& log, std::string what, int64_t total);
  void update(int64_t done);

 private:
  using Clock = std::chrono::steady_clock;
  Progress progress_;
  std::string what_;
  int64_t total_;
  double interval_;
  bool shown_ = false;
  Clock::time_point start_, last_line_, last_draw_;
};

// "12s", "3m05s", "2h07m".
std::string format_duration(double seconds);

}  // namespace engine
