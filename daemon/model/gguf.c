/* GGUF reader. Parses the header of a GGUF v2/v3 file (magic, version, counts, metadata
 * key/values, tensor infos) with ordinary buffered read()s, or from a memory buffer, and
 * validates every count, length, type, dimension and offset against the bytes that are
 * actually left before allocating anything for it. The layout is that of ggml/docs/gguf.md
 * (ggml repository); the checks go further than ggml/src/gguf.cpp where a hostile file could
 * otherwise make a consumer misbehave (overlapping tensors, ne[0] not a block multiple).
 *
 * Invariants of a gguf_t (it is immutable once gguf_open* returns it):
 *  - every string (keys, tensor names, string values and array elements) lives in one arena,
 *    NUL-terminated; keys and tensor names are non-empty and contain no NUL, values may;
 *  - numeric arrays live in the arena, 8-byte aligned, as the file's little-endian bytes;
 *  - keys are unique, tensor names are unique, both found through open-addressed hashes;
 *  - every tensor has 1..4 dims, ne >= 1, a type quant_traits() knows, ne[0] a multiple of
 *    its block size, size = row size * rows without overflow, data aligned to the alignment,
 *    inside [data_offset, file_size), and no two tensors share a byte.
 * Memory is bounded by a constant times the header bytes actually read: containers grow as
 * elements arrive instead of trusting the counts a file claims. Nested arrays are refused
 * (ggml's own reader refuses them too). The reader never logs: a refusal is -EINVAL (bad
 * file), -ENOMEM or -EIO plus one line naming the key or tensor, the byte offset and why. */
#include "model/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/gguf-private.h"
#include "model/quant.h"

/* Numeric arrays are handed out as the file's bytes, which is only the host's layout on a
 * little-endian machine. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "gguf.c assumes a little-endian host");

#define GGUF_MAGIC_LE 0x46554747u /* "GGUF" read as a little-endian u32 */
/* GGUF_MAX_NAME_LEN (gguf.h) is generous: ggml caps tensor names at 64 bytes. Headers past
 * GGUF_MAX_HEADER_BYTES are refused: real ones (150k-token vocabularies, merges, chat
 * templates) are tens of MiB, and the arena uses 32-bit offsets. */
#define GGUF_MAX_NAME   GGUF_MAX_NAME_LEN
#define GGUF_MAX_HEADER GGUF_MAX_HEADER_BYTES
/* The smallest encodings: a kv is a key length, a 1-byte key, a type and a 1-byte value; a
 * tensor info is a name length, a 1-byte name, n_dims, one ne, a type and an offset. */
#define GGUF_MIN_KV_BYTES     (8u + 1u + 4u + 1u)
#define GGUF_MIN_TENSOR_BYTES (8u + 1u + 4u + 8u + 4u + 8u)
#define GGUF_READ_BUF         (64u * 1024u)

struct gguf_kv {
    uint64_t file_off; /* byte offset of the kv in the file, for reasons */
    uint64_t n;        /* STRING: length in bytes; ARRAY: element count */
    uint64_t raw;      /* scalars: the value's little-endian bytes, zero-extended */
    uint32_t key;      /* arena offset of the key */
    uint32_t data;     /* STRING, numeric ARRAY: arena offset; string ARRAY: first index in strs */
    uint8_t type;      /* enum gguf_type */
    uint8_t arr_type;  /* ARRAY: element type */
};

struct gguf_str_ref {
    uint32_t off; /* arena offset */
    uint32_t len; /* bytes, not counting the NUL the arena adds */
};

struct gguf_tensor_rec {
    gguf_tensor_t t;   /* what gguf_tensor() hands out; t.name points into the arena */
    uint64_t info_off; /* byte offset of the tensor info, for reasons */
    uint32_t name;     /* arena offset of the name */
};

/* Open addressing with linear probing; a slot holds index + 1, 0 is empty; load <= 1/2. */
struct gguf_index {
    uint32_t *slots;
    uint32_t cap; /* a power of two, or 0 */
    uint32_t n;
};

struct gguf {
    uint32_t version;
    uint32_t alignment;
    uint64_t file_size;
    uint64_t data_offset;

    char *arena; /* [arena_len] NUL-terminated strings and 8-aligned numeric arrays */
    size_t arena_len, arena_cap;
    struct gguf_kv *kvs; /* [n_kv] in file order */
    size_t n_kv, kv_cap;
    struct gguf_str_ref *strs; /* [n_strs] elements of all string arrays, array by array */
    size_t n_strs, strs_cap;
    struct gguf_tensor_rec *tensors; /* [n_tensors] in file order */
    size_t n_tensors, tensor_cap;
    struct gguf_index kv_index, tensor_index;
};

/* Where the header bytes come from: an fd read through a buffer, or memory. */
struct gguf_src {
    int fd; /* -1 for memory */
    const uint8_t *mem;
    uint64_t limit; /* header bytes that may be read: min(file or buffer, GGUF_MAX_HEADER) */
    uint64_t pos;   /* absolute offset of the next byte */
    uint8_t *buf;   /* fd only: [GGUF_READ_BUF] */
    size_t buf_off, buf_len;
};

/* What is being parsed, so that a reason can name it. */
enum gguf_ctx { GGUF_CTX_HEADER, GGUF_CTX_KV, GGUF_CTX_TENSOR };

