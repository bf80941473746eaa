// uvmstat_test: uvmstat reads the counters of this (live) process, and its
// figures match Runtime::GetStats().
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "uvmrt/runtime.h"

namespace uvmrt {
namespace {

using testing::kPage;

struct Result {
  int status = -1;
  std::string out;
};

// Runs uvmstat with `args`; stdout and stderr together.
Result RunUvmstat(const std::string& args) {
  const std::string cmd = std::string(UVMSTAT_PATH) + " " + args + " 2>&1";
  Result r;
  FILE* f = popen(cmd.c_str(), "r");
  if (f == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) r.out.append(buf, n);
  const int st = pclose(f);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

using Raw = std::map<std::string, int64_t>;

std::vector<Raw> ParseRaw(const std::string& out) {
  std::vector<Raw> rows;
  for (absl::string_view line : absl::StrSplit(out, '\n', absl::SkipEmpty())) {
    Raw row;
    for (absl::string_view kv : absl::StrSplit(line, ' ', absl::SkipEmpty())) {
      std::pair<std::string, std::string> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
      int64_t v = 0;
      if (absl::SimpleAtoi(p.second, &v)) row[p.first] = v;
    }
    rows.push_back(row);
  }
  return rows;
}

// The counters of uvmrt_stats that uvmstat prints, by name.
Raw FromStats(const Stats& s) {
  Raw r;
  r["npages"] = s.npages;
  r["free"] = s.free;
  r["active"] = s.active;
  r["inactive"] = s.inactive;
  r["paging"] = s.paging;
  r["wired"] = s.wired;
  r["freemin"] = s.freemin;
  r["freetarg"] = s.freetarg;
  r["inactarg"] = s.inactarg;
  r["wiredmax"] = s.wiredmax;
  r["swpages"] = s.swpages;
  r["swpginuse"] = s.swpginuse;
  r["swpgonly"] = s.swpgonly;
  r["swpgbad"] = s.swpgbad;
  r["pdwoke"] = s.pdwoke;
  r["pdrevs"] = s.pdrevs;
  r["pdscans"] = s.pdscans;
  r["pdfreed"] = s.pdfreed;
  r["pdreact"] = s.pdreact;
  r["pdbusy"] = s.pdbusy;
  r["pdpageouts"] = s.pdpageouts;
  r["pdpending"] = s.pdpending;
  r["pddeact"] = s.pddeact;
  r["pdreacts_dirty"] = s.pdreacts_dirty;
  r["pgswapin"] = s.pgswapin;
  r["pgswapout"] = s.pgswapout;
  r["swapouterr"] = s.swapouterr;
  r["swapinerr"] = s.swapinerr;
  r["faults"] = s.faults;
  r["flt_zfill"] = s.flt_zfill;
  r["flt_swapin"] = s.flt_swapin;
  r["flt_react"] = s.flt_react;
  r["flt_wp"] = s.flt_wp;
  r["flt_busywait"] = s.flt_busywait;
  r["flt_uvmwait"] = s.flt_uvmwait;
  r["mapped_bytes"] = s.mapped_bytes;
  r["regions"] = s.regions;
  return r;
}

// Counters that only grow.
const char* const kMonotonic[] = {
    "pdwoke",     "pdrevs",    "pdscans",  "pdfreed",      "pdreact",    "pdbusy",
    "pdpageouts", "pddeact",   "pgswapin", "pgswapout",    "faults",     "flt_zfill",
    "flt_swapin", "flt_react", "flt_wp",   "flt_busywait", "flt_uvmwait"};

// Waits until two snapshots 300 ms apart agree, but for the page daemon's
// periodic wakeups: the runtime is idle.
Stats Quiescent(const Runtime& rt) {
  Stats prev = rt.GetStats();
  for (int i = 0; i < 50; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    Stats cur = rt.GetStats();
    Stats a = prev, b = cur;
    a.pdwoke = b.pdwoke = 0;
    if (std::memcmp(&a, &b, sizeof(a)) == 0) return cur;
    prev = cur;
  }
  return prev;
}

class UvmstatTest : public ::testing::Test {
 protected:
  void SetUp() override {
    budget_ = testing::test_budget();
    rt_ = testing::make_runtime(testing::test_options(budget_));
  }
  // Writes and reads `mult` x budget, `rounds` times.
  void Workload(size_t mult, int rounds, const std::atomic<bool>* stop = nullptr) {
    const size_t bytes = mult * budget_;
    auto m = rt_->Map(bytes);
    ASSERT_TRUE(m.ok()) << m.status();
    char* p = static_cast<char*>(*m);
    for (int r = 0; r < rounds && (stop == nullptr || !stop->load()); r++) {
      for (size_t pg = 0; pg < bytes / kPage; pg++) testing::fill_page(p + pg * kPage, pg, r);
      for (size_t pg = 0; pg < bytes / kPage; pg++) {
        ASSERT_EQ(testing::check_page(p + pg * kPage, pg, r), -1);
      }
    }
    ASSERT_TRUE(rt_->Unmap(p, bytes).ok());
  }
  size_t budget_ = 0;
  std::unique_ptr<Runtime> rt_;
};

TEST_F(UvmstatTest, RawMatchesStatsWhenIdle) {
  Workload(3, 1);
  auto m = rt_->Map(2 * budget_);  // leave something mapped and partly in swap
  ASSERT_TRUE(m.ok());
  for (size_t pg = 0; pg < 2 * budget_ / kPage; pg++) {
    testing::fill_page(static_cast<char*>(*m) + pg * kPage, pg, 9);
  }
  const Stats before = Quiescent(*rt_);
  const Result r = RunUvmstat(absl::StrFormat("--raw %d", getpid()));
  const Stats after = rt_->GetStats();
  ASSERT_EQ(r.status, 0) << r.out;
  const std::vector<Raw> rows = ParseRaw(r.out);
  ASSERT_EQ(rows.size(), 1u) << r.out;
  const Raw& raw = rows[0];
  EXPECT_EQ(raw.at("pid"), getpid());
  const Raw b = FromStats(before), a = FromStats(after);
  for (const auto& [name, v] : b) {
    ASSERT_TRUE(raw.count(name)) << "uvmstat does not print " << name << ":\n" << r.out;
    if (b.at(name) == a.at(name)) {
      EXPECT_EQ(raw.at(name), v) << name;
    } else {  // the daemon's 250 ms wakeup may tick pdwoke between the two
      EXPECT_GE(raw.at(name), std::min(b.at(name), a.at(name))) << name;
      EXPECT_LE(raw.at(name), std::max(b.at(name), a.at(name))) << name;
    }
  }
  EXPECT_GT(raw.at("pgswapout"), 0);
  EXPECT_EQ(raw.at("regions"), 1);
  // The frames are the budget less its bounce pages: a sixteenth, at most
  // 512 (architecture.md).
  const int64_t budget_pages = static_cast<int64_t>(budget_ / kPage);
  EXPECT_EQ(raw.at("npages"), budget_pages - std::min<int64_t>(512, budget_pages / 16));
  ASSERT_TRUE(rt_->Unmap(*m).ok());
}

TEST_F(UvmstatTest, RawFollowsALiveWorkload) {
  std::atomic<bool> stop{false};
  const Stats before = rt_->GetStats();
  std::thread w([&] { Workload(4, 1000, &stop); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const Result r = RunUvmstat(absl::StrFormat("--raw %d 0.2 4", getpid()));
  const Stats mid = rt_->GetStats();
  stop = true;
  w.join();
  ASSERT_EQ(r.status, 0) << r.out;
  const std::vector<Raw> rows = ParseRaw(r.out);
  ASSERT_EQ(rows.size(), 4u) << r.out;
  const Raw b = FromStats(before), a = FromStats(mid);
  for (const char* name : kMonotonic) {
    int64_t prev = b.at(name);
    for (const Raw& row : rows) {
      EXPECT_GE(row.at(name), prev) << name;
      prev = row.at(name);
    }
    EXPECT_LE(prev, a.at(name)) << name;
  }
  EXPECT_GT(rows.back().at("faults"), rows.front().at("faults"));
  EXPECT_GT(rows.back().at("pgswapout"), b.at("pgswapout"));
  for (const Raw& row : rows) {
    EXPECT_EQ(row.at("npages"), a.at("npages"));
    EXPECT_EQ(row.at("swpages"), a.at("swpages"));
    EXPECT_LE(row.at("free"), row.at("npages"));
    EXPECT_LE(row.at("swpginuse"), row.at("swpages"));
  }
}

TEST_F(UvmstatTest, TableOutput) {
  const Result r = RunUvmstat(absl::StrFormat("%d 0.1 3", getpid()));
  ASSERT_EQ(r.status, 0) << r.out;
  std::vector<std::string> lines = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 5u) << r.out;  // two header lines, three reports
  EXPECT_NE(lines[0].find("faults/s"), std::string::npos) << r.out;
  EXPECT_NE(lines[1].find("zfill"), std::string::npos) << r.out;
  EXPECT_NE(lines[1].find("inuse"), std::string::npos) << r.out;
  for (int i = 2; i < 5; i++) {
    std::vector<std::string> cols = absl::StrSplit(lines[i], ' ', absl::SkipEmpty());
    EXPECT_EQ(cols.size(), 15u) << lines[i];
    int64_t v;
    for (const std::string& c : cols) EXPECT_TRUE(absl::SimpleAtoi(c, &v)) << lines[i];
  }
  // The free column is the frame count as it stands.
  std::vector<std::string> cols = absl::StrSplit(lines[4], ' ', absl::SkipEmpty());
  EXPECT_EQ(cols[9], std::to_string(rt_->GetStats().free)) << r.out;
}

TEST_F(UvmstatTest, SeveralRuntimes) {
  EXPECT_EQ(rt_->StatsPath().rfind(absl::StrFormat("/dev/shm/uvmrt.%d.", getpid()), 0), 0u)
      << rt_->StatsPath();
  auto second = testing::make_runtime(testing::test_options(testing::test_budget() * 2));
  Result r = RunUvmstat(absl::StrFormat("--raw %d", getpid()));
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("choose with -n"), std::string::npos) << r.out;
  // Pick the second runtime by its file's number.
  const std::string path = second->StatsPath();
  ASSERT_FALSE(path.empty());
  const std::string n = path.substr(path.rfind('.') + 1);
  r = RunUvmstat(absl::StrFormat("--raw -n %s %d", n, getpid()));
  ASSERT_EQ(r.status, 0) << r.out;
  std::vector<Raw> rows = ParseRaw(r.out);
  ASSERT_EQ(rows.size(), 1u) << r.out;
  EXPECT_EQ(rows[0].at("npages"), second->GetStats().npages);
  r = RunUvmstat(absl::StrFormat("--raw -f %s %d", path, getpid()));
  ASSERT_EQ(r.status, 0) << r.out;
  rows = ParseRaw(r.out);
  ASSERT_EQ(rows.size(), 1u) << r.out;
  EXPECT_EQ(rows[0].at("npages"), second->GetStats().npages);
}

TEST(UvmstatErrorsTest, ClearMessages) {
  Result r = RunUvmstat("999999999");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("no process 999999999"), std::string::npos) << r.out;
  // A live process without a runtime: this one, before it has any.
  r = RunUvmstat(absl::StrFormat("%d", getpid()));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("publishes no uvmrt counters"), std::string::npos) << r.out;
  r = RunUvmstat("notapid");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("not a process id"), std::string::npos) << r.out;
  r = RunUvmstat("-f /etc/passwd 1");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("/etc/passwd"), std::string::npos) << r.out;
  r = RunUvmstat("");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("usage"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace uvmrt
