// env_test: runtime options from UVMRT_* variables (uvmrt/env.h).
#include "uvmrt/env.h"

#include <stdlib.h>

#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

extern char** environ;

namespace uvmrt {
namespace {

// Clears every UVMRT_* variable for the test and restores them after.
class EnvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (char** e = environ; *e != nullptr; e++) {
      std::string kv = *e;
      if (kv.rfind("UVMRT_", 0) != 0) continue;
      const size_t eq = kv.find('=');
      saved_.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
    }
    for (const auto& [k, v] : saved_) unsetenv(k.c_str());
  }
  void TearDown() override {
    std::vector<std::string> now;
    for (char** e = environ; *e != nullptr; e++) {
      std::string kv = *e;
      if (kv.rfind("UVMRT_", 0) == 0) now.push_back(kv.substr(0, kv.find('=')));
    }
    for (const std::string& k : now) unsetenv(k.c_str());
    for (const auto& [k, v] : saved_) setenv(k.c_str(), v.c_str(), 1);
  }

  // The error for NAME=VALUE, or "" if the options were accepted.
  static std::string ErrorFor(const char* name, const char* value) {
    setenv(name, value, 1);
    absl::StatusOr<Options> o = OptionsFromEnv();
    unsetenv(name);
    if (o.ok()) return "";
    EXPECT_EQ(o.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(o.status().message());
  }

  std::vector<std::pair<std::string, std::string>> saved_;
};

TEST_F(EnvTest, UnsetLeavesTheBase) {
  Options base;
  base.budget_bytes = size_t{123} << 20;
  base.swap_path = "/somewhere";
  base.cluster_pages = 8;
  absl::StatusOr<Options> o = OptionsFromEnv(base);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->budget_bytes, base.budget_bytes);
  EXPECT_EQ(o->swap_path, base.swap_path);
  EXPECT_EQ(o->swap_bytes, base.swap_bytes);
  EXPECT_EQ(o->cluster_pages, 8);
  EXPECT_EQ(o->overcommit, base.overcommit);
}

TEST_F(EnvTest, SizesTakeSuffixes) {
  const std::pair<const char*, size_t> cases[] = {
      {"1048576", size_t{1} << 20}, {"512M", size_t{512} << 20}, {"512m", size_t{512} << 20},
      {"4G", size_t{4} << 30},      {"2048K", size_t{2} << 20},  {"1T", size_t{1} << 40},
  };
  for (const auto& [text, bytes] : cases) {
    setenv("UVMRT_BUDGET", text, 1);
    absl::StatusOr<Options> o = OptionsFromEnv();
    ASSERT_TRUE(o.ok()) << text << ": " << o.status();
    EXPECT_EQ(o->budget_bytes, bytes) << text;
  }
  setenv("UVMRT_SWAP_SIZE", "3G", 1);
  absl::StatusOr<Options> o = OptionsFromEnv();
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->swap_bytes, size_t{3} << 30);
}

TEST_F(EnvTest, EveryVariableApplies) {
  setenv("UVMRT_BUDGET", "32M", 1);
  setenv("UVMRT_SWAP_SIZE", "1G", 1);
  setenv("UVMRT_SWAP_PATH", "/tmp", 1);
  setenv("UVMRT_CLUSTER_PAGES", "64", 1);
  setenv("UVMRT_FAULT_THREADS", "3", 1);
  setenv("UVMRT_OVERCOMMIT", "yes", 1);
  setenv("UVMRT_BUFFERED_SWAP", "on", 1);
  setenv("UVMRT_IN_THREAD_FAULTS", "true", 1);
  setenv("UVMRT_LOG", "warn", 1);
  absl::StatusOr<Options> o = OptionsFromEnv();
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->budget_bytes, size_t{32} << 20);
  EXPECT_EQ(o->swap_bytes, size_t{1} << 30);
  EXPECT_EQ(o->swap_path, "/tmp");
  EXPECT_EQ(o->cluster_pages, 64);
  EXPECT_EQ(o->fault_threads, 3);
  EXPECT_TRUE(o->overcommit);
  EXPECT_TRUE(o->allow_buffered_swap);
  EXPECT_TRUE(o->in_thread_faults);
}

TEST_F(EnvTest, TheDocumentedMessage) {
  EXPECT_EQ(ErrorFor("UVMRT_BUDGET", "12Q"),
            "uvmrt: UVMRT_BUDGET=\"12Q\": not a size; use a number with an optional K, M or G "
            "suffix (e.g. 512M)");
}

