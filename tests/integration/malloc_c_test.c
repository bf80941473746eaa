/*
 * malloc_c_test: a C program linked with nothing but uvmrt-malloc.  It
 * allocates several times its budget (UVMRT_BUDGET) in many sizes, with
 * frees and reallocs, and verifies every byte; checks the aligned calls;
 * checks that calloc memory reads zero, also where the allocator reuses
 * memory it purged; and checks that freed memory goes back to the runtime.
 *
 *   malloc_c_test           the whole test
 *   malloc_c_test --quick   one allocation (for the environment tests)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "uvmrt/uvmrt_malloc.h"

static int failures;

#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                            \
      fprintf(stderr, "\n");                                                   \
      if (++failures > 20) exit(1);                                            \
    }                                                                          \
  } while (0)

static uint64_t rng_state = 0x243F6A8885A308D3ull;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

/* The byte at offset i of a block with tag t. */
static unsigned char pat(uint64_t t, size_t i) {
  uint64_t x = (t + 1) * 0x9E3779B97F4A7C15ull + (i >> 3) * 0xC2B2AE3D27D4EB4Full;
  x ^= x >> 29;
  return (unsigned char)(x >> ((i & 7) * 8));
}

static void fill(unsigned char *p, size_t n, uint64_t t) {
  for (size_t i = 0; i < n; i++) p[i] = pat(t, i);
}

/* Returns the first wrong offset, or (size_t)-1. */
static size_t verify(const unsigned char *p, size_t n, uint64_t t) {
  for (size_t i = 0; i < n; i++) {
    if (p[i] != pat(t, i)) return i;
  }
  return (size_t)-1;
}

static int all_zero(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (p[i] != 0) return 0;
  }
  return 1;
}

