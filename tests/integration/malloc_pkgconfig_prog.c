/*
 * malloc_pkgconfig_prog: an ordinary C program with no uvmrt source in it,
 * built against an installed tree with `pkg-config --libs uvmrt-malloc`.  It
 * writes and verifies four times UVMRT_BUDGET, and checks in /proc/self/maps
 * that its heap is uvmrt memory (the runtime's memfd).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int in_uvmrt_mapping(const void *p) {
  FILE *f = fopen("/proc/self/maps", "r");
  char line[512];
  int found = 0;
  while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
    unsigned long lo, hi;
    if (sscanf(line, "%lx-%lx", &lo, &hi) != 2) continue;
    if ((uintptr_t)p >= lo && (uintptr_t)p < hi && strstr(line, "memfd:uvmrt") != NULL) found = 1;
  }
  if (f != NULL) fclose(f);
  return found;
}

int main(void) {
  const char *b = getenv("UVMRT_BUDGET");
  size_t budget = (b != NULL ? strtoull(b, NULL, 10) : 256) << 20; /* in M */
  const size_t chunk = 1 << 20, n = 4 * budget / chunk;
  unsigned char **v = malloc(n * sizeof(*v));
  if (!in_uvmrt_mapping(v)) {
    fprintf(stderr, "malloc_pkgconfig_prog: the heap is not uvmrt memory\n");
    return 1;
  }
  for (size_t i = 0; i < n; i++) {
    v[i] = malloc(chunk);
    for (size_t k = 0; k < chunk; k++) v[i][k] = (unsigned char)(i * 131 + k * 7);
  }
  for (size_t i = 0; i < n; i++) {
    for (size_t k = 0; k < chunk; k++) {
      if (v[i][k] != (unsigned char)(i * 131 + k * 7)) {
        fprintf(stderr, "malloc_pkgconfig_prog: chunk %zu byte %zu wrong\n", i, k);
        return 1;
      }
    }
    free(v[i]);
  }
  free(v);
  printf("malloc_pkgconfig_prog: %zu MiB verified in uvmrt memory\n", n);
  return 0;
}