TEST_F(EnvTest, BadValuesNameTheirVariable) {
  const std::pair<const char*, const char*> bad[] = {
      {"UVMRT_BUDGET", ""},
      {"UVMRT_BUDGET", "1.5G"},
      {"UVMRT_BUDGET", "-1"},
      {"UVMRT_BUDGET", "16 M"},
      {"UVMRT_BUDGET", "16MB"},
      {"UVMRT_BUDGET", "512K"},
      {"UVMRT_BUDGET", "99999999999999999999"},
      {"UVMRT_BUDGET", "99999999999G"},
      {"UVMRT_SWAP_SIZE", "lots"},
      {"UVMRT_SWAP_SIZE", "4K"},
      {"UVMRT_SWAP_PATH", ""},
      {"UVMRT_SWAP_PATH", "/nonexistent-uvmrt-dir/swap"},
      {"UVMRT_SWAP_PATH", "/etc/passwd"},
      {"UVMRT_SWAP_PATH", "/dev/shm"},
      {"UVMRT_LOG", "verbose"},
      {"UVMRT_LOG", "INFO"},
      {"UVMRT_LOG", ""},
      {"UVMRT_CLUSTER_PAGES", "0"},
      {"UVMRT_CLUSTER_PAGES", "257"},
      {"UVMRT_CLUSTER_PAGES", "16x"},
      {"UVMRT_FAULT_THREADS", "0"},
      {"UVMRT_FAULT_THREADS", "65"},
      {"UVMRT_OVERCOMMIT", "maybe"},
      {"UVMRT_BUFFERED_SWAP", "2"},
      {"UVMRT_IN_THREAD_FAULTS", "sigbus"},
      {"UVMRT_RESERVE", "1X"},
      {"UVMRT_RESERVE", "1M"},
  };
  for (const auto& [name, value] : bad) {
    const std::string err = ErrorFor(name, value);
    const std::string prefix = std::string("uvmrt: ") + name + "=\"" + value + "\": ";
    EXPECT_EQ(err.rfind(prefix, 0), 0u) << name << "=" << value << " gave: " << err;
    EXPECT_EQ(err.find('\n'), std::string::npos) << err;
    EXPECT_GT(err.size(), prefix.size() + 5) << err;
  }
}

TEST_F(EnvTest, EveryLogLevel) {
  for (const char* l : {"trace", "debug", "info", "warn", "error", "off"}) {
    EXPECT_EQ(ErrorFor("UVMRT_LOG", l), "") << l;
  }
}

TEST_F(EnvTest, SwapSizeMinimumFollowsTheClusterSize) {
  setenv("UVMRT_CLUSTER_PAGES", "4", 1);
  EXPECT_EQ(ErrorFor("UVMRT_SWAP_SIZE", "20K"), "");
  EXPECT_NE(ErrorFor("UVMRT_SWAP_SIZE", "16K"), "");
}

TEST_F(EnvTest, ReserveIsASize) {
  setenv("UVMRT_RESERVE", "8G", 1);
  absl::StatusOr<std::optional<size_t>> r = ReserveFromEnv();
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ(**r, size_t{8} << 30);
  unsetenv("UVMRT_RESERVE");
  r = ReserveFromEnv();
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->has_value());
}

TEST_F(EnvTest, UnknownVariablesAreReportedNotFatal) {
  setenv("UVMRT_BUDGT", "1G", 1);
  setenv("UVMRT_TEST_SCALE", "small", 1);
  const std::vector<std::string> unknown = UnknownEnvVariables();
  ASSERT_EQ(unknown.size(), 1u);
  EXPECT_EQ(unknown[0], "UVMRT_BUDGT");
  ::testing::internal::CaptureStderr();
  absl::StatusOr<Options> o = OptionsFromEnv();
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_TRUE(o.ok()) << o.status();
  EXPECT_NE(err.find("UVMRT_BUDGT"), std::string::npos) << err;
  EXPECT_EQ(err.find("UVMRT_TEST_SCALE"), std::string::npos) << err;
}

TEST(ParseSizeTest, Direct) {
  EXPECT_EQ(*ParseSize("X", "0"), 0u);
  EXPECT_EQ(*ParseSize("X", "7k"), 7u << 10);
  EXPECT_FALSE(ParseSize("X", "k").ok());
  EXPECT_FALSE(ParseSize("X", "1KK").ok());
  EXPECT_FALSE(ParseSize("X", " 1").ok());
}

}  // namespace
}  // namespace uvmrt