struct gguf_parser {
    struct gguf_src src;
    gguf_t *g;
    uint64_t file_size;
    bool capped; /* src.limit is GGUF_MAX_HEADER, not the end of the data */
    bool in_memory;
    enum gguf_ctx ctx;
    size_t item; /* index of the kv or tensor being parsed */
    bool named;  /* the item's key/name has been read (arena offset in name) */
    uint32_t name;
    char *err;
    size_t errlen;
};

/* ---- small helpers ---- */

static size_t gguf_type_size_(uint32_t t)
{
    static const uint8_t sizes[GGUF_TYPE_COUNT_] = {
        [GGUF_TYPE_UINT8] = 1,   [GGUF_TYPE_INT8] = 1,    [GGUF_TYPE_UINT16] = 2,
        [GGUF_TYPE_INT16] = 2,   [GGUF_TYPE_UINT32] = 4,  [GGUF_TYPE_INT32] = 4,
        [GGUF_TYPE_FLOAT32] = 4, [GGUF_TYPE_BOOL] = 1,    [GGUF_TYPE_UINT64] = 8,
        [GGUF_TYPE_INT64] = 8,   [GGUF_TYPE_FLOAT64] = 8,
    };
    return t < GGUF_TYPE_COUNT_ ? sizes[t] : 0;
}

size_t gguf_type_size(enum gguf_type t)
{
    return gguf_type_size_((uint32_t)t);
}

const char *gguf_type_name(enum gguf_type t)
{
    static const char *const names[GGUF_TYPE_COUNT_] = {
        [GGUF_TYPE_UINT8] = "uint8",     [GGUF_TYPE_INT8] = "int8",
        [GGUF_TYPE_UINT16] = "uint16",   [GGUF_TYPE_INT16] = "int16",
        [GGUF_TYPE_UINT32] = "uint32",   [GGUF_TYPE_INT32] = "int32",
        [GGUF_TYPE_FLOAT32] = "float32", [GGUF_TYPE_BOOL] = "bool",
        [GGUF_TYPE_STRING] = "string",   [GGUF_TYPE_ARRAY] = "array",
        [GGUF_TYPE_UINT64] = "uint64",   [GGUF_TYPE_INT64] = "int64",
        [GGUF_TYPE_FLOAT64] = "float64",
    };
    return (unsigned)t < GGUF_TYPE_COUNT_ ? names[t] : "unknown";
}

int gguf_grow(void **p, size_t *cap, size_t need, size_t elem)
{
    size_t nc = *cap ? *cap : 16, bytes;
    void *q;

    if (need <= *cap)
        return 0;
    while (nc < need)
        if (__builtin_mul_overflow(nc, 2, &nc))
            return -ENOMEM;
    if (__builtin_mul_overflow(nc, elem, &bytes))
        return -ENOMEM;
    q = realloc(*p, bytes);
    if (!q)
        return -ENOMEM;
    *p = q;
    *cap = nc;
    return 0;
}

/* Reserves n bytes in the arena, first padding it to align; returns their offset. */
static int gguf_arena_alloc(gguf_t *g, uint64_t n, size_t align, uint32_t *ret_off)
{
    uint64_t start = (g->arena_len + align - 1) & ~(uint64_t)(align - 1), end;

    if (__builtin_add_overflow(start, n, &end) || end > UINT32_MAX)
        return -ENOMEM;
    if (gguf_grow((void **)&g->arena, &g->arena_cap, (size_t)end, 1) < 0)
        return -ENOMEM;
    memset(g->arena + g->arena_len, 0, (size_t)(start - g->arena_len));
    g->arena_len = (size_t)end;
    *ret_off = (uint32_t)start;
    return 0;
}

static uint32_t gguf_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static const char *gguf_index_name(const gguf_t *g, bool tensors, uint32_t i)
{
    return g->arena + (tensors ? g->tensors[i].name : g->kvs[i].key);
}

/* Index of name, or -1. */
static int64_t gguf_index_find(const gguf_t *g, bool tensors, const char *name)
{
    const struct gguf_index *ix = tensors ? &g->tensor_index : &g->kv_index;
    uint32_t mask = ix->cap - 1, s;

    if (!ix->cap || !name)
        return -1;
    for (s = gguf_hash(name) & mask; ix->slots[s]; s = (s + 1) & mask)
        if (strcmp(gguf_index_name(g, tensors, ix->slots[s] - 1), name) == 0)
            return ix->slots[s] - 1;
    return -1;
}

static void gguf_index_put(gguf_t *g, bool tensors, uint32_t i)
{
    struct gguf_index *ix = tensors ? &g->tensor_index : &g->kv_index;
    uint32_t mask = ix->cap - 1, s = gguf_hash(gguf_index_name(g, tensors, i)) & mask;

    while (ix->slots[s])
        s = (s + 1) & mask;
    ix->slots[s] = i + 1;
    ix->n++;
}

/* Adds entry i (its name already in the arena); -EEXIST with *ret_other if taken. */
static int gguf_index_add(gguf_t *g, bool tensors, uint32_t i, uint32_t *ret_other)
{
    struct gguf_index *ix = tensors ? &g->tensor_index : &g->kv_index;
    int64_t other = gguf_index_find(g, tensors, gguf_index_name(g, tensors, i));

    if (other >= 0) {
        *ret_other = (uint32_t)other;
        return -EEXIST;
    }
    if (((uint64_t)ix->n + 1) * 2 > ix->cap) {
        uint32_t cap = ix->cap ? ix->cap * 2 : 64, *slots, *old = ix->slots, old_cap = ix->cap;

        if (cap < ix->cap)
            return -ENOMEM;
        slots = calloc(cap, sizeof(*slots));
        if (!slots)
            return -ENOMEM;
        ix->slots = slots;
        ix->cap = cap;
        ix->n = 0;
        for (uint32_t s = 0; s < old_cap; s++)
            if (old[s])
                gguf_index_put(g, tensors, old[s] - 1);
        free(old);
    }
    gguf_index_put(g, tensors, i);
    return 0;
}

