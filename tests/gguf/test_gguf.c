/* The GGUF reader and writer: writer -> reader round trips of every metadata type and of
 * tensor layouts at several alignments, the typed getters' errors, the shared vocabulary
 * files, and a generated corpus of malformed files (truncations at every byte, patched
 * counts, lengths, types, dims, offsets, names) that must all be refused with a reason and
 * never crash (this suite also runs under ASan+UBSan). */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/gguf.h"
#include "model/quant.h"

static char tmpdir[256];

static int make_tmpdir(void)
{
    const char *base = getenv("TMPDIR");

    snprintf(tmpdir, sizeof(tmpdir), "%s/test_gguf.XXXXXX", base ? base : "/tmp");
    return mkdtemp(tmpdir) ? 0 : -errno;
}

static void remove_tmpdir(void)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    char p[512];

    if (!d)
        return;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(p, sizeof(p), "%s/%s", tmpdir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(tmpdir);
}

static size_t count_files(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t n = 0;

    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

static void tmp_path(char *dst, size_t n, const char *name)
{
    snprintf(dst, n, "%s/%s", tmpdir, name);
}

/* ---- a byte builder for hand-made files ---- */

struct bb {
    uint8_t *p;
    size_t len, cap;
};

static void bb_put(struct bb *b, const void *src, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        ck_assert_ptr_nonnull(b->p);
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static size_t bb_u32(struct bb *b, uint32_t v)
{
    size_t at = b->len;

    bb_put(b, &v, 4);
    return at;
}

static size_t bb_u64(struct bb *b, uint64_t v)
{
    size_t at = b->len;

    bb_put(b, &v, 8);
    return at;
}

static size_t bb_str(struct bb *b, const char *s)
{
    size_t at = bb_u64(b, strlen(s));

    bb_put(b, s, strlen(s));
    return at;
}

static void bb_pad(struct bb *b, size_t align)
{
    static const uint8_t z[64];

    while (b->len % align)
        bb_put(b, z, 1);
}

static void patch_u32(uint8_t *p, size_t at, uint32_t v)
{
    memcpy(p + at, &v, 4);
}

static void patch_u64(uint8_t *p, size_t at, uint64_t v)
{
    memcpy(p + at, &v, 8);
}

/* Where the fields of the base file are, for patching. */
struct base {
    struct bb b;
    size_t version, n_tensors, n_kv;
    size_t key_len[6], key_type[6], key_name[6];
    size_t align_val; /* u32 value of general.alignment */
    size_t str_len;   /* length of the string value */
    size_t arr_type, arr_n, sarr_n, sarr_len0, barr_val0;
    size_t t_name[2], t_name_len[2], t_ndims[2], t_ne[2][2], t_type[2], t_off[2];
    size_t header_end, data_start, data_end;
};

/* A valid v3 file: 6 kvs (string, u32 alignment, u32 array, string array, bool array, f32),
 * tensors t.a (f32 [32, 2], 256 bytes at 0) and t.b (q8_0 [64], 68 bytes at 256). */
static void base_build(struct base *s)
{
    struct bb *b = &s->b;
    uint32_t u3[3] = {7, 8, 9};
    uint8_t bools[2] = {1, 0};
    float f = 0.5f;
    int k = 0;

    memset(s, 0, sizeof(*s));
    bb_put(b, "GGUF", 4);
    s->version = bb_u32(b, 3);
    s->n_tensors = bb_u64(b, 2);
    s->n_kv = bb_u64(b, 6);

    s->key_len[k] = bb_str(b, "k.aa");
    s->key_name[k] = s->key_len[k] + 8;
    s->key_type[k++] = bb_u32(b, GGUF_TYPE_STRING);
    s->str_len = bb_str(b, "hello");

    s->key_len[k] = bb_str(b, "general.alignment");
    s->key_name[k] = s->key_len[k] + 8;
    s->key_type[k++] = bb_u32(b, GGUF_TYPE_UINT32);
    s->align_val = bb_u32(b, 32);

    s->key_len[k] = bb_str(b, "k.ab");
    s->key_name[k] = s->key_len[k] + 8;
    s->key_type[k++] = bb_u32(b, GGUF_TYPE_ARRAY);
    s->arr_type = bb_u32(b, GGUF_TYPE_UINT32);
    s->arr_n = bb_u64(b, 3);
    bb_put(b, u3, sizeof(u3));

    s->key_len[k] = bb_str(b, "k.tokens");
    s->key_name[k] = s->key_len[k] + 8;
    s->key_type[k++] = bb_u32(b, GGUF_TYPE_ARRAY);
    bb_u32(b, GGUF_TYPE_STRING);
    s->sarr_n = bb_u64(b, 2);
    s->sarr_len0 = bb_str(b, "a");
    bb_str(b, "bc");

    s->key_len[k] = bb_str(b, "k.bools");
    s->key_name[k] = s->key_len[k] + 8;
    s->key_type[k++] = bb_u32(b, GGUF_TYPE_ARRAY);
    bb_u32(b, GGUF_TYPE_BOOL);
    bb_u64(b, 2);
    s->barr_val0 = b->len;
    bb_put(b, bools, 2);

    s->key_len[k] = bb_str(b, "k.f");
    s->key_name[k] = s->key_len[k] + 8;
    s->key_type[k++] = bb_u32(b, GGUF_TYPE_FLOAT32);
    bb_put(b, &f, 4);

    s->t_name_len[0] = bb_str(b, "t.a");
    s->t_name[0] = s->t_name_len[0] + 8;
    s->t_ndims[0] = bb_u32(b, 2);
    s->t_ne[0][0] = bb_u64(b, 32);
    s->t_ne[0][1] = bb_u64(b, 2);
    s->t_type[0] = bb_u32(b, GGML_TYPE_F32);
    s->t_off[0] = bb_u64(b, 0);

    s->t_name_len[1] = bb_str(b, "t.b");
    s->t_name[1] = s->t_name_len[1] + 8;
    s->t_ndims[1] = bb_u32(b, 1);
    s->t_ne[1][0] = bb_u64(b, 64);
    s->t_ne[1][1] = 0; /* 1-D */
    s->t_type[1] = bb_u32(b, GGML_TYPE_Q8_0);
    s->t_off[1] = bb_u64(b, 256);

    s->header_end = b->len;
    bb_pad(b, 32);
    s->data_start = b->len;
    for (int i = 0; i < 256 + 68; i++) {
        uint8_t v = (uint8_t)i;

        bb_put(b, &v, 1);
    }
    s->data_end = b->len;
    bb_pad(b, 32);
}

static uint8_t *base_copy(const struct base *s)
{
    uint8_t *p = malloc(s->b.len);

    ck_assert_ptr_nonnull(p);
    memcpy(p, s->b.p, s->b.len);
    return p;
}

/* Opens buf, expects a refusal; returns the reason (static). */
static const char *expect_refused_mem(const uint8_t *buf, size_t len, uint64_t file_size)
{
    static char err[512];
    gguf_t *g = NULL;
    int r;

    memset(err, 'x', sizeof(err));
    r = gguf_open_memory(buf, len, file_size, &g, err, sizeof(err));
    ck_assert_msg(r < 0, "accepted a malformed file (len %zu)", len);
    ck_assert_ptr_null(g);
    ck_assert_msg(r == -EINVAL || r == -ENOMEM || r == -EIO, "unexpected error %d", r);
    ck_assert_msg(err[0] && strlen(err) < sizeof(err), "empty reason (len %zu)", len);
    return err;
}

static const char *expect_refused_file(const uint8_t *buf, size_t len, const char *name)
{
    static char err[512];
    char path[512];
    gguf_t *g = NULL;
    int fd, r;

    tmp_path(path, sizeof(path), name);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, buf, len), (ssize_t)len);
    close(fd);
    r = gguf_open(path, &g, err, sizeof(err));
    unlink(path);
    ck_assert_msg(r == -EINVAL, "file %s: expected -EINVAL, got %d", name, r);
    ck_assert_ptr_null(g);
    ck_assert(err[0]);
    return err;
}

static void assert_has(const char *err, const char *what)
{
    ck_assert_msg(strstr(err, what), "reason '%s' does not mention '%s'", err, what);
}

/* ---- the hand-made base file ---- */

