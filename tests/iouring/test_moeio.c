/* test_moeio: libmoeio against pread(2) as the oracle.
 *
 * One random file (16 MiB + 1234 bytes, so its end is not aligned) in a fresh mkdtemp()
 * directory on a real disk (the build dir or /var/tmp; O_DIRECT on tmpfs would test a
 * different path). Each test reads ranges through libmoeio and compares the bytes with
 * pread of the same ranges. Faults come from the wrapper in moeio-fault.c; "io_uring
 * refused" and "RLIMIT_MEMLOCK too low" run in a forked child with a seccomp filter or
 * lowered limits, reporting through its exit status. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/magic.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "iouring/moeio.h"
#include "moeio-fault.h"

#define FILE_SIZE ((uint64_t)16 * 1024 * 1024 + 1234)
#define POOL_SIZE ((size_t)32 * 1024 * 1024)

static char g_dir[4096];
static char g_path[4096 + 32];
static int g_fd = -1; /* buffered fd for the pread oracle */
static bool g_have_uring; /* io_uring can be set up here (else its tests run on pread) */

/* ---- fixture ---------------------------------------------------------------------------- */

static bool is_tmpfs(const char *path)
{
    struct statfs sf;
    return statfs(path, &sf) == 0 && sf.f_type == TMPFS_MAGIC;
}

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void write_random_file(const char *path, uint64_t size, uint64_t seed)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert_int_ge(fd, 0);
    static uint64_t buf[8192];
    for (uint64_t at = 0; at < size;) {
        for (size_t i = 0; i < 8192; i++)
            buf[i] = xorshift(&seed);
        size_t n = size - at < sizeof(buf) ? (size_t)(size - at) : sizeof(buf);
        ck_assert_int_eq(write(fd, buf, n), (ssize_t)n);
        at += n;
    }
    close(fd);
}

static void setup_file(void)
{
    const char *base = getenv("MOE_BUILDDIR");
    if (!base || is_tmpfs(base))
        base = "/var/tmp";
    snprintf(g_dir, sizeof(g_dir), "%s/moeio-test-XXXXXX", base);
    ck_assert_ptr_nonnull(mkdtemp(g_dir));
    snprintf(g_path, sizeof(g_path), "%s/data", g_dir);
    write_random_file(g_path, FILE_SIZE, 0x9e3779b97f4a7c15ull);
    g_fd = open(g_path, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(g_fd, 0);
    moeio_t *io = NULL;
    moeio_config_t cfg = {.backend = MOEIO_BACKEND_IO_URING, .depth = 1};
    int r = moeio_new(g_path, &cfg, NULL, &io);
    g_have_uring = r == 0;
    if (r < 0)
        fprintf(stderr, "io_uring unavailable here (%s): its tests run on the pread backend\n",
                strerror(-r));
    moeio_free(io);
}

/* The backend a test asks for, or pread where io_uring is refused on this machine. */
static enum moeio_backend usable(enum moeio_backend b)
{
    return b == MOEIO_BACKEND_IO_URING && !g_have_uring ? MOEIO_BACKEND_PREAD : b;
}

static void teardown_file(void)
{
    close(g_fd);
    unlink(g_path);
    rmdir(g_dir);
}

/* ---- helpers ------------------------------------------------------------------------------ */

/* 0 when r succeeded and its bytes equal pread of the same range. */
static int read_differs(const moeio_read_t *r)
{
    if (r->res != 0)
        return 1;
    char *want = malloc(r->len);
    if (!want || pread(g_fd, want, r->len, (off_t)r->offset) != (ssize_t)r->len) {
        free(want);
        return 2;
    }
    int d = memcmp((char *)r->dst + r->inner, want, r->len) ? 3 : 0;
    free(want);
    return d;
}

static void assert_read_ok(const moeio_read_t *r)
{
    ck_assert_msg(read_differs(r) == 0, "read at %llu len %llu: res %d, differs %d",
                  (unsigned long long)r->offset, (unsigned long long)r->len, r->res,
                  read_differs(r));
}

/* Lays reads out back to back in the pool (each destination 4096-aligned). */
static void place_reads(moeio_pool_t *pool, moeio_read_t *reads, size_t n)
{
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t span = moeio_span(reads[i].offset, reads[i].len, NULL);
        ck_assert_uint_le(at + span, moeio_pool_size(pool));
        reads[i].dst = moeio_pool_ptr(pool, at);
        at += span;
    }
}

static void random_reads(moeio_read_t *reads, size_t n, uint64_t max_len, uint64_t seed)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t len = 1 + xorshift(&seed) % max_len;
        reads[i] = (moeio_read_t){.offset = xorshift(&seed) % (FILE_SIZE - len + 1),
                                  .len = len, .user = &reads[i]};
    }
}

