/* hello.c: the C interface.  Maps 4x the budget, writes and checks it. */
#include <stdio.h>
#include <string.h>

#include "uvmrt/uvmrt.h"

int main(void) {
  uvmrt_options o;
  uvmrt *rt;
  uvmrt_stats s;
  size_t i, n;
  unsigned char *p;

  uvmrt_options_init(&o);
  o.budget_bytes = 8u << 20;
  if (uvmrt_create(&o, &rt) != 0) {
    fprintf(stderr, "%s\n", uvmrt_last_error());
    return 1;
  }
  n = 4 * o.budget_bytes;
  p = uvmrt_map(rt, n);
  if (p == NULL) {
    fprintf(stderr, "%s\n", uvmrt_last_error());
    return 1;
  }
  for (i = 0; i < n; i += 4096) p[i] = (unsigned char)(i >> 12);
  for (i = 0; i < n; i += 4096) {
    if (p[i] != (unsigned char)(i >> 12)) {
      fprintf(stderr, "hello_c: wrong data at %zu\n", i);
      return 1;
    }
  }
  uvmrt_get_stats(rt, &s);
  printf("hello_c: %zu MiB verified; pgswapout %lld pgswapin %lld\n", n >> 20,
         (long long)s.pgswapout, (long long)s.pgswapin);
  uvmrt_unmap(rt, p, n);
  uvmrt_destroy(rt);
  return 0;
}