START_TEST(parses_hand_made_file_with_every_section)
{
    struct base s;
    char err[256];
    gguf_t *g = NULL;
    const gguf_tensor_t *t;
    const char *str;
    enum gguf_type et;
    uint64_t n, len;
    const void *data;
    float f;

    base_build(&s);
    ck_assert_int_eq(gguf_open_memory(s.b.p, s.b.len, s.b.len, &g, err, sizeof(err)), 0);
    ck_assert_uint_eq(gguf_version(g), 3);
    ck_assert_uint_eq(gguf_alignment(g), 32);
    ck_assert_uint_eq(gguf_data_offset(g), s.data_start);
    ck_assert_uint_eq(gguf_n_kv(g), 6);
    ck_assert_str_eq(gguf_kv_key(g, 3), "k.tokens");
    ck_assert_int_eq(gguf_kv_type(g, 3), GGUF_TYPE_ARRAY);
    ck_assert_int_eq(gguf_get_str(g, "k.aa", &str), 0);
    ck_assert_str_eq(str, "hello");
    ck_assert_int_eq(gguf_get_arr(g, "k.ab", &et, &n, &data), 0);
    ck_assert_int_eq(et, GGUF_TYPE_UINT32);
    ck_assert_uint_eq(n, 3);
    ck_assert_uint_eq(((const uint32_t *)data)[2], 9);
    ck_assert_int_eq(gguf_get_arr_str(g, "k.tokens", 1, &str), 0);
    ck_assert_str_eq(str, "bc");
    ck_assert_int_eq(gguf_get_arr_str_len(g, "k.tokens", 1, &len), 0);
    ck_assert_uint_eq(len, 2);
    ck_assert_int_eq(gguf_get_f32(g, "k.f", &f), 0);
    ck_assert(f == 0.5f);
    ck_assert_uint_eq(gguf_n_tensors(g), 2);
    t = gguf_find_tensor(g, "t.b");
    ck_assert_ptr_nonnull(t);
    ck_assert_ptr_eq(t, gguf_tensor(g, 1));
    ck_assert_str_eq(t->name, "t.b");
    ck_assert_uint_eq(t->n_dims, 1);
    ck_assert_uint_eq(t->ne[0], 64);
    ck_assert_uint_eq(t->ne[1], 1);
    ck_assert_uint_eq(t->type, GGML_TYPE_Q8_0);
    ck_assert_uint_eq(t->offset, s.data_start + 256);
    ck_assert_uint_eq(t->size, 68);
    ck_assert_uint_eq(gguf_tensor(g, 0)->size, 256);
    ck_assert_ptr_null(gguf_find_tensor(g, "t.c"));
    ck_assert_ptr_null(gguf_tensor(g, 2));
    gguf_free(g);
    /* Version 2 has the same layout. */
    patch_u32(s.b.p, s.version, 2);
    ck_assert_int_eq(gguf_open_memory(s.b.p, s.b.len, s.b.len, &g, err, sizeof(err)), 0);
    ck_assert_uint_eq(gguf_version(g), 2);
    gguf_free(g);
    /* The header alone in memory, with the file size given, is enough. */
    ck_assert_int_eq(gguf_open_memory(s.b.p, s.header_end, s.b.len, &g, err, sizeof(err)), 0);
    gguf_free(g);
    free(s.b.p);
}
END_TEST

START_TEST(refuses_truncation_at_every_byte)
{
    struct base s;
    gguf_t *g = NULL;
    char err[256];
    size_t refused = 0;

    base_build(&s);
    /* Inside the header, every length is refused, in memory and as a file. */
    for (size_t len = 0; len < s.header_end; len++) {
        uint8_t *p = malloc(len ? len : 1); /* exact size: ASan sees any over-read */

        memcpy(p, s.b.p, len);
        expect_refused_mem(p, len, len);
        if (len % 5 == 0) {
            const char *e = expect_refused_file(p, len, "trunc.gguf");

            ck_assert_msg(strstr(e, "end of the file") || strstr(e, "cannot fit"), "%s", e);
        }
        free(p);
        refused++;
    }
    /* In the data section, until the last tensor's last byte. */
    for (size_t len = s.header_end; len < s.data_end; len++) {
        const char *e = expect_refused_mem(s.b.p, len, len);

        assert_has(e, "past end of file");
        refused++;
    }
    ck_assert_uint_ge(refused, 300);
    for (size_t len = s.data_end; len <= s.b.len; len++) {
        ck_assert_int_eq(gguf_open_memory(s.b.p, len, len, &g, err, sizeof(err)), 0);
        gguf_free(g);
    }
    /* A header cut short in memory while the file is said to be longer. */
    assert_has(expect_refused_mem(s.b.p, s.header_end - 3, s.b.len), "end of the buffer");
    free(s.b.p);
}
END_TEST

/* One patched variant of the base file: what to patch, and what the reason must say. */
struct variant {
    const char *label;
    void (*apply)(const struct base *s, uint8_t *p);
    const char *must_say[2];
};

#define PATCH(fn, body)                                                                            \
    static void fn(const struct base *s, uint8_t *p)                                               \
    {                                                                                              \
        (void)s;                                                                                   \
        body;                                                                                      \
    }

PATCH(p_magic, memcpy(p, "GGUG", 4))
PATCH(p_magic_zero, memset(p, 0, 4))
PATCH(p_v0, patch_u32(p, s->version, 0))
PATCH(p_v1, patch_u32(p, s->version, 1))
PATCH(p_v4, patch_u32(p, s->version, 4))
PATCH(p_vbig, patch_u32(p, s->version, 0x03000000))
PATCH(p_ntensors_huge, patch_u64(p, s->n_tensors, UINT64_MAX))
PATCH(p_ntensors_big, patch_u64(p, s->n_tensors, 1u << 20))
PATCH(p_ntensors_2_60, patch_u64(p, s->n_tensors, 1ull << 60))
PATCH(p_nkv_huge, patch_u64(p, s->n_kv, UINT64_MAX))
PATCH(p_nkv_big, patch_u64(p, s->n_kv, 1u << 20))
PATCH(p_nkv_2_62, patch_u64(p, s->n_kv, 1ull << 62))
PATCH(p_nkv_more, patch_u64(p, s->n_kv, 7))
PATCH(p_ntensors_more, patch_u64(p, s->n_tensors, 3))
PATCH(p_keylen_huge, patch_u64(p, s->key_len[0], UINT64_MAX))
PATCH(p_keylen_2_63, patch_u64(p, s->key_len[0], 1ull << 63))
PATCH(p_keylen_file, patch_u64(p, s->key_len[2], 600))
PATCH(p_keylen_zero, patch_u64(p, s->key_len[0], 0))
PATCH(p_keylen_cap, patch_u64(p, s->key_len[0], 64 * 1024 + 1))
PATCH(p_key_nul, p[s->key_name[0] + 1] = 0)
PATCH(p_strlen_huge, patch_u64(p, s->str_len, UINT64_MAX))
PATCH(p_strlen_big, patch_u64(p, s->str_len, 1ull << 40))
PATCH(p_strlen_file, patch_u64(p, s->str_len, 5000))
PATCH(p_arr_n_huge, patch_u64(p, s->arr_n, UINT64_MAX))
PATCH(p_arr_n_2_62, patch_u64(p, s->arr_n, 1ull << 62))
PATCH(p_arr_n_big, patch_u64(p, s->arr_n, 1000))
PATCH(p_sarr_n_huge, patch_u64(p, s->sarr_n, UINT64_MAX))
PATCH(p_sarr_n_2_61, patch_u64(p, s->sarr_n, 1ull << 61))
PATCH(p_sarr_n_big, patch_u64(p, s->sarr_n, 100))
PATCH(p_sarr_len_huge, patch_u64(p, s->sarr_len0, UINT64_MAX))
PATCH(p_arr_nested, patch_u32(p, s->arr_type, GGUF_TYPE_ARRAY))
PATCH(p_arr_unknown, patch_u32(p, s->arr_type, 13))
PATCH(p_arr_unknown_big, patch_u32(p, s->arr_type, 0xffffffffu))
PATCH(p_bool_arr_2, p[s->barr_val0] = 2)
PATCH(p_kv_type_13, patch_u32(p, s->key_type[0], 13))
PATCH(p_kv_type_big, patch_u32(p, s->key_type[5], 0x80000000u))
PATCH(p_kv_f32_as_bool, patch_u32(p, s->key_type[5], GGUF_TYPE_BOOL))
PATCH(p_dup_key, memcpy(p + s->key_name[2], "k.aa", 4))
PATCH(p_align_0, patch_u32(p, s->align_val, 0))
PATCH(p_align_3, patch_u32(p, s->align_val, 3))
PATCH(p_align_48, patch_u32(p, s->align_val, 48))
PATCH(p_align_i32, patch_u32(p, s->key_type[1], GGUF_TYPE_INT32))
PATCH(p_align_f32, patch_u32(p, s->key_type[1], GGUF_TYPE_FLOAT32))
PATCH(p_ndims_0, patch_u32(p, s->t_ndims[0], 0))
PATCH(p_ndims_5, patch_u32(p, s->t_ndims[0], 5))
PATCH(p_ndims_huge, patch_u32(p, s->t_ndims[1], 0xffffffffu))
PATCH(p_ne0_zero, patch_u64(p, s->t_ne[0][0], 0))
PATCH(p_ne1_zero, patch_u64(p, s->t_ne[0][1], 0))
PATCH(p_ne_neg, patch_u64(p, s->t_ne[0][1], 1ull << 63))
PATCH(p_ne_overflow,
      (patch_u64(p, s->t_ne[0][0], 1ull << 32), patch_u64(p, s->t_ne[0][1], 1ull << 32)))