static void assert_stats_add_up(const moeio_t *io, uint64_t n_reads, uint64_t n_errors)
{
    moeio_stats_t s;
    moeio_get_stats(io, &s);
    uint64_t hist = 0;
    for (int i = 0; i < MOEIO_LAT_BUCKETS; i++)
        hist += s.lat_hist[i];
    ck_assert_uint_eq(s.reads, n_reads);
    ck_assert_uint_eq(s.errors, n_errors);
    ck_assert_uint_eq(s.reads_ok + s.errors, s.reads);
    ck_assert_uint_eq(hist, s.reads);
    ck_assert_uint_ge(s.ops, s.reads - s.errors);
    ck_assert_uint_ge(s.bytes_io, s.bytes);
}

static moeio_t *open_io(const moeio_config_t *cfg_in, moeio_pool_t *pool)
{
    moeio_config_t cfg = cfg_in ? *cfg_in : (moeio_config_t){0};
    cfg.backend = usable(cfg.backend);
    moeio_t *io = NULL;
    int r = moeio_new(g_path, &cfg, pool, &io);
    ck_assert_msg(r == 0, "moeio_new: %s", strerror(-r));
    return io;
}

static moeio_pool_t *new_pool(size_t size)
{
    moeio_pool_t *pool = NULL;
    ck_assert_int_eq(moeio_pool_new(size, 0, &pool), 0);
    return pool;
}

/* ---- widening ----------------------------------------------------------------------------- */

START_TEST(span_is_widened_to_page_bounds)
{
    static const struct {
        uint64_t off, len, span;
        uint32_t inner;
    } cases[] = {
        {0, 1, 4096, 0},        {0, 4096, 4096, 0},     {0, 4097, 8192, 0},
        {4095, 1, 4096, 4095},  {4095, 2, 8192, 4095},  {4096, 1, 4096, 0},
        {4096, 4096, 4096, 0},  {4097, 4095, 4096, 1},  {4097, 4096, 8192, 1},
        {8191, 8194, 16384, 4095},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint32_t inner = 99;
        ck_assert_uint_eq(moeio_span(cases[i].off, cases[i].len, &inner), cases[i].span);
        ck_assert_uint_eq(inner, cases[i].inner);
    }
}
END_TEST

/* Every boundary case, through each backend, direct and buffered. */
static void run_boundary_reads(enum moeio_backend backend, bool buffered)
{
    const uint64_t eof = FILE_SIZE;
    moeio_read_t reads[] = {
        {.offset = 0, .len = 1},
        {.offset = 0, .len = 4096},
        {.offset = 4095, .len = 1},
        {.offset = 4095, .len = 2},      /* crosses a page */
        {.offset = 4096, .len = 4096},
        {.offset = 4097, .len = 4095},   /* ends on a page boundary */
        {.offset = 4097, .len = 10000},  /* crosses two */
        {.offset = eof - 1, .len = 1},   /* last byte: O_DIRECT read comes back short */
        {.offset = eof - 1234, .len = 1234},
        {.offset = eof - 5000, .len = 5000},
        {.offset = 0, .len = eof},       /* the whole file */
    };
    const size_t n = sizeof(reads) / sizeof(reads[0]);
    moeio_pool_t *pool = new_pool(POOL_SIZE);
    place_reads(pool, reads, n);
    moeio_config_t cfg = {.backend = backend, .buffered = buffered, .depth = 4};
    moeio_t *io = open_io(&cfg, pool);
    ck_assert_int_eq(moeio_read_batch(io, reads, n), 0);
    for (size_t i = 0; i < n; i++)
        assert_read_ok(&reads[i]);
    assert_stats_add_up(io, n, 0);
    moeio_info_t info;
    moeio_get_info(io, &info);
    ck_assert(info.direct == !buffered);
    moeio_free(io);
    moeio_pool_free(pool);
}

START_TEST(boundary_reads_match_pread)
{
    static const struct {
        enum moeio_backend b;
        bool buffered;
    } v[] = {{MOEIO_BACKEND_IO_URING, false}, {MOEIO_BACKEND_IO_URING, true},
             {MOEIO_BACKEND_PREAD, false}, {MOEIO_BACKEND_PREAD, true}};
    run_boundary_reads(v[_i].b, v[_i].buffered);
}
END_TEST