/* ---- reasons ---- */

/* Copies a name for a message: at most 96 bytes, control bytes shown as '?'. */
static void gguf_quote(char *dst, size_t dstlen, const char *s)
{
    size_t i, n = strlen(s), lim = dstlen - 4;

    for (i = 0; i < n && i < lim; i++)
        dst[i] = ((uint8_t)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
    if (i < n)
        memcpy(dst + i, "...", 3), i += 3;
    dst[i] = 0;
}

__attribute__((format(printf, 4, 5))) static int gguf_fail(struct gguf_parser *p, int r,
                                                           uint64_t off, const char *fmt, ...)
{
    char what[128], name[100];
    size_t len;
    va_list ap;

    if (!p->err || !p->errlen)
        return r;
    if (p->named && p->g)
        gguf_quote(name, sizeof(name), p->g->arena + p->name);
    switch (p->ctx) {
    case GGUF_CTX_KV:
        if (p->named)
            snprintf(what, sizeof(what), "key '%s'", name);
        else
            snprintf(what, sizeof(what), "kv #%zu", p->item);
        break;
    case GGUF_CTX_TENSOR:
        if (p->named)
            snprintf(what, sizeof(what), "tensor '%s'", name);
        else
            snprintf(what, sizeof(what), "tensor #%zu", p->item);
        break;
    default:
        snprintf(what, sizeof(what), "header");
        break;
    }
    snprintf(p->err, p->errlen, "%s at byte %llu: ", what, (unsigned long long)off);
    len = strlen(p->err);
    va_start(ap, fmt);
    vsnprintf(p->err + len, p->errlen - len, fmt, ap);
    va_end(ap);
    return r;
}

/* ---- reading ---- */

static uint64_t gguf_left(const struct gguf_parser *p)
{
    return p->src.limit - p->src.pos;
}

/* Names the end that a read of n bytes at pos would cross. */
static int gguf_fail_short(struct gguf_parser *p, const char *field, uint64_t n)
{
    const char *where = p->capped      ? "the header size limit"
                        : p->in_memory ? "the end of the buffer"
                                       : "the end of the file";

    return gguf_fail(p, -EINVAL, p->src.pos, "%s (%llu bytes) runs past %s (%llu bytes left)",
                     field, (unsigned long long)n, where, (unsigned long long)gguf_left(p));
}

/* Reads n bytes into dst; the caller checked that n <= gguf_left(). */
static int gguf_src_read(struct gguf_parser *p, void *dst, uint64_t n)
{
    struct gguf_src *s = &p->src;
    uint8_t *d = dst;

    if (s->fd < 0) {
        memcpy(d, s->mem + s->pos, (size_t)n);
        s->pos += n;
        return 0;
    }
    while (n > 0) {
        ssize_t k;

        if (s->buf_off < s->buf_len) {
            size_t c = s->buf_len - s->buf_off;

            if (c > n)
                c = (size_t)n;
            memcpy(d, s->buf + s->buf_off, c);
            s->buf_off += c;
            s->pos += c;
            d += c;
            n -= c;
            continue;
        }
        /* Large reads (numeric arrays) go straight to their destination. */
        if (n >= GGUF_READ_BUF)
            k = read(s->fd, d, n > (1u << 30) ? (1u << 30) : (size_t)n);
        else
            k = read(s->fd, s->buf, GGUF_READ_BUF);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return gguf_fail(p, -errno, s->pos, "read failed: %s", strerror(errno));
        if (k == 0)
            return gguf_fail(p, -EIO, s->pos, "file ended early (was it truncated while read?)");
        if (n >= GGUF_READ_BUF) {
            s->pos += (uint64_t)k;
            d += k;
            n -= (uint64_t)k;
        } else {
            s->buf_off = 0;
            s->buf_len = (size_t)k;
        }
    }
    return 0;
}

static int gguf_read(struct gguf_parser *p, void *dst, uint64_t n, const char *field)
{
    if (n > gguf_left(p))
        return gguf_fail_short(p, field, n);
    return gguf_src_read(p, dst, n);
}

static int gguf_read_u32(struct gguf_parser *p, uint32_t *ret, const char *field)
{
    uint8_t b[4];
    int r = gguf_read(p, b, 4, field);

    if (r < 0)
        return r;
    *ret = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    return 0;
}

static int gguf_read_u64(struct gguf_parser *p, uint64_t *ret, const char *field)
{
    uint8_t b[8];
    int r = gguf_read(p, b, 8, field);

    if (r < 0)
        return r;
    *ret = 0;
    for (int i = 7; i >= 0; i--)
        *ret = *ret << 8 | b[i];
    return 0;
}

/* Reads a GGUF string (u64 length, bytes) into the arena, NUL-terminated. A name must be
 * 1..GGUF_MAX_NAME bytes without NUL; a value may be anything that fits in the file. */
static int gguf_read_str(struct gguf_parser *p, bool is_name, const char *field, uint32_t *ret_off,
                         uint64_t *ret_len)
{
    uint64_t at = p->src.pos, len;
    uint32_t off;
    int r;

    r = gguf_read_u64(p, &len, field);
    if (r < 0)
        return r;
    if (is_name && (len == 0 || len > GGUF_MAX_NAME))
        return gguf_fail(p, -EINVAL, at, "%s length %llu is not in 1..%u", field,
                         (unsigned long long)len, GGUF_MAX_NAME);
    if (len > gguf_left(p))
        return gguf_fail_short(p, field, len);
    if (gguf_arena_alloc(p->g, len + 1, 1, &off) < 0)
        return gguf_fail(p, -ENOMEM, at, "out of memory for a %llu-byte %s",
                         (unsigned long long)len, field);
    r = gguf_src_read(p, p->g->arena + off, len);
    if (r < 0)
        return r;
    p->g->arena[off + len] = 0;
    if (is_name && memchr(p->g->arena + off, 0, (size_t)len))
        return gguf_fail(p, -EINVAL, at + 8, "%s contains a NUL byte", field);
    *ret_off = off;
    *ret_len = len;
    return 0;
}

/* ---- metadata ---- */

static int gguf_check_bools(struct gguf_parser *p, const uint8_t *v, uint64_t n, uint64_t at)
{
    for (uint64_t i = 0; i < n; i++)
        if (v[i] > 1)
            return gguf_fail(p, -EINVAL, at + i, "bool value %u is neither 0 nor 1", v[i]);
    return 0;
}

static int gguf_read_array(struct gguf_parser *p, struct gguf_kv *kv)
{
    gguf_t *g = p->g;
    uint64_t at = p->src.pos, n, min_bytes, bytes;
    uint32_t et, off;
    int r;

    r = gguf_read_u32(p, &et, "array element type");
    if (r < 0)
        return r;
    if (et == GGUF_TYPE_ARRAY)
        return gguf_fail(p, -EINVAL, at, "nested arrays are not supported");
    if (et >= GGUF_TYPE_COUNT_)
        return gguf_fail(p, -EINVAL, at, "unknown array element type %u", et);
    r = gguf_read_u64(p, &n, "array length");
    if (r < 0)
        return r;
    /* Each element needs at least its smallest encoding: refuse counts the file cannot hold
     * before allocating anything for them. */
    min_bytes = et == GGUF_TYPE_STRING ? 8 : gguf_type_size_(et);
    if (__builtin_mul_overflow(n, min_bytes, &bytes) || bytes > gguf_left(p))
        return gguf_fail(p, -EINVAL, at + 4,
                         "array of %llu %s needs at least %llu bytes per element, %llu left",
                         (unsigned long long)n, gguf_type_name(et), (unsigned long long)min_bytes,
                         (unsigned long long)gguf_left(p));
    kv->arr_type = (uint8_t)et;
    kv->n = n;
    if (et != GGUF_TYPE_STRING) {
        uint64_t data_at = p->src.pos;

        if (gguf_arena_alloc(g, bytes, 8, &off) < 0)
            return gguf_fail(p, -ENOMEM, at, "out of memory for a %llu-byte array",
                             (unsigned long long)bytes);
        r = gguf_src_read(p, g->arena + off, bytes);
        if (r < 0)
            return r;
        if (et == GGUF_TYPE_BOOL) {
            r = gguf_check_bools(p, (const uint8_t *)g->arena + off, n, data_at);
            if (r < 0)
                return r;
        }
        kv->data = off;
        return 0;
    }
    if (g->n_strs + n > UINT32_MAX)
        return gguf_fail(p, -ENOMEM, at, "too many strings");
    kv->data = (uint32_t)g->n_strs;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t len;

        r = gguf_read_str(p, false, "array string", &off, &len);
        if (r < 0)
            return r;
        if (gguf_grow((void **)&g->strs, &g->strs_cap, g->n_strs + 1, sizeof(*g->strs)) < 0)
            return gguf_fail(p, -ENOMEM, at, "out of memory for string %llu of the array",
                             (unsigned long long)i);
        g->strs[g->n_strs++] = (struct gguf_str_ref){off, (uint32_t)len};
    }
    return 0;
}