static size_t env_size(const char *name, size_t dflt) {
  const char *v = getenv(name);
  if (v == NULL) return dflt;
  char *end;
  size_t n = strtoull(v, &end, 10);
  switch (*end) {
    case 'K':
    case 'k':
      n <<= 10;
      break;
    case 'M':
    case 'm':
      n <<= 20;
      break;
    case 'G':
    case 'g':
      n <<= 30;
      break;
  }
  return n;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

struct block {
  unsigned char *p;
  size_t n;
  uint64_t tag;
};

/* Sizes from 1 byte to 2 MiB, most of them small, some page-sized. */
static size_t pick_size(void) {
  const uint64_t r = rnd();
  switch (r % 8) {
    case 0:
    case 1:
    case 2:
      return 1 + (r >> 8) % 128;
    case 3:
    case 4:
      return 128 + (r >> 8) % 4096;
    case 5:
      return 4096 * (1 + (r >> 8) % 16);
    case 6:
      return 65536 + (r >> 8) % (256 << 10);
    default:
      return (512 << 10) + (r >> 8) % (1536 << 10);
  }
}

static void test_workload(size_t budget) {
  /* Live data peaks at 2 x budget; allocated in total: over 6 x budget. */
  const size_t target = 2 * budget;
  const int nslots = 20000;
  struct block *b = calloc(nslots, sizeof(*b));
  CHECK(b != NULL, "calloc of the table");
  size_t live = 0, total = 0, reallocs = 0;
  uint64_t tag = 1;
  while (total < 6 * budget) {
    const int i = (int)(rnd() % nslots);
    if (b[i].p == NULL) {
      if (live > target) continue;
      const size_t n = pick_size();
      b[i].p = malloc(n);
      CHECK(b[i].p != NULL, "malloc(%zu): %s", n, strerror(errno));
      CHECK(uvmrt_malloc_owns(b[i].p), "malloc(%zu) = %p is not uvmrt memory", n, (void *)b[i].p);
      CHECK(malloc_usable_size(b[i].p) >= n, "usable size %zu < %zu", malloc_usable_size(b[i].p),
            n);
      b[i].n = n;
      b[i].tag = tag++;
      fill(b[i].p, n, b[i].tag);
      live += n;
      total += n;
    } else if (rnd() % 3 == 0) {
      /* realloc: the old bytes survive, the new ones are written. */
      const size_t n = pick_size();
      const size_t off = verify(b[i].p, b[i].n, b[i].tag);
      CHECK(off == (size_t)-1, "block %d (%zu bytes) wrong at %zu before realloc", i, b[i].n, off);
      unsigned char *q = realloc(b[i].p, n);
      CHECK(q != NULL, "realloc(%zu)", n);
      const size_t keep = n < b[i].n ? n : b[i].n;
      const size_t off2 = verify(q, keep, b[i].tag);
      CHECK(off2 == (size_t)-1, "realloc %zu -> %zu lost byte %zu", b[i].n, n, off2);
      CHECK(uvmrt_malloc_owns(q), "realloc result not uvmrt memory");
      live = live - b[i].n + n;
      if (n > b[i].n) total += n - b[i].n;
      b[i].p = q;
      b[i].n = n;
      fill(q, n, b[i].tag);
      reallocs++;
    } else {
      const size_t off = verify(b[i].p, b[i].n, b[i].tag);
      CHECK(off == (size_t)-1, "block %d (%zu bytes) wrong at %zu", i, b[i].n, off);
      free(b[i].p);
      live -= b[i].n;
      b[i].p = NULL;
    }
  }
  for (int i = 0; i < nslots; i++) {
    if (b[i].p == NULL) continue;
    const size_t off = verify(b[i].p, b[i].n, b[i].tag);
    CHECK(off == (size_t)-1, "final: block %d (%zu bytes) wrong at %zu", i, b[i].n, off);
    free(b[i].p);
  }
  free(b);
  printf("workload: %zu MiB allocated in all (%zux budget), %zu reallocs\n", total >> 20,
         total / budget, reallocs);
}

/* One large live set, four times the budget, verified after it is all written. */
static void test_four_times(size_t budget) {
  const size_t chunk = 1 << 20;
  const size_t n = 4 * budget / chunk;
  unsigned char **v = malloc(n * sizeof(*v));
  for (size_t i = 0; i < n; i++) {
    v[i] = malloc(chunk);
    CHECK(v[i] != NULL, "malloc(1 MiB) #%zu", i);
    fill(v[i], chunk, 1000 + i);
  }
  for (size_t i = 0; i < n; i++) {
    const size_t off = verify(v[i], chunk, 1000 + i);
    CHECK(off == (size_t)-1, "chunk %zu wrong at %zu", i, off);
  }
  uvmrt_stats s;
  CHECK(uvmrt_malloc_get_stats(&s) == 0, "stats");
  CHECK(s.pgswapout > 0, "nothing was paged out (%lld)", (long long)s.pgswapout);
  CHECK(s.flt_swapin > 0, "nothing was paged in");
  for (size_t i = 0; i < n; i++) free(v[i]);
  free(v);
}

static void test_aligned(void) {
  static const size_t aligns[] = {8, 16, 32, 64, 256, 4096, 65536, 1 << 20, 4 << 20};
  for (size_t a = 0; a < sizeof(aligns) / sizeof(aligns[0]); a++) {
    const size_t al = aligns[a];
    void *p = NULL;
    CHECK(posix_memalign(&p, al, 1000) == 0, "posix_memalign(%zu)", al);
    CHECK(((uintptr_t)p & (al - 1)) == 0, "posix_memalign(%zu) = %p", al, p);
    CHECK(uvmrt_malloc_owns(p), "posix_memalign(%zu) not uvmrt memory", al);
    memset(p, 1, 1000);
    free(p);
    p = aligned_alloc(al, 3 * al);
    CHECK(p != NULL && ((uintptr_t)p & (al - 1)) == 0, "aligned_alloc(%zu)", al);
    CHECK(uvmrt_malloc_owns(p), "aligned_alloc(%zu) not uvmrt memory", al);
    memset(p, 2, 3 * al);
    free(p);
    p = memalign(al, 77);
    CHECK(p != NULL && ((uintptr_t)p & (al - 1)) == 0, "memalign(%zu)", al);
    free(p);
  }
  /* Alignments that are not powers of two (volatile: compilers warn). */
  volatile size_t a4 = 4, a24 = 24, a48 = 48;
  void *p = NULL;
  CHECK(posix_memalign(&p, a24, 100) == EINVAL, "posix_memalign(24) must fail");
  CHECK(posix_memalign(&p, a4, 100) == EINVAL, "posix_memalign(4) must fail");
  errno = 0;
  CHECK(aligned_alloc(a48, 96) == NULL && errno == EINVAL, "aligned_alloc(48) must fail");
  p = memalign(a48, 10); /* rounded up to 64 */
  CHECK(p != NULL && ((uintptr_t)p & 63) == 0, "memalign(48)");
  free(p);
  p = valloc(5000);
  CHECK(p != NULL && ((uintptr_t)p & 4095) == 0 && uvmrt_malloc_owns(p), "valloc");
  CHECK(malloc_usable_size(p) >= 5000, "valloc usable size");
  free(p);
  p = pvalloc(5000);
  CHECK(p != NULL && ((uintptr_t)p & 4095) == 0 && malloc_usable_size(p) >= 8192, "pvalloc");
  free(p);
  /* Alignments beyond the arena's come from the system heap. */
  CHECK(posix_memalign(&p, 64 << 20, 100) == 0 && ((uintptr_t)p & ((64 << 20) - 1)) == 0,
        "posix_memalign(64 MiB)");
  free(p);
  /* Sizes no allocator can serve (volatile: the compiler would warn). */
  volatile size_t huge = SIZE_MAX / 2, quarter = SIZE_MAX / 4;
  errno = 0;
  CHECK(malloc(huge) == NULL && errno == ENOMEM, "huge malloc must fail with ENOMEM");
  CHECK(calloc(quarter, 8) == NULL, "overflowing calloc must fail");
  CHECK(reallocarray(NULL, quarter, 8) == NULL, "overflowing reallocarray must fail");
  CHECK(realloc(malloc(10), 0) == NULL, "realloc(p, 0) frees and returns NULL");
  CHECK(malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL)");
  free(NULL);
}

static void test_calloc_zero(size_t budget) {
  /* Fresh memory. */
  for (size_t n = 1; n < (8 << 20); n = n * 3 + 1) {
    unsigned char *p = calloc(1, n);
    CHECK(p != NULL && all_zero(p, n), "calloc(%zu) fresh not zero", n);
    memset(p, 0xAA, n);
    free(p);
  }
  /* Reused without a purge: small blocks just freed. */
  enum { kSmall = 4000 };
  unsigned char *small[kSmall];
  for (int i = 0; i < kSmall; i++) {
    small[i] = malloc(48 + i % 200);
    memset(small[i], 0xCC, 48 + i % 200);
  }
  for (int i = 0; i < kSmall; i++) free(small[i]);
  for (int i = 0; i < kSmall; i++) {
    small[i] = calloc(48 + i % 200, 1);
    CHECK(all_zero(small[i], 48 + i % 200), "calloc reusing a freed block is not zero (%d)", i);
  }
  for (int i = 0; i < kSmall; i++) free(small[i]);
  /* Reused after a purge: write more than the budget, free it, purge, calloc. */
  const size_t chunk = 256 << 10;
  const size_t n = 2 * budget / chunk;
  unsigned char **v = malloc(n * sizeof(*v));
  for (size_t i = 0; i < n; i++) {
    v[i] = malloc(chunk);
    memset(v[i], 0xEE, chunk);
  }
  for (size_t i = 0; i < n; i++) free(v[i]);
  uvmrt_malloc_collect();
  for (size_t i = 0; i < n; i++) {
    v[i] = calloc(chunk / 8, 8);
    CHECK(v[i] != NULL && all_zero(v[i], chunk), "calloc after purge not zero (%zu)", i);
  }
  for (size_t i = 0; i < n; i++) free(v[i]);
  /* A large block freed, purged (MADV_DONTNEED) and handed out again. */
  for (int round = 0; round < 3; round++) {
    unsigned char *p = malloc(budget);
    memset(p, 0x77, budget);
    free(p);
    malloc_trim(0);
    p = calloc(budget, 1);
    CHECK(p != NULL && all_zero(p, budget), "calloc of a purged large block not zero");
    free(p);
  }
}

/* After everything is freed and collected, the runtime gets its frames and
 * swap slots back. */
static void test_memory_returns(size_t budget) {
  const size_t chunk = 1 << 20;
  const size_t n = 3 * budget / chunk;
  unsigned char **v = malloc(n * sizeof(*v));
  for (size_t i = 0; i < n; i++) {
    v[i] = malloc(chunk);
    fill(v[i], chunk, 5000 + i);
  }
  uvmrt_stats peak;
  uvmrt_malloc_get_stats(&peak);
  CHECK(peak.swpginuse > 0, "3 x budget must use swap");
  for (size_t i = 0; i < n; i++) free(v[i]);
  free(v);
  uvmrt_malloc_collect();
  uvmrt_stats s;
  int ok = 0;
  for (int i = 0; i < 300 && !ok; i++) {
    uvmrt_malloc_get_stats(&s);
    ok = s.swpginuse * 10 < peak.swpginuse && s.free * 2 > s.npages;
    if (!ok) sleep_ms(10);
  }
  CHECK(ok, "after freeing: swpginuse %lld (peak %lld), free %lld of %lld frames",
        (long long)s.swpginuse, (long long)peak.swpginuse, (long long)s.free, (long long)s.npages);
  printf("returned: swap in use %lld -> %lld pages, free frames %lld -> %lld of %lld\n",
         (long long)peak.swpginuse, (long long)s.swpginuse, (long long)peak.free, (long long)s.free,
         (long long)s.npages);
}

/* A forked child has no runtime and no arena: it allocates from the system
 * heap, and freeing a block it inherited does nothing. */
static void test_fork(void) {
  char *p = malloc(1000);
  strcpy(p, "parent");
  fflush(stdout);
  const pid_t pid = fork();
  if (pid == 0) {
    if (uvmrt_malloc_active()) _exit(2);
    char *q = malloc(5000);
    if (q == NULL || uvmrt_malloc_owns(q)) _exit(3);
    memset(q, 1, 5000);
    q = realloc(q, 100000);
    if (q == NULL || q[4999] != 1) _exit(4);
    free(q);
    free(p);
    _exit(0);
  }
  int st = 0;
  CHECK(pid > 0 && waitpid(pid, &st, 0) == pid, "fork/waitpid");
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
  CHECK(strcmp(p, "parent") == 0, "parent block");
  free(p);
}

int main(int argc, char **argv) {
  char *first = malloc(100);
  CHECK(uvmrt_malloc_active(), "uvmrt-malloc is not active");
  CHECK(uvmrt_malloc_owns(first), "malloc in main is not uvmrt memory");
  free(first);
  if (argc > 1 && strcmp(argv[1], "--quick") == 0) return failures == 0 ? 0 : 1;
  const size_t budget = env_size("UVMRT_BUDGET", 256 << 20);
  CHECK(uvmrt_malloc_arena_bytes() >= 4 * budget, "arena %zu too small for the test",
        uvmrt_malloc_arena_bytes());
  CHECK(uvmrt_malloc_stats_path()[0] != '\0', "no stats path");
  test_aligned();
  test_fork();
  test_workload(budget);
  test_four_times(budget);
  test_calloc_zero(budget);
  test_memory_returns(budget);
  uvmrt_stats s;
  uvmrt_malloc_get_stats(&s);
  printf("faults %lld (zfill %lld, swapin %lld), pageouts %lld, pages out %lld, in %lld\n",
         (long long)s.faults, (long long)s.flt_zfill, (long long)s.flt_swapin,
         (long long)s.pdpageouts, (long long)s.pgswapout, (long long)s.pgswapin);
  if (failures != 0) {
    printf("malloc_c_test: %d failures\n", failures);
    return 1;
  }
  printf("malloc_c_test: passed\n");
  return 0;
}