START_TEST(reads_past_end_or_misaligned_fail_alone)
{
    moeio_pool_t *pool = new_pool(POOL_SIZE);
    moeio_read_t reads[] = {
        {.offset = FILE_SIZE - 10, .len = 11}, /* one byte past the end */
        {.offset = 100, .len = 100},
        {.offset = FILE_SIZE, .len = 1},
        {.offset = 200, .len = 0},
        {.offset = 300, .len = 50},
    };
    place_reads(pool, reads, 5);
    reads[4].dst = (char *)reads[4].dst + 512; /* not 4096-aligned: refused with O_DIRECT */
    moeio_t *io = open_io(NULL, pool);
    ck_assert_int_eq(moeio_read_batch(io, reads, 5), -EINVAL);
    ck_assert_int_eq(reads[0].res, -EINVAL);
    assert_read_ok(&reads[1]);
    ck_assert_int_eq(reads[2].res, -EINVAL);
    ck_assert_int_eq(reads[3].res, -EINVAL);
    ck_assert_int_eq(reads[4].res, -EINVAL);
    assert_stats_add_up(io, 5, 4);
    moeio_free(io);
    moeio_pool_free(pool);
}
END_TEST

/* ---- many random ranges at several depths ------------------------------------------------ */

#define N_RANDOM 240
static void run_random_reads(enum moeio_backend backend, unsigned depth, bool async)
{
    static moeio_read_t reads[N_RANDOM];
    random_reads(reads, N_RANDOM, 96 * 1024, 1000 + depth);
    moeio_pool_t *pool = new_pool(POOL_SIZE);
    place_reads(pool, reads, N_RANDOM);
    /* a few destinations outside the registered pool: plain (not fixed) reads */
    void *own = aligned_alloc(MOEIO_ALIGN, 4 * 104 * 1024);
    ck_assert_ptr_nonnull(own);
    memset(own, 0, 4 * 104 * 1024); /* valgrind cannot see io_uring's writes into it */
    for (int i = 0; i < 4; i++)
        reads[i * 50].dst = (char *)own + (size_t)i * 104 * 1024;
    moeio_config_t cfg = {.backend = backend, .depth = depth};
    moeio_t *io = open_io(&cfg, pool);
    moeio_info_t info;
    moeio_get_info(io, &info);
    ck_assert_int_eq(info.backend, usable(backend));
    if (info.backend == MOEIO_BACKEND_IO_URING) /* registered, or told why not */
        ck_assert(info.buffers_registered || (info.notes & MOEIO_NOTE_UNREGISTERED));
    if (!async) {
        ck_assert_int_eq(moeio_read_batch(io, reads, N_RANDOM), 0);
    } else {
        /* three submissions, reaped as they finish: each read comes back exactly once */
        ck_assert_int_eq(moeio_submit(io, reads, 100), 0);
        ck_assert_int_eq(moeio_submit(io, reads + 100, 100), 0);
        size_t got = 0;
        moeio_read_t *done[16];
        bool seen[N_RANDOM] = {0};
        bool third = false;
        while (got < N_RANDOM) {
            if (!third && got >= 50) {
                ck_assert_int_eq(moeio_submit(io, reads + 200, N_RANDOM - 200), 0);
                third = true;
            }
            int k = moeio_reap(io, 1, done, 16);
            ck_assert_int_gt(k, 0);
            for (int j = 0; j < k; j++) {
                size_t i = (size_t)((moeio_read_t *)done[j]->user - reads);
                ck_assert(!seen[i]);
                seen[i] = true;
            }
            got += (size_t)k;
        }
        ck_assert_uint_eq(moeio_pending(io), 0);
        ck_assert_int_eq(moeio_reap(io, 1, done, 16), 0);
    }
    for (size_t i = 0; i < N_RANDOM; i++)
        assert_read_ok(&reads[i]);
    assert_stats_add_up(io, N_RANDOM, 0);
    moeio_stats_t s;
    moeio_get_stats(io, &s);
    uint64_t want = 0;
    for (size_t i = 0; i < N_RANDOM; i++)
        want += reads[i].len;
    ck_assert_uint_eq(s.bytes, want);
    moeio_free(io);
    moeio_pool_free(pool);
    free(own);
}

START_TEST(random_ranges_match_pread)
{
    static const unsigned depths[] = {1, 8, 64};
    enum moeio_backend b = _i < 6 ? MOEIO_BACKEND_IO_URING : MOEIO_BACKEND_PREAD;
    run_random_reads(b, depths[_i % 3], (_i / 3) % 2);
}
END_TEST

/* ---- injected faults ----------------------------------------------------------------------- */

static moeio_t *open_faulty(fault_t *f, moeio_pool_t *pool, unsigned depth,
                            enum moeio_backend b)
{
    moeio_config_t cfg = {.backend = b, .depth = depth, .wrapper = &f->base};
    return open_io(&cfg, pool);
}