static int gguf_read_kv(struct gguf_parser *p)
{
    gguf_t *g = p->g;
    struct gguf_kv kv = {.file_off = p->src.pos};
    uint64_t len, at;
    uint32_t type, other;
    int r;

    p->ctx = GGUF_CTX_KV;
    p->item = g->n_kv;
    p->named = false;
    r = gguf_read_str(p, true, "key", &kv.key, &len);
    if (r < 0)
        return r;
    p->named = true;
    p->name = kv.key;
    at = p->src.pos;
    r = gguf_read_u32(p, &type, "value type");
    if (r < 0)
        return r;
    if (type >= GGUF_TYPE_COUNT_)
        return gguf_fail(p, -EINVAL, at, "unknown value type %u", type);
    kv.type = (uint8_t)type;
    at = p->src.pos;
    if (type == GGUF_TYPE_STRING) {
        r = gguf_read_str(p, false, "string value", &kv.data, &kv.n);
    } else if (type == GGUF_TYPE_ARRAY) {
        r = gguf_read_array(p, &kv);
    } else {
        r = gguf_read(p, &kv.raw, gguf_type_size_(type), "value");
        if (r == 0 && type == GGUF_TYPE_BOOL)
            r = gguf_check_bools(p, (const uint8_t *)&kv.raw, 1, at);
    }
    if (r < 0)
        return r;
    if (gguf_grow((void **)&g->kvs, &g->kv_cap, g->n_kv + 1, sizeof(*g->kvs)) < 0)
        return gguf_fail(p, -ENOMEM, kv.file_off, "out of memory");
    g->kvs[g->n_kv] = kv;
    r = gguf_index_add(g, false, (uint32_t)g->n_kv, &other);
    if (r == -EEXIST)
        return gguf_fail(p, -EINVAL, kv.file_off, "duplicate key (first at byte %llu)",
                         (unsigned long long)g->kvs[other].file_off);
    if (r < 0)
        return gguf_fail(p, r, kv.file_off, "out of memory");
    g->n_kv++;
    return 0;
}

