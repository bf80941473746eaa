// uvm_pdaemon_test.cc: the page daemon (uvm_pdaemon.cc), aiodone
// (io/uvm_aiodone.cc), the fault paths (uvm_fault.cc) and uao_detach, driven
// deterministically: no daemon threads, a FakePmap, and a FakeSwapDev whose
// writes complete only when a test says so.
//
// Most tests start from the same scene (Scene()): a 64-frame budget and one
// 60-page region with random-access advice (no fault-around; it has tests of
// its own), every page written (zero-fill, then a per-page pattern).
// uvmpd_tune gives freemin 4 and freetarg 5, so with 4 free frames the daemon
// scans; the inactive scan stops once free + paging >= 4 * freetarg = 20, and
// a pass computes inactarg = (active + inactive) / 3 = 20.  Then:
//   pass 1: the inactive queue is empty; the active scan deactivates pages
//           0..19 (the oldest), unmapping them in one batch.
//   pass 2: pages 0..19 are dirty: with 8-page clusters, 0..7 go to slots
//           1..8 and 8..15 to slots 9..16; then free + paging = 20 and the
//           scan stops (16..19 stay dirty).
//   complete the writes (aiodone): 0..15 are clean.
//   pass 3: the clean pages 0..15 are freed without I/O.
// Each test states the rule of the port it checks.
#include <errno.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <future>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/fake_pmap.h"
#include "tests/fake_swapdev.h"
#include "tests/uvm_test_peer.h"
#include "uvm/uvm.h"

namespace uvmrt::uvm {

namespace {

using ::uvmrt::testing::FakePmap;
using ::uvmrt::testing::FakeSwapDev;

// The page contents a test writes to page idx (salt tells writes apart).
std::string Pattern(uint64_t idx, uint64_t salt = 0) {
  std::string s(PAGE_SIZE, '\0');
  uint64_t x = (idx + 1) * 0x9E3779B97F4A7C15ULL ^ (salt + 1) * 0xD1B54A32D192ED03ULL;
  for (size_t i = 0; i < PAGE_SIZE; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s[i] = static_cast<char>(x);
  }
  return s;
}

class PdaemonTest : public ::testing::Test {
 protected:
  void Init(uint64_t npages, int cluster, uint64_t nslots, bool overcommit = false) {
    npages_ = npages;
    nslots_ = nslots;
    uvm_.reset();
    dev_ = std::make_unique<FakeSwapDev>(nslots);
    uvm_params params{npages, cluster, overcommit};
    params.bounce_pages = bounce_pages_;
    uvm_ = std::make_unique<Uvm>(params, &pmap_, dev_.get());
  }
  uint64_t bounce_pages_ = 0;  // for the next Init

  void TearDown() override {
    if (uvm_ == nullptr) return;
    // Finish every write still in flight, so no swapio leaks and no page is
    // left busy.
    CompleteWrites();
  }

  std::shared_ptr<Region> Map(uint64_t npages) {
    absl::StatusOr<std::shared_ptr<Region>> r = uvm_->uao_create(npages);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return nullptr;
    regions_.push_back(*r);
    return *r;
  }

  // => no page of r is busy (uao_detach would wait for it for ever).
  void Detach(const std::shared_ptr<Region>& r) {
    ASSERT_EQ(dev_->pending(), 0u) << "detach would wait for a write that never completes";
    for (uint64_t i = 0; i < r->npages(); i++) {
      ASSERT_FALSE(Flags(*r, i) & PG_BUSY) << "page " << i << " is still busy: detach would hang";
    }
    EXPECT_TRUE(uvm_->uao_detach(r->base(), r->bytes()).ok());
    std::erase(regions_, r);
  }

  void Fault(Region& r, uint64_t idx, fault_access access) {
    absl::Status st = uvm_->uvm_fault(r, idx, access);
    EXPECT_TRUE(st.ok()) << "fault on page " << idx << ": " << st;
  }

  // The scene described at the top of the file, before any pass.
  std::shared_ptr<Region> Scene(int cluster = 8, uint64_t nslots = 64) {
    Init(64, cluster, nslots);
    EXPECT_EQ(uvm_->exp().freemin.load(), 4);
    EXPECT_EQ(uvm_->exp().freetarg.load(), 5);
    std::shared_ptr<Region> r = Map(60);
    r->set_advice(Region::ADV_RANDOM);
    for (uint64_t i = 0; i < 60; i++) {
      Fault(*r, i, FAULT_WRITE);
      Fill(*r, i);
    }
    EXPECT_EQ(uvm_->exp().free.load(), 4);
    EXPECT_EQ(uvm_->exp().active.load(), 60);
    return r;
  }

  // Scene, pass 1 and pass 2: pages 0..15 in two writes in flight.
  std::shared_ptr<Region> SceneWithWritesInFlight(int cluster = 8, uint64_t nslots = 64) {
    std::shared_ptr<Region> r = Scene(cluster, nslots);
    uvm_->uvmpd_pass();
    uvm_->uvmpd_pass();
    return r;
  }

  // ... and then the writes completed and pass 3: pages 0..15 only in swap.
  std::shared_ptr<Region> SceneEvicted() {
    std::shared_ptr<Region> r = SceneWithWritesInFlight();
    EXPECT_EQ(CompleteWrites(), 2u);
    uvm_->uvmpd_pass();
    for (uint64_t i = 0; i < 16; i++) EXPECT_EQ(Entry(*r, i).frame, kNoFrame) << "page " << i;
    return r;
  }

  // Completes up to n pending writes with `result` and runs aiodone on them,
  // as the aiodone thread would.  Returns how many were completed.
  size_t CompleteWrites(int64_t result = FakeSwapDev::kFull, size_t n = SIZE_MAX) {
    const size_t done = dev_->Complete(result, n);
    if (done == 0) return 0;
    std::vector<io::Completion> out;
    dev_->Reap(&out);
    EXPECT_EQ(out.size(), done);
    for (const io::Completion& c : out) {
      uvm_->uvm_aio_aiodone(static_cast<swapio*>(c.cookie), c.result);
    }
    return out.size();
  }

  pgent Entry(Region& r, uint64_t idx) {
    Chunk& c = r.chunk_of(idx);
    MutexLock l(&c.vmobjlock);
    return c.ent == nullptr ? pgent{} : c.ent[idx & kChunkMask];
  }
  vm_page* Page(Region& r, uint64_t idx) {
    const pgent e = Entry(r, idx);
    return e.frame == kNoFrame ? nullptr : uvm_->frame(e.frame);
  }
  // The page's flags, or 0 if it is not resident.
  uint32_t Flags(Region& r, uint64_t idx) {
    vm_page* pg = Page(r, idx);
    return pg == nullptr ? 0 : pg->flags();
  }
  // Sets or clears flag bits on a resident page, under its owner lock.
  void SetBits(Region& r, uint64_t idx, uint32_t bits) {
    Chunk& c = r.chunk_of(idx);
    MutexLock l(&c.vmobjlock);
    ASSERT_NE(c.ent[idx & kChunkMask].frame, kNoFrame);
    uvm_->frame(c.ent[idx & kChunkMask].frame)->setbits(bits);
  }
  void Unbusy(Region& r, uint64_t idx) {
    Chunk& c = r.chunk_of(idx);
    MutexLock l(&c.vmobjlock);
    ASSERT_NE(c.ent[idx & kChunkMask].frame, kNoFrame);
    Uvm::uvm_page_unbusy(c, uvm_->frame(c.ent[idx & kChunkMask].frame));
  }

  // The application's writes: through the direct view, which is the same
  // memory in the fake.
  void Fill(Region& r, uint64_t idx, uint64_t salt = 0) {
    std::memcpy(pmap_.direct(r, idx), Pattern(idx, salt).data(), PAGE_SIZE);
  }
  bool Holds(Region& r, uint64_t idx, uint64_t salt = 0) {
    return std::memcmp(pmap_.direct(r, idx), Pattern(idx, salt).data(), PAGE_SIZE) == 0;
  }
  // All n bounce pages are free: none is kept by a finished read or write.
  void ExpectBouncePagesFree(uint64_t n, const char* what) {
    char* all = uvm_->uvm_swap_allocpages(n);
    EXPECT_NE(all, nullptr) << what;
    if (all != nullptr) uvm_->uvm_swap_freepages(all, n);
  }
  bool Poisoned(Region& r, uint64_t idx) {
    const std::string poison(PAGE_SIZE, static_cast<char>(FakePmap::kPoisonByte));
    return std::memcmp(pmap_.direct(r, idx), poison.data(), PAGE_SIZE) == 0;
  }

  // Checks one submitted write: its slot, its pages (in order) and their
  // data, and that each page's entry names its slot.
  void ExpectWrite(const FakeSwapDev::Write& w, uint64_t slot, Region& r,
                   const std::vector<uint64_t>& idxs, uint64_t salt = 0) {
    EXPECT_EQ(w.slot, slot);
    ASSERT_EQ(w.npages, static_cast<int>(idxs.size()));
    for (size_t i = 0; i < idxs.size(); i++) {
      EXPECT_TRUE(
          std::memcmp(w.page(static_cast<int>(i)), Pattern(idxs[i], salt).data(), PAGE_SIZE) == 0)
          << "write at slot " << slot << ": page " << i << " is not page " << idxs[i] << "'s data";
      EXPECT_EQ(Entry(r, idxs[i]).swslot, slot + i) << "page " << idxs[i];
    }
  }

  static std::vector<uint64_t> Range(uint64_t first, uint64_t n) {
    std::vector<uint64_t> v;
    for (uint64_t i = first; i < first + n; i++) v.push_back(i);
    return v;
  }

  static std::vector<uint64_t> Offsets(const std::vector<vm_page*>& pages) {
    std::vector<uint64_t> v;
    for (vm_page* p : pages) v.push_back(p->offset);
    return v;
  }

  // The invariants that hold between passes, when no cluster is being built:
  // queues, counters, entries and swap slots all agree.
  std::shared_ptr<Region> OldAndYoungInOneWindow();

  void ExpectConsistent() {
    const UvmTestPeer::Walk act = UvmTestPeer::WalkActive(*uvm_);
    const UvmTestPeer::Walk inact = UvmTestPeer::WalkInactive(*uvm_);
    const UvmTestPeer::Walk fr = UvmTestPeer::WalkFree(*uvm_);
    EXPECT_TRUE(act.links_ok && inact.links_ok && fr.links_ok) << "a queue's links are broken";
    EXPECT_TRUE(act.markers.empty()) << "a marker was left on the active queue";
    EXPECT_TRUE(inact.markers.empty()) << "a marker was left on the inactive queue";
    EXPECT_EQ(static_cast<int64_t>(act.pages.size()), uvm_->exp().active.load());
    EXPECT_EQ(static_cast<int64_t>(inact.pages.size()), uvm_->exp().inactive.load());
    EXPECT_EQ(static_cast<int64_t>(fr.pages.size()), uvm_->exp().free.load());
    EXPECT_EQ(act.pages.size() + inact.pages.size() + fr.pages.size(), npages_);
    for (vm_page* p : act.pages) {
      EXPECT_EQ(p->flags() & (PQ_ACTIVE | PQ_INACTIVE | PQ_FREE), PQ_ACTIVE) << p->offset;
    }
    for (vm_page* p : inact.pages) {
      EXPECT_EQ(p->flags() & (PQ_ACTIVE | PQ_INACTIVE | PQ_FREE), PQ_INACTIVE) << p->offset;
    }
    for (vm_page* p : fr.pages) {
      EXPECT_EQ(p->flags(), PQ_FREE);
      EXPECT_EQ(p->uobject, nullptr);
    }

    std::set<uint32_t> frames, slots;
    int64_t swponly = 0;
    for (const std::shared_ptr<Region>& r : regions_) {
      for (uint64_t i = 0; i < r->npages(); i++) {
        const pgent e = Entry(*r, i);
        if (e.frame != kNoFrame) {
          EXPECT_TRUE(frames.insert(e.frame).second) << "frame " << e.frame << " twice";
          vm_page* pg = uvm_->frame(e.frame);
          EXPECT_EQ(pg->uobject, r.get()) << "page " << i;
          EXPECT_EQ(pg->offset, i);
          EXPECT_TRUE(pg->flags() & (PQ_ACTIVE | PQ_INACTIVE)) << "page " << i << " not queued";
          if (pg->flags() & PG_CLEAN) {
            EXPECT_NE(e.swslot, 0u) << "clean page " << i << " has no slot";
          }
        }
        if (e.swslot != 0) {
          EXPECT_TRUE(slots.insert(e.swslot).second) << "slot " << e.swslot << " twice";
          EXPECT_LE(e.swslot, nslots_);
          EXPECT_TRUE(UvmTestPeer::Allocated(*uvm_, e.swslot)) << "slot " << e.swslot;
          EXPECT_FALSE(UvmTestPeer::Bad(*uvm_, e.swslot)) << "slot " << e.swslot;
          if (e.frame == kNoFrame) swponly++;
        }
      }
    }
    EXPECT_EQ(static_cast<int64_t>(frames.size()),
              uvm_->exp().active.load() + uvm_->exp().inactive.load());
    EXPECT_EQ(uvm_->exp().swpgonly.load(), swponly);
    EXPECT_EQ(uvm_->exp().swpginuse.load(),
              static_cast<int64_t>(slots.size()) + uvm_->exp().swpgbad.load())
        << "a slot leaked (or was freed twice)";
    EXPECT_EQ(UvmTestPeer::CountAllocated(*uvm_, nslots_), uvm_->exp().swpginuse.load());
    EXPECT_GE(uvm_->exp().paging.load(), 0);
  }

  uint64_t npages_ = 0;
  uint64_t nslots_ = 0;
  FakePmap pmap_;
  std::unique_ptr<FakeSwapDev> dev_;
  std::vector<std::shared_ptr<Region>> regions_;
  std::unique_ptr<Uvm> uvm_;
};

// ---- 1. uvmpd_tune ----

// freemin = max(npages / 30, 16 KiB); freetarg = max(freemin * 4 / 3,
// freemin + 1); wiredmax = npages / 3; inactarg = freetarg + 1 until a pass
// recomputes it as max((active + inactive) / 3, freetarg + 1).
TEST_F(PdaemonTest, TuneFormulas) {
  struct Case {
    uint64_t npages;
    int64_t freemin, freetarg, wiredmax;
  };
  const Case cases[] = {
      {1, 4, 5, 0},                // the 16 KiB floor: 4 pages
      {64, 4, 5, 21},              //
      {119, 4, 5, 39},             // 119 / 30 = 3: still the floor
      {120, 4, 5, 40},             // 120 / 30 = 4
      {150, 5, 6, 50},             // the first budget above the floor; 20/3 = 6
      {3000, 100, 133, 1000},      //
      {30000, 1000, 1333, 10000},  //
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << "npages " << c.npages);
    Init(c.npages, 8, 64);
    EXPECT_EQ(uvm_->exp().npages.load(), static_cast<int64_t>(c.npages));
    EXPECT_EQ(uvm_->exp().freemin.load(), c.freemin);
    EXPECT_EQ(uvm_->exp().freetarg.load(), c.freetarg);
    EXPECT_EQ(uvm_->exp().wiredmax.load(), c.wiredmax);
    EXPECT_EQ(uvm_->exp().inactarg.load(), c.freetarg + 1);
  }