START_TEST(short_reads_are_continued)
{
    enum moeio_backend b = _i ? MOEIO_BACKEND_PREAD : MOEIO_BACKEND_IO_URING;
    moeio_read_t reads[8];
    random_reads(reads, 8, 200 * 1024, 7);
    reads[0] = (moeio_read_t){.offset = 3, .len = 150000};
    moeio_pool_t *pool = new_pool(POOL_SIZE);
    place_reads(pool, reads, 8);
    fault_t f;
    fault_init(&f);
    /* op 1 (read at offset 3) stops after 1000 bytes: not a page multiple; op 2 (its
     * continuation) after 4096; op 5 (another read) after 8192 */
    fault_add(&f, (fault_rule_t){.nth = 1, .kind = FAULT_SHORT, .short_len = 1000});
    fault_add(&f, (fault_rule_t){.nth = 2, .kind = FAULT_SHORT, .short_len = 4096});
    fault_add(&f, (fault_rule_t){.nth = 5, .kind = FAULT_SHORT, .short_len = 8192});
    moeio_t *io = open_faulty(&f, pool, 1, b);
    ck_assert_int_eq(moeio_read_batch(io, reads, 8), 0);
    ck_assert_uint_eq(fault_fired(&f), 3);
    for (int i = 0; i < 8; i++)
        assert_read_ok(&reads[i]);
    moeio_stats_t s;
    moeio_get_stats(io, &s);
    ck_assert_uint_eq(s.short_reads, 3);
    ck_assert_uint_eq(s.ops, 8 + 3);
    assert_stats_add_up(io, 8, 0);
    moeio_free(io);
    moeio_pool_free(pool);
}
END_TEST

START_TEST(eagain_and_eintr_are_retried)
{
    moeio_read_t reads[6];
    random_reads(reads, 6, 50000, 11);
    moeio_pool_t *pool = new_pool(POOL_SIZE);
    place_reads(pool, reads, 6);
    fault_t f;
    fault_init(&f);
    fault_add(&f, (fault_rule_t){.nth = 2, .kind = FAULT_ERRNO, .err = EAGAIN});
    fault_add(&f, (fault_rule_t){.nth = 4, .kind = FAULT_ERRNO, .err = EINTR});
    moeio_t *io = open_faulty(&f, pool, 3, MOEIO_BACKEND_IO_URING);
    ck_assert_int_eq(moeio_read_batch(io, reads, 6), 0);
    for (int i = 0; i < 6; i++)
        assert_read_ok(&reads[i]);
    moeio_stats_t s;
    moeio_get_stats(io, &s);
    ck_assert_uint_eq(s.retries, 2);
    assert_stats_add_up(io, 6, 0);
    moeio_free(io);
    moeio_pool_free(pool);
}
END_TEST

/* An EIO fails exactly the read it belongs to; the caller learns which by its offset. */
START_TEST(eio_fails_only_that_read)
{
    static const unsigned depths[] = {1, 4, 32};
    unsigned depth = depths[_i % 3];
    enum moeio_backend b = _i < 3 ? MOEIO_BACKEND_IO_URING : MOEIO_BACKEND_PREAD;
    moeio_read_t reads[12];
    for (int i = 0; i < 12; i++) /* given unsorted; submitted sorted by offset */
        reads[i] = (moeio_read_t){.offset = (uint64_t)((i * 5) % 12) * 1000003 + 17,
                                  .len = 40000};
    moeio_pool_t *pool = new_pool(POOL_SIZE);
    place_reads(pool, reads, 12);
    uint64_t bad = 7 * 1000003 + 17 + 20000; /* inside the read at offset 7*1000003+17 */
    fault_t f;
    fault_init(&f);
    fault_add(&f, (fault_rule_t){.at = bad, .kind = FAULT_ERRNO, .err = EIO});
    moeio_t *io = open_faulty(&f, pool, depth, b);
    ck_assert_int_eq(moeio_read_batch(io, reads, 12), -EIO);
    int failed = 0;
    for (int i = 0; i < 12; i++) {
        if (reads[i].res == 0) {
            assert_read_ok(&reads[i]);
            continue;
        }
        failed++;
        ck_assert_int_eq(reads[i].res, -EIO);
        ck_assert_uint_eq(reads[i].offset, 7 * 1000003 + 17);
    }
    ck_assert_int_eq(failed, 1);
    assert_stats_add_up(io, 12, 1);
    /* the reader is still usable */
    moeio_read_t again = {.offset = 5, .len = 100, .dst = reads[0].dst};
    ck_assert_int_eq(moeio_read_batch(io, &again, 1), 0);
    assert_read_ok(&again);
    moeio_free(io);
    moeio_pool_free(pool);
}
END_TEST

