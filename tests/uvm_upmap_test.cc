// uvm_upmap_test.cc: how the userfaultfd reader tells the runtime's own
// MADV_DONTNEED events from the application's (SelfRemoves, uvm_upmap.h),
// over a made-up table of mappings; and the mapping query itself, against
// this process's own mappings.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <map>

#include "gtest/gtest.h"
#include "uvm/uvm_upmap.h"

namespace uvmrt::uvm {
namespace {

constexpr uint64_t kPage = 4096;

// Mappings as [start, end), keyed by end, as a process's VMAs.
class Mappings {
 public:
  void add(uint64_t start, uint64_t end) { by_end_[end] = start; }
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

// The runtime's call over one mapping sends one event, its whole range.
TEST(SelfRemoves, OwnEventIsConsumedOnce) {
  Mappings m;
  m.add(P(0), P(1024));
  SelfRemoves s(m.query());
  s.add(P(64), P(128));
  EXPECT_TRUE(s.consume(P(64), P(128)));
  EXPECT_FALSE(s.consume(P(64), P(128))) << "the same range again is the application's";
  EXPECT_EQ(s.pending(), 0u);
}

// The application discards pages inside the range of the runtime's call
// while it is under way.  Its event is the application's (its pages must be
// discarded); taken for the runtime's, the runtime's own event would later
// match nothing and discard every page of the call's range.
TEST(SelfRemoves, ApplicationEventInsideTheRangeIsTheApplications) {
  Mappings m;
  m.add(P(0), P(1024));
  SelfRemoves s(m.query());
  s.add(P(64), P(128));
  EXPECT_FALSE(s.consume(P(96), P(112))) << "inside the range";
  EXPECT_FALSE(s.consume(P(64), P(80))) << "at the start of the range, ending inside it";
  EXPECT_FALSE(s.consume(P(112), P(128))) << "at the end of the range";
  EXPECT_TRUE(s.consume(P(64), P(128))) << "the runtime's own event";
  EXPECT_EQ(s.pending(), 0u);
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
  s.add(P(64), P(128));
  EXPECT_FALSE(s.consume(P(100), P(110))) << "not the next piece";
  EXPECT_TRUE(s.consume(P(64), P(100)));
  EXPECT_FALSE(s.consume(P(64), P(100))) << "that piece is taken";
  EXPECT_TRUE(s.consume(P(100), P(110)));
  EXPECT_FALSE(s.consume(P(124), P(128))) << "inside the last piece, after the gap";
  EXPECT_TRUE(s.consume(P(120), P(128)));
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

}  // namespace
}  // namespace uvmrt::uvm
