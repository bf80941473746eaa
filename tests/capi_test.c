/* capi_test: the C interface, from C, with real assertions. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "uvmrt/uvmrt.h"

#define CHECK(c)                                                     \
  do {                                                               \
    if (!(c)) {                                                      \
      fprintf(stderr, "capi_test:%d: failed: %s (%s)\n", __LINE__, #c, \
              uvmrt_last_error());                                   \
      exit(1);                                                       \
    }                                                                \
  } while (0)

int main(void) {
  uvmrt_options o;
  uvmrt *rt = NULL;
  uvmrt_stats s;
  unsigned char *p;
  size_t i, n;

  uvmrt_options_init(&o);
  CHECK(o.budget_bytes >= UVMRT_MIN_BUDGET);
  CHECK(o.swap_path == NULL);
  CHECK(o.cluster_pages == 16);
  CHECK(o.fault_threads >= 1);

  o.budget_bytes = 1024; /* below the minimum */
  CHECK(uvmrt_create(&o, &rt) == -EINVAL);
  CHECK(strstr(uvmrt_last_error(), "minimum") != NULL);

  o.budget_bytes = 4u << 20;
  CHECK(uvmrt_create(&o, &rt) == 0);
  CHECK(uvmrt_map(rt, 0) == NULL);
  CHECK(strstr(uvmrt_last_error(), "zero") != NULL);

  n = 4 * o.budget_bytes;
  p = uvmrt_map(rt, n);
  CHECK(p != NULL);
  for (i = 0; i < n; i++) p[i] = (unsigned char)(i * 7 + (i >> 12));
  for (i = 0; i < n; i++) CHECK(p[i] == (unsigned char)(i * 7 + (i >> 12)));
  CHECK(uvmrt_get_stats(rt, &s) == 0);
  CHECK(s.pagesize == 4096);
  /* The frames: the budget less its bounce pages (a sixteenth, at most 512). */
  {
    const int64_t budget_pages = (int64_t)(o.budget_bytes / 4096);
    const int64_t bounce = budget_pages / 16 < 512 ? budget_pages / 16 : 512;
    CHECK(s.npages == budget_pages - bounce);
  }
  CHECK(s.pgswapout > 0 && s.pgswapin > 0);
  CHECK(s.mapped_bytes == (int64_t)n);
  CHECK(uvmrt_unmap(rt, p + 4096, 0) == -EINVAL);
  CHECK(uvmrt_unmap(rt, p, n) == 0);
  CHECK(uvmrt_get_stats(rt, &s) == 0);
  CHECK(s.swpginuse == 0 && s.free == s.npages && s.regions == 0);
  uvmrt_destroy(rt);
  printf("capi_test: ok\n");
  return 0;
}