START_TEST(nth_op_eio_reported_through_reap)
{
    moeio_read_t reads[10];
    random_reads(reads, 10, 30000, 5);
    moeio_pool_t *pool = new_pool(POOL_SIZE);
    place_reads(pool, reads, 10);
    fault_t f;
    fault_init(&f);
    fault_add(&f, (fault_rule_t){.nth = 4, .kind = FAULT_ERRNO, .err = EIO});
    moeio_t *io = open_faulty(&f, pool, 2, MOEIO_BACKEND_IO_URING);
    ck_assert_int_eq(moeio_submit(io, reads, 10), 0);
    moeio_read_t *done[10];
    ck_assert_int_eq(moeio_reap(io, 10, done, 10), 10);
    /* op 4 is the 4th read in offset order */
    uint64_t offs[10];
    for (int i = 0; i < 10; i++)
        offs[i] = reads[i].offset;
    for (int i = 0; i < 10; i++)
        for (int j = i + 1; j < 10; j++)
            if (offs[j] < offs[i]) {
                uint64_t t = offs[i];
                offs[i] = offs[j], offs[j] = t;
            }
    for (int i = 0; i < 10; i++) {
        if (done[i]->offset == offs[3])
            ck_assert_int_eq(done[i]->res, -EIO);
        else
            assert_read_ok(done[i]);
    }
    assert_stats_add_up(io, 10, 1);
    moeio_free(io);
    moeio_pool_free(pool);
}
END_TEST

/* A batch is sorted by offset and passed on in one submission; a batch larger than the
 * depth is pipelined with the depth kept full and never exceeded. */
START_TEST(batch_is_sorted_submitted_once_and_pipelined_at_depth)
{
    enum moeio_backend b = _i ? MOEIO_BACKEND_PREAD : MOEIO_BACKEND_IO_URING;
    static moeio_read_t reads[100];
    random_reads(reads, 100, 20000, 123);
    moeio_pool_t *pool = new_pool(POOL_SIZE);
    place_reads(pool, reads, 100);
    fault_t f;
    fault_init(&f);
    moeio_t *io = open_faulty(&f, pool, 8, b);
    ck_assert_int_eq(moeio_submit(io, reads, 6), 0);
    ck_assert_uint_eq(f.n_submits, 1); /* six reads, one system call */
    ck_assert_uint_eq(f.n_ops, 6);
    for (int i = 1; i < 6; i++)
        ck_assert_uint_le(f.log_off[i - 1], f.log_off[i]);
    moeio_read_t *done[100];
    ck_assert_int_eq(moeio_reap(io, 6, done, 100), 6);
    ck_assert_int_eq(moeio_submit(io, reads + 6, 94), 0);
    ck_assert_uint_eq(f.n_submits, 2);
    ck_assert_uint_eq(f.outstanding, 8); /* the depth, filled at once */
    ck_assert_int_eq(moeio_reap(io, 94, done, 100), 94);
    ck_assert_uint_eq(f.max_outstanding, 8);
    moeio_stats_t st;
    moeio_get_stats(io, &st);
    ck_assert_uint_gt(st.inflight_ns, 0);
    for (int i = 7; i < 6 + 8; i++) /* the first 8 of the big batch went out sorted */
        ck_assert_uint_le(f.log_off[i - 1], f.log_off[i]);
    for (int i = 0; i < 100; i++)
        assert_read_ok(&reads[i]);
    assert_stats_add_up(io, 100, 0);
    moeio_free(io);
    moeio_pool_free(pool);
}
END_TEST

/* Small op and registration limits: the pool is registered as many pieces; reads that
 * cross a piece are split there, and reads larger than an op are chunked. */
START_TEST(reads_cross_registered_pieces_and_are_chunked)
{
    static moeio_read_t reads[60];
    random_reads(reads, 60, 300000, 4242);
    moeio_pool_t *pool = new_pool(POOL_SIZE);
    place_reads(pool, reads, 60);
    moeio_config_t cfg = {.depth = 16, .max_op_bytes = 64 * 1024};
    moeio_t *io = open_io(&cfg, pool);
    moeio_info_t info;
    moeio_get_info(io, &info);
    ck_assert(info.buffers_registered || (info.notes & MOEIO_NOTE_UNREGISTERED));
    ck_assert_int_eq(moeio_read_batch(io, reads, 60), 0);
    uint64_t min_ops = 0;
    for (int i = 0; i < 60; i++) {
        assert_read_ok(&reads[i]);
        min_ops += (moeio_span(reads[i].offset, reads[i].len, NULL) + 65535) / 65536;
    }
    moeio_stats_t s;
    moeio_get_stats(io, &s);
    ck_assert_uint_ge(s.ops, min_ops);
    ck_assert_uint_eq(s.short_reads, 0); /* chunks are not short reads */
    moeio_free(io);
    cfg.max_op_bytes = 1000; /* not a multiple of 4096 */
    ck_assert_int_eq(moeio_new(g_path, &cfg, pool, &io), -EINVAL);
    moeio_pool_free(pool);
}
END_TEST

