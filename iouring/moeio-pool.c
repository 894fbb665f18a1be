/* moeio-pool.c: the host memory reads land in.
 *
 * A pool is one 2 MiB-aligned mapping whose size is a multiple of 2 MiB, so that it can be
 * backed by huge pages (fewer TLB misses, fewer pages for io_uring to pin) and imported
 * into Vulkan as host memory (VK_EXT_external_memory_host wants the pointer and size
 * aligned to minImportedHostPointerAlignment, usually 4096: 2 MiB satisfies it).
 *
 * Huge pages: MAP_HUGETLB only succeeds where the admin reserved pages (vm.nr_hugepages);
 * mmap then fails up front with ENOMEM instead of faulting later, because the mapping
 * reserves them (mmap(2), MAP_HUGETLB; no MAP_NORESERVE here). Otherwise we over-map by
 * 2 MiB, trim to a 2 MiB boundary and ask for transparent huge pages with
 * madvise(MADV_HUGEPAGE), which is a hint (EINVAL when THP is compiled out: not an error).
 *
 * Invariants: base % MOEIO_POOL_ALIGN == 0 and size % MOEIO_POOL_ALIGN == 0 for pools we
 * map; base and size multiples of MOEIO_ALIGN for wrapped (foreign) memory. The pool never
 * moves or grows. Who calls: the expert cache / bench create it, moeio_new registers it. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "iouring/moeio.h"

struct moeio_pool {
    void *base;
    size_t size;
    unsigned flags;
};

static int pool_map_hugetlb(size_t size, void **ret)
{
#ifdef MAP_HUGETLB
    int fl = MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB;
#ifdef MAP_HUGE_2MB
    fl |= MAP_HUGE_2MB;
#endif
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, fl, -1, 0);
    if (p == MAP_FAILED)
        return -ENOMEM;
    *ret = p;
    return 0;
#else
    return -ENOTSUP;
#endif
}

/* Normal pages, base trimmed to a 2 MiB boundary. */
static int pool_map_aligned(size_t size, void **ret)
{
    size_t over = size + MOEIO_POOL_ALIGN;
    if (over < size)
        return -ENOMEM;
    char *p = mmap(NULL, over, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -ENOMEM;
    uintptr_t a = ((uintptr_t)p + MOEIO_POOL_ALIGN - 1) & ~(uintptr_t)(MOEIO_POOL_ALIGN - 1);
    size_t head = a - (uintptr_t)p, tail = over - head - size;
    if (head)
        munmap(p, head);
    if (tail)
        munmap((char *)a + size, tail);
    *ret = (void *)a;
    return 0;
}

int moeio_pool_new(size_t size, unsigned flags, moeio_pool_t **ret)
{
    if (!size || size > SIZE_MAX - MOEIO_POOL_ALIGN)
        return -EINVAL;
    size = (size + MOEIO_POOL_ALIGN - 1) & ~(size_t)(MOEIO_POOL_ALIGN - 1);
    moeio_pool_t *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->size = size;
    int r = -ENOTSUP;
    if (!(flags & MOEIO_POOL_NO_HUGETLB))
        r = pool_map_hugetlb(size, &p->base);
    if (r == 0) {
        p->flags |= MOEIO_POOL_HUGETLB;
    } else {
        r = pool_map_aligned(size, &p->base);
        if (r < 0)
            goto fail;
#if defined(MADV_HUGEPAGE) && defined(MADV_NOHUGEPAGE)
        if (flags & MOEIO_POOL_NO_THP)
            madvise(p->base, size, MADV_NOHUGEPAGE); /* also against THP=always */
        else if (madvise(p->base, size, MADV_HUGEPAGE) == 0)
            p->flags |= MOEIO_POOL_THP;
#endif
    }
    *ret = p;
    return 0;
fail:
    free(p);
    return r;
}

int moeio_pool_wrap(void *base, size_t size, moeio_pool_t **ret)
{
    if (!base || !size || (uintptr_t)base % MOEIO_ALIGN || size % MOEIO_ALIGN)
        return -EINVAL;
    moeio_pool_t *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    *p = (moeio_pool_t){.base = base, .size = size, .flags = MOEIO_POOL_FOREIGN};
    *ret = p;
    return 0;
}

moeio_pool_t *moeio_pool_free(moeio_pool_t *p)
{
    if (!p)
        return NULL;
    if (!(p->flags & MOEIO_POOL_FOREIGN))
        munmap(p->base, p->size);
    free(p);
    return NULL;
}

void *moeio_pool_base(const moeio_pool_t *p) { return p->base; }
size_t moeio_pool_size(const moeio_pool_t *p) { return p->size; }
unsigned moeio_pool_flags(const moeio_pool_t *p) { return p->flags; }

void *moeio_pool_ptr(const moeio_pool_t *p, size_t off)
{
    return off < p->size ? (char *)p->base + off : NULL;
}