PATCH(p_ne_elems_63,
      (patch_u64(p, s->t_ne[0][0], 1ull << 33), patch_u64(p, s->t_ne[0][1], 1ull << 30)))
PATCH(p_size_overflow, (patch_u64(p, s->t_ne[0][0], 1ull << 62), patch_u64(p, s->t_ne[0][1], 1)))
PATCH(p_type_unknown, patch_u32(p, s->t_type[0], 4))
PATCH(p_type_huge, patch_u32(p, s->t_type[1], 0xffffffffu))
PATCH(p_type_31, patch_u32(p, s->t_type[1], 31))
PATCH(p_ne0_block, patch_u64(p, s->t_ne[1][0], 48))
PATCH(p_type_block, patch_u32(p, s->t_type[0], GGML_TYPE_Q4_K))
PATCH(p_misaligned, patch_u64(p, s->t_off[1], 260))
PATCH(p_misaligned_1, patch_u64(p, s->t_off[0], 1))
PATCH(p_overlap, patch_u64(p, s->t_off[1], 224))
PATCH(p_overlap_same, patch_u64(p, s->t_off[1], 0))
PATCH(p_past_end, patch_u64(p, s->t_off[1], 4096))
PATCH(p_past_end_big, patch_u64(p, s->t_off[0], 1ull << 40))
PATCH(p_off_overflow, patch_u64(p, s->t_off[1], 0xffffffffffffffe0ull))
PATCH(p_off_overflow2, patch_u64(p, s->t_off[0], 0xffffffffffffff00ull))
PATCH(p_dup_tensor, memcpy(p + s->t_name[1], "t.a", 3))
PATCH(p_tname_empty, patch_u64(p, s->t_name_len[0], 0))
PATCH(p_tname_nul, p[s->t_name[1]] = 0)
PATCH(p_tname_huge, patch_u64(p, s->t_name_len[1], UINT64_MAX))

static const struct variant variants[] = {
    {"bad magic", p_magic, {"magic", "header at byte 0"}},
    {"zero magic", p_magic_zero, {"magic"}},
    {"version 0", p_v0, {"version 0"}},
    {"version 1", p_v1, {"version 1"}},
    {"version 4", p_v4, {"version 4"}},
    {"big-endian", p_vbig, {"big-endian"}},
    {"n_tensors 2^64-1", p_ntensors_huge, {"cannot fit"}},
    {"n_tensors 2^20", p_ntensors_big, {"cannot fit"}},
    {"n_tensors 2^60", p_ntensors_2_60, {"cannot fit"}},
    {"n_kv 2^64-1", p_nkv_huge, {"cannot fit"}},
    {"n_kv 2^20", p_nkv_big, {"cannot fit"}},
    {"n_kv 2^62", p_nkv_2_62, {"cannot fit"}},
    {"n_kv one more", p_nkv_more, {NULL}},
    {"n_tensors one more", p_ntensors_more, {NULL}},
    {"key length 2^64-1", p_keylen_huge, {"kv #0", "key length"}},
    {"key length 2^63", p_keylen_2_63, {"kv #0"}},
    {"key length past file", p_keylen_file, {"kv #2", "end of the"}},
    {"key length 0", p_keylen_zero, {"kv #0", "1..65536"}},
    {"key length over cap", p_keylen_cap, {"kv #0"}},
    {"key with NUL", p_key_nul, {"NUL"}},
    {"string length 2^64-1", p_strlen_huge, {"key 'k.aa'", "string value"}},
    {"string length 2^40", p_strlen_big, {"key 'k.aa'"}},
    {"string length past file", p_strlen_file, {"key 'k.aa'"}},
    {"array count 2^64-1", p_arr_n_huge, {"key 'k.ab'", "array of"}},
    {"array count 2^62", p_arr_n_2_62, {"key 'k.ab'"}},
    {"array count 1000", p_arr_n_big, {"key 'k.ab'"}},
    {"string array count 2^64-1", p_sarr_n_huge, {"key 'k.tokens'"}},
    {"string array count 2^61", p_sarr_n_2_61, {"key 'k.tokens'"}},
    {"string array count 100", p_sarr_n_big, {"key 'k.tokens'"}},
    {"array string length 2^64-1", p_sarr_len_huge, {"key 'k.tokens'"}},
    {"nested array", p_arr_nested, {"nested"}},
    {"array of type 13", p_arr_unknown, {"unknown array element type 13"}},
    {"array of type 2^32-1", p_arr_unknown_big, {"unknown array element type"}},
    {"bool array value 2", p_bool_arr_2, {"key 'k.bools'", "bool"}},
    {"kv type 13", p_kv_type_13, {"key 'k.aa'", "unknown value type 13"}},
    {"kv type 2^31", p_kv_type_big, {"key 'k.f'", "unknown value type"}},
    {"bool value 0x00 0x00 0x00 0x3f", p_kv_f32_as_bool, {NULL}},
    {"duplicate key", p_dup_key, {"key 'k.aa'", "duplicate key"}},
    {"alignment 0", p_align_0, {"key 'general.alignment'", "power of two"}},
    {"alignment 3", p_align_3, {"general.alignment", "power of two"}},
    {"alignment 48", p_align_48, {"general.alignment"}},
    {"alignment int32", p_align_i32, {"general.alignment", "uint32"}},
    {"alignment float32", p_align_f32, {"general.alignment", "uint32"}},
    {"n_dims 0", p_ndims_0, {"tensor 't.a'", "n_dims 0"}},
    {"n_dims 5", p_ndims_5, {"tensor 't.a'", "n_dims 5"}},
    {"n_dims 2^32-1", p_ndims_huge, {"tensor 't.b'", "n_dims"}},
    {"ne[0] 0", p_ne0_zero, {"tensor 't.a'", "ne[0] = 0"}},
    {"ne[1] 0", p_ne1_zero, {"tensor 't.a'", "ne[1] = 0"}},
    {"ne 2^63", p_ne_neg, {"tensor 't.a'", "ne[1]"}},
    {"ne product overflows 64 bits", p_ne_overflow, {"tensor 't.a'", "overflows"}},
    {"ne product over 2^63", p_ne_elems_63, {"tensor 't.a'", "overflows"}},
    {"size overflows 64 bits", p_size_overflow, {"tensor 't.a'", "overflows"}},
    {"tensor type 4 (removed)", p_type_unknown, {"tensor 't.a'", "unknown tensor type 4"}},
    {"tensor type 2^32-1", p_type_huge, {"tensor 't.b'", "unknown tensor type"}},
    {"tensor type 31 (removed)", p_type_31, {"tensor 't.b'", "unknown tensor type 31"}},
    {"ne[0] not a block multiple", p_ne0_block, {"tensor 't.b'", "block size"}},
    {"f32 row as q4_K", p_type_block, {"tensor 't.a'", "block size"}},
    {"misaligned offset", p_misaligned, {"tensor 't.b'", "multiple of the alignment"}},
    {"offset 1", p_misaligned_1, {"tensor 't.a'", "alignment"}},
    {"overlapping tensors", p_overlap, {"tensor 't.b'", "overlaps tensor 't.a'"}},
    {"tensors at the same offset", p_overlap_same, {"overlaps"}},
    {"tensor past end of file", p_past_end, {"tensor 't.b'", "past end of file"}},
    {"tensor 1 TiB past end of file", p_past_end_big, {"tensor 't.a'", "past end of file"}},
    {"offset overflows", p_off_overflow, {"tensor 't.b'", "overflows"}},
    {"offset overflows 2", p_off_overflow2, {"tensor 't.a'", "overflows"}},
    {"duplicate tensor name", p_dup_tensor, {"tensor 't.a'", "duplicate tensor name"}},
    {"empty tensor name", p_tname_empty, {"tensor #0", "tensor name length 0"}},
    {"tensor name with NUL", p_tname_nul, {"tensor #1", "NUL"}},
    {"tensor name length 2^64-1", p_tname_huge, {"tensor #1"}},
};