/* ---- fallbacks ------------------------------------------------------------------------------ */

/* O_DIRECT accepted at open but refused by the first reads: buffered, with a note. */
START_TEST(direct_einval_on_first_read_falls_back_to_buffered)
{
    moeio_read_t reads[5];
    random_reads(reads, 5, 70000, 3);
    moeio_pool_t *pool = new_pool(POOL_SIZE);
    place_reads(pool, reads, 5);
    fault_t f;
    fault_init(&f);
    fault_add(&f, (fault_rule_t){.nth = 1, .kind = FAULT_ERRNO, .err = EINVAL});
    moeio_t *io = open_faulty(&f, pool, 1, MOEIO_BACKEND_IO_URING);
    ck_assert_int_eq(moeio_read_batch(io, reads, 5), 0);
    for (int i = 0; i < 5; i++)
        assert_read_ok(&reads[i]);
    moeio_info_t info;
    moeio_get_info(io, &info);
    ck_assert(!info.direct);
    ck_assert(info.notes & MOEIO_NOTE_BUFFERED);
    ck_assert_int_eq(info.buffered_err, -EINVAL);
    ck_assert_ptr_nonnull(strstr(info.text, "O_DIRECT"));
    moeio_stats_t st;
    moeio_get_stats(io, &st);
    ck_assert_uint_eq(st.ops, 6); /* the refused op was issued again, buffered */
    moeio_free(io);
    moeio_pool_free(pool);
}
END_TEST

/* A file on tmpfs: older kernels refuse O_DIRECT there at open (EINVAL); since Linux 6.6
 * tmpfs accepts it, and then the reads must simply work direct. Either way: same bytes. */
START_TEST(tmpfs_file_reads_with_or_without_direct)
{
    if (!is_tmpfs("/dev/shm")) {
        fprintf(stderr, "tmpfs_file: /dev/shm is not tmpfs here, nothing to check\n");
        return;
    }
    char dir[] = "/dev/shm/moeio-test-XXXXXX", path[64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/data", dir);
    write_random_file(path, 300000, 42);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    moeio_pool_t *pool = new_pool(4 << 20);
    moeio_t *io = NULL;
    ck_assert_int_eq(moeio_new(path, NULL, pool, &io), 0);
    moeio_read_t r = {.offset = 4097, .len = 250000, .dst = moeio_pool_base(pool)};
    ck_assert_int_eq(moeio_read_batch(io, &r, 1), 0);
    char *want = malloc(r.len);
    ck_assert_int_eq(pread(fd, want, r.len, 4097), (ssize_t)r.len);
    ck_assert_int_eq(memcmp(want, (char *)r.dst + r.inner, r.len), 0);
    moeio_info_t info;
    moeio_get_info(io, &info);
    if (info.direct) {
        fprintf(stderr, "tmpfs_file: this kernel's tmpfs accepts O_DIRECT; the refusal "
                        "path is covered by direct_einval_on_first_read_falls_back\n");
        ck_assert(!(info.notes & MOEIO_NOTE_BUFFERED));
    } else {
        ck_assert(info.notes & MOEIO_NOTE_BUFFERED);
        ck_assert_int_eq(info.buffered_err, -EINVAL);
    }
    free(want);
    moeio_free(io);
    moeio_pool_free(pool);
    close(fd);
    unlink(path);
    rmdir(dir);
}
END_TEST

/* Child side: reads random ranges through `io`, compares with pread. 0 or a code. */
static int child_reads_match(moeio_t *io, moeio_pool_t *pool)
{
    static moeio_read_t reads[64];
    random_reads(reads, 64, 60000, 77);
    size_t at = 0;
    for (int i = 0; i < 64; i++) {
        reads[i].dst = moeio_pool_ptr(pool, at);
        at += moeio_span(reads[i].offset, reads[i].len, NULL);
    }
    if (moeio_read_batch(io, reads, 64) != 0)
        return 20;
    for (int i = 0; i < 64; i++)
        if (read_differs(&reads[i]))
            return 21;
    return 0;
}

/* Installs a seccomp filter: io_uring_setup -> EPERM, everything else allowed. */
static int forbid_io_uring(void)
{
#if defined(__x86_64__)
    const uint32_t arch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
    const uint32_t arch = AUDIT_ARCH_AARCH64;
#else
    return -ENOTSUP;
#endif
    struct sock_filter prog[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, arch, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog fprog = {.len = sizeof(prog) / sizeof(prog[0]), .filter = prog};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -errno;
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) < 0)
        return -errno;
    return 0;
}