static int gguf_read_alignment(struct gguf_parser *p)
{
    gguf_t *g = p->g;
    int64_t i = gguf_index_find(g, false, "general.alignment");
    const struct gguf_kv *kv;

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (i < 0)
        return 0;
    kv = &g->kvs[i];
    p->ctx = GGUF_CTX_KV;
    p->item = (size_t)i;
    p->named = true;
    p->name = kv->key;
    if (kv->type != GGUF_TYPE_UINT32)
        return gguf_fail(p, -EINVAL, kv->file_off, "alignment must be a uint32, not %s",
                         gguf_type_name(kv->type));
    if (kv->raw == 0 || (kv->raw & (kv->raw - 1)))
        return gguf_fail(p, -EINVAL, kv->file_off, "alignment %llu is not a power of two",
                         (unsigned long long)kv->raw);
    g->alignment = (uint32_t)kv->raw;
    return 0;
}

/* ---- tensor infos ---- */

static int gguf_read_tensor_info(struct gguf_parser *p)
{
    gguf_t *g = p->g;
    struct gguf_tensor_rec rec = {.info_off = p->src.pos};
    gguf_tensor_t *t = &rec.t;
    const quant_traits_t *qt;
    uint64_t len, at, rows = 1, elems, row_bytes;
    uint32_t other;
    int r;

    p->ctx = GGUF_CTX_TENSOR;
    p->item = g->n_tensors;
    p->named = false;
    r = gguf_read_str(p, true, "tensor name", &rec.name, &len);
    if (r < 0)
        return r;
    p->named = true;
    p->name = rec.name;
    at = p->src.pos;
    r = gguf_read_u32(p, &t->n_dims, "n_dims");
    if (r < 0)
        return r;
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
        return gguf_fail(p, -EINVAL, at, "n_dims %u is not in 1..%d", t->n_dims, GGUF_MAX_DIMS);
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        at = p->src.pos;
        r = gguf_read_u64(p, &t->ne[d], "ne");
        if (r < 0)
            return r;
        /* ggml keeps ne as int64_t: larger values would turn negative there. */
        if (t->ne[d] < 1 || t->ne[d] > INT64_MAX)
            return gguf_fail(p, -EINVAL, at, "ne[%u] = %llu is not in 1..2^63-1", d,
                             (unsigned long long)t->ne[d]);
        if (d > 0 && __builtin_mul_overflow(rows, t->ne[d], &rows))
            return gguf_fail(p, -EINVAL, at, "the row count overflows 64 bits");
    }
    if (__builtin_mul_overflow(rows, t->ne[0], &elems) || elems > INT64_MAX)
        return gguf_fail(p, -EINVAL, at, "the element count overflows 63 bits");
    at = p->src.pos;
    r = gguf_read_u32(p, &t->type, "tensor type");
    if (r < 0)
        return r;
    qt = quant_traits(t->type);
    if (!qt)
        return gguf_fail(p, -EINVAL, at, "unknown tensor type %u", t->type);
    if (qt->block_size == 0 || t->ne[0] % qt->block_size)
        return gguf_fail(p, -EINVAL, at, "ne[0] = %llu is not a multiple of %s's block size %u",
                         (unsigned long long)t->ne[0], qt->name, qt->block_size);
    if (quant_row_size(t->type, t->ne[0], &row_bytes) < 0 ||
        __builtin_mul_overflow(row_bytes, rows, &t->size))
        return gguf_fail(p, -EINVAL, at, "the size in bytes overflows 64 bits");
    /* Relative to the data section until gguf_place_tensors() knows where it starts. */
    r = gguf_read_u64(p, &t->offset, "tensor offset");
    if (r < 0)
        return r;
    if (gguf_grow((void **)&g->tensors, &g->tensor_cap, g->n_tensors + 1, sizeof(*g->tensors)) < 0)
        return gguf_fail(p, -ENOMEM, rec.info_off, "out of memory");
    g->tensors[g->n_tensors] = rec;
    r = gguf_index_add(g, true, (uint32_t)g->n_tensors, &other);
    if (r == -EEXIST)
        return gguf_fail(p, -EINVAL, rec.info_off, "duplicate tensor name (first at byte %llu)",
                         (unsigned long long)g->tensors[other].info_off);
    if (r < 0)
        return gguf_fail(p, r, rec.info_off, "out of memory");
    g->n_tensors++;
    return 0;
}

struct gguf_span {
    uint64_t start, end;
    size_t i;
};