START_TEST(refuses_each_malformed_variant_with_a_reason)
{
    struct base s;
    size_t n = sizeof(variants) / sizeof(variants[0]);

    base_build(&s);
    for (size_t i = 0; i < n; i++) {
        uint8_t *p = base_copy(&s);
        const char *e;

        variants[i].apply(&s, p);
        e = expect_refused_mem(p, s.b.len, s.b.len);
        if (getenv("GGUF_TEST_VERBOSE"))
            printf("%-32s %s\n", variants[i].label, e);
        for (int k = 0; k < 2; k++)
            if (variants[i].must_say[k])
                ck_assert_msg(strstr(e, variants[i].must_say[k]), "%s: reason '%s' lacks '%s'",
                              variants[i].label, e, variants[i].must_say[k]);
        /* The same through a real file and the fd reader. */
        e = expect_refused_file(p, s.b.len, "variant.gguf");
        if (variants[i].must_say[0])
            ck_assert_msg(strstr(e, variants[i].must_say[0]), "%s (file): '%s'", variants[i].label,
                          e);
        /* And with the header alone in memory, as the fuzzer and `moe inspect` see it. */
        expect_refused_mem(p, s.header_end, s.b.len);
        free(p);
    }
    ck_assert_uint_ge(n, 60);
    free(s.b.p);
}
END_TEST

START_TEST(survives_random_corruption)
{
    struct base s;
    uint64_t x = 0x9e3779b97f4a7c15ull;
    char err[256];
    size_t accepted = 0, refused = 0;

    base_build(&s);
    for (int it = 0; it < 20000; it++) {
        uint8_t *p = base_copy(&s);
        gguf_t *g = NULL;
        int flips = 1 + it % 4, r;

        for (int k = 0; k < flips; k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            /* Mostly the header, where the structure is. */
            p[(x >> 8) % s.header_end] ^= (uint8_t)(1u << (x % 8));
        }
        err[0] = 0;
        r = gguf_open_memory(p, s.b.len, s.b.len, &g, err, sizeof(err));
        if (r == 0) {
            /* Whatever was accepted keeps the invariants. */
            for (size_t i = 0; i < gguf_n_tensors(g); i++) {
                const gguf_tensor_t *t = gguf_tensor(g, i);

                ck_assert_uint_le(t->offset + t->size, s.b.len);
                ck_assert_uint_eq(t->offset % gguf_alignment(g), 0);
                ck_assert_ptr_eq(gguf_find_tensor(g, t->name), t);
            }
            for (size_t i = 0; i < gguf_n_kv(g); i++)
                ck_assert_int_eq(gguf_find_kv(g, gguf_kv_key(g, i)), (int)i);
            gguf_free(g);
            accepted++;
        } else {
            ck_assert(err[0]);
            refused++;
        }
        free(p);
    }
    ck_assert_uint_gt(refused, 1000);
    ck_assert_uint_gt(accepted, 0);
    free(s.b.p);
}
END_TEST

START_TEST(refuses_paths_that_are_not_gguf_files)
{
    char err[256], path[512];
    gguf_t *g = NULL;

    tmp_path(path, sizeof(path), "missing.gguf");
    ck_assert_int_eq(gguf_open(path, &g, err, sizeof(err)), -ENOENT);
    assert_has(err, "missing.gguf");
    ck_assert_int_eq(gguf_open(tmpdir, &g, err, sizeof(err)), -EINVAL);
    assert_has(err, "not a regular file");
    ck_assert_int_eq(gguf_open_memory(NULL, 10, 10, &g, err, sizeof(err)), -EINVAL);
    ck_assert_int_eq(gguf_open_memory("GGUF", 4, 2, &g, err, sizeof(err)), -EINVAL);
    ck_assert_ptr_null(g);
    /* No error buffer is fine. */
    ck_assert_int_eq(gguf_open_memory("GGUF", 4, 4, &g, NULL, 0), -EINVAL);
}
END_TEST

START_TEST(refuses_header_past_size_limit)
{
    struct bb b = {0};
    char path[512], err[256];
    gguf_t *g = NULL;
    int fd;

    /* A 2 GiB sparse file whose one string value would end past GGUF_MAX_HEADER_BYTES: the
     * length is refused before anything is allocated or read. */
    bb_put(&b, "GGUF", 4);
    bb_u32(&b, 3);
    bb_u64(&b, 0);
    bb_u64(&b, 1);
    bb_str(&b, "k");
    bb_u32(&b, GGUF_TYPE_STRING);
    bb_u64(&b, GGUF_MAX_HEADER_BYTES);
    tmp_path(path, sizeof(path), "sparse.gguf");
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, b.p, b.len), (ssize_t)b.len);
    ck_assert_int_eq(ftruncate(fd, (off_t)2 << 30), 0);
    close(fd);
    ck_assert_int_eq(gguf_open(path, &g, err, sizeof(err)), -EINVAL);
    assert_has(err, "key 'k'");
    assert_has(err, "header size limit");
    unlink(path);
    free(b.p);
}
END_TEST

/* ---- writer -> reader ---- */

static const char *const strs[] = {"", "a", "with\0nul", "\xe2\x82\xac uro", "last"};
static const uint64_t str_lens[] = {0, 1, 8, 7, 4};