static int child_io_uring_refused(void)
{
    if (forbid_io_uring() < 0)
        return 10;
    moeio_pool_t *pool = NULL;
    if (moeio_pool_new(8 << 20, 0, &pool) < 0)
        return 11;
    moeio_t *io = NULL;
    moeio_config_t cfg = {.backend = MOEIO_BACKEND_IO_URING};
    if (moeio_new(g_path, &cfg, pool, &io) != -EPERM)
        return 12; /* explicit io_uring must fail to start */
    cfg.backend = MOEIO_BACKEND_AUTO;
    if (moeio_new(g_path, &cfg, pool, &io) != 0)
        return 13;
    moeio_info_t info;
    moeio_get_info(io, &info);
    if (info.backend != MOEIO_BACKEND_PREAD || !(info.notes & MOEIO_NOTE_PREAD) ||
        info.pread_err != -EPERM || !strstr(info.text, "EPERM"))
        return 14;
    fprintf(stderr, "seccomp child: notes: %s\n", info.text);
    int r = child_reads_match(io, pool);
    moeio_free(io);
    moeio_pool_free(pool);
    return r;
}

/* Without CAP_IPC_LOCK and with a 64 KiB RLIMIT_MEMLOCK, registering an 8 MiB pool fails
 * (ENOMEM): reads go on unregistered, from the same pool, with a note. */
static int child_registration_refused(void)
{
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &hdr, data) == 0) {
        data[CAP_IPC_LOCK / 32].effective &= ~(1u << (CAP_IPC_LOCK % 32));
        if (syscall(SYS_capset, &hdr, data) < 0)
            return 30;
    }
    struct rlimit rl = {64 << 10, 64 << 10};
    if (setrlimit(RLIMIT_MEMLOCK, &rl) < 0)
        return 31;
    moeio_pool_t *pool = NULL;
    if (moeio_pool_new(8 << 20, MOEIO_POOL_NO_HUGETLB, &pool) < 0)
        return 32;
    moeio_t *io = NULL;
    if (moeio_new(g_path, NULL, pool, &io) != 0)
        return 33;
    moeio_info_t info;
    moeio_get_info(io, &info);
    if (info.backend == MOEIO_BACKEND_IO_URING &&
        (info.buffers_registered || !(info.notes & MOEIO_NOTE_UNREGISTERED) ||
         info.unregistered_err >= 0))
        return 34;
    fprintf(stderr, "memlock child: backend %s, notes: %s\n", moeio_backend_name(info.backend),
            info.text);
    int r = child_reads_match(io, pool);
    moeio_free(io);
    moeio_pool_free(pool);
    return r;
}

static void run_in_child(int (*fn)(void), const char *what)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(fn()); /* _exit: no atexit handlers, no leak check of the parent's heap */
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status), "%s: child died (status %d)", what, status);
    ck_assert_msg(WEXITSTATUS(status) == 0, "%s: child failed with code %d", what,
                  WEXITSTATUS(status));
}

START_TEST(io_uring_refused_falls_back_to_pread)
{
    run_in_child(child_io_uring_refused, "seccomp");
}
END_TEST

START_TEST(registration_refused_reads_unregistered)
{
    run_in_child(child_registration_refused, "memlock");
}
END_TEST

START_TEST(unregistered_by_option_reads_correctly)
{
    moeio_read_t reads[40];
    random_reads(reads, 40, 80000, 99);
    moeio_pool_t *pool = new_pool(POOL_SIZE);
    place_reads(pool, reads, 40);
    moeio_config_t cfg = {.no_register_buffers = true, .no_register_file = true, .depth = 8};
    moeio_t *io = open_io(&cfg, pool);
    moeio_info_t info;
    moeio_get_info(io, &info);
    ck_assert(!info.buffers_registered && !info.file_registered);
    ck_assert_uint_eq(info.notes, 0); /* a choice, not a degradation */
    ck_assert_int_eq(moeio_read_batch(io, reads, 40), 0);
    for (int i = 0; i < 40; i++)
        assert_read_ok(&reads[i]);
    moeio_free(io);
    moeio_pool_free(pool);
}
END_TEST

/* ---- the rest ------------------------------------------------------------------------------- */

START_TEST(direct_can_be_switched_while_idle)
{
    moeio_pool_t *pool = new_pool(4 << 20);
    moeio_t *io = open_io(NULL, pool);
    moeio_info_t info;
    moeio_get_info(io, &info);
    ck_assert(info.direct);
    ck_assert_int_eq(moeio_set_direct(io, false), 0);
    moeio_read_t r = {.offset = 10, .len = 5000, .dst = moeio_pool_base(pool)};
    ck_assert_int_eq(moeio_submit(io, &r, 1), 0);
    ck_assert_int_eq(moeio_set_direct(io, true), -EBUSY);
    moeio_read_t *done;
    ck_assert_int_eq(moeio_reap(io, 1, &done, 1), 1);
    assert_read_ok(done);
    ck_assert_int_eq(moeio_set_direct(io, true), 0);
    ck_assert_int_eq(moeio_read_batch(io, &r, 1), 0);
    assert_read_ok(&r);
    moeio_free(io);
    moeio_pool_free(pool);
}
END_TEST

