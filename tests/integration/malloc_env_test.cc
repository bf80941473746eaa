// malloc_env_test: a program linked with uvmrt-malloc, started with a bad
// UVMRT_* value, stops before main with one line naming the variable and
// exit status 1.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

extern char** environ;

namespace {

struct Outcome {
  int status = -1;
  std::string out, err;
};

// Runs malloc_c_test --quick with the environment minus UVMRT_*, plus `vars`.
Outcome RunWith(const std::vector<std::pair<std::string, std::string>>& vars) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; e++) {
    if (std::string(*e).rfind("UVMRT_", 0) != 0) env.push_back(*e);
  }
  auto set = [&](const std::string& k) {
    for (const auto& kv : vars) {
      if (kv.first == k) return true;
    }
    return false;
  };
  if (!set("UVMRT_BUDGET")) env.push_back("UVMRT_BUDGET=16M");
  if (!set("UVMRT_SWAP_SIZE")) env.push_back("UVMRT_SWAP_SIZE=64M");
  for (const auto& [k, v] : vars) env.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (std::string& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);

  int out[2], err[2];
  Outcome r;
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) return r;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  std::string path = MALLOC_C_TEST_PATH;
  std::string quick = "--quick";
  char* argv[] = {path.data(), quick.data(), nullptr};
  pid_t pid;
  const int rc = posix_spawn(&pid, path.c_str(), &fa, nullptr, argv, envp.data());
  posix_spawn_file_actions_destroy(&fa);
  close(out[1]);
  close(err[1]);
  if (rc != 0) return r;
  auto drain = [](int fd, std::string* s) {
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) s->append(buf, static_cast<size_t>(n));
    close(fd);
  };
  drain(out[0], &r.out);
  drain(err[0], &r.err);
  int st = 0;
  waitpid(pid, &st, 0);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

TEST(MallocEnvTest, GoodEnvironmentRuns) {
  const Outcome r = RunWith({});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");
}

TEST(MallocEnvTest, EachBadValueGivesOneLine) {
  const std::pair<const char*, const char*> bad[] = {
      {"UVMRT_BUDGET", "12Q"},
      {"UVMRT_BUDGET", "512K"},
      {"UVMRT_SWAP_SIZE", "lots"},
      {"UVMRT_SWAP_PATH", "/nonexistent-uvmrt-dir/swap"},
      {"UVMRT_LOG", "verbose"},
      {"UVMRT_CLUSTER_PAGES", "0"},
      {"UVMRT_FAULT_THREADS", "999"},
      {"UVMRT_OVERCOMMIT", "maybe"},
      {"UVMRT_BUFFERED_SWAP", "sometimes"},
      {"UVMRT_IN_THREAD_FAULTS", "often"},
      {"UVMRT_RESERVE", "1X"},
  };
  for (const auto& [name, value] : bad) {
    const Outcome r = RunWith({{name, value}});
    EXPECT_EQ(r.status, 1) << name << "=" << value << ": " << r.err;
    EXPECT_EQ(r.out, "") << name;
    std::vector<std::string> lines = absl::StrSplit(r.err, '\n', absl::SkipEmpty());
    ASSERT_EQ(lines.size(), 1u) << name << "=" << value << ":\n" << r.err;
    EXPECT_EQ(lines[0].rfind(std::string("uvmrt: ") + name + "=\"" + value + "\": ", 0), 0u)
        << lines[0];
    EXPECT_EQ(r.err.back(), '\n');
  }
}

TEST(MallocEnvTest, TheDocumentedMessage) {
  const Outcome r = RunWith({{"UVMRT_BUDGET", "12Q"}});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.err,
            "uvmrt: UVMRT_BUDGET=\"12Q\": not a size; use a number with an optional K, M or G "
            "suffix (e.g. 512M)\n");
}

TEST(MallocEnvTest, TooSmallForTheAllocator) {
  const Outcome r = RunWith({{"UVMRT_BUDGET", "4M"}, {"UVMRT_SWAP_SIZE", "8M"}});
  EXPECT_EQ(r.status, 1);
  std::vector<std::string> lines = absl::StrSplit(r.err, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 1u) << r.err;
  EXPECT_NE(lines[0].find("UVMRT_SWAP_SIZE"), std::string::npos) << r.err;
}

// In-thread faults would handle a fault of the allocator's own code, made
// under its locks, in a signal handler that may allocate.
TEST(MallocEnvTest, InThreadFaultsAreRefused) {
  const Outcome r = RunWith({{"UVMRT_IN_THREAD_FAULTS", "1"}});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.err,
            "uvmrt-malloc: UVMRT_IN_THREAD_FAULTS is not supported by the link-time malloc: unset "
            "it\n");
}

TEST(MallocEnvTest, UnknownVariableWarnsAndRuns) {
  const Outcome r = RunWith({{"UVMRT_BUDGT", "1G"}});
  EXPECT_EQ(r.status, 0) << r.err;
  std::vector<std::string> lines = absl::StrSplit(r.err, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 1u) << r.err;
  EXPECT_NE(lines[0].find("UVMRT_BUDGT"), std::string::npos) << r.err;
  EXPECT_NE(lines[0].find("warning"), std::string::npos) << r.err;
}

TEST(MallocEnvTest, LogLevelsAreAccepted) {
  for (const char* l : {"trace", "debug", "info", "warn", "error", "off"}) {
    const Outcome r = RunWith({{"UVMRT_LOG", l}});
    EXPECT_EQ(r.status, 0) << l << ": " << r.err;
  }
}

}  // namespace
