/* A malloc-level tracker for tests: preloaded (LD_PRELOAD), it counts the
   usable bytes of every live heap block the process holds, whoever allocated
   it (PyTorch's CPU allocator, oneDNN, Python), and the peak since the last
   reset. Read through ctypes: malloc_peak_reset(), malloc_peak(), malloc_live(). */
#include <stddef.h>
#include <malloc.h>
#include <errno.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static long long live_bytes, peak_bytes;

static void grew(void *p) {
    if (!p) return;
    long long now = __atomic_add_fetch(&live_bytes, (long long)malloc_usable_size(p), __ATOMIC_SEQ_CST);
    long long old = __atomic_load_n(&peak_bytes, __ATOMIC_SEQ_CST);
    while (now > old && !__atomic_compare_exchange_n(&peak_bytes, &old, now, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
}
static void shrank(void *p) {
    if (p) __atomic_sub_fetch(&live_bytes, (long long)malloc_usable_size(p), __ATOMIC_SEQ_CST);
}
void *malloc(size_t n) { void *p = __libc_malloc(n); grew(p); return p; }
void *calloc(size_t a, size_t b) { void *p = __libc_calloc(a, b); grew(p); return p; }
void free(void *p) { shrank(p); __libc_free(p); }
void *realloc(void *p, size_t n) {
    size_t before = p ? malloc_usable_size(p) : 0;
    void *q = __libc_realloc(p, n);
    if (q) { __atomic_sub_fetch(&live_bytes, (long long)before, __ATOMIC_SEQ_CST); grew(q); }
    else if (n == 0 && p) __atomic_sub_fetch(&live_bytes, (long long)before, __ATOMIC_SEQ_CST);
    return q;
}
void *memalign(size_t a, size_t n) { void *p = __libc_memalign(a, n); grew(p); return p; }
void *aligned_alloc(size_t a, size_t n) { return memalign(a, n); }
void *valloc(size_t n) { return memalign(4096, n); }
int posix_memalign(void **out, size_t a, size_t n) {
    void *p = __libc_memalign(a, n);
    if (!p) return ENOMEM;
    grew(p); *out = p; return 0;
}
void malloc_peak_reset(void) { __atomic_store_n(&peak_bytes, __atomic_load_n(&live_bytes, __ATOMIC_SEQ_CST), __ATOMIC_SEQ_CST); }
long long malloc_peak(void) { return __atomic_load_n(&peak_bytes, __ATOMIC_SEQ_CST); }
long long malloc_live(void) { return __atomic_load_n(&live_bytes, __ATOMIC_SEQ_CST); }
