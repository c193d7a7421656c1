// A run killed with SIGKILL at random moments (some of them in the middle of writing a checkpoint)
// and resumed with --resume after each kill ends with the same parameters, bitwise, as a run never
// interrupted; resume only ever takes a complete checkpoint-<step>, and what killed writers left
// (checkpoint-<step>.tmp.<pid>) is removed, with a line saying so. The kill moments come from the
// printed seed (ENGINE_TEST_SEED replays them, as far as the machine's timing allows).
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <thread>

#include "cli_helpers.h"

namespace engine::test {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Starts build/bin/engine with `args`, standard output and error into `log`.
pid_t launch(const std::vector<std::string>& args, const fs::path& log) {
  std::vector<std::string> all = {engine_binary()};
  all.insert(all.end(), args.begin(), args.end());
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) ::_exit(126);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    std::vector<char*> argv;
    for (std::string& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

// The exit status of `pid` once it ends, or nothing if it is still running after `seconds`.
std::optional<int> wait_for(pid_t pid, double seconds) {
  const Clock::time_point start = Clock::now();
  for (;;) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (seconds_since(start) >= seconds) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void kill_and_reap(pid_t pid) {
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

// Names in `dir` of what an interrupted save leaves: NAME.tmp.<pid> and NAME.old.<pid>.
std::set<std::string> leftovers_in(const fs::path& dir) {
  static const std::regex leftover(R"(.+\.(tmp|old)\.\d+)");
  std::set<std::string> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (std::regex_match(it->path().filename().string(), leftover)) out.insert(it->path().filename().string());
  return out;
}

bool has_checkpoint(const fs::path& dir) {
  static const std::regex checkpoint(R"(checkpoint-\d+)");
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (std::regex_match(it->path().filename().string(), checkpoint)) return true;
  return false;
}

// Waits (at most `seconds`) until a checkpoint staging directory exists in `dir` (true) or the
// process ends (false).
bool wait_for_staging(const fs::path& dir, pid_t pid, double seconds) {
  const Clock::time_point start = Clock::now();
  while (seconds_since(start) < seconds) {
    for (const std::string& name : leftovers_in(dir))
      if (name.rfind("checkpoint-", 0) == 0) return true;
    siginfo_t info{};
    if (::waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return false;
}

TEST(ResumeAfterKill, RandomKillsEndBitwiseEqualToAnUninterruptedRun) {
  const uint64_t seed = pick_seed();
  std::printf("kill moments from seed %llu (ENGINE_TEST_SEED=%llu replays them)\n", (unsigned long long)seed,
              (unsigned long long)seed);
  SCOPED_TRACE("ENGINE_TEST_SEED=" + std::to_string(seed));
  const fs::path dir = fs::temp_directory_path() / ("engine_test_kill_" + unique_suffix());
  struct Cleanup {
    fs::path dir;
    ~Cleanup() { fs::remove_all(dir); }
  } cleanup{dir};
  SyntheticTask task = SyntheticTask::make(seed % 100000, 800, 16, 12);
  save_tiny_model(task, dir / "model", 2, seed % 100000);
  write_labelled_tsv(task, task.train, dir / "train.tsv");
  auto args = [&](const fs::path& out) {
    return std::vector<std::string>{"finetune",      "--backend",     "cpu",           "--model",
                                    (dir / "model"), "--train",       (dir / "train.tsv"),
                                    "--max-steps",   "60",            "--save-steps",  "1",
                                    "--batch-size",  "16",            "--seed",        std::to_string(seed % 1000),
                                    "--output-dir",  out.string()};
  };

  // The run never interrupted, and how long it takes (the kill moments are drawn within it).
  const Clock::time_point t0 = Clock::now();
  const pid_t straight = launch(args(dir / "straight"), dir / "straight.log");
  const std::optional<int> straight_exit = wait_for(straight, 120);
  if (!straight_exit) kill_and_reap(straight);
  ASSERT_EQ(straight_exit, 0) << read_text(dir / "straight.log");
  const double run_seconds = seconds_since(t0);

  // Up to 12 kills, for at most 30 seconds: a third of them just after a checkpoint staging
  // directory appears (a kill during the write), the others at a uniform moment of the first sixth
  // of a run's length (so that twelve kills fit before the run ends).
  std::mt19937_64 rng(seed);
  const fs::path out = dir / "killed";
  const Clock::time_point loop_start = Clock::now();
  std::set<std::string> left_behind;  // leftovers seen after a kill
  std::string logs;
  int kills = 0, kills_in_writes = 0, launches = 0;
  bool finished = false;
  for (int attempt = 0; attempt < 12 && seconds_since(loop_start) < 30 && !finished; ++attempt) {
    std::vector<std::string> a = args(out);
    if (has_checkpoint(out)) a.insert(a.end(), {"--resume", out.string()});
    const fs::path log = dir / ("run" + std::to_string(launches++) + ".log");
    const pid_t pid = launch(a, log);
    if (rng() % 3 == 0) {
      const bool writing = wait_for_staging(out, pid, 10);
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
      kills_in_writes += writing;
    } else {
      std::this_thread::sleep_for(std::chrono::duration<double>(run_seconds * double(rng() % 1000) / 6000.0));
    }
    const std::optional<int> done = wait_for(pid, 0);
    if (done) {
      ASSERT_EQ(*done, 0) << read_text(log);
      finished = true;
    } else {
      kill_and_reap(pid);
      ++kills;
    }
    logs += read_text(log);
    for (const std::string& name : leftovers_in(out)) left_behind.insert(name);
  }
  // Then to the end, resumed once more.
  if (!finished) {
    std::vector<std::string> a = args(out);
    if (has_checkpoint(out)) a.insert(a.end(), {"--resume", out.string()});
    const fs::path log = dir / "last.log";
    const pid_t pid = launch(a, log);
    const std::optional<int> done = wait_for(pid, 120);
    if (!done) kill_and_reap(pid);
    ASSERT_EQ(done, 0) << read_text(log);
    logs += read_text(log);
  }
  std::printf("%d kills (%d once a checkpoint write had begun), %d leftovers of killed writers, in %.1f s\n", kills,
              kills_in_writes, int(left_behind.size()), seconds_since(loop_start));
  EXPECT_GE(kills, 1) << "no run was killed:\n" << logs;

  // Resume only ever took a complete checkpoint-<step>.
  static const std::regex resumed(R"(resumed from (\S+) at step)");
  int resumes = 0;
  for (std::sregex_iterator it(logs.begin(), logs.end(), resumed), end; it != end; ++it, ++resumes)
    EXPECT_TRUE(std::regex_match(fs::path((*it)[1].str()).filename().string(), std::regex(R"(checkpoint-\d+)")))
        << "resumed from " << (*it)[1] << "\n" << logs;
  // Every leftover of a killed writer was removed, each named on a line saying so (said before it is
  // removed, so a run killed in between still names it).
  EXPECT_EQ(leftovers_in(out), std::set<std::string>{}) << logs;
  std::set<std::string> reported;
  std::istringstream lines(logs);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("removing what interrupted saves left in") == std::string::npos) continue;
    std::istringstream names(line.substr(line.find(':') + 1));
    for (std::string name; names >> name;) reported.insert(name);
  }
  for (const std::string& name : left_behind)
    EXPECT_TRUE(reported.count(name)) << name << " was removed without a line naming it:\n" << logs;
  // And the parameters are those of the run never interrupted, bitwise.
  EXPECT_TRUE(read_text(out / "model" / "model.safetensors") == read_text(dir / "straight" / "model" / "model.safetensors"))
      << "after " << kills << " kills and " << resumes << " resumes the final parameters differ:\n" << logs;
}

// The selection itself, on a run directory laid out as crashes leave it: the newest entry is a
// staging directory of a dead writer holding a whole checkpoint's files (checkpoint-7.tmp.<pid>),
// the newest checkpoint-<step> lacks its optimizer state, and a staging directory carries the pid
// of a live process of another program (a dead writer's pid, reused).
TEST(ResumeAfterKill, ResumeTakesTheNewestCompleteCheckpointAndRemovesDeadWritersLeftovers) {
  const uint64_t seed = pick_seed() % 100000;
  SCOPED_TRACE("ENGINE_TEST_SEED=" + std::to_string(seed));
  const fs::path dir = fs::temp_directory_path() / ("engine_test_resume_pick_" + unique_suffix());
  struct Cleanup {
    fs::path dir;
    ~Cleanup() { fs::remove_all(dir); }
  } cleanup{dir};
  SyntheticTask task = SyntheticTask::make(seed, 160, 16, 12);
  save_tiny_model(task, dir / "model", 2, seed);
  write_labelled_tsv(task, task.train, dir / "train.tsv");
  const fs::path out = dir / "out";
  const std::string common = "finetune --backend cpu --save-steps 1 --save-total-limit 0 --batch-size 16 --model " +
                             (dir / "model").string() + " --train " + (dir / "train.tsv").string() +
                             " --output-dir " + out.string();
  CommandResult first = run_engine(common + " --max-steps 5");
  ASSERT_EQ(first.exit_code, 0) << first.out << first.err;

  const std::string dead = "checkpoint-7.tmp.900000001";  // beyond any pid_max
  const std::string reused = "checkpoint-6.tmp." + std::to_string(::getppid());  // ctest or a shell
  fs::copy(out / "checkpoint-5", out / dead, fs::copy_options::recursive);
  fs::copy(out / "checkpoint-5", out / reused, fs::copy_options::recursive);
  fs::remove(out / "checkpoint-5" / "optimizer.safetensors");
  fs::create_directories(out / "checkpoint-9.backup");  // a name of the user's: never touched

  // Results name the run directory by its last component (it is not under the current directory).
  CommandResult resumed = run_engine(common + " --max-steps 6 --resume " + out.string());
  ASSERT_EQ(resumed.exit_code, 0) << resumed.out << resumed.err;
  EXPECT_NE(resumed.out.find("resumed from checkpoint-4 at step 4"), std::string::npos) << resumed.out;
  EXPECT_NE(resumed.out.find("skipped checkpoint-5: incomplete (no optimizer.safetensors)"), std::string::npos)
      << resumed.out;
  EXPECT_NE(resumed.out.find("removing what interrupted saves left in out:"), std::string::npos) << resumed.out;
  for (const std::string& name : {dead, reused}) {
    EXPECT_NE(resumed.out.find(" " + name), std::string::npos) << resumed.out;
    EXPECT_FALSE(fs::exists(out / name)) << name;
  }
  EXPECT_TRUE(fs::exists(out / "checkpoint-9.backup"));

  // A checkpoint named directly must be complete.
  fs::remove(out / "checkpoint-6" / "optimizer.safetensors");
  CommandResult refused = run_engine(common + " --max-steps 7 --resume " + (out / "checkpoint-6").string());
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("not a complete checkpoint (no optimizer.safetensors)"), std::string::npos)
      << refused.err;
}

}  // namespace
}  // namespace engine::test