  // inactarg after a pass: a third of the queued pages...
  Init(3000, 8, 64);
  std::shared_ptr<Region> r = Map(2000);
  for (uint64_t i = 0; i < 2000; i++) Fault(*r, i, FAULT_WRITE);
  uvm_->uvmpd_pass();  // free (1000) >= freetarg, but inactive (0) < inactarg
  EXPECT_EQ(uvm_->exp().inactarg.load(), 666);
  EXPECT_EQ(uvm_->exp().inactive.load(), 666);
  EXPECT_EQ(uvm_->exp().pdrevs.load(), 1);
  ExpectConsistent();
  regions_.clear();

  // ... but never below freetarg + 1.
  Init(64, 8, 64);
  r = Map(12);
  for (uint64_t i = 0; i < 12; i++) Fault(*r, i, FAULT_WRITE);
  uvm_->uvmpd_pass();
  EXPECT_EQ(uvm_->exp().inactarg.load(), 6);  // 12 / 3 = 4 <= freetarg 5
  EXPECT_EQ(uvm_->exp().inactive.load(), 6);
  ExpectConsistent();
}

TEST_F(PdaemonTest, PassDoesNotScanWhenTargetsAreMet) {
  Init(64, 8, 64);
  std::shared_ptr<Region> r = Map(12);
  for (uint64_t i = 0; i < 12; i++) Fault(*r, i, FAULT_WRITE);
  uvm_->uvmpd_pass();
  ASSERT_EQ(uvm_->exp().pdrevs.load(), 1);
  // free (52) >= freetarg and inactive (6) >= inactarg (6): nothing to do.
  uvm_->uvmpd_pass();
  EXPECT_EQ(uvm_->exp().pdrevs.load(), 1);
  EXPECT_EQ(uvm_->exp().pddeact.load(), 6);
  ExpectConsistent();
}

// ---- 2. the active scan ----

// Deactivates the oldest active pages until inactive reaches inactarg: each is
// unmapped (pmap remove, one call per contiguous run of a batch), moved to the
// inactive queue, its reference cleared.
TEST_F(PdaemonTest, ActiveScanDeactivatesUpToInactarg) {
  std::shared_ptr<Region> r = Scene();
  const int removes = pmap_.count(FakePmap::kRemove);
  uvm_->uvmpd_pass();

  EXPECT_EQ(uvm_->exp().pdrevs.load(), 1);
  EXPECT_EQ(uvm_->exp().inactarg.load(), 20);
  EXPECT_EQ(uvm_->exp().pddeact.load(), 20);
  EXPECT_EQ(uvm_->exp().inactive.load(), 20);
  EXPECT_EQ(uvm_->exp().active.load(), 40);
  EXPECT_EQ(pmap_.count(FakePmap::kRemove) - removes, 1) << "0..19 are one contiguous run";
  EXPECT_EQ(pmap_.pages(FakePmap::kRemove), 20u);
  for (uint64_t i = 0; i < 60; i++) {
    const uint32_t f = Flags(*r, i);
    if (i < 20) {
      EXPECT_TRUE(f & PQ_INACTIVE) << "page " << i;
      EXPECT_FALSE(f & PQ_ACTIVE) << "page " << i;
      EXPECT_FALSE(f & PG_PMAP_REF) << "page " << i << ": reference not cleared";
      EXPECT_FALSE(pmap_.mapped(*r, i)) << "page " << i << " still mapped";
    } else {
      EXPECT_TRUE(f & PQ_ACTIVE) << "page " << i;
      EXPECT_TRUE(pmap_.mapped(*r, i)) << "page " << i;
    }
  }
  // Oldest first, in order.
  EXPECT_EQ(Offsets(UvmTestPeer::WalkInactive(*uvm_).pages), Range(0, 20));
  EXPECT_EQ(dev_->submit_calls(), 0) << "the inactive queue was empty";
  EXPECT_EQ(uvm_->exp().free.load(), 4);
  ExpectConsistent();
}

// ---- 3. the marker iterator ----

// The scans hold their place with a PQ_ITER marker and skip other markers
// (another scanner's): none is taken for a page, and none is left behind.
TEST_F(PdaemonTest, ScansSkipForeignMarkersAndLeaveNoneBehind) {
  std::shared_ptr<Region> r = Scene();
  uvm_->uvmpd_pass();
  vm_page m1, m2, m3, m4;
  for (vm_page* m : {&m1, &m2, &m3, &m4}) m->pg_flags.store(PQ_ITER);
  UvmTestPeer::InsertMarker(*uvm_, false, nullptr, &m1);      // inactive head
  UvmTestPeer::InsertMarker(*uvm_, false, Page(*r, 9), &m2);  // after page 9
  UvmTestPeer::InsertMarker(*uvm_, true, nullptr, &m3);       // active head
  UvmTestPeer::InsertMarker(*uvm_, true, Page(*r, 59), &m4);  // active tail
  SetBits(*r, 3, PG_PMAP_REF);

  uvm_->uvmpd_pass();

  // The inactive scan went past both markers: 0..2, 4..8 and 9..16 written.
  const std::vector<FakeSwapDev::Write> w = dev_->submitted();
  ASSERT_EQ(w.size(), 2u);
  ExpectWrite(w[0], 1, *r, {0, 1, 2, 4, 5, 6, 7, 8});
  ExpectWrite(w[1], 9, *r, {9, 10, 11, 12, 13, 14, 15, 16});
  EXPECT_EQ(uvm_->exp().pdreact.load(), 1);
  // The active scan went past m3: one page short (3 was reactivated).
  EXPECT_EQ(uvm_->exp().pddeact.load(), 21);
  EXPECT_TRUE(Flags(*r, 20) & PQ_INACTIVE);

  // Exactly our markers are left, where we put them.
  const UvmTestPeer::Walk act = UvmTestPeer::WalkActive(*uvm_);
  const UvmTestPeer::Walk inact = UvmTestPeer::WalkInactive(*uvm_);
  EXPECT_EQ(inact.markers, (std::vector<vm_page*>{&m1, &m2}));
  EXPECT_EQ(act.markers, (std::vector<vm_page*>{&m3, &m4}));
  for (vm_page* m : {&m1, &m2}) UvmTestPeer::RemoveMarker(*uvm_, false, m);
  for (vm_page* m : {&m3, &m4}) UvmTestPeer::RemoveMarker(*uvm_, true, m);
  CompleteWrites();
  ExpectConsistent();
}

// The active scan drops pageqlock around each page, and unmaps the pages it
// picked in batches (here of 64 pages) with no lock held; pages next to its
// marker may be dequeued or requeued meanwhile.  Here, while the first batch (0..63) is
// being unmapped, "another thread" deactivates page 64 and moves page 65 to
// the tail: the scan must go on with page 66 (a saved next pointer would
// follow page 64 onto the inactive queue and stop there).
TEST_F(PdaemonTest, ActiveScanSurvivesPagesMovedMidScan) {
  Init(256, 8, 64);
  std::shared_ptr<Region> r = Map(200);
  r->set_advice(Region::ADV_RANDOM);
  for (uint64_t i = 0; i < 200; i++) Fault(*r, i, FAULT_WRITE);
  UvmTestPeer::SetDeactivationBatch(*uvm_, 64);
  bool fired = false;
  pmap_.set_hook([&](const FakePmap::Call& c) {
    if (c.kind != FakePmap::kRemove || fired) return;
    fired = true;
    EXPECT_EQ(c.idx, 0u);
    EXPECT_EQ(c.n, 64u);
    vm_page* p63 = UvmTestPeer::Find(*uvm_, true, c.region, 63);
    ASSERT_NE(p63, nullptr);
    vm_page* p64 = UvmTestPeer::NextPage(*uvm_, p63);  // skips the scan's marker
    ASSERT_NE(p64, nullptr);
    vm_page* p65 = UvmTestPeer::NextPage(*uvm_, p64);
    ASSERT_NE(p65, nullptr);
    ASSERT_EQ(p64->offset, 64u);
    UvmTestPeer::Deactivate(*uvm_, p64);
    UvmTestPeer::Activate(*uvm_, p65);  // to the tail
  });
  UvmTestPeer::ScanActive(*uvm_, 70, 0);
  pmap_.set_hook(nullptr);

  ASSERT_TRUE(fired);
  EXPECT_EQ(uvm_->exp().pddeact.load(), 70);
  std::vector<uint64_t> want = {64};  // moved while 0..63 were being unmapped
  for (uint64_t i = 0; i < 64; i++) want.push_back(i);
  for (uint64_t i = 66; i < 72; i++) want.push_back(i);
  EXPECT_EQ(Offsets(UvmTestPeer::WalkInactive(*uvm_).pages), want);
  EXPECT_TRUE(Flags(*r, 65) & PQ_ACTIVE);
  EXPECT_EQ(UvmTestPeer::WalkActive(*uvm_).pages.back()->offset, 65u);
  for (uint64_t i = 66; i < 72; i++) EXPECT_FALSE(pmap_.mapped(*r, i)) << "page " << i;
  ExpectConsistent();
}

// Pages deactivated in a row, as after sequential access, are unmapped with
// one call, not one per 64-page window: a batch closes at 64 calls or 512
// pages.
TEST_F(PdaemonTest, ActiveScanUnmapsARunOfWindowsInOneCall) {
  Init(1024, 8, 64);
  std::shared_ptr<Region> r = Map(600);
  r->set_advice(Region::ADV_RANDOM);
  for (uint64_t i = 0; i < 600; i++) Fault(*r, i, FAULT_WRITE);
  UvmTestPeer::ScanActive(*uvm_, 256, 0);
  EXPECT_EQ(pmap_.ranges(FakePmap::kRemove),
            (std::vector<std::pair<uint64_t, uint64_t>>{{0, 256}}));
  EXPECT_EQ(uvm_->exp().pddeact.load(), 256);
  for (uint64_t i = 0; i < 600; i++) EXPECT_EQ(pmap_.mapped(*r, i), i >= 256) << "page " << i;
  ExpectConsistent();
}

// An unmapping call that unmapped nothing (made where the region no longer
// is: an mremap whose event the reader has not read) deactivates none of
// its pages: they stay active and mapped, where an inactive page still
// mapped would take writes after its pageout that its free would lose.
TEST_F(PdaemonTest, ActiveScanKeepsActiveWhatItCouldNotUnmap) {
  Init(1024, 8, 64);
  std::shared_ptr<Region> r = Map(600);
  r->set_advice(Region::ADV_RANDOM);
  for (uint64_t i = 0; i < 600; i++) Fault(*r, i, FAULT_WRITE);
  pmap_.MissNextRemoves(1);
  UvmTestPeer::ScanActive(*uvm_, 256, 0);
  EXPECT_EQ(pmap_.ranges(FakePmap::kRemove),
            (std::vector<std::pair<uint64_t, uint64_t>>{{0, 256}}));
  EXPECT_EQ(uvm_->exp().pddeact.load(), 0);
  EXPECT_EQ(uvm_->exp().inactive.load(), 0);
  for (uint64_t i = 0; i < 600; i++) {
    EXPECT_TRUE(Flags(*r, i) & PQ_ACTIVE) << "page " << i;
    EXPECT_FALSE(Flags(*r, i) & PG_DEACT) << "page " << i;
    EXPECT_TRUE(pmap_.mapped(*r, i)) << "page " << i;
  }
  ExpectConsistent();
  // The next scan, whose call unmaps, deactivates them.
  UvmTestPeer::ScanActive(*uvm_, 256, 0);
  EXPECT_EQ(uvm_->exp().pddeact.load(), 256);
  ExpectConsistent();
}

// The active scan takes with the page it picks the active pages of its
// 64-page window that are in the older half of the active queue, and unmaps
// them with one call per window, over the pages it leaves active too, which
// it then maps again.  Here it picks page 10 (the oldest): 11, 40, 50 and 55
// are old and go with it; 20..24 are the youngest and stay active and
// mapped, so the one call is 10..55.
TEST_F(PdaemonTest, ActiveScanDeactivatesOldNeighboursInOneCall) {
  Init(256, 8, 64);
  std::shared_ptr<Region> r = Map(200);
  r->set_advice(Region::ADV_RANDOM);
  std::vector<uint64_t> order = {10, 11, 40, 50, 55};      // oldest
  for (uint64_t i = 64; i < 100; i++) order.push_back(i);  // another window
  for (uint64_t i = 20; i < 25; i++) order.push_back(i);   // youngest
  for (uint64_t i : order) Fault(*r, i, FAULT_WRITE);
  const int removes = pmap_.count(FakePmap::kRemove);

  UvmTestPeer::ScanActive(*uvm_, 5, 0);

  EXPECT_EQ(uvm_->exp().pddeact.load(), 5);
  EXPECT_EQ(Offsets(UvmTestPeer::WalkInactive(*uvm_).pages),
            (std::vector<uint64_t>{10, 11, 40, 50, 55}));
  EXPECT_EQ(pmap_.ranges(FakePmap::kRemove, removes),
            (std::vector<std::pair<uint64_t, uint64_t>>{{10, 46}}));
  for (uint64_t i = 20; i < 25; i++) {
    EXPECT_TRUE(pmap_.mapped(*r, i)) << "page " << i;
    EXPECT_TRUE(Flags(*r, i) & PQ_ACTIVE) << "page " << i;
  }
  for (uint64_t i : {10, 11, 40, 50, 55}) EXPECT_FALSE(pmap_.mapped(*r, i)) << "page " << i;
  EXPECT_TRUE(pmap_.mapped(*r, 64));
  ExpectConsistent();
}

// A window of pages 0..63 whose oldest active pages are 10, 11, 40, 50 and
// 55 and youngest 20..24: a scan for 5 inactive pages picks the oldest and
// unmaps 10..55 with one call.
std::shared_ptr<Region> PdaemonTest::OldAndYoungInOneWindow() {
  Init(256, 8, 64);
  std::shared_ptr<Region> r = Map(200);
  r->set_advice(Region::ADV_RANDOM);
  for (uint64_t i : {10, 11, 40, 50, 55}) Fault(*r, i, FAULT_WRITE);  // oldest
  for (uint64_t i = 20; i < 25; i++) Fault(*r, i, FAULT_WRITE);       // youngest
  return r;
}

// Holds uvm_event_lock, as the userfaultfd reader does while it applies a
// batch of events, until Release().
class EventBatch {
 public:
  explicit EventBatch(Uvm& uvm) {
    std::promise<void> held;
    thread_ = std::thread([&] {
      WriterLock l(&uvm.uvm_event_lock());
      held.set_value();
      release_.get_future().wait();
    });
    held.get_future().wait();
  }
  ~EventBatch() { Release(); }
  void Release() {
    if (!thread_.joinable()) return;
    release_.set_value();
    thread_.join();
  }

