// The host-side defaults of Backend's measurement methods (backend.h): a timer on the steady clock
// and "no capture". The CPU backend uses them as they are; its ops run synchronously on the calling
// thread, so a timestamp taken after synchronize() is the moment the queued work finished.
#include <chrono>
#include <vector>

#include "engine/backend.h"
#include "engine/error.h"

namespace engine {

namespace {

class HostClockTimer final : public StepTimer {
 public:
  HostClockTimer(Backend& backend, int marks) : backend_(backend), marks_(size_t(marks)) {}

  int size() const override { return int(marks_.size()); }

  void mark(int i) override {
    ENGINE_CHECK(i >= 0 && i < size(), "timer mark ", i, " outside [0, ", size(), ")");
    backend_.synchronize();  // the mark means "everything queued so far has finished"
    marks_[size_t(i)] = Clock::now();
  }

  double elapsed_ms(int a, int b) override {
    ENGINE_CHECK(a >= 0 && a < size() && b >= 0 && b < size(), "timer marks ", a, ", ", b, " outside [0, ", size(),
                 ")");
    return std::chrono::duration<double, std::milli>(marks_[size_t(b)] - marks_[size_t(a)]).count();
  }

 private:
  using Clock = std::chrono::steady_clock;
  Backend& backend_;
  std::vector<Clock::time_point> marks_;
};

}  // namespace

std::unique_ptr<StepTimer> Backend::make_timer(int marks) {
  ENGINE_CHECK(marks > 0, "a timer needs at least one mark (got ", marks, ")");
  return std::make_unique<HostClockTimer>(*this, marks);
}

void Backend::begin_capture() { fail("backend ", name(), " cannot capture work (CUDA graphs need the cuda backend)"); }

std::unique_ptr<CapturedWork> Backend::end_capture() {
  fail("backend ", name(), " cannot capture work (CUDA graphs need the cuda backend)");
}

}  // namespace engine