static void write_every_type(gguf_writer_t *w)
{
    uint8_t u8 = 200, bools[3] = {1, 0, 1};
    int8_t i8 = -100;
    uint16_t u16 = 60000;
    int16_t i16 = -30000;
    int64_t i64 = INT64_MIN;
    double f64 = -1e300;
    uint8_t au8[4] = {0, 1, 254, 255};
    int8_t ai8[3] = {-128, 0, 127};
    uint16_t au16[2] = {1, 65535};
    int16_t ai16[2] = {-32768, 32767};
    uint32_t au32[3] = {0, 1, UINT32_MAX};
    int32_t ai32[2] = {INT32_MIN, INT32_MAX};
    float af32[2] = {1.5f, -0.0f};
    uint64_t au64[2] = {0, UINT64_MAX};
    int64_t ai64[2] = {INT64_MIN, -1};
    double af64[2] = {1e-300, 3.25};

    ck_assert_int_eq(gguf_writer_add_scalar(w, "s.u8", GGUF_TYPE_UINT8, &u8), 0);
    ck_assert_int_eq(gguf_writer_add_scalar(w, "s.i8", GGUF_TYPE_INT8, &i8), 0);
    ck_assert_int_eq(gguf_writer_add_scalar(w, "s.u16", GGUF_TYPE_UINT16, &u16), 0);
    ck_assert_int_eq(gguf_writer_add_scalar(w, "s.i16", GGUF_TYPE_INT16, &i16), 0);
    ck_assert_int_eq(gguf_writer_add_u32(w, "s.u32", 4000000000u), 0);
    ck_assert_int_eq(gguf_writer_add_i32(w, "s.i32", -2000000000), 0);
    ck_assert_int_eq(gguf_writer_add_f32(w, "s.f32", 3.5f), 0);
    ck_assert_int_eq(gguf_writer_add_bool(w, "s.bool", true), 0);
    ck_assert_int_eq(gguf_writer_add_scalar(w, "s.bool0", GGUF_TYPE_BOOL, &(uint8_t){0}), 0);
    ck_assert_int_eq(gguf_writer_add_str(w, "s.str", "qwen3moe"), 0);
    ck_assert_int_eq(gguf_writer_add_str_len(w, "s.strnul", "a\0b", 3), 0);
    ck_assert_int_eq(gguf_writer_add_str(w, "s.empty", ""), 0);
    ck_assert_int_eq(gguf_writer_add_u64(w, "s.u64", UINT64_MAX), 0);
    ck_assert_int_eq(gguf_writer_add_scalar(w, "s.i64", GGUF_TYPE_INT64, &i64), 0);
    ck_assert_int_eq(gguf_writer_add_scalar(w, "s.f64", GGUF_TYPE_FLOAT64, &f64), 0);
    ck_assert_int_eq(gguf_writer_add_arr(w, "a.u8", GGUF_TYPE_UINT8, au8, 4), 0);
    ck_assert_int_eq(gguf_writer_add_arr(w, "a.i8", GGUF_TYPE_INT8, ai8, 3), 0);
    ck_assert_int_eq(gguf_writer_add_arr(w, "a.u16", GGUF_TYPE_UINT16, au16, 2), 0);
    ck_assert_int_eq(gguf_writer_add_arr(w, "a.i16", GGUF_TYPE_INT16, ai16, 2), 0);
    ck_assert_int_eq(gguf_writer_add_arr(w, "a.u32", GGUF_TYPE_UINT32, au32, 3), 0);
    ck_assert_int_eq(gguf_writer_add_arr(w, "a.i32", GGUF_TYPE_INT32, ai32, 2), 0);
    ck_assert_int_eq(gguf_writer_add_arr(w, "a.f32", GGUF_TYPE_FLOAT32, af32, 2), 0);
    ck_assert_int_eq(gguf_writer_add_arr(w, "a.bool", GGUF_TYPE_BOOL, bools, 3), 0);
    ck_assert_int_eq(gguf_writer_add_arr(w, "a.u64", GGUF_TYPE_UINT64, au64, 2), 0);
    ck_assert_int_eq(gguf_writer_add_arr(w, "a.i64", GGUF_TYPE_INT64, ai64, 2), 0);
    ck_assert_int_eq(gguf_writer_add_arr(w, "a.f64", GGUF_TYPE_FLOAT64, af64, 2), 0);
    ck_assert_int_eq(gguf_writer_add_arr(w, "a.empty", GGUF_TYPE_UINT32, NULL, 0), 0);
    ck_assert_int_eq(gguf_writer_add_arr_str(w, "a.str", strs, str_lens, 5), 0);
    ck_assert_int_eq(gguf_writer_add_arr_str(w, "a.str_empty", NULL, NULL, 0), 0);
}

static void check_arr(const gguf_t *g, const char *key, enum gguf_type t, const void *want,
                      uint64_t n)
{
    enum gguf_type et;
    uint64_t got_n;
    const void *data;

    ck_assert_int_eq(gguf_get_arr(g, key, &et, &got_n, &data), 0);
    ck_assert_int_eq(et, t);
    ck_assert_uint_eq(got_n, n);
    ck_assert_uint_eq((uintptr_t)data % 8, 0);
    if (n)
        ck_assert_int_eq(memcmp(data, want, n * gguf_type_size(t)), 0);
}

static void check_every_type(const gguf_t *g)
{
    const int8_t ai8[3] = {-128, 0, 127};
    const uint16_t au16[2] = {1, 65535};
    const int16_t ai16[2] = {-32768, 32767};
    const uint32_t au32[3] = {0, 1, UINT32_MAX};
    const int32_t ai32[2] = {INT32_MIN, INT32_MAX};
    const float af32[2] = {1.5f, -0.0f};
    const uint64_t au64[2] = {0, UINT64_MAX};
    const int64_t ai64[2] = {INT64_MIN, -1};
    const double af64[2] = {1e-300, 3.25};
    const uint8_t au8[4] = {0, 1, 254, 255}, abool[3] = {1, 0, 1};
    uint32_t u32;
    int32_t i32;
    uint64_t u64, len;
    float f;
    bool b;
    const char *s;
    const void *data;
    enum gguf_type et;

    ck_assert_int_eq(gguf_get_u32(g, "s.u8", &u32), 0);
    ck_assert_uint_eq(u32, 200);
    ck_assert_int_eq(gguf_get_i32(g, "s.i8", &i32), 0);
    ck_assert_int_eq(i32, -100);
    ck_assert_int_eq(gguf_get_u32(g, "s.u16", &u32), 0);
    ck_assert_uint_eq(u32, 60000);
    ck_assert_int_eq(gguf_get_i32(g, "s.i16", &i32), 0);
    ck_assert_int_eq(i32, -30000);
    ck_assert_int_eq(gguf_get_u32(g, "s.u32", &u32), 0);
    ck_assert_uint_eq(u32, 4000000000u);
    ck_assert_int_eq(gguf_get_i32(g, "s.i32", &i32), 0);
    ck_assert_int_eq(i32, -2000000000);
    ck_assert_int_eq(gguf_get_f32(g, "s.f32", &f), 0);
    ck_assert(f == 3.5f);
    ck_assert_int_eq(gguf_get_bool(g, "s.bool", &b), 0);
    ck_assert(b);
    ck_assert_int_eq(gguf_get_bool(g, "s.bool0", &b), 0);
    ck_assert(!b);
    ck_assert_int_eq(gguf_get_str(g, "s.str", &s), 0);
    ck_assert_str_eq(s, "qwen3moe");
    ck_assert_int_eq(gguf_get_str(g, "s.empty", &s), 0);
    ck_assert_str_eq(s, "");
    ck_assert_int_eq(gguf_kv_value(g, (size_t)gguf_find_kv(g, "s.strnul"), &data, &len), 0);
    ck_assert_uint_eq(len, 3);
    ck_assert_int_eq(memcmp(data, "a\0b", 4), 0); /* NUL-terminated after its bytes */
    ck_assert_int_eq(gguf_get_u64(g, "s.u64", &u64), 0);
    ck_assert_uint_eq(u64, UINT64_MAX);
    ck_assert_int_eq(gguf_kv_type(g, (size_t)gguf_find_kv(g, "s.i64")), GGUF_TYPE_INT64);
    ck_assert_int_eq(gguf_kv_value(g, (size_t)gguf_find_kv(g, "s.i64"), &data, &len), 0);
    ck_assert_uint_eq(len, 8);
    ck_assert_int_eq(*(const int64_t *)data, INT64_MIN);
    ck_assert_int_eq(gguf_kv_value(g, (size_t)gguf_find_kv(g, "s.f64"), &data, &len), 0);
    ck_assert(*(const double *)data == -1e300);
    check_arr(g, "a.u8", GGUF_TYPE_UINT8, au8, 4);
    check_arr(g, "a.i8", GGUF_TYPE_INT8, ai8, 3);
    check_arr(g, "a.u16", GGUF_TYPE_UINT16, au16, 2);
    check_arr(g, "a.i16", GGUF_TYPE_INT16, ai16, 2);
    check_arr(g, "a.u32", GGUF_TYPE_UINT32, au32, 3);
    check_arr(g, "a.i32", GGUF_TYPE_INT32, ai32, 2);
    check_arr(g, "a.f32", GGUF_TYPE_FLOAT32, af32, 2);
    check_arr(g, "a.bool", GGUF_TYPE_BOOL, abool, 3);
    check_arr(g, "a.u64", GGUF_TYPE_UINT64, au64, 2);
    check_arr(g, "a.i64", GGUF_TYPE_INT64, ai64, 2);
    check_arr(g, "a.f64", GGUF_TYPE_FLOAT64, af64, 2);
    check_arr(g, "a.empty", GGUF_TYPE_UINT32, NULL, 0);
    ck_assert_int_eq(gguf_get_arr(g, "a.str", &et, &u64, &data), 0);
    ck_assert_int_eq(et, GGUF_TYPE_STRING);
    ck_assert_uint_eq(u64, 5);
    ck_assert_ptr_null(data);
    for (uint64_t i = 0; i < 5; i++) {
        ck_assert_int_eq(gguf_get_arr_str(g, "a.str", i, &s), 0);
        ck_assert_int_eq(gguf_get_arr_str_len(g, "a.str", i, &len), 0);
        ck_assert_uint_eq(len, str_lens[i]);
        ck_assert_int_eq(memcmp(s, strs[i], len), 0);
        ck_assert_int_eq(s[len], 0);
    }
    ck_assert_int_eq(gguf_get_arr(g, "a.str_empty", &et, &u64, &data), 0);
    ck_assert_uint_eq(u64, 0);
    ck_assert_int_eq(gguf_get_arr_str(g, "a.str_empty", 0, &s), -ERANGE);
}