 private:
  std::promise<void> release_;
  std::thread thread_;
};

// While the userfaultfd reader applies a batch of events (it holds
// uvm_event_lock), the scan maps nothing back: an application's
// MADV_DONTNEED returns once its event is read, and the reader may not yet
// have discarded the page.  It waits for the lock a moment at most, never
// for long (the reader may wait for its pageouts), and then leaves the
// pages it spanned active and unmapped; a touch maps them.
TEST_F(PdaemonTest, ActiveScanMapsNothingBackWhileEventsAreApplied) {
  std::shared_ptr<Region> r = OldAndYoungInOneWindow();

  EventBatch batch(*uvm_);
  const int enters = pmap_.count(FakePmap::kEnter);
  UvmTestPeer::ScanActive(*uvm_, 5, 0);  // returns while the lock is held
  EXPECT_EQ(pmap_.count(FakePmap::kEnter), enters)
      << "pages were mapped back while the reader held its lock";
  batch.Release();

  for (uint64_t i = 20; i < 25; i++) {
    EXPECT_FALSE(pmap_.mapped(*r, i)) << "page " << i;
    EXPECT_TRUE(Flags(*r, i) & PQ_ACTIVE) << "page " << i;
  }
  Fault(*r, 22, FAULT_READ);
  EXPECT_TRUE(pmap_.mapped(*r, 22));
  ExpectConsistent();
}

// The reader holds the lock only while it applies a batch's events: the
// scan waits that moment out and maps the pages back.
TEST_F(PdaemonTest, ActiveScanMapsBackOnceEventsAreApplied) {
  std::shared_ptr<Region> r = OldAndYoungInOneWindow();

  // The "reader" takes the lock when the scan's unmapping call is made and
  // lets go 100 us later, while the scan waits for it (here as long as it
  // takes, so that a slow machine cannot make it give up).
  UvmTestPeer::SetRemapWait(*uvm_, absl::Seconds(60));
  std::atomic<bool> applied{false};
  std::atomic<int> early{0};
  std::thread reader;
  pmap_.set_hook([&](const FakePmap::Call& c) {
    if (c.kind == FakePmap::kEnter && !applied.load()) early++;
    if (c.kind != FakePmap::kRemove || reader.joinable()) return;
    std::promise<void> held;
    reader = std::thread([&] {
      WriterLock l(&uvm_->uvm_event_lock());
      held.set_value();
      std::this_thread::sleep_for(std::chrono::microseconds(100));
      applied.store(true);
    });
    held.get_future().wait();
  });
  UvmTestPeer::ScanActive(*uvm_, 5, 0);
  pmap_.set_hook(nullptr);
  ASSERT_TRUE(reader.joinable());
  reader.join();

  EXPECT_EQ(early.load(), 0) << "pages were mapped back while the reader held its lock";
  for (uint64_t i = 20; i < 25; i++) {
    EXPECT_TRUE(pmap_.mapped(*r, i)) << "page " << i;
    EXPECT_TRUE(Flags(*r, i) & PQ_ACTIVE) << "page " << i;
  }
  ExpectConsistent();
}

// One unmapping call may run on into the next chunk (pages in a row join),
// and the pages it spans that stay active are mapped again by their own
// chunk's entries.  Here picked pages 511, 512 and 520 go out in one call
// over 511..520: 513 stays active and is mapped again; 514..519 have no
// frame and stay unmapped, though pages 2..7 of the first chunk, at the
// same places in their chunk, are resident and active.
TEST_F(PdaemonTest, ActiveScanMapsBackWhatItSpannedAcrossAChunk) {
  ASSERT_EQ(kChunkPages, 512u);
  Init(256, 8, 1024);
  std::shared_ptr<Region> r = Map(1024);
  r->set_advice(Region::ADV_RANDOM);
  std::vector<uint64_t> order = {511, 512, 520};  // oldest
  for (uint64_t i = 1; i < 8; i++) order.push_back(i);
  order.push_back(513);  // youngest
  for (uint64_t i : order) Fault(*r, i, FAULT_WRITE);
  const int removes = pmap_.count(FakePmap::kRemove);

  UvmTestPeer::ScanActive(*uvm_, 3, 0);

  EXPECT_EQ(Offsets(UvmTestPeer::WalkInactive(*uvm_).pages),
            (std::vector<uint64_t>{511, 512, 520}));
  EXPECT_EQ(pmap_.ranges(FakePmap::kRemove, removes),
            (std::vector<std::pair<uint64_t, uint64_t>>{{511, 10}}));
  EXPECT_TRUE(pmap_.mapped(*r, 513));
  EXPECT_TRUE(Flags(*r, 513) & PQ_ACTIVE);
  for (uint64_t i = 514; i < 520; i++) {
    EXPECT_EQ(Entry(*r, i).frame, kNoFrame) << "page " << i;
    EXPECT_FALSE(pmap_.mapped(*r, i)) << "page " << i << " has no frame, yet was mapped";
  }
  for (uint64_t i : {511, 512, 520}) EXPECT_FALSE(pmap_.mapped(*r, i)) << "page " << i;
  for (uint64_t i = 1; i < 8; i++) EXPECT_TRUE(pmap_.mapped(*r, i)) << "page " << i;
  ExpectConsistent();
}

// An unmapping call never spans a poisoned page: it would drop the mark, and
// the next touch would fault instead of raising SIGBUS.
TEST_F(PdaemonTest, ActiveScanDoesNotUnmapAcrossAPoisonedPage) {
  Init(256, 8, 64);
  std::shared_ptr<Region> r = Map(200);
  r->set_advice(Region::ADV_RANDOM);
  for (uint64_t i : {40, 50}) Fault(*r, i, FAULT_WRITE);
  for (uint64_t i = 64; i < 100; i++) Fault(*r, i, FAULT_WRITE);
  r->add_poisoned(45);
  const int removes = pmap_.count(FakePmap::kRemove);

  UvmTestPeer::ScanActive(*uvm_, 2, 0);

  EXPECT_EQ(pmap_.ranges(FakePmap::kRemove, removes),
            (std::vector<std::pair<uint64_t, uint64_t>>{{40, 1}, {50, 1}}));
  ExpectConsistent();
}

// A page the active scan picked but has not yet moved (PG_DEACT) and that is
// touched while it is being unmapped stays active: it was referenced.
TEST_F(PdaemonTest, PageTouchedWhileBeingDeactivatedStaysActive) {
  std::shared_ptr<Region> r = Scene();
  bool fired = false;
  pmap_.set_hook([&](const FakePmap::Call& c) {
    if (c.kind != FakePmap::kRemove || fired) return;
    fired = true;
    EXPECT_TRUE(Flags(*r, 5) & PG_DEACT);
    Fault(*r, 5, FAULT_READ);  // the application touches page 5 again
  });
  uvm_->uvmpd_pass();
  pmap_.set_hook(nullptr);

  ASSERT_TRUE(fired);
  EXPECT_EQ(uvm_->exp().pddeact.load(), 19);
  EXPECT_EQ(Flags(*r, 5) & (PQ_ACTIVE | PQ_INACTIVE | PG_DEACT), PQ_ACTIVE);
  EXPECT_TRUE(pmap_.mapped(*r, 5));
  for (uint64_t i = 0; i < 20; i++) {
    if (i != 5) {
      EXPECT_TRUE(Flags(*r, i) & PQ_INACTIVE) << "page " << i;
    }
    EXPECT_FALSE(Flags(*r, i) & PG_DEACT) << "page " << i;
  }
  ExpectConsistent();
}

// Regression test for a runtime bug found while writing these tests (fails at
// 4eb8be0, fixed in 534ed3b): uvmpd_deactivate_batch recorded (region, page)
// and read the page's offset only when it processed the batch, with no lock
// held in between.  If the application discards a picked page meanwhile
// (uvm_map_discard frees its frame: offset 0, uobject null) and the frame is
// reused, the batch unmapped and looked up the wrong page: here page 0, which
// it never picked and which the application has just mapped.  (Were the frame
// reused by a page past the end of the region, r.chunk_of(offset) would index
// past the region's chunks.)
TEST_F(PdaemonTest, BatchUnmapsOnlyThePagesItPicked) {
  Init(64, 8, 64);
  std::shared_ptr<Region> r = Map(60);
  r->set_advice(Region::ADV_RANDOM);
  for (uint64_t i : {10, 30, 31}) Fault(*r, i, FAULT_WRITE);  // active: 10, 30, 31
  bool fired = false;
  pmap_.set_hook([&](const FakePmap::Call& c) {
    if (c.kind != FakePmap::kRemove || fired) return;
    fired = true;
    // While page 10 is being unmapped: the application discards page 30 and
    // touches page 0, which gets page 30's frame.
    uvm_->uvm_map_discard(r->addr(30), r->addr(31));
    Fault(*r, 0, FAULT_WRITE);
  });
  UvmTestPeer::ScanActive(*uvm_, 3, 0);
  pmap_.set_hook(nullptr);
  ASSERT_TRUE(fired);

  // One call may span pages that had no frame when they were picked (11..29,
  // uvmpd_deactivate_window), never a page outside them.
  for (const auto& [idx, n] : pmap_.ranges(FakePmap::kRemove)) {
    for (uint64_t i = idx; i < idx + n; i++) {
      EXPECT_TRUE(i >= 10 && i <= 31)
          << "the scan unmapped page " << i << ", which it never picked";
    }
  }
  EXPECT_TRUE(pmap_.mapped(*r, 0)) << "page 0 was faulted in during the scan";
  EXPECT_TRUE(Flags(*r, 0) & PQ_ACTIVE);
  EXPECT_TRUE(Flags(*r, 31) & PQ_INACTIVE);
  EXPECT_FALSE(pmap_.mapped(*r, 31));
  EXPECT_EQ(Entry(*r, 3).frame, kNoFrame);
  ExpectConsistent();
}

// The same for the inactive scan: while it frees clean page 0, page 1 (next to
// its marker) is reactivated and page 59 deactivated onto the tail.  The scan
// must carry on with page 2 and reach page 59.
TEST_F(PdaemonTest, InactiveScanSurvivesPagesMovedMidScan) {
  std::shared_ptr<Region> r = SceneWithWritesInFlight();
  ASSERT_EQ(CompleteWrites(), 2u);  // 0..15 clean, 16..19 dirty
  bool fired = false;
  pmap_.set_hook([&](const FakePmap::Call& c) {
    if (c.kind != FakePmap::kRelease || fired) return;
    fired = true;
    // The clean pages 0..15 are freed as one batch when the scan reaches
    // the dirty page 16; until their frames are free they stay busy.
    EXPECT_EQ(c.idx, 0u);
    EXPECT_EQ(c.n, 16u);
    vm_page* p1 = UvmTestPeer::Find(*uvm_, false, c.region, 1);
    ASSERT_NE(p1, nullptr);
    EXPECT_TRUE(p1->flags() & PG_BUSY);
    // Meanwhile a fault reactivates 17, and 59 is deactivated.
    vm_page* p17 = UvmTestPeer::Find(*uvm_, false, c.region, 17);
    vm_page* p59 = UvmTestPeer::Find(*uvm_, true, c.region, 59);
    ASSERT_NE(p17, nullptr);
    ASSERT_NE(p59, nullptr);
    UvmTestPeer::Activate(*uvm_, p17);
    UvmTestPeer::Deactivate(*uvm_, p59);
  });
  uvm_->uvmpd_pass();
  pmap_.set_hook(nullptr);

  ASSERT_TRUE(fired);
  EXPECT_EQ(uvm_->exp().pdfreed.load(), 16);
  EXPECT_EQ(pmap_.count(FakePmap::kRelease), 1) << "one call for the batch";
  EXPECT_TRUE(Flags(*r, 17) & PQ_ACTIVE);
  // The batch counts toward the target as it is built: with free 4 + 16
  // batched = 20 = freetarg << 2 the scan stops at 16, and writes nothing.
  EXPECT_EQ(dev_->submitted().size(), 2u);
  EXPECT_EQ(uvm_->exp().free.load(), 20);
  EXPECT_TRUE(Flags(*r, 59) & PQ_INACTIVE);
  CompleteWrites();
  ExpectConsistent();
}

// ---- 4. referenced pages ----

// An inactive page whose reference bit is set goes back to the active queue
// (pdreact) and is not paged out.
TEST_F(PdaemonTest, ReferencedInactivePageIsReactivated) {
  std::shared_ptr<Region> r = Scene();
  uvm_->uvmpd_pass();
  SetBits(*r, 0, PG_PMAP_REF);
  SetBits(*r, 5, PG_PMAP_REF);
  uvm_->uvmpd_pass();

  EXPECT_EQ(uvm_->exp().pdreact.load(), 2);
  for (uint64_t i : {0, 5}) {
    EXPECT_EQ(Flags(*r, i) & (PQ_ACTIVE | PQ_INACTIVE | PG_BUSY), PQ_ACTIVE) << "page " << i;
    EXPECT_EQ(Entry(*r, i).swslot, 0u) << "page " << i << " was paged out";
  }
  // Reactivated pages go to the tail of the active queue, in scan order.
  const std::vector<vm_page*> act = UvmTestPeer::WalkActive(*uvm_).pages;
  ASSERT_GE(act.size(), 2u);
  EXPECT_EQ(act[act.size() - 2]->offset, 0u);
  EXPECT_EQ(act.back()->offset, 5u);
  const std::vector<FakeSwapDev::Write> w = dev_->submitted();
  ASSERT_EQ(w.size(), 2u);
  ExpectWrite(w[0], 1, *r, {1, 2, 3, 4, 6, 7, 8, 9});
  ExpectWrite(w[1], 9, *r, {10, 11, 12, 13, 14, 15, 16, 17});
  CompleteWrites();
  ExpectConsistent();
}

// ---- 5. busy pages ----

TEST_F(PdaemonTest, BusyInactivePageIsSkipped) {
  std::shared_ptr<Region> r = Scene();
  uvm_->uvmpd_pass();
  SetBits(*r, 2, PG_BUSY);
  uvm_->uvmpd_pass();

  EXPECT_EQ(uvm_->exp().pdbusy.load(), 1);
  EXPECT_TRUE(Flags(*r, 2) & PQ_INACTIVE);
  EXPECT_TRUE(Flags(*r, 2) & PG_BUSY);
  EXPECT_EQ(Entry(*r, 2).swslot, 0u);
  const std::vector<FakeSwapDev::Write> w = dev_->submitted();
  ASSERT_EQ(w.size(), 2u);
  ExpectWrite(w[0], 1, *r, {0, 1, 3, 4, 5, 6, 7, 8});
  ExpectWrite(w[1], 9, *r, {9, 10, 11, 12, 13, 14, 15, 16});
  Unbusy(*r, 2);
  CompleteWrites();
  ExpectConsistent();
}

// ---- 6. clean pages ----

// Once a pageout has completed, the pages are clean and the next pass frees
// them with no I/O: the data lives on in the slot, which the entry keeps.
TEST_F(PdaemonTest, CleanPagesAreFreedWithoutIo) {
  std::shared_ptr<Region> r = SceneWithWritesInFlight();
  ASSERT_EQ(CompleteWrites(), 2u);
  const int submits = dev_->submit_calls();
  const int64_t pageouts = uvm_->exp().pdpageouts.load();
  uvm_->uvmpd_pass();

  EXPECT_EQ(uvm_->exp().pdfreed.load(), 16);
  EXPECT_EQ(uvm_->exp().swpgonly.load(), 16);
  EXPECT_EQ(uvm_->exp().free.load(), 20);
  EXPECT_EQ(dev_->submit_calls(), submits) << "clean pages need no I/O";
  EXPECT_EQ(uvm_->exp().pdpageouts.load(), pageouts);
  EXPECT_EQ(pmap_.pages(FakePmap::kRelease), 16u);
  for (uint64_t i = 0; i < 16; i++) {
    const pgent e = Entry(*r, i);
    EXPECT_EQ(e.frame, kNoFrame) << "page " << i;
    EXPECT_EQ(e.swslot, i + 1) << "page " << i;
    EXPECT_TRUE(Poisoned(*r, i)) << "page " << i << ": backing not released";
    EXPECT_TRUE(dev_->slot_data(i + 1) == Pattern(i)) << "slot " << i + 1;
  }
  for (uint64_t i = 16; i < 20; i++) EXPECT_NE(Entry(*r, i).frame, kNoFrame);
  ExpectConsistent();
}

// ---- 7. the free target counts pages in flight ----

// With writes in flight, free + paging already meets 4 * freetarg: the pass
// starts no more pageouts (the dirty 16..19 wait).
TEST_F(PdaemonTest, DirtyPagesWaitWhilePagingMeetsTheTarget) {
  std::shared_ptr<Region> r = SceneWithWritesInFlight();
  ASSERT_EQ(uvm_->exp().paging.load(), 16);
  ASSERT_EQ(uvm_->exp().free.load() + uvm_->exp().paging.load(), 4 * uvm_->exp().freetarg.load());
  const int64_t scans = uvm_->exp().pdscans.load();
  uvm_->uvmpd_pass();

  EXPECT_EQ(uvm_->exp().pdrevs.load(), 3) << "free < freetarg: the pass did scan";
  EXPECT_EQ(dev_->submit_calls(), 2);
  EXPECT_EQ(uvm_->exp().pdpageouts.load(), 2);
  EXPECT_EQ(uvm_->exp().pgswapout.load(), 16);
  EXPECT_EQ(uvm_->exp().pdscans.load(), scans) << "the target was met before any page";
  for (uint64_t i = 16; i < 20; i++) {
    EXPECT_EQ(Flags(*r, i) & (PG_BUSY | PQ_INACTIVE), PQ_INACTIVE) << "page " << i;
    EXPECT_EQ(Entry(*r, i).swslot, 0u);
  }

  // One write done: its 8 clean pages are freed and the target is met
  // again (free 12 + paging 8): still no new pageout.
  ASSERT_EQ(CompleteWrites(FakeSwapDev::kFull, 1), 1u);
  uvm_->uvmpd_pass();
  EXPECT_EQ(uvm_->exp().pdfreed.load(), 8);
  EXPECT_EQ(dev_->submit_calls(), 2);
  CompleteWrites();
  ExpectConsistent();
}

// ---- 8. clusters ----

// Dirty pages are written in clusters: one SubmitWrite of cluster_pages
// contiguous slots per cluster, the pages busy while in flight.
TEST_F(PdaemonTest, DirtyPagesAreClustered) {
  std::shared_ptr<Region> r = Scene(8, 64);
  uvm_->uvmpd_pass();
  uvm_->uvmpd_pass();

  const std::vector<FakeSwapDev::Write> w = dev_->submitted();
  ASSERT_EQ(w.size(), 2u);
  ExpectWrite(w[0], 1, *r, Range(0, 8));
  ExpectWrite(w[1], 9, *r, Range(8, 8));
  EXPECT_EQ(dev_->pending(), 2u);
  EXPECT_EQ(uvm_->exp().pdpageouts.load(), 2);
  EXPECT_EQ(uvm_->exp().pdpending.load(), 2);
  EXPECT_EQ(uvm_->exp().pgswapout.load(), 16);
  EXPECT_EQ(uvm_->exp().paging.load(), 16);
  EXPECT_EQ(uvm_->exp().swpginuse.load(), 16);
  for (uint64_t i = 0; i < 20; i++) {
    const uint32_t f = Flags(*r, i);
    EXPECT_TRUE(f & PQ_INACTIVE) << "page " << i;
    EXPECT_FALSE(f & PG_CLEAN) << "page " << i;
    EXPECT_EQ(static_cast<bool>(f & PG_BUSY), i < 16) << "page " << i;
  }
  for (uint64_t i = 16; i < 20; i++) EXPECT_EQ(Entry(*r, i).swslot, 0u);
  CompleteWrites();
  ExpectConsistent();
}

// The final flush of a partial cluster writes the pages it has and frees the
// rest of the run it allocated.
TEST_F(PdaemonTest, FinalPartialClusterFreesUnusedSlots) {
  std::shared_ptr<Region> r = Scene(32, 64);
  uvm_->uvmpd_pass();
  uvm_->uvmpd_pass();  // 20 dirty pages, a 32-slot cluster: never full

  const std::vector<FakeSwapDev::Write> w = dev_->submitted();
  ASSERT_EQ(w.size(), 1u);
  ExpectWrite(w[0], 1, *r, Range(0, 20));
  EXPECT_EQ(uvm_->exp().swpginuse.load(), 20) << "slots 21..32 must be freed";
  for (uint64_t s = 21; s <= 32; s++) EXPECT_FALSE(UvmTestPeer::Allocated(*uvm_, s)) << s;
  EXPECT_EQ(uvm_->exp().paging.load(), 20);
  EXPECT_EQ(uvm_->exp().pdpageouts.load(), 1);
  EXPECT_EQ(uvm_->exp().pdpending.load(), 1);
  EXPECT_EQ(uvm_->exp().pgswapout.load(), 20);
  CompleteWrites();
  ExpectConsistent();
}

// When swap has only a shorter run than a cluster, the cluster is that run.
TEST_F(PdaemonTest, ClusterShrinksToTheLongestFreeRun) {
  std::shared_ptr<Region> r = Scene(8, 64);
  uvm_->uvmpd_pass();
  // Leave 1..5 and 20..64 taken: the first run the daemon finds is 6..19.
  int n = 64;
  ASSERT_EQ(uvm_->uvm_swap_alloc(&n, false), 1);
  uvm_->uvm_swap_free(6, 14);
  uvm_->uvmpd_pass();
  const std::vector<FakeSwapDev::Write> w = dev_->submitted();
  ASSERT_EQ(w.size(), 2u);
  ExpectWrite(w[0], 6, *r, Range(0, 8));
  ExpectWrite(w[1], 14, *r, Range(8, 6));  // only 14..19 were left
  CompleteWrites();
  uvm_->uvm_swap_free(1, 5);
  uvm_->uvm_swap_free(20, 45);
  ExpectConsistent();
}

// A cluster that is not one long run is copied into bounce pages and
// written from there (uvm_swap_writepages): freed later one or a few pages
// at a time, its pages must not be mapped in the direct view.  Writes hold
// at most half of the bounce pages; the next cluster is written from its
// frames.  The data is the pages' either way, and a completed write gives
// its bounce pages back.
TEST_F(PdaemonTest, ShortClustersAreWrittenFromBouncePages) {
  bounce_pages_ = 16;
  std::shared_ptr<Region> r = SceneWithWritesInFlight(8, 64);

  const std::vector<FakeSwapDev::Write> w = dev_->submitted();
  ASSERT_EQ(w.size(), 2u);
  ExpectWrite(w[0], 1, *r, Range(0, 8));
  ExpectWrite(w[1], 9, *r, Range(8, 8));
  const char* b = static_cast<const char*>(w[0].sources[0]);
  for (int i = 0; i < 8; i++) {
    EXPECT_EQ(w[0].sources[i], b + i * PAGE_SIZE) << "page " << i << " not from bounce page " << i;
    EXPECT_NE(w[0].sources[i], pmap_.direct(*r, i)) << "page " << i << " written from its frame";
    EXPECT_EQ(w[1].sources[i], pmap_.direct(*r, 8 + i))
        << "page " << 8 + i << ": writes took more than half of the bounce pages";
  }
  EXPECT_EQ(uvm_->uvm_swap_allocpages(16), nullptr) << "the first write holds 8 bounce pages";
  CompleteWrites();
  ExpectBouncePagesFree(16, "a completed write kept its bounce pages");
  ExpectConsistent();
}

// A cluster that is one run of kWriteFromFramesRun pages is written from its
// frames: it is freed later in one punch.
TEST_F(PdaemonTest, LongRunClustersAreWrittenFromTheFrames) {
  bounce_pages_ = 64;
  std::shared_ptr<Region> r = SceneWithWritesInFlight(kWriteFromFramesRun, 64);

  const std::vector<FakeSwapDev::Write> w = dev_->submitted();
  ASSERT_EQ(w.size(), 1u);
  ExpectWrite(w[0], 1, *r, Range(0, kWriteFromFramesRun));
  for (int i = 0; i < kWriteFromFramesRun; i++) {
    EXPECT_EQ(w[0].sources[i], pmap_.direct(*r, i)) << "page " << i;
  }
  CompleteWrites();
  ExpectConsistent();
}

// ---- 9. swapcluster_flush: transient submit failure ----

// SubmitWrite says Unavailable (queue full): the cluster is dropped, its slots
// freed, its pages un-busied and still dirty; a later pass writes them.
TEST_F(PdaemonTest, TransientSubmitFailureDropsTheCluster) {
  std::shared_ptr<Region> r = Scene(8, 64);
  uvm_->uvmpd_pass();
  dev_->FailNextSubmits(3);
  uvm_->uvmpd_pass();  // clusters 0..7, 8..15 and 16..19: all refused

  EXPECT_EQ(dev_->submit_calls(), 3);
  EXPECT_TRUE(dev_->submitted().empty());
  EXPECT_EQ(uvm_->exp().pdpageouts.load(), 3);
  EXPECT_EQ(uvm_->exp().pdpending.load(), 0);
  EXPECT_EQ(uvm_->exp().paging.load(), 0);
  EXPECT_EQ(uvm_->exp().swpginuse.load(), 0);
  for (uint64_t i = 0; i < 20; i++) {
    const uint32_t f = Flags(*r, i);
    EXPECT_EQ(f & (PQ_INACTIVE | PG_BUSY | PG_CLEAN | PG_WANTED), PQ_INACTIVE) << "page " << i;
    EXPECT_EQ(Entry(*r, i).swslot, 0u) << "page " << i;
    EXPECT_TRUE(Holds(*r, i)) << "page " << i;
  }
  ExpectConsistent();

  // The next pass pages them out.
  uvm_->uvmpd_pass();
  const std::vector<FakeSwapDev::Write> w = dev_->submitted();
  ASSERT_EQ(w.size(), 2u);
  EXPECT_EQ(uvm_->exp().pdpending.load(), 2);
  ASSERT_EQ(CompleteWrites(), 2u);
  for (uint64_t i = 0; i < 16; i++) {
    EXPECT_EQ(Flags(*r, i) & (PG_BUSY | PG_CLEAN), PG_CLEAN) << "page " << i;
    const uint32_t slot = Entry(*r, i).swslot;
    ASSERT_NE(slot, 0u);
    EXPECT_TRUE(dev_->slot_data(slot) == Pattern(i)) << "page " << i;
  }
  ExpectConsistent();
}

// ---- 10. aiodone: success ----

// A completed write marks its pages clean and un-busies them, paging drops
// back, and a thread sleeping on a busy page (PG_WANTED) is woken.
TEST_F(PdaemonTest, AiodoneSuccessCleansPagesAndWakesWaiters) {
  std::shared_ptr<Region> r = SceneWithWritesInFlight();
  SetBits(*r, 0, PG_WANTED);

  // A fault on page 1 sleeps until the write is done.
  std::future<absl::Status> fault =
      std::async(std::launch::async, [&] { return uvm_->uvm_fault(*r, 1, FAULT_READ); });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (uvm_->exp().flt_busywait.load() == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(uvm_->exp().flt_busywait.load(), 1) << "the fault did not wait on PG_BUSY";
  EXPECT_TRUE(Flags(*r, 1) & PG_WANTED);
  EXPECT_EQ(fault.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout);

  ASSERT_EQ(CompleteWrites(), 2u);
  if (fault.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
    ADD_FAILURE() << "the fault sleeping on page 1 was never woken";
    std::abort();  // it would hang the test binary
  }
  EXPECT_TRUE(fault.get().ok());

  EXPECT_EQ(uvm_->exp().paging.load(), 0);
  EXPECT_EQ(uvm_->exp().swapouterr.load(), 0);
  EXPECT_EQ(uvm_->exp().swpginuse.load(), 16);
  for (uint64_t i = 0; i < 16; i++) {
    const uint32_t f = Flags(*r, i);
    EXPECT_TRUE(f & PG_CLEAN) << "page " << i;
    EXPECT_FALSE(f & (PG_BUSY | PG_WANTED)) << "page " << i;
    EXPECT_EQ(Entry(*r, i).swslot, i + 1);
    EXPECT_TRUE(dev_->slot_data(i + 1) == Pattern(i)) << "slot " << i + 1;
  }
  // The woken fault found page 1 resident and clean: reactivated, mapped
  // write-protected.
  EXPECT_EQ(uvm_->exp().flt_react.load(), 1);
  EXPECT_TRUE(Flags(*r, 1) & PQ_ACTIVE);
  EXPECT_TRUE(pmap_.mapped(*r, 1));
  EXPECT_TRUE(pmap_.write_protected(*r, 1));
  ExpectConsistent();
}

// ---- 11. aiodone: hard error ----

// -EIO: the slots are marked bad and never handed out again; the pages stay
// resident and dirty with no slot, their data intact.
TEST_F(PdaemonTest, AiodoneHardErrorMarksSlotsBad) {
  std::shared_ptr<Region> r = SceneWithWritesInFlight(8, 24);
  ASSERT_EQ(CompleteWrites(-EIO, 1), 1u);  // pages 0..7, slots 1..8
  ASSERT_EQ(CompleteWrites(), 1u);         // pages 8..15, slots 9..16

  EXPECT_EQ(uvm_->exp().swpgbad.load(), 8);
  EXPECT_EQ(uvm_->exp().swapouterr.load(), 8);
  EXPECT_EQ(uvm_->exp().swpginuse.load(), 16);
  EXPECT_EQ(uvm_->exp().paging.load(), 0);
  for (uint64_t i = 0; i < 8; i++) {
    EXPECT_EQ(Flags(*r, i) & (PQ_INACTIVE | PG_BUSY | PG_CLEAN), PQ_INACTIVE) << "page " << i;
    EXPECT_EQ(Entry(*r, i).swslot, 0u) << "page " << i;
    EXPECT_TRUE(Holds(*r, i)) << "page " << i << ": data lost";
    EXPECT_TRUE(UvmTestPeer::Bad(*uvm_, i + 1)) << "slot " << i + 1;
  }
  for (uint64_t i = 8; i < 16; i++) EXPECT_TRUE(Flags(*r, i) & PG_CLEAN);
  ExpectConsistent();

  // Take all of the rest of swap: never a bad slot.
  std::vector<int> got;
  for (;;) {
    int n = 1;
    const int s = uvm_->uvm_swap_alloc(&n, false);
    if (s == 0) break;
    got.push_back(s);
    EXPECT_GT(s, 8) << "bad slot " << s << " handed out";
  }
  EXPECT_EQ(got.size(), 8u);  // 17..24
  EXPECT_TRUE(uvm_->uvm_swapisfilled());
  for (int s : got) uvm_->uvm_swap_free(s, 1);

  // The daemon too: the dirty 0..7 go to the only good free run, 17..24, then
  // the clean 8..15 are freed until free + paging = 12 + 8 meets the target.
  uvm_->uvmpd_pass();
  EXPECT_EQ(uvm_->exp().pdfreed.load(), 8);
  const std::vector<FakeSwapDev::Write> w = dev_->submitted();
  ASSERT_EQ(w.size(), 3u);
  ExpectWrite(w[2], 17, *r, Range(0, 8));
  CompleteWrites();
  ExpectConsistent();
}

// ---- 12. aiodone: transient error ----

// -ENOMEM or -EAGAIN: the slots are freed, not marked bad; the pages stay
// dirty and are retried later.
TEST_F(PdaemonTest, AiodoneTransientErrorFreesSlots) {
  std::shared_ptr<Region> r = SceneWithWritesInFlight();
  ASSERT_EQ(CompleteWrites(-ENOMEM, 1), 1u);
  ASSERT_EQ(CompleteWrites(-EAGAIN, 1), 1u);

  EXPECT_EQ(uvm_->exp().swpgbad.load(), 0);
  EXPECT_EQ(uvm_->exp().swpginuse.load(), 0);
  EXPECT_EQ(uvm_->exp().swapouterr.load(), 16);
  EXPECT_EQ(uvm_->exp().paging.load(), 0);
  for (uint64_t i = 0; i < 16; i++) {
    EXPECT_EQ(Flags(*r, i) & (PQ_INACTIVE | PG_BUSY | PG_CLEAN), PQ_INACTIVE) << "page " << i;
    EXPECT_EQ(Entry(*r, i).swslot, 0u) << "page " << i;
    EXPECT_FALSE(UvmTestPeer::Allocated(*uvm_, i + 1)) << "slot " << i + 1;
    EXPECT_FALSE(UvmTestPeer::Bad(*uvm_, i + 1)) << "slot " << i + 1;
  }
  ExpectConsistent();
  // A later pass writes them again.
  uvm_->uvmpd_pass();
  EXPECT_EQ(dev_->submitted().size(), 4u);
  CompleteWrites();
  ExpectConsistent();
}

// ---- 13. short writes ----

// A completion with fewer bytes than the cluster is an error, never success.
TEST_F(PdaemonTest, ShortWriteIsAnError) {
  std::shared_ptr<Region> r = SceneWithWritesInFlight();
  ASSERT_EQ(CompleteWrites(5 * static_cast<int64_t>(PAGE_SIZE), 1), 1u);
  ASSERT_EQ(CompleteWrites(8 * static_cast<int64_t>(PAGE_SIZE) - 512, 1), 1u);

  EXPECT_EQ(uvm_->exp().swapouterr.load(), 16);
  EXPECT_EQ(uvm_->exp().swpgbad.load(), 16);
  EXPECT_EQ(uvm_->exp().paging.load(), 0);
  for (uint64_t i = 0; i < 16; i++) {
    EXPECT_FALSE(Flags(*r, i) & PG_CLEAN) << "page " << i << " clean after a short write";
    EXPECT_FALSE(Flags(*r, i) & PG_BUSY) << "page " << i;
    EXPECT_EQ(Entry(*r, i).swslot, 0u) << "page " << i;
    EXPECT_TRUE(Holds(*r, i)) << "page " << i;
  }
  // Nothing was freed as if it were in swap.
  uvm_->uvmpd_pass();
  EXPECT_EQ(uvm_->exp().pdfreed.load(), 0);
  ExpectConsistent();
}

// ---- 14. dirtyreacts ----

// With swap full (swpgonly + swpgbad >= swpages), dirty inactive pages cannot
// be paged out: they are reactivated, at most UVMPD_NUMDIRTYREACTS per pass.
TEST_F(PdaemonTest, DirtyPagesAreReactivatedWhenSwapIsFull) {
  Init(64, 8, 16);
  int n = 16;
  ASSERT_EQ(uvm_->uvm_swap_alloc(&n, false), 1);
  uvm_->uvm_swap_markbad(1, 16);
  ASSERT_TRUE(uvm_->uvm_swapisfull());
  std::shared_ptr<Region> r = Map(60);
  for (uint64_t i = 0; i < 60; i++) Fault(*r, i, FAULT_WRITE);
  uvm_->uvmpd_pass();  // 0..19 inactive
  ASSERT_EQ(uvm_->exp().inactive.load(), 20);

  uvm_->uvmpd_pass();
  EXPECT_EQ(uvm_->exp().pdreacts_dirty.load(), UVMPD_NUMDIRTYREACTS);
  EXPECT_EQ(uvm_->exp().pdscans.load(), 16) << "the scan stops after 16 reactivations";
  EXPECT_EQ(dev_->submit_calls(), 0);
  EXPECT_EQ(uvm_->exp().pgswapout.load(), 0);
  for (uint64_t i = 0; i < 16; i++) {
    EXPECT_EQ(Flags(*r, i) & (PQ_ACTIVE | PG_BUSY), PQ_ACTIVE) << "page " << i;
  }
  for (uint64_t i = 16; i < 20; i++) EXPECT_TRUE(Flags(*r, i) & PQ_INACTIVE) << "page " << i;
  ExpectConsistent();

  // The limit is per pass.
  uvm_->uvmpd_pass();
  EXPECT_EQ(uvm_->exp().pdreacts_dirty.load(), 2 * UVMPD_NUMDIRTYREACTS);
  ExpectConsistent();
}

// ---- 15. dropswap when swap is filled ----

// Swap is filled (every slot allocated) but not full: a dirty page's old slot
// is freed before a new one is allocated, so the page can be paged out into
// it.
TEST_F(PdaemonTest, FilledSwapDropsTheOldSlotBeforeReallocating) {
  std::shared_ptr<Region> r = SceneWithWritesInFlight(8, 16);  // slots 1..16 all used
  ASSERT_EQ(CompleteWrites(), 2u);
  // Page 0 is rewritten: dirty, and its stale slot 1 is freed at once
  // (uao_dropswap).
  Fault(*r, 0, FAULT_WRITE);
  Fill(*r, 0, 1);
  ASSERT_EQ(Flags(*r, 0) & (PQ_ACTIVE | PG_CLEAN), PQ_ACTIVE);
  ASSERT_EQ(Entry(*r, 0).swslot, 0u);
  ASSERT_EQ(uvm_->exp().swpginuse.load(), 15);
  // A dirty page that still names a slot (the daemon's own safety net, as
  // when a page is dirtied without a fault): give slot 1 back to page 0.
  int one = 1;
  ASSERT_EQ(uvm_->uvm_swap_alloc(&one, false), 1);
  {
    Chunk& c = r->chunk_of(0);
    MutexLock l(&c.vmobjlock);
    Uvm::uao_set_swslot(c, 0, 1);
  }
  // Deactivate it again (to the inactive tail), as the active scan would.
  pmap_.remove(*r, 0, 1);
  UvmTestPeer::Deactivate(*uvm_, Page(*r, 0));
  ASSERT_TRUE(uvm_->uvm_swapisfilled());

  uvm_->uvmpd_pass();
  // 1..15 are freed (free 19 < 20); 16..19 find no slot; page 0 gets slot 1
  // back.
  EXPECT_EQ(uvm_->exp().pdfreed.load(), 15);
  EXPECT_FALSE(uvm_->uvm_swapisfull());
  const std::vector<FakeSwapDev::Write> w = dev_->submitted();
  ASSERT_EQ(w.size(), 3u);
  ExpectWrite(w[2], 1, *r, {0}, /*salt=*/1);
  EXPECT_TRUE(Flags(*r, 0) & PG_BUSY);
  EXPECT_EQ(uvm_->exp().swpginuse.load(), 16);
  for (uint64_t i = 16; i < 20; i++) {
    EXPECT_EQ(Flags(*r, i) & (PQ_INACTIVE | PG_BUSY), PQ_INACTIVE) << "page " << i;
    EXPECT_EQ(Entry(*r, i).swslot, 0u) << "page " << i;
  }
  EXPECT_EQ(uvm_->exp().pgswapout.load(), 17) << "failed allocations are not pageouts";
  ASSERT_EQ(CompleteWrites(), 1u);
  EXPECT_TRUE(dev_->slot_data(1) == Pattern(0, 1));
  ExpectConsistent();
}

// ---- 16. the active scan's swap_shortage branch ----

// free < freetarg, swap filled but not full, and the inactive scan freed
// nothing: active pages give up their slots (freed, PG_CLEAN cleared) so that
// dirty pages can be paged out.
TEST_F(PdaemonTest, SwapShortageTakesSlotsFromActivePages) {
  std::shared_ptr<Region> r = SceneWithWritesInFlight(8, 16);
  ASSERT_EQ(CompleteWrites(), 2u);
  // Read 0..15 back in (resident, clean, keeping their slots).
  for (uint64_t i = 0; i < 16; i++) Fault(*r, i, FAULT_READ);
  ASSERT_EQ(Flags(*r, 0) & (PQ_ACTIVE | PG_CLEAN), PQ_ACTIVE | PG_CLEAN);
  ASSERT_TRUE(uvm_->uvm_swapisfilled());
  ASSERT_FALSE(uvm_->uvm_swapisfull());
  ASSERT_EQ(uvm_->exp().free.load(), 4);

  uvm_->uvmpd_pass();
  // The inactive scan found no slot for 16..19 and freed nothing; the active
  // scan deactivated 20..35 (inactive shortage 16) and went on for the swap
  // shortage (freetarg 5 - free 4 = 1) to page 0, the first with a slot.
  EXPECT_EQ(uvm_->exp().pdfreed.load(), 0);
  EXPECT_EQ(uvm_->exp().pddeact.load(), 20 + 16);
  EXPECT_EQ(Entry(*r, 0).swslot, 0u);
  EXPECT_EQ(Flags(*r, 0) & (PQ_ACTIVE | PG_CLEAN), PQ_ACTIVE);
  EXPECT_FALSE(UvmTestPeer::Allocated(*uvm_, 1));
  EXPECT_EQ(uvm_->exp().swpginuse.load(), 15);
  for (uint64_t i = 1; i < 16; i++) {
    EXPECT_EQ(Entry(*r, i).swslot, i + 1) << "page " << i;
    EXPECT_TRUE(Flags(*r, i) & PG_CLEAN) << "page " << i;
  }
  ExpectConsistent();

  // The freed slot lets the next pass page a dirty page out.
  uvm_->uvmpd_pass();
  const std::vector<FakeSwapDev::Write> w = dev_->submitted();
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[2].slot, 1u);
  CompleteWrites();
  ExpectConsistent();
}

// ---- 17. the fault paths ----

TEST_F(PdaemonTest, ZeroFillFault) {
  Init(64, 8, 64);
  std::shared_ptr<Region> r = Map(4);
  r->set_advice(Region::ADV_RANDOM);
  ASSERT_TRUE(Poisoned(*r, 0));
  Fault(*r, 0, FAULT_WRITE);
  Fault(*r, 1, FAULT_READ);
  EXPECT_EQ(uvm_->exp().faults.load(), 2);
  EXPECT_EQ(uvm_->exp().flt_zfill.load(), 2);
  EXPECT_EQ(pmap_.count(FakePmap::kZerofill), 2);
  EXPECT_EQ(uvm_->exp().free.load(), 62);
  EXPECT_EQ(uvm_->exp().active.load(), 2);
  for (uint64_t i : {0, 1}) {
    EXPECT_EQ(std::string(pmap_.direct(*r, i), PAGE_SIZE), std::string(PAGE_SIZE, '\0'));
    const uint32_t f = Flags(*r, i);
    EXPECT_TRUE(f & PQ_ACTIVE);
    EXPECT_TRUE(f & PQ_SWAPBACKED);
    EXPECT_TRUE(f & PG_PMAP_REF);
    EXPECT_FALSE(f & PG_CLEAN) << "a zero-filled page has no slot: it is dirty";
    EXPECT_TRUE(pmap_.mapped(*r, i));
    EXPECT_FALSE(pmap_.write_protected(*r, i));
    EXPECT_EQ(Entry(*r, i).swslot, 0u);
  }
  EXPECT_EQ(Entry(*r, 2).frame, kNoFrame);
  ExpectConsistent();
}

// A page evicted to swap comes back with its data, clean, mapped
// write-protected so that the first write is seen; its slot is kept.
TEST_F(PdaemonTest, SwapInRestoresDataCleanAndWriteProtected) {
  std::shared_ptr<Region> r = SceneEvicted();
  ASSERT_TRUE(Poisoned(*r, 3));
  const int64_t free = uvm_->exp().free.load();
  Fault(*r, 3, FAULT_READ);

  EXPECT_EQ(uvm_->exp().flt_swapin.load(), 1);
  EXPECT_EQ(uvm_->exp().pgswapin.load(), 1);
  EXPECT_EQ(dev_->read_calls(), 1);
  EXPECT_EQ(uvm_->exp().swpgonly.load(), 15);
  EXPECT_EQ(uvm_->exp().free.load(), free - 1);
  EXPECT_TRUE(Holds(*r, 3)) << "swapped-in data differs from what was written";
  const uint32_t f = Flags(*r, 3);
  EXPECT_EQ(f & (PQ_ACTIVE | PG_CLEAN | PG_BUSY), PQ_ACTIVE | PG_CLEAN);
  EXPECT_EQ(Entry(*r, 3).swslot, 4u);
  EXPECT_TRUE(pmap_.mapped(*r, 3));
  EXPECT_TRUE(pmap_.write_protected(*r, 3));
  ExpectConsistent();
}

// A swap-in whose mapping meets an unread userfaultfd event maps its page
// once the event is read: one swap-in fault, not a reactivation besides.
TEST_F(PdaemonTest, SwapInMappedAfterAnEventIsOneFault) {
  std::shared_ptr<Region> r = SceneEvicted();
  const int64_t faults = uvm_->exp().faults.load();
  const int64_t react = uvm_->exp().flt_react.load();
  pmap_.FailNextMappings(2);
  Fault(*r, 3, FAULT_READ);

  EXPECT_EQ(pmap_.count(FakePmap::kEnter), 3) << "two refused mappings, then one";
  EXPECT_EQ(uvm_->exp().faults.load(), faults + 1);
  EXPECT_EQ(uvm_->exp().flt_swapin.load(), 1);
  EXPECT_EQ(uvm_->exp().flt_react.load(), react);
  EXPECT_EQ(dev_->read_calls(), 1);
  EXPECT_TRUE(Holds(*r, 3));
  EXPECT_TRUE(pmap_.mapped(*r, 3));
  EXPECT_TRUE(pmap_.write_protected(*r, 3));
  ExpectConsistent();
}

// No fault maps a page's data while the reader applies a batch of events:
// madvise(MADV_DONTNEED) returns once its event is read, and the reader
// may not yet have discarded the page, which a mapping would then show
// with its old data.  Here a reactivation, with the frame's data: it waits
// for the batch, then maps.
TEST_F(PdaemonTest, FaultMapsNothingWhileEventsAreApplied) {
  std::shared_ptr<Region> r = SceneWithWritesInFlight();
  ASSERT_EQ(CompleteWrites(), 2u);  // 0..19 inactive and unmapped
  const int enters = pmap_.count(FakePmap::kEnter);
  EventBatch batch(*uvm_);
  std::thread fault([&] { Fault(*r, 17, FAULT_READ); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(pmap_.count(FakePmap::kEnter), enters) << "mapped while events were applied";
  EXPECT_FALSE(pmap_.mapped(*r, 17));
  batch.Release();
  fault.join();

  EXPECT_TRUE(pmap_.mapped(*r, 17));
  EXPECT_TRUE(Holds(*r, 17));
  EXPECT_EQ(uvm_->exp().flt_react.load(), 1);
  ExpectConsistent();
}

// The same for a swap-in: the read goes ahead, the data is placed in the
// backing object unmapped (copied from bounce pages here), and the fault
// maps it once the batch is applied, still one swap-in fault.
TEST_F(PdaemonTest, SwapInMapsNothingWhileEventsAreApplied) {
  bounce_pages_ = 16;
  std::shared_ptr<Region> r = SceneEvicted();
  const int64_t faults = uvm_->exp().faults.load();
  const int enters = pmap_.count(FakePmap::kEnter);
  const uint64_t placed = pmap_.pages(FakePmap::kPlace);
  EventBatch batch(*uvm_);
  std::thread fault([&] { Fault(*r, 3, FAULT_READ); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(dev_->read_calls(), 1);
  EXPECT_EQ(pmap_.count(FakePmap::kEnter), enters) << "mapped while events were applied";
  EXPECT_EQ(pmap_.pages(FakePmap::kPlace), placed + 1) << "the page read was not placed";
  EXPECT_FALSE(pmap_.mapped(*r, 3));
  batch.Release();
  fault.join();

  EXPECT_TRUE(pmap_.mapped(*r, 3));
  EXPECT_TRUE(Holds(*r, 3));
  EXPECT_EQ(uvm_->exp().faults.load(), faults + 1);
  EXPECT_EQ(uvm_->exp().flt_swapin.load(), 1);
  EXPECT_EQ(uvm_->exp().flt_react.load(), 0);
  EXPECT_EQ(dev_->read_calls(), 1);
  ExpectConsistent();
}

// A swap-in run whose mapping met an unread event is placed unmapped; the
// fault that maps its page once the event is read maps the rest of the run
// with it (fault-around of resident pages), so a sequential reader does not
// fault on each page.
TEST_F(PdaemonTest, RunLeftUnmappedByAnEventIsMappedWithTheFaultingPage) {
  std::shared_ptr<Region> r = SceneEvicted();  // 0..15 in slots 1..16
  r->set_advice(Region::ADV_SEQUENTIAL);
  pmap_.FailNextMappings(1);
  Fault(*r, 0, FAULT_READ);

  EXPECT_EQ(dev_->read_calls(), 1);
  EXPECT_EQ(uvm_->exp().flt_swapin.load(), 1);
  EXPECT_EQ(uvm_->exp().flt_react.load(), 0);
  EXPECT_EQ(pmap_.count(FakePmap::kEnterPrefix), 1);
  for (uint64_t i = 0; i < 16; i++) {
    EXPECT_TRUE(Holds(*r, i)) << "page " << i;
    EXPECT_TRUE(pmap_.mapped(*r, i)) << "page " << i;
    EXPECT_TRUE(pmap_.write_protected(*r, i)) << "page " << i;
  }
  // A fault on a page whose neighbours are mapped maps nothing more.
  pmap_.remove(*r, 5, 1);
  Fault(*r, 5, FAULT_READ);
  EXPECT_EQ(pmap_.count(FakePmap::kEnterPrefix), 2);
  EXPECT_EQ(pmap_.pages(FakePmap::kEnterPrefix), 15u + 10u) << "tried 6..15";
  ExpectConsistent();
}

// A write fault on a swapped-out page makes it dirty at once (writable).
TEST_F(PdaemonTest, SwapInForWriteIsDirty) {
  std::shared_ptr<Region> r = SceneEvicted();
  Fault(*r, 3, FAULT_WRITE);
  EXPECT_EQ(uvm_->exp().flt_swapin.load(), 1);
  EXPECT_TRUE(Holds(*r, 3));
  EXPECT_EQ(Flags(*r, 3) & (PQ_ACTIVE | PG_CLEAN), PQ_ACTIVE);
  EXPECT_TRUE(pmap_.mapped(*r, 3));
  EXPECT_FALSE(pmap_.write_protected(*r, 3));
  ExpectConsistent();
}

// Write prediction: once a region's swapped-in pages get written, a read
// fault that swaps a page in maps it writable (dirty), sparing the
// first-write fault.
TEST_F(PdaemonTest, ReadSwapInMapsWritableOnceSwappedInPagesGetWritten) {
  std::shared_ptr<Region> r = SceneEvicted();
  r->set_advice(Region::ADV_RANDOM);  // one page per fault
  Fault(*r, 0, FAULT_READ);
  ASSERT_TRUE(Flags(*r, 0) & PG_CLEAN) << "nothing written yet: mapped clean";
  ASSERT_TRUE(pmap_.write_protected(*r, 0));
  Fault(*r, 0, FAULT_WP);
  ASSERT_EQ(uvm_->exp().flt_wp.load(), 1);

  Fault(*r, 5, FAULT_READ);
  EXPECT_EQ(Flags(*r, 5) & (PQ_ACTIVE | PG_CLEAN), PQ_ACTIVE) << "mapped dirty";
  EXPECT_TRUE(pmap_.mapped(*r, 5));
  EXPECT_FALSE(pmap_.write_protected(*r, 5));
  EXPECT_TRUE(Holds(*r, 5));
  EXPECT_EQ(uvm_->exp().flt_wp.load(), 1);
  ExpectConsistent();
}

// The score behind the prediction: written swap-ins raise it, clean
// evictions lower it, and every 16th swap-in is mapped clean to keep
// learning (every 64th while the score is at its maximum).
TEST(RegionWritePrediction, FollowsWritesAndCleanEvictions) {
  Region r(0, 64, 0);
  EXPECT_FALSE(r.swapin_map_dirty());  // swap-in 0
  EXPECT_FALSE(r.swapin_map_dirty()) << "no evidence yet";
  r.note_written_after_swapin();
  for (int n = 2; n < 16; n++) EXPECT_TRUE(r.swapin_map_dirty()) << "swap-in " << n;
  EXPECT_FALSE(r.swapin_map_dirty()) << "swap-in 16 is a clean probe";
  EXPECT_TRUE(r.swapin_map_dirty());
  r.note_evicted_clean();
  EXPECT_FALSE(r.swapin_map_dirty()) << "a clean eviction cancels a written swap-in";
  for (int i = 0; i < 1000; i++) r.note_written_after_swapin();
  for (int i = 0; i < 64; i++) r.note_evicted_clean();
  EXPECT_FALSE(r.swapin_map_dirty()) << "the score saturates: 64 clean evictions undo any run";

  // At its maximum, a probe every 64th swap-in; one clean eviction, and
  // every 16th again.
  for (int i = 0; i < 1000; i++) r.note_written_after_swapin();
  uint32_t n = 20;  // swap-ins so far
  int probes = 0;
  for (; n < 256; n++) probes += r.swapin_map_dirty() ? 0 : 1;
  EXPECT_EQ(probes, 3) << "swap-ins 64, 128 and 192";
  r.note_evicted_clean();
  probes = 0;
  for (; n < 320; n++) probes += r.swapin_map_dirty() ? 0 : 1;
  EXPECT_EQ(probes, 4) << "swap-ins 256, 272, 288 and 304";
}

// The first write to a clean mapped page (FAULT_WP) makes it dirty and lifts
// the write protection.
TEST_F(PdaemonTest, WriteFaultOnCleanPageClearsClean) {
  std::shared_ptr<Region> r = SceneEvicted();
  Fault(*r, 3, FAULT_READ);
  ASSERT_TRUE(Flags(*r, 3) & PG_CLEAN);
  ASSERT_EQ(Entry(*r, 3).swslot, 4u);
  const int64_t swpginuse = uvm_->exp().swpginuse.load();
  Fault(*r, 3, FAULT_WP);

  EXPECT_EQ(uvm_->exp().flt_wp.load(), 1);
  EXPECT_EQ(pmap_.count(FakePmap::kUnprotect), 1);
  EXPECT_EQ(Flags(*r, 3) & (PQ_ACTIVE | PG_CLEAN), PQ_ACTIVE);
  EXPECT_TRUE(pmap_.mapped(*r, 3));
  EXPECT_FALSE(pmap_.write_protected(*r, 3));
  EXPECT_EQ(Entry(*r, 3).swslot, 0u) << "the stale slot is dropped at once";
  EXPECT_EQ(uvm_->exp().swpginuse.load(), swpginuse - 1);
  ExpectConsistent();
}

// A write that brings a page in frees its slot at once (its copy in swap is
// stale from now on); a read keeps the slot, so the clean page can later be
// freed without a write.
TEST_F(PdaemonTest, WriteFaultFreesTheStaleSlotAndReadKeepsIt) {
  std::shared_ptr<Region> r = SceneEvicted();
  const int64_t inuse = uvm_->exp().swpginuse.load();
  ASSERT_NE(Entry(*r, 3).swslot, 0u);
  ASSERT_NE(Entry(*r, 9).swslot, 0u);
  Fault(*r, 3, FAULT_READ);
  Fault(*r, 9, FAULT_WRITE);
  EXPECT_TRUE(Flags(*r, 3) & PG_CLEAN);
  EXPECT_NE(Entry(*r, 3).swslot, 0u);
  EXPECT_EQ(Flags(*r, 9) & PG_CLEAN, 0u);
  EXPECT_EQ(Entry(*r, 9).swslot, 0u);
  EXPECT_EQ(uvm_->exp().swpginuse.load(), inuse - 1);
  ExpectConsistent();
}

// Write prediction on reactivation: in a region whose swapped-in pages get
// written, a read fault on a clean resident page (paged out, not yet freed)
// maps it writable and dirty, and its slot goes.  The region's first
// prediction is a clean probe, as for swap-ins.
TEST_F(PdaemonTest, ReadReactivationMapsWritableOncePagesGetWritten) {
  std::shared_ptr<Region> r = SceneWithWritesInFlight();
  ASSERT_EQ(CompleteWrites(), 2u);  // 0..15 clean, 16..19 dirty, all inactive
  r->note_written_after_swapin();
  const int64_t inuse = uvm_->exp().swpginuse.load();

  Fault(*r, 4, FAULT_READ);  // the probe
  Fault(*r, 5, FAULT_READ);

  EXPECT_EQ(uvm_->exp().flt_react.load(), 2);
  EXPECT_EQ(Flags(*r, 4) & (PQ_ACTIVE | PG_CLEAN), PQ_ACTIVE | PG_CLEAN);
  EXPECT_TRUE(pmap_.write_protected(*r, 4));
  EXPECT_EQ(Entry(*r, 4).swslot, 5u);
  EXPECT_EQ(Flags(*r, 5) & (PQ_ACTIVE | PG_CLEAN), PQ_ACTIVE) << "mapped dirty";
  EXPECT_TRUE(pmap_.mapped(*r, 5));
  EXPECT_FALSE(pmap_.write_protected(*r, 5));
  EXPECT_EQ(Entry(*r, 5).swslot, 0u) << "a dirty page keeps no stale slot";
  EXPECT_EQ(uvm_->exp().swpginuse.load(), inuse - 1);
  EXPECT_TRUE(Holds(*r, 4));
  EXPECT_TRUE(Holds(*r, 5));
  ExpectConsistent();
}

// A fault on a resident inactive page reactivates it without a copy.
TEST_F(PdaemonTest, FaultOnInactivePageReactivates) {
  std::shared_ptr<Region> r = SceneWithWritesInFlight();
  ASSERT_EQ(CompleteWrites(), 2u);  // 0..15 clean, 16..19 dirty, all inactive
  const int64_t free = uvm_->exp().free.load();

  Fault(*r, 17, FAULT_READ);  // dirty
  Fault(*r, 4, FAULT_READ);   // clean
  Fault(*r, 5, FAULT_WRITE);  // clean, written

  EXPECT_EQ(uvm_->exp().flt_react.load(), 3);
  EXPECT_EQ(uvm_->exp().flt_zfill.load(), 60) << "no new zero-fill";
  EXPECT_EQ(uvm_->exp().flt_swapin.load(), 0);
  EXPECT_EQ(uvm_->exp().free.load(), free);
  EXPECT_EQ(Flags(*r, 17) & (PQ_ACTIVE | PQ_INACTIVE | PG_CLEAN), PQ_ACTIVE);
  EXPECT_EQ(Flags(*r, 4) & (PQ_ACTIVE | PQ_INACTIVE | PG_CLEAN), PQ_ACTIVE | PG_CLEAN);
  EXPECT_EQ(Flags(*r, 5) & (PQ_ACTIVE | PQ_INACTIVE | PG_CLEAN), PQ_ACTIVE);
  for (uint64_t i : {17, 4, 5}) {
    EXPECT_TRUE(pmap_.mapped(*r, i)) << "page " << i;
    EXPECT_TRUE(Flags(*r, i) & PG_PMAP_REF) << "page " << i;
    EXPECT_TRUE(Holds(*r, i)) << "page " << i;
  }
  EXPECT_FALSE(pmap_.write_protected(*r, 17));
  EXPECT_TRUE(pmap_.write_protected(*r, 4)) << "clean: the first write must be seen";
  EXPECT_FALSE(pmap_.write_protected(*r, 5));
  // Moved to the tail of the active queue, in fault order.
  const std::vector<vm_page*> act = UvmTestPeer::WalkActive(*uvm_).pages;
  ASSERT_GE(act.size(), 3u);
  EXPECT_EQ(Offsets(std::vector<vm_page*>(act.end() - 3, act.end())),
            (std::vector<uint64_t>{17, 4, 5}));
  ExpectConsistent();
}

// A mapping call that fails for good (not for an unread event) must not
// leave the faulting thread waiting, or faulting again, for ever: the page
// is poisoned, so the touching thread gets SIGBUS, and the frame the fault
// took goes back.  One that fails for an unread event is retried.
TEST_F(PdaemonTest, FaultWhoseMappingFailsForGoodPoisonsThePage) {
  Init(64, 8, 64);
  std::shared_ptr<Region> r = Map(8);
  r->set_advice(Region::ADV_RANDOM);
  const int64_t free = uvm_->exp().free.load();
  pmap_.BreakNextMappings(1);
  EXPECT_TRUE(absl::IsInternal(uvm_->uvm_fault(*r, 2, FAULT_WRITE)));
  EXPECT_EQ(pmap_.count(FakePmap::kPoison), 1);
  EXPECT_TRUE(r->poisoned(2));
  EXPECT_EQ(Entry(*r, 2).frame, kNoFrame);
  EXPECT_EQ(uvm_->exp().free.load(), free);
  ExpectConsistent();

  pmap_.FailNextMappings(1);
  Fault(*r, 3, FAULT_WRITE);
  EXPECT_EQ(pmap_.count(FakePmap::kPoison), 1);
  EXPECT_FALSE(r->poisoned(3));
  EXPECT_NE(Entry(*r, 3).frame, kNoFrame);
  ExpectConsistent();
}

// A failed swap-in read poisons the page for the toucher; the data stays in
// its slot.  A fault on the poisoned page (the kernel raises none while the
// mark is there) poisons it again.
TEST_F(PdaemonTest, SwapInReadErrorPoisonsThePage) {
  std::shared_ptr<Region> r = SceneEvicted();
  const int64_t free = uvm_->exp().free.load();
  dev_->FailNextReads(1);
  EXPECT_FALSE(uvm_->uvm_fault(*r, 3, FAULT_READ).ok());
  const int reads = dev_->read_calls();
  EXPECT_EQ(uvm_->exp().swapinerr.load(), 1);
  EXPECT_EQ(pmap_.count(FakePmap::kPoison), 1);
  EXPECT_EQ(Entry(*r, 3).frame, kNoFrame);
  EXPECT_EQ(Entry(*r, 3).swslot, 4u);
  EXPECT_EQ(uvm_->exp().free.load(), free);
  EXPECT_EQ(uvm_->exp().swpgonly.load(), 16);
  ExpectConsistent();

  EXPECT_TRUE(r->poisoned(3));
  EXPECT_TRUE(uvm_->uvm_fault(*r, 3, FAULT_READ).ok());
  EXPECT_EQ(pmap_.count(FakePmap::kPoison), 2) << "poisoned again, in case the mark was dropped";
  EXPECT_TRUE(Poisoned(*r, 3));
  EXPECT_EQ(Entry(*r, 3).frame, kNoFrame);
  EXPECT_EQ(Entry(*r, 3).swslot, 4u);
  EXPECT_EQ(dev_->read_calls(), reads);
  ExpectConsistent();
}

// ---- fault-around and discard ----

// With sequential advice a zero-fill fault fills the following free pages of
// the chunk too (kMaxFaultAhead of them), in one go.
TEST_F(PdaemonTest, FaultAroundZeroFillsARun) {
  constexpr uint64_t kRun = kMaxFaultAhead + 1;
  Init(2 * kRun, 8, 64);
  std::shared_ptr<Region> r = Map(kRun + 8);
  r->set_advice(Region::ADV_SEQUENTIAL);
  Fault(*r, 2, FAULT_WRITE);
  EXPECT_EQ(uvm_->exp().flt_zfill.load(), 1);
  EXPECT_EQ(uvm_->exp().flt_around.load(), static_cast<int64_t>(kMaxFaultAhead));
  EXPECT_EQ(uvm_->exp().free.load(), static_cast<int64_t>(2 * kRun - kRun));
  for (uint64_t i = 0; i < kRun + 8; i++) {
    const bool in_run = i >= 2 && i < 2 + kRun;
    EXPECT_EQ(Entry(*r, i).frame != kNoFrame, in_run) << "page " << i;
    if (!in_run) continue;
    EXPECT_EQ(Flags(*r, i) & (PQ_ACTIVE | PG_CLEAN), PQ_ACTIVE) << "page " << i;
    EXPECT_TRUE(pmap_.mapped(*r, i)) << "page " << i;
    EXPECT_EQ(std::string(pmap_.direct(*r, i), PAGE_SIZE), std::string(PAGE_SIZE, '\0'));
  }
  ExpectConsistent();
}

// With normal advice, a fault close after the last one is sequential access:
// it zero-fills kMaxFaultAhead following pages (a whole run needs no bounce
// pages), while a fault elsewhere fills its page alone.
TEST_F(PdaemonTest, NormalAdviceZeroFillsLongRunsOnSequentialAccess) {
  constexpr uint64_t kRun = kMaxFaultAhead + 1;
  Init(4 * kRun, 8, 64);
  std::shared_ptr<Region> r = Map(3 * kRun);
  Fault(*r, 0, FAULT_WRITE);
  EXPECT_EQ(uvm_->exp().flt_around.load(), 0) << "the first fault has no history";
  Fault(*r, 1, FAULT_WRITE);
  EXPECT_EQ(uvm_->exp().flt_around.load(), static_cast<int64_t>(kMaxFaultAhead));
  for (uint64_t i = 0; i < 2 * kRun; i++) {
    EXPECT_EQ(pmap_.mapped(*r, i), i <= kRun) << "page " << i;
  }
  Fault(*r, 2 * kRun + 20, FAULT_WRITE);  // far ahead: not sequential
  EXPECT_EQ(uvm_->exp().flt_zfill.load(), 3);
  EXPECT_EQ(uvm_->exp().flt_around.load(), static_cast<int64_t>(kMaxFaultAhead));
  ExpectConsistent();
}

// Zero-fill ahead: a sequential zero-fill fault handled by the reader
// (uvm_fault_try) also fills the run after the next unfilled page; the
// fault on that page, the mark, fills the next run ahead, and so on, a run
// ahead cut at the end of a chunk going on in the next one.  A fault that
// may wait (a worker's, or in-thread) fills nothing ahead.
TEST_F(PdaemonTest, ReaderZeroFillsAheadOfASequentialFirstTouch) {
  constexpr uint64_t kRun = kMaxFaultAhead + 1;
  static_assert(4 * kRun == kChunkPages);
  Init(10 * kRun, 8, 64);
  std::shared_ptr<Region> r = Map(6 * kRun);
  auto try_fault = [&](uint64_t idx) {
    absl::Status st;
    ASSERT_TRUE(uvm_->uvm_fault_try(*r, idx, FAULT_WRITE, &st)) << "page " << idx;
    ASSERT_TRUE(st.ok()) << st;
  };
  // Pages [from, to) are mapped, and page `to` is not.
  auto expect_run = [&](uint64_t from, uint64_t to) {
    for (uint64_t i = from; i < to; i++) EXPECT_TRUE(pmap_.mapped(*r, i)) << "page " << i;
    EXPECT_FALSE(pmap_.mapped(*r, to)) << "page " << to;
  };
  try_fault(0);  // no history: the page alone, nothing ahead
  expect_run(0, 1);
  try_fault(1);  // sequential: a full run, and the run after the mark
  expect_run(1, kRun + 1);
  expect_run(kRun + 2, 2 * kRun + 1);
  try_fault(kRun + 1);  // the mark: the page alone, and the next run ahead
  expect_run(2 * kRun + 2, 3 * kRun + 1);
  try_fault(2 * kRun + 1);  // a run ahead cut at the chunk's end
  expect_run(3 * kRun + 2, 4 * kRun);
  try_fault(3 * kRun + 1);  // the next mark is the next chunk's first page
  expect_run(4 * kRun + 1, 5 * kRun);
  try_fault(4 * kRun);  // the run ahead ends with the region
  EXPECT_FALSE(pmap_.mapped(*r, 5 * kRun));
  for (uint64_t i = 5 * kRun + 1; i < 6 * kRun; i++) EXPECT_TRUE(pmap_.mapped(*r, i)) << i;
  EXPECT_EQ(uvm_->exp().flt_zfill.load(), 6);
  EXPECT_EQ(uvm_->exp().flt_around.load(), static_cast<int64_t>(6 * kMaxFaultAhead - 1));

  // A fault that may wait fills nothing ahead.
  std::shared_ptr<Region> r2 = Map(2 * kRun);
  Fault(*r2, 0, FAULT_WRITE);
  Fault(*r2, 1, FAULT_WRITE);
  for (uint64_t i = 0; i < 2 * kRun; i++) EXPECT_EQ(pmap_.mapped(*r2, i), i <= kRun) << i;
  ExpectConsistent();
}

// A zero-fill run refused for an unread event gives its frames back without
// punching them: the refused call created no backing page.  The fault then
// fills the run on its next round.
TEST_F(PdaemonTest, ZeroFillRefusedForAnEventPunchesNothing) {
  constexpr uint64_t kRun = kMaxFaultAhead + 1;
  Init(2 * kRun, 8, 64);
  std::shared_ptr<Region> r = Map(kRun);
  r->set_advice(Region::ADV_SEQUENTIAL);
  pmap_.FailNextMappings(1);
  Fault(*r, 0, FAULT_WRITE);

  EXPECT_EQ(pmap_.count(FakePmap::kRelease), 0) << "frames of unfilled pages punched";
  EXPECT_EQ(pmap_.count(FakePmap::kZerofill), static_cast<int>(kRun + 1))
      << "one refused call, then the run";
  EXPECT_EQ(uvm_->exp().flt_zfill.load(), 1);
  EXPECT_EQ(uvm_->exp().flt_around.load(), static_cast<int64_t>(kMaxFaultAhead));
  EXPECT_EQ(uvm_->exp().free.load(), static_cast<int64_t>(kRun));
  for (uint64_t i = 0; i < kRun; i++) {
    EXPECT_TRUE(pmap_.mapped(*r, i)) << "page " << i;
    EXPECT_EQ(std::string(pmap_.direct(*r, i), PAGE_SIZE), std::string(PAGE_SIZE, '\0'));
  }
  ExpectConsistent();
}

// A swap-in fault brings in the following pages whose slots follow its slot
// (one cluster), with one read, clean and mapped write-protected.
TEST_F(PdaemonTest, FaultAroundSwapsInARunWithOneRead) {
  std::shared_ptr<Region> r = SceneEvicted();  // 0..15 in slots 1..16
  r->set_advice(Region::ADV_SEQUENTIAL);
  Fault(*r, 0, FAULT_READ);

  EXPECT_EQ(dev_->read_calls(), 1);
  EXPECT_EQ(uvm_->exp().flt_swapin.load(), 1);
  EXPECT_EQ(uvm_->exp().pgswapin.load(), 16);
  EXPECT_EQ(uvm_->exp().flt_around.load(), 15);
  EXPECT_EQ(uvm_->exp().swpgonly.load(), 0);
  for (uint64_t i = 0; i < 16; i++) {
    EXPECT_TRUE(Holds(*r, i)) << "page " << i;
    EXPECT_EQ(Flags(*r, i) & (PQ_ACTIVE | PG_CLEAN | PG_BUSY), PQ_ACTIVE | PG_CLEAN) << i;
    EXPECT_TRUE(pmap_.write_protected(*r, i)) << "page " << i;
    EXPECT_EQ(Entry(*r, i).swslot, i + 1);
  }
  ExpectConsistent();
}

// With bounce pages, a swap-in run is read into them and copied into place
// (Pmap::copy_run): the same data, state and mappings as a read straight
// into the frames, and the bounce pages are free again afterwards.
TEST_F(PdaemonTest, FaultAroundSwapsInThroughBouncePages) {
  bounce_pages_ = 16;
  std::shared_ptr<Region> r = SceneEvicted();  // 0..15 in slots 1..16
  r->set_advice(Region::ADV_SEQUENTIAL);
  Fault(*r, 0, FAULT_READ);

  EXPECT_EQ(dev_->read_calls(), 1);
  EXPECT_EQ(uvm_->exp().pgswapin.load(), 16);
  EXPECT_EQ(pmap_.pages(FakePmap::kPlace), 16u) << "the run was not copied from bounce pages";
  for (uint64_t i = 0; i < 16; i++) {
    EXPECT_TRUE(Holds(*r, i)) << "page " << i;
    EXPECT_EQ(Flags(*r, i) & (PQ_ACTIVE | PG_CLEAN | PG_BUSY), PQ_ACTIVE | PG_CLEAN) << i;
    EXPECT_TRUE(pmap_.write_protected(*r, i)) << "page " << i;
  }
  ExpectBouncePagesFree(16, "the swap-in kept its bounce pages");
  ExpectConsistent();
}

// Bounce pages are handed out first fit, contiguous, and never more than
// there are: a swap-in that gets none reads straight into its frames.
TEST_F(PdaemonTest, BouncePagesAreFirstFitAndBounded) {
  bounce_pages_ = 8;
  Init(32, 4, 64);
  char* a = uvm_->uvm_swap_allocpages(4);
  char* b = uvm_->uvm_swap_allocpages(3);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b, a + 4 * PAGE_SIZE);
  EXPECT_EQ(uvm_->uvm_swap_allocpages(2), nullptr) << "only one page is left";
  EXPECT_EQ(uvm_->uvm_swap_allocpages(9), nullptr) << "more than there are";
  uvm_->uvm_swap_freepages(a, 4);
  char* c = uvm_->uvm_swap_allocpages(2);
  EXPECT_EQ(c, a);
  char* d = uvm_->uvm_swap_allocpages(3);
  EXPECT_EQ(d, nullptr) << "two free pages, then one, are not three contiguous ones";
  char* e = uvm_->uvm_swap_allocpages(2);
  EXPECT_EQ(e, a + 2 * PAGE_SIZE);
  // Written and read back whole: the pages exist.
  std::memset(e, 0x5a, 2 * PAGE_SIZE);
  EXPECT_EQ(e[2 * PAGE_SIZE - 1], 0x5a);
  uvm_->uvm_swap_freepages(b, 3);
  uvm_->uvm_swap_freepages(c, 2);
  uvm_->uvm_swap_freepages(e, 2);
  EXPECT_NE(uvm_->uvm_swap_allocpages(8), nullptr);

  bounce_pages_ = 0;
  Init(32, 4, 64);
  EXPECT_EQ(uvm_->uvm_swap_allocpages(1), nullptr) << "no bounce pages were asked for";
}

// The application discards a page while it is being written (MADV_DONTNEED):
// it is PG_RELEASED, and freed with its slot when the write completes.
TEST_F(PdaemonTest, PageDiscardedDuringPageoutIsFreedAtCompletion) {
  std::shared_ptr<Region> r = SceneWithWritesInFlight();
  uvm_->uvm_map_discard(r->addr(3), r->addr(4));
  EXPECT_TRUE(Flags(*r, 3) & PG_RELEASED);
  EXPECT_TRUE(Flags(*r, 3) & PG_BUSY);
  ASSERT_EQ(CompleteWrites(), 2u);
  EXPECT_EQ(Entry(*r, 3).frame, kNoFrame);
  EXPECT_EQ(Entry(*r, 3).swslot, 0u);
  EXPECT_EQ(uvm_->exp().swpginuse.load(), 15);
  EXPECT_EQ(uvm_->exp().free.load(), 5);
  ExpectConsistent();
  Fault(*r, 3, FAULT_READ);  // reads zero now
  EXPECT_EQ(std::string(pmap_.direct(*r, 3), PAGE_SIZE), std::string(PAGE_SIZE, '\0'));
  ExpectConsistent();
}

// Regression test for a runtime bug found while writing these tests (fails at
// 4eb8be0, fixed in 534ed3b): a page discarded while it is being swapped in is
// PG_RELEASED; the fault freed it and its slot (uvm_page_release) but never
// took it out of swpgonly, which counted it as living only in swap.  Each such
// race left swpgonly one too high for ever, bringing uvm_swapisfull()
// (dirtyreacts, the out-of-swap failure of uvm_wait) early.
TEST_F(PdaemonTest, DiscardDuringSwapInKeepsSwpgonlyExact) {
  std::shared_ptr<Region> r = SceneEvicted();  // random advice: one page per fault
  ASSERT_EQ(uvm_->exp().swpgonly.load(), 16);
  dev_->set_read_hook([&](uint64_t, int) {
    uvm_->uvm_map_discard(r->addr(3), r->addr(4));  // while slot 4 is read
  });
  Fault(*r, 3, FAULT_READ);
  dev_->set_read_hook(nullptr);

  EXPECT_EQ(Entry(*r, 3).frame, kNoFrame);
  EXPECT_EQ(Entry(*r, 3).swslot, 0u);
  EXPECT_FALSE(pmap_.mapped(*r, 3)) << "a discarded page was mapped";
  EXPECT_EQ(uvm_->exp().swpginuse.load(), 15);
  EXPECT_EQ(uvm_->exp().swpgonly.load(), 15) << "pages 0..2 and 4..15 live only in swap";
  ExpectConsistent();
  Fault(*r, 3, FAULT_READ);  // reads zero now
  EXPECT_EQ(std::string(pmap_.direct(*r, 3), PAGE_SIZE), std::string(PAGE_SIZE, '\0'));
  ExpectConsistent();
}

// Regression test for a runtime bug found while writing these tests (fails at
// 4eb8be0, fixed in 534ed3b): in a fault-around swap-in, when a page other than
// the first was discarded during the read, the fault freed that page but then
// treated the run's first `good` pages as the ones that stayed resident: it
// activated and mapped the freed frame, which was on the free list (the free
// list and the active queue then shared it, and the free list lost its tail),
// and left the run's last page resident on no queue, where the daemon could
// never page it out.  Whatever the fault keeps of the run, every page must end
// up either resident and queued with its data, or not resident with its slot.
TEST_F(PdaemonTest, DiscardDuringFaultAroundSwapInKeepsQueuesSound) {
  std::shared_ptr<Region> r = SceneEvicted();  // 0..15 in slots 1..16
  r->set_advice(Region::ADV_SEQUENTIAL);
  dev_->set_read_hook([&](uint64_t slot, int n) {
    EXPECT_EQ(slot, 1u);
    EXPECT_EQ(n, 16) << "one read for the run";
    uvm_->uvm_map_discard(r->addr(2), r->addr(3));  // while slots 1..16 are read
  });
  Fault(*r, 0, FAULT_READ);
  dev_->set_read_hook(nullptr);

  EXPECT_EQ(Entry(*r, 2).frame, kNoFrame);
  EXPECT_EQ(Entry(*r, 2).swslot, 0u);
  EXPECT_FALSE(pmap_.mapped(*r, 2)) << "a discarded page was mapped";
  // The faulting page is in and mapped.
  EXPECT_EQ(Flags(*r, 0) & (PQ_ACTIVE | PQ_FREE | PG_BUSY), PQ_ACTIVE);
  EXPECT_TRUE(pmap_.mapped(*r, 0));
  EXPECT_TRUE(Holds(*r, 0));
  for (uint64_t i = 1; i < 16; i++) {
    if (i == 2) continue;
    const pgent e = Entry(*r, i);
    if (e.frame != kNoFrame) {
      EXPECT_EQ(Flags(*r, i) & (PQ_ACTIVE | PQ_FREE | PG_BUSY), PQ_ACTIVE) << "page " << i;
      EXPECT_TRUE(Holds(*r, i)) << "page " << i;
    } else {
      EXPECT_EQ(e.swslot, i + 1) << "page " << i << " is neither resident nor in swap";
      EXPECT_FALSE(pmap_.mapped(*r, i)) << "page " << i;
      EXPECT_TRUE(dev_->slot_data(i + 1) == Pattern(i)) << "page " << i;
    }
  }
  ExpectConsistent();
}

// The same when the faulting page itself is the one discarded: it reads zero
// now and the fault only wakes its thread; the rest of the run must still end
// up resident and queued, or not resident with its slot.
//
// RUNTIME BUG (reported; introduced by 534ed3b, which fixed the two bugs
// above): when page 0 of the run is PG_RELEASED, the swap-in loop marks the
// other pages good, then `if (released) { pmap_->wake(r, idx); return
// OkStatus(); }` returns before they are activated and before dec(swpgonly,
// ngood): pages 1..15 stay resident on no queue (the daemon never sees them
// again; frames leak from the budget) and swpgonly still counts them as living
// only in swap.  (At 4eb8be0 the other pages were freed with their slots, but
// page 0's swpgonly was leaked, so this test fails there too.)
TEST_F(PdaemonTest, DiscardOfTheFaultingPageDuringFaultAroundSwapIn) {
  std::shared_ptr<Region> r = SceneEvicted();  // 0..15 in slots 1..16
  r->set_advice(Region::ADV_SEQUENTIAL);
  dev_->set_read_hook([&](uint64_t, int) { uvm_->uvm_map_discard(r->addr(0), r->addr(1)); });
  Fault(*r, 0, FAULT_READ);
  dev_->set_read_hook(nullptr);

  EXPECT_EQ(Entry(*r, 0).frame, kNoFrame);
  EXPECT_EQ(Entry(*r, 0).swslot, 0u);
  EXPECT_FALSE(pmap_.mapped(*r, 0)) << "a discarded page was mapped";
  for (uint64_t i = 1; i < 16; i++) {
    const pgent e = Entry(*r, i);
    if (e.frame != kNoFrame) {
      EXPECT_EQ(Flags(*r, i) & (PQ_ACTIVE | PQ_FREE | PG_BUSY), PQ_ACTIVE) << "page " << i;
      EXPECT_TRUE(Holds(*r, i)) << "page " << i;
    } else {
      EXPECT_EQ(e.swslot, i + 1) << "page " << i << " is neither resident nor in swap";
    }
  }
  ExpectConsistent();
}

// ---- 18. uao_detach ----

// Detaching a region frees its frames (resident pages, clean or dirty) and
// its slots (pages only in swap, and resident pages' slots).
TEST_F(PdaemonTest, DetachFreesFramesAndSlots) {
  std::shared_ptr<Region> r = SceneEvicted();  // 0..15 only in swap
  Fault(*r, 0, FAULT_READ);                    // resident with a slot
  std::shared_ptr<Region> other = Map(2);
  Fault(*other, 0, FAULT_WRITE);
  ASSERT_EQ(uvm_->exp().swpgonly.load(), 15);
  ASSERT_EQ(uvm_->exp().swpginuse.load(), 16);
  ExpectConsistent();

  Detach(r);
  EXPECT_EQ(uvm_->exp().free.load(), 63);
  EXPECT_EQ(uvm_->exp().swpginuse.load(), 0);
  EXPECT_EQ(uvm_->exp().swpgonly.load(), 0);
  EXPECT_EQ(uvm_->exp().active.load() + uvm_->exp().inactive.load(), 1);
  EXPECT_EQ(uvm_->exp().regions.load(), 1);
  EXPECT_EQ(pmap_.count(FakePmap::kDestroyView), 1);
  EXPECT_EQ(pmap_.count(FakePmap::kFreeRange), 1);
  EXPECT_EQ(UvmTestPeer::CountAllocated(*uvm_, nslots_), 0);
  ExpectConsistent();

  Detach(other);
  EXPECT_EQ(uvm_->exp().free.load(), 64);
  EXPECT_EQ(uvm_->exp().active.load(), 0);
  EXPECT_EQ(uvm_->exp().inactive.load(), 0);
  EXPECT_EQ(uvm_->exp().regions.load(), 0);
  EXPECT_EQ(uvm_->exp().mapped_bytes.load(), 0);
  ExpectConsistent();
}

// A region moved into another's hole (an mremap there, or a Map the kernel
// placed there) lies inside the other's range.  Lookups must find each
// region's live pages, the outer one's past the inner one too; the hole's
// addresses are not taken; and once the inner region goes, lookups are one
// tree search again.
TEST_F(PdaemonTest, RegionInAnotherRegionsHoleIsFoundAndSoAreThePagesPastIt) {
  Init(64, 8, 64);
  std::shared_ptr<Region> outer = Map(8);
  const uintptr_t base = outer->base();
  const auto at = [&](uint64_t idx) { return base + idx * PAGE_SIZE; };
  Fault(*outer, 7, FAULT_WRITE);
  uvm_->uvm_map_unmapped(at(2), at(6));  // the application unmapped pages 2..5
  EXPECT_TRUE(outer->in_hole(3));
  EXPECT_FALSE(uvm_->uvm_map_taken(at(2), 4 * PAGE_SIZE));
  EXPECT_TRUE(uvm_->uvm_map_taken(at(1), 2 * PAGE_SIZE));

  std::shared_ptr<Region> inner = Map(2);
  uvm_->uvm_map_remapped(inner->base(), at(3), 2 * PAGE_SIZE);
  ASSERT_EQ(inner->base(), at(3));
  EXPECT_TRUE(UvmTestPeer::Nested(*uvm_));
  EXPECT_EQ(uvm_->uvm_map_lookup(at(3)), inner);
  EXPECT_EQ(uvm_->uvm_map_lookup(at(4) + 100), inner);
  EXPECT_EQ(uvm_->uvm_map_lookup(at(7)), outer) << "the page past the inner region";
  EXPECT_EQ(uvm_->uvm_map_lookup(at(0)), outer);
  EXPECT_EQ(uvm_->uvm_map_lookup(at(2)), outer) << "a hole page is the outer region's, in a hole";
  EXPECT_TRUE(uvm_->uvm_map_taken(at(3), PAGE_SIZE));
  Fault(*outer, 7, FAULT_READ);
  Fault(*inner, 1, FAULT_WRITE);

  // Unmap of the inner region: the outer one keeps its pages.
  Detach(inner);
  EXPECT_EQ(uvm_->uvm_map_lookup(at(3)), outer);
  EXPECT_EQ(uvm_->uvm_map_lookup(at(7)), outer);
  EXPECT_EQ(uvm_->uvm_map_lookup(at(8)), nullptr);
  EXPECT_FALSE(UvmTestPeer::Nested(*uvm_));
  ExpectConsistent();
}

// Bad slots outlive the region: they are never freed.
TEST_F(PdaemonTest, DetachKeepsBadSlots) {
  std::shared_ptr<Region> r = SceneWithWritesInFlight();
  ASSERT_EQ(CompleteWrites(-EIO, 1), 1u);
  ASSERT_EQ(CompleteWrites(), 1u);
  Detach(r);
  EXPECT_EQ(uvm_->exp().free.load(), 64);
  EXPECT_EQ(uvm_->exp().swpgbad.load(), 8);
  EXPECT_EQ(uvm_->exp().swpginuse.load(), 8);
  EXPECT_EQ(uvm_->exp().swpgonly.load(), 0);
  ExpectConsistent();
}

}  // namespace
}  // namespace uvmrt::uvm