static int gguf_span_cmp(const void *a, const void *b)
{
    const struct gguf_span *x = a, *y = b;

    if (x->start != y->start)
        return x->start < y->start ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

static void gguf_name_tensor(struct gguf_parser *p, size_t i)
{
    p->ctx = GGUF_CTX_TENSOR;
    p->item = i;
    p->named = true;
    p->name = p->g->tensors[i].name;
}

/* Turns relative offsets into absolute ones and checks alignment, bounds and overlap. */
static int gguf_place_tensors(struct gguf_parser *p)
{
    gguf_t *g = p->g;
    struct gguf_span *spans;
    int r = 0;

    if (!g->n_tensors)
        return 0;
    spans = calloc(g->n_tensors, sizeof(*spans));
    if (!spans)
        return gguf_fail(p, -ENOMEM, g->data_offset, "out of memory");
    for (size_t i = 0; i < g->n_tensors && r == 0; i++) {
        struct gguf_tensor_rec *rec = &g->tensors[i];
        uint64_t rel = rec->t.offset, abs, end;

        gguf_name_tensor(p, i);
        if (rel % g->alignment)
            r = gguf_fail(p, -EINVAL, rec->info_off,
                          "data offset %llu is not a multiple of the alignment %u",
                          (unsigned long long)rel, g->alignment);
        else if (__builtin_add_overflow(g->data_offset, rel, &abs) ||
                 __builtin_add_overflow(abs, rec->t.size, &end))
            r = gguf_fail(p, -EINVAL, rec->info_off,
                          "data offset %llu + size %llu overflows 64 bits", (unsigned long long)rel,
                          (unsigned long long)rec->t.size);
        else if (end > g->file_size)
            r = gguf_fail(p, -EINVAL, rec->info_off, "data [%llu, %llu) past end of file (%llu)",
                          (unsigned long long)abs, (unsigned long long)end,
                          (unsigned long long)g->file_size);
        else
            spans[i] = (struct gguf_span){abs, end, i};
    }
    if (r == 0) {
        qsort(spans, g->n_tensors, sizeof(*spans), gguf_span_cmp);
        for (size_t k = 1; k < g->n_tensors; k++) {
            const struct gguf_span *a = &spans[k - 1], *b = &spans[k];

            if (b->start < a->end) {
                char first[100];

                gguf_quote(first, sizeof(first), g->arena + g->tensors[a->i].name);
                gguf_name_tensor(p, b->i);
                r = gguf_fail(p, -EINVAL, g->tensors[b->i].info_off,
                              "data [%llu, %llu) overlaps tensor '%s' [%llu, %llu)",
                              (unsigned long long)b->start, (unsigned long long)b->end, first,
                              (unsigned long long)a->start, (unsigned long long)a->end);
                break;
            }
        }
    }
    for (size_t k = 0; k < g->n_tensors && r == 0; k++)
        g->tensors[spans[k].i].t.offset = spans[k].start;
    free(spans);
    return r;
}

/* ---- the whole header ---- */

static int gguf_parse(struct gguf_parser *p)
{
    gguf_t *g = p->g;
    uint32_t magic;
    uint64_t n_tensors, n_kv, need_kv, need_t, need, at;
    int r;

    p->ctx = GGUF_CTX_HEADER;
    r = gguf_read_u32(p, &magic, "magic");
    if (r < 0)
        return r;
    if (magic != GGUF_MAGIC_LE)
        return gguf_fail(p, -EINVAL, 0, "bad magic 0x%08x (not a GGUF file)", magic);
    r = gguf_read_u32(p, &g->version, "version");
    if (r < 0)
        return r;
    if (g->version == 1)
        return gguf_fail(p, -EINVAL, 4, "GGUF version 1 is not supported (only 2 and 3)");
    if ((g->version & 0xffff) == 0 && g->version != 0)
        return gguf_fail(p, -EINVAL, 4, "version 0x%08x: a big-endian GGUF file?", g->version);
    if (g->version != 2 && g->version != 3)
        return gguf_fail(p, -EINVAL, 4, "unsupported GGUF version %u (only 2 and 3)", g->version);
    r = gguf_read_u64(p, &n_tensors, "tensor count");
    if (r < 0)
        return r;
    r = gguf_read_u64(p, &n_kv, "kv count");
    if (r < 0)
        return r;
    /* Counts the rest of the header cannot hold are refused before any allocation. */
    if (__builtin_mul_overflow(n_kv, GGUF_MIN_KV_BYTES, &need_kv) ||
        __builtin_mul_overflow(n_tensors, GGUF_MIN_TENSOR_BYTES, &need_t) ||
        __builtin_add_overflow(need_kv, need_t, &need) || need > gguf_left(p) || n_kv > INT32_MAX ||
        n_tensors > INT32_MAX)
        return gguf_fail(p, -EINVAL, 8,
                         "%llu tensors and %llu kvs cannot fit in the %llu bytes left",
                         (unsigned long long)n_tensors, (unsigned long long)n_kv,
                         (unsigned long long)gguf_left(p));
    for (uint64_t i = 0; i < n_kv; i++) {
        r = gguf_read_kv(p);
        if (r < 0)
            return r;
    }
    r = gguf_read_alignment(p);
    if (r < 0)
        return r;
    for (uint64_t i = 0; i < n_tensors; i++) {
        r = gguf_read_tensor_info(p);
        if (r < 0)
            return r;
    }
    /* The data section starts at the header's end rounded up to the alignment. */
    at = p->src.pos;
    p->ctx = GGUF_CTX_HEADER;
    if (__builtin_add_overflow(at, (uint64_t)g->alignment - 1, &g->data_offset))
        return gguf_fail(p, -EINVAL, at, "data section offset overflows");
    g->data_offset &= ~((uint64_t)g->alignment - 1);
    return gguf_place_tensors(p);
}

/* Shrinks the arena to its size and points tensor names into it. */
static void gguf_finalize(gguf_t *g)
{
    char *a = realloc(g->arena, g->arena_len ? g->arena_len : 1);

    if (a) {
        g->arena = a;
        g->arena_cap = g->arena_len ? g->arena_len : 1;
    }
    for (size_t i = 0; i < g->n_tensors; i++)
        g->tensors[i].t.name = g->arena + g->tensors[i].name;
}

static int gguf_open_src(struct gguf_parser *p, gguf_t **ret)
{
    int r;

    if (p->err && p->errlen)
        p->err[0] = 0;
    p->g = calloc(1, sizeof(*p->g));
    if (!p->g)
        return gguf_fail(p, -ENOMEM, 0, "out of memory");
    p->g->file_size = p->file_size;
    p->capped = p->src.limit > GGUF_MAX_HEADER;
    if (p->capped)
        p->src.limit = GGUF_MAX_HEADER;
    r = gguf_parse(p);
    if (r < 0) {
        /* Every refusal has a reason, even one from a path that forgot to give one. */
        if (p->err && p->errlen && !p->err[0])
            gguf_fail(p, r, p->src.pos, "%s", strerror(-r));
        gguf_free(p->g);
        return r;
    }
    gguf_finalize(p->g);
    *ret = p->g;
    return 0;
}

int gguf_open(const char *path, gguf_t **ret, char *err, size_t errlen)
{
    struct gguf_parser p = {.err = err, .errlen = errlen};
    struct stat st;
    int fd, r;

    if (err && errlen)
        err[0] = 0;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        r = -errno;
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", path, strerror(-r));
        return r;
    }
    r = fstat(fd, &st) < 0 ? -errno : S_ISREG(st.st_mode) ? 0 : -EINVAL;
    if (r < 0) {
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", path,
                     r == -EINVAL ? "not a regular file" : strerror(-r));
        close(fd);
        return r;
    }
    p.src = (struct gguf_src){.fd = fd, .limit = (uint64_t)st.st_size};
    p.file_size = (uint64_t)st.st_size;
    p.src.buf = malloc(GGUF_READ_BUF);
    if (!p.src.buf) {
        close(fd);
        return gguf_fail(&p, -ENOMEM, 0, "out of memory");
    }
    r = gguf_open_src(&p, ret);
    free(p.src.buf);
    close(fd);
    return r;
}