START_TEST(round_trips_every_metadata_type)
{
    char path[512], path2[512], err[256];
    gguf_writer_t *w = NULL;
    gguf_t *g = NULL, *g2 = NULL;

    tmp_path(path, sizeof(path), "types.gguf");
    ck_assert_int_eq(gguf_writer_new(path, 0, &w), 0);
    write_every_type(w);
    ck_assert_int_eq(gguf_writer_finish(w), 0);
    ck_assert_int_eq(gguf_open(path, &g, err, sizeof(err)), 0);
    ck_assert_uint_eq(gguf_version(g), 3);
    ck_assert_uint_eq(gguf_n_kv(g), 29);
    ck_assert_int_eq(gguf_find_kv(g, "general.alignment"), -ENOENT); /* default: not written */
    ck_assert_str_eq(gguf_kv_key(g, 0), "s.u8");
    check_every_type(g);

    /* copy_kv reproduces every kv, type for type. */
    tmp_path(path2, sizeof(path2), "copy.gguf");
    ck_assert_int_eq(gguf_writer_new(path2, 64, &w), 0);
    for (size_t i = 0; i < gguf_n_kv(g); i++)
        ck_assert_int_eq(gguf_writer_copy_kv(w, g, i), 0);
    ck_assert_int_eq(gguf_writer_copy_kv(w, g, 0), -EEXIST);
    ck_assert_int_eq(gguf_writer_finish(w), 0);
    ck_assert_int_eq(gguf_open(path2, &g2, err, sizeof(err)), 0);
    ck_assert_uint_eq(gguf_n_kv(g2), 30); /* + general.alignment = 64 */
    ck_assert_uint_eq(gguf_alignment(g2), 64);
    check_every_type(g2);
    for (size_t i = 0; i < gguf_n_kv(g); i++)
        ck_assert_int_eq(gguf_kv_type(g2, i), gguf_kv_type(g, i));
    gguf_free(g2);
    gguf_free(g);
    unlink(path);
    unlink(path2);
}
END_TEST

START_TEST(getters_report_missing_wrong_type_and_out_of_range)
{
    char path[512], err[256];
    gguf_writer_t *w = NULL;
    gguf_t *g = NULL;
    uint32_t u32 = 12345;
    int32_t i32 = 12345;
    uint64_t u64 = 12345;
    float f = 1.0f;
    bool b = false;
    const char *s = "unchanged";
    enum gguf_type et;
    const void *data;
    uint8_t one_u8 = 7;
    int16_t neg16 = -5;
    int64_t big64 = (int64_t)1 << 40, neg64 = -((int64_t)1 << 40);
    double huge = 1e300, small = 0.25;

    tmp_path(path, sizeof(path), "getters.gguf");
    ck_assert_int_eq(gguf_writer_new(path, 0, &w), 0);
    ck_assert_int_eq(gguf_writer_add_scalar(w, "u8", GGUF_TYPE_UINT8, &one_u8), 0);
    ck_assert_int_eq(gguf_writer_add_scalar(w, "neg16", GGUF_TYPE_INT16, &neg16), 0);
    ck_assert_int_eq(gguf_writer_add_scalar(w, "big64", GGUF_TYPE_INT64, &big64), 0);
    ck_assert_int_eq(gguf_writer_add_scalar(w, "neg64", GGUF_TYPE_INT64, &neg64), 0);
    ck_assert_int_eq(gguf_writer_add_u64(w, "u64max", UINT64_MAX), 0);
    ck_assert_int_eq(gguf_writer_add_u32(w, "u32max", UINT32_MAX), 0);
    ck_assert_int_eq(gguf_writer_add_scalar(w, "f64huge", GGUF_TYPE_FLOAT64, &huge), 0);
    ck_assert_int_eq(gguf_writer_add_scalar(w, "f64small", GGUF_TYPE_FLOAT64, &small), 0);
    ck_assert_int_eq(gguf_writer_add_str(w, "str", "x"), 0);
    ck_assert_int_eq(gguf_writer_add_arr(w, "arr", GGUF_TYPE_UINT32, &u32, 1), 0);
    ck_assert_int_eq(gguf_writer_finish(w), 0);
    ck_assert_int_eq(gguf_open(path, &g, err, sizeof(err)), 0);

    /* Missing keys. */
    ck_assert_int_eq(gguf_get_u32(g, "nope", &u32), -ENOENT);
    ck_assert_int_eq(gguf_get_i32(g, "nope", &i32), -ENOENT);
    ck_assert_int_eq(gguf_get_u64(g, "nope", &u64), -ENOENT);
    ck_assert_int_eq(gguf_get_f32(g, "nope", &f), -ENOENT);
    ck_assert_int_eq(gguf_get_bool(g, "nope", &b), -ENOENT);
    ck_assert_int_eq(gguf_get_str(g, "nope", &s), -ENOENT);
    ck_assert_int_eq(gguf_get_arr(g, "nope", &et, &u64, &data), -ENOENT);
    ck_assert_int_eq(gguf_get_arr_str(g, "nope", 0, &s), -ENOENT);
    ck_assert_int_eq(gguf_find_kv(g, "nope"), -ENOENT);
    ck_assert_int_eq(gguf_find_kv(g, ""), -ENOENT);
    /* Wrong types. */
    ck_assert_int_eq(gguf_get_u32(g, "str", &u32), -EINVAL);
    ck_assert_int_eq(gguf_get_u32(g, "f64small", &u32), -EINVAL);
    ck_assert_int_eq(gguf_get_f32(g, "u8", &f), -EINVAL);
    ck_assert_int_eq(gguf_get_bool(g, "u8", &b), -EINVAL);
    ck_assert_int_eq(gguf_get_str(g, "u8", &s), -EINVAL);
    ck_assert_int_eq(gguf_get_arr(g, "str", &et, &u64, &data), -EINVAL);
    ck_assert_int_eq(gguf_get_arr_str(g, "arr", 0, &s), -EINVAL);
    ck_assert_int_eq(gguf_get_u64(g, "arr", &u64), -EINVAL);
    /* Out of range. */
    ck_assert_int_eq(gguf_get_u32(g, "neg16", &u32), -ERANGE);
    ck_assert_int_eq(gguf_get_u64(g, "neg64", &u64), -ERANGE);
    ck_assert_int_eq(gguf_get_u32(g, "big64", &u32), -ERANGE);
    ck_assert_int_eq(gguf_get_i32(g, "big64", &i32), -ERANGE);
    ck_assert_int_eq(gguf_get_i32(g, "neg64", &i32), -ERANGE);
    ck_assert_int_eq(gguf_get_u32(g, "u64max", &u32), -ERANGE);
    ck_assert_int_eq(gguf_get_i32(g, "u32max", &i32), -ERANGE);
    ck_assert_int_eq(gguf_get_f32(g, "f64huge", &f), -ERANGE);
    /* Failures wrote nothing. */
    ck_assert_uint_eq(u32, 12345);
    ck_assert_int_eq(i32, 12345);
    ck_assert(f == 1.0f);
    ck_assert(!b);
    ck_assert_str_eq(s, "unchanged");
    /* Widening and narrowing that fit. */
    ck_assert_int_eq(gguf_get_u32(g, "u8", &u32), 0);
    ck_assert_uint_eq(u32, 7);
    ck_assert_int_eq(gguf_get_i32(g, "neg16", &i32), 0);
    ck_assert_int_eq(i32, -5);
    ck_assert_int_eq(gguf_get_u64(g, "big64", &u64), 0);
    ck_assert_uint_eq(u64, 1ull << 40);
    ck_assert_int_eq(gguf_get_u64(g, "u32max", &u64), 0);
    ck_assert_uint_eq(u64, UINT32_MAX);
    ck_assert_int_eq(gguf_get_f32(g, "f64small", &f), 0);
    ck_assert(f == 0.25f);
    ck_assert_int_eq(gguf_get_arr_str_len(g, "arr", 0, &u64), -EINVAL);
    gguf_free(g);
    unlink(path);
}
END_TEST

