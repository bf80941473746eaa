// uvm_upmap_test.cc: how the userfaultfd reader tells the runtime's own
// MADV_DONTNEED events from the application's (SelfRemoves, uvm_upmap.h),
// over a made-up table of mappings; the mapping query itself, against this
// process's own mappings; and the runs a region's holes leave.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <map>
#include <utility>

#include "gtest/gtest.h"
#include "uvm/uvm_aobj.h"
#include "uvm/uvm_upmap.h"

namespace uvmrt::uvm {
namespace {

constexpr uint64_t kPage = 4096;

// Mappings as [start, end), keyed by end, as a process's VMAs.
class Mappings {
 public:
  void add(uint64_t start, uint64_t end) { by_end_[end] = start; }
  void clear() { by_end_.clear(); }
  bool from(uint64_t addr, uint64_t* start, uint64_t* end) const {
    auto it = by_end_.upper_bound(addr);
    if (it == by_end_.end()) return false;
    *start = it->second;
    *end = it->first;
    return true;
  }
  SelfRemoves::MappingQuery query() const {
    return [this](uint64_t addr, uint64_t* start, uint64_t* end) { return from(addr, start, end); };
  }

 private:
  std::map<uint64_t, uint64_t> by_end_;
};

constexpr uint64_t P(uint64_t n) {
  return 0x10000000 + n * kPage;
}

// The call returns and the reader retires it: nothing of it is left.
void Finish(SelfRemoves& s, uint64_t call) {
  s.returned(call);
  s.retire();
  EXPECT_EQ(s.pending(), 0u);
}

// The runtime's call over one mapping sends one event, its whole range.
TEST(SelfRemoves, OwnEventIsConsumedOnce) {
  Mappings m;
  m.add(P(0), P(1024));
  SelfRemoves s(m.query());
  const uint64_t call = s.add(P(64), P(128));
  EXPECT_TRUE(s.consume(P(64), P(128)));
  EXPECT_FALSE(s.consume(P(64), P(128))) << "the same range again is the application's";
  Finish(s, call);
}

// The application discards pages inside the range of the runtime's call
// while it is under way.  Its event is the application's (its pages must be
// discarded); taken for the runtime's, the runtime's own event would later
// match nothing and discard every page of the call's range.
TEST(SelfRemoves, ApplicationEventInsideTheRangeIsTheApplications) {
  Mappings m;
  m.add(P(0), P(1024));
  SelfRemoves s(m.query());
  const uint64_t call = s.add(P(64), P(128));
  EXPECT_FALSE(s.consume(P(96), P(112))) << "inside the range";
  EXPECT_FALSE(s.consume(P(64), P(80))) << "at the start of the range, ending inside it";
  EXPECT_FALSE(s.consume(P(112), P(128))) << "at the end of the range";
  EXPECT_TRUE(s.consume(P(64), P(128))) << "the runtime's own event";
  Finish(s, call);
}

// A range over several mappings (the application split a region with
// mprotect) sends one event per mapping, in order; a gap (unmapped) sends
// none.
TEST(SelfRemoves, RangeOverSeveralMappingsIsConsumedPieceByPiece) {
  Mappings m;
  m.add(P(0), P(100));
  m.add(P(100), P(110));
  m.add(P(120), P(1024));  // P(110)..P(120) is unmapped
  SelfRemoves s(m.query());
  const uint64_t call = s.add(P(64), P(128));
  EXPECT_FALSE(s.consume(P(100), P(110))) << "not the next piece";
  EXPECT_TRUE(s.consume(P(64), P(100)));
  EXPECT_FALSE(s.consume(P(64), P(100))) << "that piece is taken";
  EXPECT_TRUE(s.consume(P(100), P(110)));
  EXPECT_FALSE(s.consume(P(124), P(128))) << "inside the last piece, after the gap";
  EXPECT_TRUE(s.consume(P(120), P(128)));
  Finish(s, call);
}

// The mappings change after the call is made and before it sends its
// first event (mprotect of the middle): its first event ends at the split.
// The mappings asked for now match it.
TEST(SelfRemoves, EventMatchesTheMappingsNowAfterASplit) {
  Mappings m;
  m.add(P(0), P(1024));
  SelfRemoves s(m.query());
  const uint64_t call = s.add(P(64), P(128));
  m.clear();
  m.add(P(0), P(96));
  m.add(P(96), P(112));
  m.add(P(112), P(1024));
  EXPECT_FALSE(s.consume(P(64), P(80))) << "still not an event of the call";
  EXPECT_TRUE(s.consume(P(64), P(96)));
  EXPECT_TRUE(s.consume(P(96), P(112)));
  EXPECT_TRUE(s.consume(P(112), P(128)));
  Finish(s, call);
}

// A call over P(64)..P(128), one mapping, whose first event, its whole
// range, has been read; the call has not returned yet.
class CallUnderWay : public ::testing::Test {
 protected:
  void SetUp() override {
    m.add(P(0), P(1024));
    call = s.add(P(64), P(128));
    s.begin_batch();
    ASSERT_TRUE(s.consume(P(64), P(128)));
  }
  // The mappings become `maps`, as (start, end) page numbers.
  void Remap(std::initializer_list<std::pair<uint64_t, uint64_t>> maps) {
    m.clear();
    for (const auto& [a, b] : maps) m.add(P(a), P(b));
  }
  Mappings m;
  SelfRemoves s{m.query()};
  uint64_t call = 0;
};

// The application splits the mapping while the call waits for its event
// to be read (mprotect of P(100)..P(110)): the kernel unmaps up to the new
// end of the mapping, P(100), and goes on from there with an event per
// mapping, inside the range of the event before.  Those events are the
// call's; taken for the application's, they would discard live pages.
TEST_F(CallUnderWay, RepetitionAfterASplitIsTheCalls) {
  Remap({{0, 100}, {100, 110}, {110, 1024}});
  s.begin_batch();
  EXPECT_TRUE(s.consume(P(100), P(110)));
  s.begin_batch();
  EXPECT_TRUE(s.consume(P(110), P(128)));
  s.begin_batch();
  EXPECT_FALSE(s.consume(P(110), P(128))) << "the same event again is the application's";
  Finish(s, call);
}

// The same with part of the range unmapped while the call waits (munmap
// of P(90)..P(100)): the kernel goes on from the next mapping.
TEST_F(CallUnderWay, RepetitionAfterAPartialUnmapIsTheCalls) {
  Remap({{0, 90}, {100, 1024}});
  s.begin_batch();
  EXPECT_TRUE(s.consume(P(100), P(128)));
  Finish(s, call);
}

// An application discard inside the range the call has unmapped, while the
// call is still in progress, is the application's: it does not begin where
// a mapping begins.
TEST_F(CallUnderWay, DiscardInsideAnUnmappedRangeIsTheApplications) {
  s.begin_batch();
  EXPECT_FALSE(s.consume(P(80), P(96)));
  EXPECT_FALSE(s.consume(P(96), P(128)));
  Finish(s, call);
}

// A call that returned before a read began sent none of that read's
// events: there are no repetitions of it.
TEST_F(CallUnderWay, ReturnedCallSendsNoMoreEvents) {
  s.returned(call);
  Remap({{0, 100}, {100, 1024}});
  s.begin_batch();
  EXPECT_FALSE(s.consume(P(100), P(128))) << "read after the call returned";
  s.retire();
  EXPECT_EQ(s.pending(), 0u);
}

// What a call never sent (its range unmapped meanwhile) is forgotten once
// it has returned and the reader has applied what it read; until then its
// pieces are still expected.
TEST(SelfRemoves, ReturnedCallsAreRetired) {
  Mappings m;
  m.add(P(0), P(100));
  SelfRemoves s(m.query());
  const uint64_t a = s.add(P(64), P(128));  // P(100)..P(128) unmapped: one event
  const uint64_t b = s.add(P(200), P(264));
  s.retire();
  EXPECT_EQ(s.pending(), 2u) << "retired before returning";
  s.returned(a);
  EXPECT_TRUE(s.consume(P(64), P(100))) << "read before the return, applied after it";
  s.retire();
  EXPECT_EQ(s.pending(), 1u);
  EXPECT_FALSE(s.consume(P(100), P(128)));
  s.returned(b);
  s.retire();
  EXPECT_EQ(s.pending(), 0u);
}

// A region's holes (parts the application unmapped) bound the runs of
// pages the runtime maps or unmaps in one call.
TEST(RegionHoles, LiveRunsStopAtHoles) {
  Region r(P(0), 1024, 0);
  EXPECT_EQ(r.live_from(10, 100), 10u) << "no holes";
  EXPECT_EQ(r.live_end(10, 100), 100u);
  r.add_hole(40, 8);
  r.add_hole(48, 2);  // adjoining: one gap of 10 pages
  r.add_hole(90, 1);
  EXPECT_EQ(r.live_end(10, 100), 40u);
  EXPECT_EQ(r.live_from(40, 100), 50u) << "over both adjoining holes";
  EXPECT_EQ(r.live_end(50, 100), 90u);
  EXPECT_EQ(r.live_from(90, 100), 91u);
  EXPECT_EQ(r.live_end(91, 100), 100u);
  EXPECT_EQ(r.live_from(90, 91), 91u) << "a range that is all hole";
  EXPECT_EQ(r.live_end(44, 100), 44u) << "from inside a hole: an empty run";
}

// The query finds this process's own mappings: the one that covers an
// address, else the next one above it.
TEST(MappingFrom, FindsTheMappingAtOrAboveAnAddress) {
  const int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  char* base = static_cast<char*>(
      mmap(nullptr, 8 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(base, MAP_FAILED);
  // Split it: [0, 2) read-write, [2, 3) unmapped, [3, 5) read-only, [5, 8)
  // read-write.
  ASSERT_EQ(munmap(base + 2 * kPage, kPage), 0);
  ASSERT_EQ(mprotect(base + 3 * kPage, 2 * kPage, PROT_READ), 0);
  const uint64_t b = reinterpret_cast<uint64_t>(base);
  uint64_t s = 0, e = 0;
  ASSERT_TRUE(uvm_mapping_from(fd, b + kPage, &s, &e));
  EXPECT_EQ(e, b + 2 * kPage);
  EXPECT_LE(s, b);
  ASSERT_TRUE(uvm_mapping_from(fd, b + 2 * kPage, &s, &e)) << "in the gap: the next mapping";
  EXPECT_EQ(s, b + 3 * kPage);
  EXPECT_EQ(e, b + 5 * kPage);
  ASSERT_TRUE(uvm_mapping_from(fd, b + 5 * kPage, &s, &e));
  EXPECT_EQ(s, b + 5 * kPage);
  EXPECT_GE(e, b + 8 * kPage);
  munmap(base, 2 * kPage);
  munmap(base + 3 * kPage, 5 * kPage);
  close(fd);
}

// The cheap query (PROCMAP_QUERY) is found on kernels from 6.11, and on
// no descriptor but that of a maps file.
TEST(MappingFrom, FastQueryIsFoundWhereTheKernelHasIt) {
  utsname u{};
  ASSERT_EQ(uname(&u), 0);
  int major = 0, minor = 0;
  ASSERT_EQ(sscanf(u.release, "%d.%d", &major, &minor), 2);
  const int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(uvm_mapping_query_fast(fd), major > 6 || (major == 6 && minor >= 11)) << u.release;
  EXPECT_FALSE(uvm_mapping_query_fast(-1));
  const int other = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(other, 0);
  EXPECT_FALSE(uvm_mapping_query_fast(other));
  close(other);
  close(fd);
}

}  // namespace
}  // namespace uvmrt::uvm