int gguf_open_memory(const void *buf, size_t len, uint64_t file_size, gguf_t **ret, char *err,
                     size_t errlen)
{
    struct gguf_parser p = {.err = err, .errlen = errlen, .in_memory = true};

    if (err && errlen)
        err[0] = 0;
    if ((!buf && len) || file_size < len) {
        if (err && errlen)
            snprintf(err, errlen, "buffer of %zu bytes, file size %llu: invalid", len,
                     (unsigned long long)file_size);
        return -EINVAL;
    }
    p.src = (struct gguf_src){.fd = -1, .mem = buf, .limit = len};
    p.file_size = file_size;
    return gguf_open_src(&p, ret);
}

gguf_t *gguf_free(gguf_t *g)
{
    if (!g)
        return NULL;
    free(g->tensor_index.slots);
    free(g->kv_index.slots);
    free(g->tensors);
    free(g->strs);
    free(g->kvs);
    free(g->arena);
    free(g);
    return NULL;
}

/* ---- accessors ---- */

uint32_t gguf_version(const gguf_t *g)
{
    return g->version;
}

uint32_t gguf_alignment(const gguf_t *g)
{
    return g->alignment;
}

uint64_t gguf_data_offset(const gguf_t *g)
{
    return g->data_offset;
}

uint64_t gguf_file_size(const gguf_t *g)
{
    return g->file_size;
}

size_t gguf_n_kv(const gguf_t *g)
{
    return g->n_kv;
}

const char *gguf_kv_key(const gguf_t *g, size_t i)
{
    return i < g->n_kv ? g->arena + g->kvs[i].key : NULL;
}

enum gguf_type gguf_kv_type(const gguf_t *g, size_t i)
{
    return i < g->n_kv ? (enum gguf_type)g->kvs[i].type : GGUF_TYPE_COUNT_;
}

int gguf_find_kv(const gguf_t *g, const char *key)
{
    int64_t i = gguf_index_find(g, false, key);

    return i < 0 ? -ENOENT : (int)i;
}

int gguf_kv_value(const gguf_t *g, size_t i, const void **ret_data, uint64_t *ret_n)
{
    const struct gguf_kv *kv;

    if (i >= g->n_kv)
        return -ENOENT;
    kv = &g->kvs[i];
    if (kv->type == GGUF_TYPE_STRING) {
        *ret_data = g->arena + kv->data;
        *ret_n = kv->n;
    } else if (kv->type == GGUF_TYPE_ARRAY) {
        *ret_data = kv->arr_type == GGUF_TYPE_STRING ? NULL : g->arena + kv->data;
        *ret_n = kv->n;
    } else {
        *ret_data = &kv->raw;
        *ret_n = gguf_type_size_(kv->type);
    }
    return 0;
}

static int gguf_lookup(const gguf_t *g, const char *key, const struct gguf_kv **ret)
{
    int64_t i = gguf_index_find(g, false, key);

    if (i < 0)
        return -ENOENT;
    *ret = &g->kvs[i];
    return 0;
}

/* An integer kv as sign and magnitude: *ret_u when non-negative, else *ret_i. */
static int gguf_kv_int(const struct gguf_kv *kv, bool *ret_neg, uint64_t *ret_u, int64_t *ret_i)
{
    int64_t s;

    switch (kv->type) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_UINT64:
        *ret_neg = false;
        *ret_u = kv->raw; /* zero-extended when read */
        return 0;
    case GGUF_TYPE_INT8:
        s = (int8_t)kv->raw;
        break;
    case GGUF_TYPE_INT16:
        s = (int16_t)kv->raw;
        break;
    case GGUF_TYPE_INT32:
        s = (int32_t)kv->raw;
        break;
    case GGUF_TYPE_INT64:
        s = (int64_t)kv->raw;
        break;
    default:
        return -EINVAL;
    }
    *ret_neg = s < 0;
    if (s < 0)
        *ret_i = s;
    else
        *ret_u = (uint64_t)s;
    return 0;
}

