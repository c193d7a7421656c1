// Tests of the learning-rate schedules: values worked out from HF's formulas by hand (arithmetic
// in the comments), and the rates transformers' own get_scheduler produced
// (tests/fixtures/schedule_reference.json, written by tools/reference_schedules.py).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "engine/train/schedule.h"

using namespace engine;

namespace {

template <typename F>
void expect_error(F f, const std::string& piece) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(piece), std::string::npos) << e.what();
    return;
  }
  ADD_FAILURE() << "no engine::Error (expected one mentioning '" << piece << "')";
}

}  // namespace

TEST(Schedule, LinearWithWarmupByHand) {
  // W = 2, N = 10, lr 1e-3. Warmup: s / 2 -> 0, 0.5. Then (10 - s) / (10 - 2): s = 2 -> 1,
  // s = 3 -> 7/8, s = 9 -> 1/8, s = 10 -> 0, past the end max(0, negative) -> 0.
  const LrSchedule s(ScheduleKind::linear, 1e-3, 2, 10);
  EXPECT_EQ(s.lr_at(0), 0.0);  // HF: the first update of a warmup has learning rate 0
  EXPECT_DOUBLE_EQ(s.lr_at(1), 0.5e-3);
  EXPECT_DOUBLE_EQ(s.lr_at(2), 1e-3);
  EXPECT_DOUBLE_EQ(s.lr_at(3), 1e-3 * 7.0 / 8.0);
  EXPECT_DOUBLE_EQ(s.lr_at(9), 1e-3 / 8.0);
  EXPECT_EQ(s.lr_at(10), 0.0);
  EXPECT_EQ(s.lr_at(12), 0.0);
  // No warmup: the first step has the full rate, (4 - 0) / 4.
  EXPECT_DOUBLE_EQ(LrSchedule(ScheduleKind::linear, 2e-5, 0, 4).lr_at(0), 2e-5);
  EXPECT_DOUBLE_EQ(LrSchedule(ScheduleKind::linear, 2e-5, 0, 4).lr_at(1), 1.5e-5);
}

TEST(Schedule, CosineByHand) {
  // W = 0, N = 4: 0.5 (1 + cos(pi s / 4)) -> 1, (1 + sqrt(2)/2) / 2, 1/2, (1 - sqrt(2)/2) / 2, 0.
  const LrSchedule s(ScheduleKind::cosine, 1.0, 0, 4);
  EXPECT_DOUBLE_EQ(s.factor(0), 1.0);
  EXPECT_NEAR(s.factor(1), 0.5 + std::sqrt(2.0) / 4.0, 1e-15);
  EXPECT_NEAR(s.factor(2), 0.5, 1e-15);
  EXPECT_NEAR(s.factor(3), 0.5 - std::sqrt(2.0) / 4.0, 1e-15);
  EXPECT_NEAR(s.factor(4), 0.0, 1e-15);
  // With warmup W = 2, N = 6: s = 1 -> 1/2 (warmup); s = 4 -> progress (4 - 2) / 4 = 1/2 -> 1/2.
  const LrSchedule w(ScheduleKind::cosine, 3e-5, 2, 6);
  EXPECT_DOUBLE_EQ(w.lr_at(1), 1.5e-5);
  EXPECT_NEAR(w.lr_at(4), 1.5e-5, 1e-20);
}

TEST(Schedule, ConstantKinds) {
  // "constant" ignores warmup as HF's does; "constant_with_warmup" ramps s / W then holds.
  const LrSchedule c(ScheduleKind::constant, 1e-3, 4, 10);
  EXPECT_EQ(c.lr_at(0), 1e-3);
  EXPECT_EQ(c.lr_at(9), 1e-3);
  const LrSchedule cw(ScheduleKind::constant_with_warmup, 1e-3, 4, 10);
  EXPECT_EQ(cw.lr_at(0), 0.0);
  EXPECT_DOUBLE_EQ(cw.lr_at(1), 0.25e-3);
  EXPECT_EQ(cw.lr_at(4), 1e-3);
  EXPECT_EQ(cw.lr_at(50), 1e-3);
}

TEST(Schedule, WarmupFromRatio) {
  // ceil(total * ratio) in doubles, as Python: 100 * 0.07 = 7.000000000000001 -> 8 (not 7).
  EXPECT_EQ(resolve_warmup_steps(0, 0.07, 100), 8);
  EXPECT_EQ(resolve_warmup_steps(0, 0.1, 1000), 100);  // 1000 * 0.1 is exactly 100.0 in doubles
  EXPECT_EQ(resolve_warmup_steps(0, 0.0, 50), 0);
  EXPECT_EQ(resolve_warmup_steps(0, 0.5, 3), 2);       // ceil(1.5)
  EXPECT_EQ(resolve_warmup_steps(12, 0.5, 100), 12);   // explicit steps win over a ratio
  expect_error([] { resolve_warmup_steps(0, 1.5, 10); }, "warmup ratio");
  expect_error([] { resolve_warmup_steps(-1, 0.0, 10); }, "warmup steps");
}

TEST(Schedule, Errors) {
  expect_error([] { parse_schedule_kind("polynomial"); }, "unknown learning-rate schedule 'polynomial'");
  EXPECT_EQ(parse_schedule_kind("cosine"), ScheduleKind::cosine);
  EXPECT_STREQ(schedule_kind_name(ScheduleKind::constant_with_warmup), "constant_with_warmup");
  expect_error([] { LrSchedule(ScheduleKind::linear, 1e-3, 0, 0); }, "total steps must be positive");
  expect_error([] { LrSchedule(ScheduleKind::linear, 1e-3, 11, 10); }, "warmup of 11 steps");
  expect_error([] { LrSchedule(ScheduleKind::linear, -1.0, 0, 10); }, "learning rate");
  expect_error([] { LrSchedule(ScheduleKind::linear, 1e-3, 0, 10).lr_at(-1); }, "negative step");
}

TEST(Schedule, MatchesTransformers) {
  const std::string path = std::string(ENGINE_SOURCE_DIR) + "/tests/fixtures/schedule_reference.json";
  std::ifstream in(path);
  ASSERT_TRUE(in.good()) << "missing fixture " << path;
  const nlohmann::json ref = nlohmann::json::parse(in);
  ASSERT_FALSE(ref["schedules"].empty());
  for (const auto& c : ref["schedules"]) {
    const LrSchedule s(parse_schedule_kind(c["kind"]), c["base_lr"], c["warmup_steps"], c["total_steps"]);
    const auto rates = c["lr"].get<std::vector<double>>();
    for (size_t step = 0; step < rates.size(); ++step)
      EXPECT_DOUBLE_EQ(s.lr_at(int64_t(step)), rates[step])
          << c["kind"] << " W=" << s.warmup_steps << " N=" << s.total_steps << " step " << step;
  }
  for (const auto& c : ref["warmup_ratios"])
    EXPECT_EQ(resolve_warmup_steps(0, c["ratio"], c["total_steps"]), c["warmup_steps"].get<int64_t>())
        << "ratio " << c["ratio"] << " of " << c["total_steps"];
}