/* Tensors of several types and shapes land aligned, packed in order, with their bytes. */
static void round_trip_tensors(uint32_t alignment)
{
    static const struct {
        const char *name;
        uint32_t n_dims;
        uint64_t ne[4];
        uint32_t type;
    } ts[] = {
        {"token_embd.weight", 2, {64, 10}, GGML_TYPE_F16},
        {"blk.0.ffn_up_exps.weight", 3, {256, 3, 4}, GGML_TYPE_Q4_K},
        {"blk.0.attn_norm.weight", 1, {7}, GGML_TYPE_F32},
        {"blk.0.ffn_down_exps.weight", 3, {32, 5, 2}, GGML_TYPE_Q8_0},
        {"four.d", 4, {2, 3, 1, 5}, GGML_TYPE_BF16},
        {"blk.0.q6", 2, {256, 1}, GGML_TYPE_Q6_K},
    };
    const size_t n = sizeof(ts) / sizeof(ts[0]);
    char path[512], err[256];
    gguf_writer_t *w = NULL;
    gguf_t *g = NULL;
    uint64_t sizes[6], offs[6], prev_end = 0, junk;
    uint8_t *buf;
    struct stat st;
    int fd;

    tmp_path(path, sizeof(path), "tensors.gguf");
    ck_assert_int_eq(gguf_writer_new(path, alignment, &w), 0);
    ck_assert_int_eq(gguf_writer_add_str(w, "general.architecture", "test"), 0);
    for (size_t i = 0; i < n; i++) {
        uint64_t rows = ts[i].ne[1] ? ts[i].ne[1] : 1, row;

        for (uint32_t d = 2; d < ts[i].n_dims; d++)
            rows *= ts[i].ne[d];
        ck_assert_int_eq(quant_row_size(ts[i].type, ts[i].ne[0], &row), 0);
        sizes[i] = row * rows;
        ck_assert_int_eq(gguf_writer_add_tensor(w, ts[i].name, ts[i].n_dims, ts[i].ne, ts[i].type),
                         0);
    }
    ck_assert_int_eq(gguf_writer_tensor_offset(w, 0, &junk), -EINVAL); /* not yet known */
    ck_assert_int_eq(gguf_writer_begin_data(w), 0);
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(gguf_writer_tensor_offset(w, i, &offs[i]), 0);
        buf = malloc(sizes[i]);
        for (uint64_t k = 0; k < sizes[i]; k++)
            buf[k] = (uint8_t)(i * 31 + k * 7);
        /* In two pieces, to show a tensor may arrive in several writes. */
        ck_assert_int_eq(gguf_writer_write(w, buf, sizes[i] / 3), 0);
        ck_assert_int_eq(gguf_writer_write(w, buf + sizes[i] / 3, sizes[i] - sizes[i] / 3), 0);
        free(buf);
    }
    ck_assert_int_eq(gguf_writer_write(w, "x", 1), -EINVAL); /* nothing left to write */
    ck_assert_int_eq(gguf_writer_finish(w), 0);

    ck_assert_int_eq(gguf_open(path, &g, err, sizeof(err)), 0);
    ck_assert_uint_eq(gguf_alignment(g), alignment);
    ck_assert_uint_eq(gguf_data_offset(g) % alignment, 0);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq((uint64_t)st.st_size % alignment, 0);
    ck_assert_uint_eq(st.st_mode & 0777, 0644);
    ck_assert_uint_eq(gguf_n_tensors(g), n);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    for (size_t i = 0; i < n; i++) {
        const gguf_tensor_t *t = gguf_find_tensor(g, ts[i].name);

        ck_assert_ptr_nonnull(t);
        ck_assert_ptr_eq(t, gguf_tensor(g, i));
        ck_assert_uint_eq(t->n_dims, ts[i].n_dims);
        for (uint32_t d = 0; d < 4; d++)
            ck_assert_uint_eq(t->ne[d], d < ts[i].n_dims ? ts[i].ne[d] : 1);
        ck_assert_uint_eq(t->type, ts[i].type);
        ck_assert_uint_eq(t->size, sizes[i]);
        ck_assert_uint_eq(t->offset, offs[i]);
        ck_assert_uint_eq(t->offset % alignment, 0);
        /* Packed: each starts at the previous end rounded up to the alignment. */
        if (i == 0)
            ck_assert_uint_eq(t->offset, gguf_data_offset(g));
        else
            ck_assert_uint_eq(t->offset, (prev_end + alignment - 1) / alignment * alignment);
        prev_end = t->offset + t->size;
        buf = malloc(t->size);
        ck_assert_int_eq(pread(fd, buf, t->size, (off_t)t->offset), (ssize_t)t->size);
        for (uint64_t k = 0; k < t->size; k++)
            ck_assert_uint_eq(buf[k], (uint8_t)(i * 31 + k * 7));
        free(buf);
    }
    close(fd);
    gguf_free(g);
    unlink(path);
}

START_TEST(places_tensors_at_alignment_32_64_and_4096)
{
    round_trip_tensors(32);
    round_trip_tensors(64);
    round_trip_tensors(4096);
    round_trip_tensors(1);
}
END_TEST