START_TEST(pool_is_aligned_and_wraps_caller_memory)
{
    moeio_pool_t *p = new_pool(3 << 20);
    ck_assert_uint_eq((uintptr_t)moeio_pool_base(p) % MOEIO_POOL_ALIGN, 0);
    ck_assert_uint_eq(moeio_pool_size(p), 4 << 20);
    ck_assert_ptr_null(moeio_pool_ptr(p, 4 << 20));
    moeio_pool_free(p);
    void *mem = aligned_alloc(4096, 1 << 20);
    ck_assert_ptr_nonnull(mem);
    memset(mem, 0, 1 << 20); /* valgrind cannot see io_uring's writes into it */
    ck_assert_int_eq(moeio_pool_wrap((char *)mem + 1, 4096, &p), -EINVAL);
    ck_assert_int_eq(moeio_pool_wrap(mem, 1 << 20, &p), 0);
    ck_assert(moeio_pool_flags(p) & MOEIO_POOL_FOREIGN);
    moeio_t *io = open_io(NULL, p); /* caller-brought memory is registered like ours */
    moeio_read_t r = {.offset = 12345, .len = 500000, .dst = mem};
    ck_assert_int_eq(moeio_read_batch(io, &r, 1), 0);
    assert_read_ok(&r);
    moeio_free(io);
    moeio_pool_free(p);
    free(mem);
}
END_TEST

START_TEST(backend_names_round_trip_and_bad_config_is_refused)
{
    enum moeio_backend b;
    ck_assert_int_eq(moeio_backend_from_name("pread", &b), 0);
    ck_assert_int_eq(b, MOEIO_BACKEND_PREAD);
    ck_assert_int_eq(moeio_backend_from_name("io_uring", &b), 0);
    ck_assert_int_eq(b, MOEIO_BACKEND_IO_URING);
    ck_assert_int_eq(moeio_backend_from_name("uring", &b), -EINVAL);
    moeio_t *io = NULL;
    moeio_config_t cfg = {.depth = MOEIO_DEPTH_MAX + 1};
    ck_assert_int_eq(moeio_new(g_path, &cfg, NULL, &io), -EINVAL);
    ck_assert_int_eq(moeio_new("/nonexistent/moeio", NULL, NULL, &io), -ENOENT);
    ck_assert_int_eq(moeio_new(g_dir, NULL, NULL, &io), -EINVAL); /* a directory */
}
END_TEST

static Suite *moeio_suite(void)
{
    Suite *s = suite_create("moeio");
    TCase *tc = tcase_create("reads");
    tcase_add_unchecked_fixture(tc, setup_file, teardown_file);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, span_is_widened_to_page_bounds);
    tcase_add_loop_test(tc, boundary_reads_match_pread, 0, 4);
    tcase_add_test(tc, reads_past_end_or_misaligned_fail_alone);
    tcase_add_loop_test(tc, random_ranges_match_pread, 0, 9);
    tcase_add_test(tc, direct_can_be_switched_while_idle);
    tcase_add_test(tc, pool_is_aligned_and_wraps_caller_memory);
    tcase_add_test(tc, backend_names_round_trip_and_bad_config_is_refused);
    suite_add_tcase(s, tc);

    TCase *tf = tcase_create("faults");
    tcase_add_unchecked_fixture(tf, setup_file, teardown_file);
    tcase_set_timeout(tf, 120);
    tcase_add_loop_test(tf, short_reads_are_continued, 0, 2);
    tcase_add_test(tf, eagain_and_eintr_are_retried);
    tcase_add_loop_test(tf, eio_fails_only_that_read, 0, 6);
    tcase_add_test(tf, nth_op_eio_reported_through_reap);
    tcase_add_loop_test(tf, batch_is_sorted_submitted_once_and_pipelined_at_depth, 0, 2);
    tcase_add_test(tf, reads_cross_registered_pieces_and_are_chunked);
    tcase_add_test(tf, direct_einval_on_first_read_falls_back_to_buffered);
    tcase_add_test(tf, tmpfs_file_reads_with_or_without_direct);
    tcase_add_test(tf, io_uring_refused_falls_back_to_pread);
    tcase_add_test(tf, registration_refused_reads_unregistered);
    tcase_add_test(tf, unregistered_by_option_reads_correctly);
    suite_add_tcase(s, tf);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(moeio_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