int gguf_get_u32(const gguf_t *g, const char *key, uint32_t *ret)
{
    const struct gguf_kv *kv;
    bool neg;
    uint64_t u = 0;
    int64_t s = 0;
    int r = gguf_lookup(g, key, &kv);

    if (r == 0)
        r = gguf_kv_int(kv, &neg, &u, &s);
    if (r < 0)
        return r;
    if (neg || u > UINT32_MAX)
        return -ERANGE;
    *ret = (uint32_t)u;
    return 0;
}

int gguf_get_i32(const gguf_t *g, const char *key, int32_t *ret)
{
    const struct gguf_kv *kv;
    bool neg;
    uint64_t u = 0;
    int64_t s = 0;
    int r = gguf_lookup(g, key, &kv);

    if (r == 0)
        r = gguf_kv_int(kv, &neg, &u, &s);
    if (r < 0)
        return r;
    if (neg ? s < INT32_MIN : u > INT32_MAX)
        return -ERANGE;
    *ret = neg ? (int32_t)s : (int32_t)u;
    return 0;
}

int gguf_get_u64(const gguf_t *g, const char *key, uint64_t *ret)
{
    const struct gguf_kv *kv;
    bool neg;
    uint64_t u = 0;
    int64_t s = 0;
    int r = gguf_lookup(g, key, &kv);

    if (r == 0)
        r = gguf_kv_int(kv, &neg, &u, &s);
    if (r < 0)
        return r;
    if (neg)
        return -ERANGE;
    *ret = u;
    return 0;
}

int gguf_get_f32(const gguf_t *g, const char *key, float *ret)
{
    const struct gguf_kv *kv;
    int r = gguf_lookup(g, key, &kv);
    float f;
    double d;

    if (r < 0)
        return r;
    if (kv->type == GGUF_TYPE_FLOAT32) {
        memcpy(&f, &kv->raw, sizeof(f));
        *ret = f;
        return 0;
    }
    if (kv->type != GGUF_TYPE_FLOAT64)
        return -EINVAL;
    memcpy(&d, &kv->raw, sizeof(d));
    if (isfinite(d) && fabs(d) > FLT_MAX)
        return -ERANGE;
    *ret = (float)d;
    return 0;
}

int gguf_get_bool(const gguf_t *g, const char *key, bool *ret)
{
    const struct gguf_kv *kv;
    int r = gguf_lookup(g, key, &kv);

    if (r < 0)
        return r;
    if (kv->type != GGUF_TYPE_BOOL)
        return -EINVAL;
    *ret = kv->raw != 0;
    return 0;
}

int gguf_get_str(const gguf_t *g, const char *key, const char **ret)
{
    const struct gguf_kv *kv;
    int r = gguf_lookup(g, key, &kv);

    if (r < 0)
        return r;
    if (kv->type != GGUF_TYPE_STRING)
        return -EINVAL;
    *ret = g->arena + kv->data;
    return 0;
}

int gguf_get_arr(const gguf_t *g, const char *key, enum gguf_type *ret_type, uint64_t *ret_n,
                 const void **ret_data)
{
    const struct gguf_kv *kv;
    int r = gguf_lookup(g, key, &kv);

    if (r < 0)
        return r;
    if (kv->type != GGUF_TYPE_ARRAY)
        return -EINVAL;
    *ret_type = (enum gguf_type)kv->arr_type;
    *ret_n = kv->n;
    *ret_data = kv->arr_type == GGUF_TYPE_STRING ? NULL : g->arena + kv->data;
    return 0;
}

static int gguf_arr_str_ref(const gguf_t *g, const char *key, uint64_t i,
                            const struct gguf_str_ref **ret)
{
    const struct gguf_kv *kv;
    int r = gguf_lookup(g, key, &kv);

    if (r < 0)
        return r;
    if (kv->type != GGUF_TYPE_ARRAY || kv->arr_type != GGUF_TYPE_STRING)
        return -EINVAL;
    if (i >= kv->n)
        return -ERANGE;
    *ret = &g->strs[kv->data + i];
    return 0;
}

int gguf_get_arr_str(const gguf_t *g, const char *key, uint64_t i, const char **ret)
{
    const struct gguf_str_ref *s;
    int r = gguf_arr_str_ref(g, key, i, &s);

    if (r < 0)
        return r;
    *ret = g->arena + s->off;
    return 0;
}

int gguf_get_arr_str_len(const gguf_t *g, const char *key, uint64_t i, uint64_t *ret_len)
{
    const struct gguf_str_ref *s;
    int r = gguf_arr_str_ref(g, key, i, &s);

    if (r < 0)
        return r;
    *ret_len = s->len;
    return 0;
}

size_t gguf_n_tensors(const gguf_t *g)
{
    return g->n_tensors;
}

const gguf_tensor_t *gguf_tensor(const gguf_t *g, size_t i)
{
    return i < g->n_tensors ? &g->tensors[i].t : NULL;
}

const gguf_tensor_t *gguf_find_tensor(const gguf_t *g, const char *name)
{
    int64_t i = gguf_index_find(g, true, name);

    return i < 0 ? NULL : &g->tensors[i].t;
}