START_TEST(writer_refuses_misuse_and_leaves_no_partial_file)
{
    char path[512];
    gguf_writer_t *w = NULL;
    uint64_t ne[2] = {32, 2}, bad_ne[2] = {33, 2}, zero_ne[2] = {32, 0};
    uint8_t data[300] = {0}, two = 2;

    tmp_path(path, sizeof(path), "misuse.gguf");
    ck_assert_int_eq(gguf_writer_new(path, 3, &w), -EINVAL);
    ck_assert_ptr_null(w);
    ck_assert_int_eq(gguf_writer_new("/nonexistent-dir/x.gguf", 32, &w), -ENOENT);
    ck_assert_int_eq(gguf_writer_new(path, 32, &w), 0);
    ck_assert_uint_eq(count_files(tmpdir), 1); /* the temporary file, not PATH */
    ck_assert_int_eq(access(path, F_OK), -1);
    ck_assert_int_eq(gguf_writer_add_u32(w, "k", 1), 0);
    ck_assert_int_eq(gguf_writer_add_str(w, "k", "again"), -EEXIST);
    ck_assert_int_eq(gguf_writer_add_u32(w, "", 1), -EINVAL);
    ck_assert_int_eq(gguf_writer_add_u32(w, NULL, 1), -EINVAL);
    ck_assert_int_eq(gguf_writer_add_u32(w, "general.alignment", 64), -EINVAL);
    ck_assert_int_eq(gguf_writer_add_i32(w, "general.alignment", 32), -EINVAL);
    ck_assert_int_eq(gguf_writer_add_scalar(w, "b", GGUF_TYPE_BOOL, &two), -EINVAL);
    ck_assert_int_eq(gguf_writer_add_scalar(w, "s", GGUF_TYPE_STRING, "x"), -EINVAL);
    ck_assert_int_eq(gguf_writer_add_arr(w, "a", GGUF_TYPE_ARRAY, data, 1), -EINVAL);
    ck_assert_int_eq(gguf_writer_add_arr(w, "a", GGUF_TYPE_BOOL, &two, 1), -EINVAL);
    ck_assert_int_eq(gguf_writer_add_tensor(w, "t", 2, bad_ne, GGML_TYPE_Q8_0), -EINVAL);
    ck_assert_int_eq(gguf_writer_add_tensor(w, "t", 2, zero_ne, GGML_TYPE_F32), -EINVAL);
    ck_assert_int_eq(gguf_writer_add_tensor(w, "t", 0, ne, GGML_TYPE_F32), -EINVAL);
    ck_assert_int_eq(gguf_writer_add_tensor(w, "t", 5, ne, GGML_TYPE_F32), -EINVAL);
    ck_assert_int_eq(gguf_writer_add_tensor(w, "t", 2, ne, 4), -EINVAL);
    ck_assert_int_eq(gguf_writer_add_tensor(w, "", 2, ne, GGML_TYPE_F32), -EINVAL);
    ck_assert_int_eq(gguf_writer_add_tensor(w, "t", 2, ne, GGML_TYPE_F32), 0);
    ck_assert_int_eq(gguf_writer_add_tensor(w, "t", 2, ne, GGML_TYPE_F32), -EEXIST);
    ck_assert_int_eq(gguf_writer_add_tensor(w, "u", 2, ne, GGML_TYPE_Q8_0), 0);
    ck_assert_int_eq(gguf_writer_write(w, data, 1), -EINVAL); /* before begin_data */
    ck_assert_int_eq(gguf_writer_begin_data(w), 0);
    ck_assert_int_eq(gguf_writer_add_u32(w, "late", 1), -EINVAL);
    ck_assert_int_eq(gguf_writer_add_tensor(w, "late", 2, ne, GGML_TYPE_F32), -EINVAL);
    ck_assert_int_eq(gguf_writer_begin_data(w), -EINVAL);
    ck_assert_int_eq(gguf_writer_write(w, data, 257), -EINVAL); /* t is 256 bytes */
    ck_assert_int_eq(gguf_writer_write(w, data, 256), 0);
    ck_assert_int_eq(gguf_writer_write(w, data, 60), 0); /* u is 68 bytes: 8 missing */
    ck_assert_int_eq(gguf_writer_finish(w), -EINVAL);
    ck_assert_int_eq(access(path, F_OK), -1);
    ck_assert_uint_eq(count_files(tmpdir), 0);

    /* Abandoning a writer removes its file. */
    ck_assert_int_eq(gguf_writer_new(path, 32, &w), 0);
    ck_assert_int_eq(gguf_writer_add_tensor(w, "t", 2, ne, GGML_TYPE_F32), 0);
    ck_assert_int_eq(gguf_writer_begin_data(w), 0);
    ck_assert_int_eq(gguf_writer_write(w, data, 100), 0);
    ck_assert_ptr_null(gguf_writer_free(w));
    ck_assert_uint_eq(count_files(tmpdir), 0);
    ck_assert_ptr_null(gguf_writer_free(NULL));
    ck_assert_ptr_null(gguf_free(NULL));

    /* A general.alignment equal to the writer's is accepted once, and the file reads. */
    ck_assert_int_eq(gguf_writer_new(path, 64, &w), 0);
    ck_assert_int_eq(gguf_writer_add_u32(w, "general.alignment", 64), 0);
    ck_assert_int_eq(gguf_writer_add_u32(w, "general.alignment", 64), -EEXIST);
    ck_assert_int_eq(gguf_writer_finish(w), 0);
    {
        gguf_t *g = NULL;
        char err[256];

        ck_assert_int_eq(gguf_open(path, &g, err, sizeof(err)), 0);
        ck_assert_uint_eq(gguf_n_kv(g), 1);
        ck_assert_uint_eq(gguf_alignment(g), 64);
        gguf_free(g);
    }
    unlink(path);
}
END_TEST

/* ---- shared vocabulary files ---- */

static void check_vocab(const char *file, const char *model, uint64_t n_tokens)
{
    const char *dir = getenv("MOE_SHARED_DATA");
    char path[1024], copy[512], err[256];
    gguf_t *g = NULL, *g2 = NULL;
    gguf_writer_t *w = NULL;
    const char *s;
    enum gguf_type et;
    uint64_t n, n2;
    const void *data;

    snprintf(path, sizeof(path), "%s/vocab/%s", dir, file);
    ck_assert_msg(gguf_open(path, &g, err, sizeof(err)) == 0, "%s: %s", file, err);
    ck_assert_int_eq(gguf_get_str(g, "tokenizer.ggml.model", &s), 0);
    ck_assert_str_eq(s, model);
    ck_assert_int_eq(gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &data), 0);
    ck_assert_int_eq(et, GGUF_TYPE_STRING);
    ck_assert_uint_eq(n, n_tokens);
    ck_assert_uint_eq(gguf_n_tensors(g), 0);

    /* Copying every kv gives a file that reads back identically. */
    tmp_path(copy, sizeof(copy), "vocab-copy.gguf");
    ck_assert_int_eq(gguf_writer_new(copy, gguf_alignment(g), &w), 0);
    for (size_t i = 0; i < gguf_n_kv(g); i++)
        ck_assert_int_eq(gguf_writer_copy_kv(w, g, i), 0);
    ck_assert_int_eq(gguf_writer_finish(w), 0);
    ck_assert_int_eq(gguf_open(copy, &g2, err, sizeof(err)), 0);
    ck_assert_uint_eq(gguf_n_kv(g2), gguf_n_kv(g));
    for (size_t i = 0; i < gguf_n_kv(g); i++) {
        const void *a, *b;

        ck_assert_str_eq(gguf_kv_key(g2, i), gguf_kv_key(g, i));
        ck_assert_int_eq(gguf_kv_type(g2, i), gguf_kv_type(g, i));
        ck_assert_int_eq(gguf_kv_value(g, i, &a, &n), 0);
        ck_assert_int_eq(gguf_kv_value(g2, i, &b, &n2), 0);
        ck_assert_uint_eq(n, n2);
        if (gguf_kv_type(g, i) == GGUF_TYPE_ARRAY) {
            enum gguf_type et2;
            uint64_t cnt;

            ck_assert_int_eq(gguf_get_arr(g, gguf_kv_key(g, i), &et2, &cnt, &a), 0);
            n = et2 == GGUF_TYPE_STRING ? 0 : cnt * gguf_type_size(et2);
        }
        if (n)
            ck_assert_int_eq(memcmp(a, b, n), 0);
    }
    for (uint64_t k = 0; k < n_tokens; k += 97) {
        const char *x, *y;

        ck_assert_int_eq(gguf_get_arr_str(g, "tokenizer.ggml.tokens", k, &x), 0);
        ck_assert_int_eq(gguf_get_arr_str(g2, "tokenizer.ggml.tokens", k, &y), 0);
        ck_assert_str_eq(x, y);
    }
    gguf_free(g2);
    gguf_free(g);
    unlink(copy);
}

START_TEST(parses_shared_vocab_files)
{
    check_vocab("ggml-vocab-gpt-2.gguf", "gpt2", 50257);
    check_vocab("ggml-vocab-phi-3.gguf", "llama", 32064);
}
END_TEST

static bool have_vocab(void)
{
    const char *dir = getenv("MOE_SHARED_DATA");
    char path[1024];

    if (!dir)
        return false;
    snprintf(path, sizeof(path), "%s/vocab/ggml-vocab-gpt-2.gguf", dir);
    return access(path, R_OK) == 0;
}

int main(void)
{
    Suite *s = suite_create("gguf");
    TCase *tc = tcase_create("gguf");
    SRunner *sr;
    int failed;

    if (make_tmpdir() < 0) {
        perror("mkdtemp");
        return 1;
    }
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, parses_hand_made_file_with_every_section);
    tcase_add_test(tc, refuses_truncation_at_every_byte);
    tcase_add_test(tc, refuses_each_malformed_variant_with_a_reason);
    tcase_add_test(tc, survives_random_corruption);
    tcase_add_test(tc, refuses_paths_that_are_not_gguf_files);
    tcase_add_test(tc, refuses_header_past_size_limit);
    tcase_add_test(tc, round_trips_every_metadata_type);
    tcase_add_test(tc, getters_report_missing_wrong_type_and_out_of_range);
    tcase_add_test(tc, places_tensors_at_alignment_32_64_and_4096);
    tcase_add_test(tc, writer_refuses_misuse_and_leaves_no_partial_file);
    if (have_vocab())
        tcase_add_test(tc, parses_shared_vocab_files);
    else
        fprintf(stderr, "vocab files not found under $MOE_SHARED_DATA: skipping that test\n");
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    /* No fork: the tests share the temporary folder and ASan sees one process. */
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    remove_tmpdir();
    return failed ? 1 : 0;
}
