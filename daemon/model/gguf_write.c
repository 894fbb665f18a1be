/* GGUF writer: streams a GGUF v3 file (layout of ggml/docs/gguf.md) with bounded memory, so
 * mkmodel can write models of tens of GiB. The metadata and tensor infos are serialized into
 * memory as they are added (they are small: a vocabulary is a few MiB); begin_data writes
 * them, and tensor data then passes through a 1 MiB buffer straight to the file, with zero
 * padding to the alignment after each tensor. The file is written under a temporary name
 * next to PATH and renamed on finish, so PATH never holds a partial file; abandoning (free
 * without finish, or any failure in finish) unlinks it.
 *
 * State machine: META (add kvs and tensor infos) --gguf_writer_begin_data--> DATA (write
 * tensor bytes in info order; cur is the tensor being written, cur_done its bytes so far)
 * --gguf_writer_finish--> gone. An I/O error is sticky (w->error): every later call
 * returns it. Invariant in DATA: pos == data_start + offset of tensor cur + cur_done. */
#include "model/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/gguf-private.h"
#include "model/quant.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "gguf_write.c assumes little-endian");

#define GGUF_W_OUTBUF (1u << 20)

struct gguf_w_name {
    size_t off; /* in kv_buf (keys) or ti_buf (tensor names), after the u64 length */
    size_t len;
};

struct gguf_w_tensor {
    uint64_t rel;  /* offset relative to the data section */
    uint64_t size; /* bytes */
};

enum gguf_w_state { GGUF_W_META, GGUF_W_DATA };

struct gguf_writer {
    int fd;
    char *path;     /* final name */
    char *tmp_path; /* what is being written */
    uint32_t alignment;
    bool has_alignment_kv; /* the caller added general.alignment */
    int error;             /* sticky I/O error, or 0 */
    enum gguf_w_state state;

    /* META: serialized kvs and tensor infos, and their names for duplicate checks. */
    uint8_t *kv_buf, *ti_buf;
    size_t kv_len, kv_cap, ti_len, ti_cap;
    struct gguf_w_name *keys, *names;
    size_t n_kv, keys_cap, names_cap;

    struct gguf_w_tensor *tensors; /* [n_tensors] */
    size_t n_tensors, tensors_cap;
    uint64_t next_rel; /* end of the last tensor's data, relative */

    /* DATA */
    uint64_t data_start; /* absolute */
    uint64_t pos;        /* bytes passed to the file, buffered ones included */
    size_t cur;
    uint64_t cur_done;
    uint8_t *out; /* [GGUF_W_OUTBUF] */
    size_t out_len;
};


/* Appends n bytes to a serialization buffer. */
static int gguf_w_put(uint8_t **buf, size_t *len, size_t *cap, const void *src, size_t n)
{
    size_t need;

    if (__builtin_add_overflow(*len, n, &need) || gguf_grow((void **)buf, cap, need, 1) < 0)
        return -ENOMEM;
    if (n)
        memcpy(*buf + *len, src, n);
    *len = need;
    return 0;
}

static int gguf_w_put_u32(uint8_t **buf, size_t *len, size_t *cap, uint32_t v)
{
    return gguf_w_put(buf, len, cap, &v, sizeof(v));
}

static int gguf_w_put_u64(uint8_t **buf, size_t *len, size_t *cap, uint64_t v)
{
    return gguf_w_put(buf, len, cap, &v, sizeof(v));
}

static int gguf_w_put_str(uint8_t **buf, size_t *len, size_t *cap, const char *s, uint64_t n)
{
    int r = gguf_w_put_u64(buf, len, cap, n);

    if (r == 0 && n > SIZE_MAX)
        r = -ENOMEM;
    return r < 0 ? r : gguf_w_put(buf, len, cap, s, (size_t)n);
}

/* ---- file output ---- */

static int gguf_w_write_all(gguf_writer_t *w, const void *data, size_t len)
{
    const uint8_t *p = data;

    while (len > 0) {
        ssize_t k = write(w->fd, p, len > (1u << 30) ? (1u << 30) : len);

        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return w->error = -errno;
        if (k == 0)
            return w->error = -EIO;
        p += k;
        len -= (size_t)k;
    }
    return 0;
}

static int gguf_w_flush(gguf_writer_t *w)
{
    int r = gguf_w_write_all(w, w->out, w->out_len);

    if (r == 0)
        w->out_len = 0;
    return r;
}

/* Emits bytes through the output buffer; big writes bypass it. */
static int gguf_w_emit(gguf_writer_t *w, const void *data, size_t len)
{
    int r;

    if (len == 0)
        return 0; /* data may be NULL then (an empty kv section) */
    if (w->out_len + len > GGUF_W_OUTBUF) {
        r = gguf_w_flush(w);
        if (r < 0)
            return r;
    }
    if (len >= GGUF_W_OUTBUF) {
        r = gguf_w_write_all(w, data, len);
    } else {
        memcpy(w->out + w->out_len, data, len);
        w->out_len += len;
        r = 0;
    }
    if (r == 0)
        w->pos += len;
    return r;
}

static int gguf_w_pad(gguf_writer_t *w)
{
    static const uint8_t zeros[4096];
    uint64_t pad = (w->alignment - w->pos % w->alignment) % w->alignment;
    int r = 0;

    while (pad > 0 && r == 0) {
        size_t n = pad > sizeof(zeros) ? sizeof(zeros) : (size_t)pad;

        r = gguf_w_emit(w, zeros, n);
        pad -= n;
    }
    return r;
}

/* ---- construction ---- */

int gguf_writer_new(const char *path, uint32_t alignment, gguf_writer_t **ret)
{
    gguf_writer_t *w;
    size_t n;
    int r;

    if (!path || !*path)
        return -EINVAL;
    if (alignment == 0)
        alignment = GGUF_DEFAULT_ALIGNMENT;
    if (alignment & (alignment - 1))
        return -EINVAL;
    w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->fd = -1;
    w->alignment = alignment;
    n = strlen(path);
    w->path = strdup(path);
    w->tmp_path = malloc(n + sizeof(".tmp-XXXXXX"));
    w->out = malloc(GGUF_W_OUTBUF);
    if (!w->path || !w->tmp_path || !w->out) {
        r = -ENOMEM;
        goto fail;
    }
    memcpy(w->tmp_path, path, n);
    memcpy(w->tmp_path + n, ".tmp-XXXXXX", sizeof(".tmp-XXXXXX"));
    w->fd = mkostemp(w->tmp_path, O_CLOEXEC);
    if (w->fd < 0) {
        r = -errno;
        free(w->tmp_path); /* nothing to unlink */
        w->tmp_path = NULL;
        goto fail;
    }
    /* mkostemp creates 0600; a model is meant to be read by the daemon's user too. */
    if (fchmod(w->fd, 0644) < 0) {
        r = -errno;
        goto fail;
    }
    *ret = w;
    return 0;
fail:
    gguf_writer_free(w);
    return r;
}

gguf_writer_t *gguf_writer_free(gguf_writer_t *w)
{
    if (!w)
        return NULL;
    if (w->fd >= 0)
        close(w->fd);
    if (w->tmp_path)
        unlink(w->tmp_path);
    free(w->out);
    free(w->tensors);
    free(w->names);
    free(w->keys);
    free(w->ti_buf);
    free(w->kv_buf);
    free(w->tmp_path);
    free(w->path);
    free(w);
    return NULL;
}

/* ---- metadata ---- */

/* Checks that w takes metadata and that key is a new, valid key. */
static int gguf_w_check_key(gguf_writer_t *w, const char *key, size_t len)
{
    if (w->error)
        return w->error;
    if (w->state != GGUF_W_META || !key || len == 0 || len > GGUF_MAX_NAME_LEN)
        return -EINVAL;
    /* Linear: a model has a few hundred keys at most. */
    for (size_t i = 0; i < w->n_kv; i++)
        if (w->keys[i].len == len && memcmp(w->kv_buf + w->keys[i].off, key, len) == 0)
            return -EEXIST;
    return 0;
}

/* Starts a kv: key and type. On failure the buffer is rolled back by the caller. */
static int gguf_w_begin_kv(gguf_writer_t *w, const char *key, uint32_t type, size_t *ret_mark)
{
    size_t len = key ? strlen(key) : 0, mark = w->kv_len;
    int r = gguf_w_check_key(w, key, len);

    if (r < 0)
        return r;
    if (gguf_grow((void **)&w->keys, &w->keys_cap, w->n_kv + 1, sizeof(*w->keys)) < 0)
        return -ENOMEM;
    r = gguf_w_put_str(&w->kv_buf, &w->kv_len, &w->kv_cap, key, len);
    if (r == 0)
        r = gguf_w_put_u32(&w->kv_buf, &w->kv_len, &w->kv_cap, type);
    if (r < 0) {
        w->kv_len = mark;
        return r;
    }
    w->keys[w->n_kv] = (struct gguf_w_name){mark + 8, len};
    *ret_mark = mark;
    return 0;
}

static int gguf_w_end_kv(gguf_writer_t *w, size_t mark, int r)
{
    if (r < 0) {
        w->kv_len = mark;
        return r;
    }
    w->n_kv++;
    return 0;
}

/* general.alignment belongs to the writer: a caller may add it only as a uint32 equal to the
 * writer's alignment (then it is written as given and begin_data adds none). */
static int gguf_w_check_alignment_key(gguf_writer_t *w, const char *key, enum gguf_type t,
                                      const void *v)
{
    uint32_t a;

    if (!key || strcmp(key, "general.alignment") != 0)
        return 0;
    if (t != GGUF_TYPE_UINT32)
        return -EINVAL;
    memcpy(&a, v, sizeof(a));
    return a == w->alignment ? 1 : -EINVAL;
}

int gguf_writer_add_scalar(gguf_writer_t *w, const char *key, enum gguf_type t, const void *v)
{
    size_t size = gguf_type_size(t), mark;
    int is_alignment, r;

    if (!w || !v || size == 0)
        return -EINVAL;
    if (t == GGUF_TYPE_BOOL && *(const uint8_t *)v > 1)
        return -EINVAL;
    is_alignment = gguf_w_check_alignment_key(w, key, t, v);
    if (is_alignment < 0)
        return is_alignment;
    r = gguf_w_begin_kv(w, key, (uint32_t)t, &mark);
    if (r < 0)
        return r;
    r = gguf_w_end_kv(w, mark, gguf_w_put(&w->kv_buf, &w->kv_len, &w->kv_cap, v, size));
    if (r == 0 && is_alignment)
        w->has_alignment_kv = true;
    return r;
}

int gguf_writer_add_u32(gguf_writer_t *w, const char *key, uint32_t v)
{
    return gguf_writer_add_scalar(w, key, GGUF_TYPE_UINT32, &v);
}

int gguf_writer_add_i32(gguf_writer_t *w, const char *key, int32_t v)
{
    return gguf_writer_add_scalar(w, key, GGUF_TYPE_INT32, &v);
}

int gguf_writer_add_u64(gguf_writer_t *w, const char *key, uint64_t v)
{
    return gguf_writer_add_scalar(w, key, GGUF_TYPE_UINT64, &v);
}

int gguf_writer_add_f32(gguf_writer_t *w, const char *key, float v)
{
    return gguf_writer_add_scalar(w, key, GGUF_TYPE_FLOAT32, &v);
}

int gguf_writer_add_bool(gguf_writer_t *w, const char *key, bool v)
{
    uint8_t b = v;

    return gguf_writer_add_scalar(w, key, GGUF_TYPE_BOOL, &b);
}

int gguf_writer_add_str_len(gguf_writer_t *w, const char *key, const char *v, uint64_t len)
{
    size_t mark;
    int r;

    if (!w || (!v && len))
        return -EINVAL;
    if (key && strcmp(key, "general.alignment") == 0)
        return -EINVAL;
    r = gguf_w_begin_kv(w, key, GGUF_TYPE_STRING, &mark);
    if (r < 0)
        return r;
    return gguf_w_end_kv(w, mark, gguf_w_put_str(&w->kv_buf, &w->kv_len, &w->kv_cap, v, len));
}

int gguf_writer_add_str(gguf_writer_t *w, const char *key, const char *v)
{
    if (!v)
        return -EINVAL;
    return gguf_writer_add_str_len(w, key, v, strlen(v));
}

int gguf_writer_add_arr(gguf_writer_t *w, const char *key, enum gguf_type t, const void *data,
                        uint64_t n)
{
    size_t size = gguf_type_size(t), mark;
    uint64_t bytes;
    int r;

    if (!w || size == 0 || (!data && n) || __builtin_mul_overflow(n, size, &bytes) ||
        bytes > SIZE_MAX)
        return -EINVAL;
    if (key && strcmp(key, "general.alignment") == 0)
        return -EINVAL;
    if (t == GGUF_TYPE_BOOL)
        for (uint64_t i = 0; i < n; i++)
            if (((const uint8_t *)data)[i] > 1)
                return -EINVAL;
    r = gguf_w_begin_kv(w, key, GGUF_TYPE_ARRAY, &mark);
    if (r < 0)
        return r;
    r = gguf_w_put_u32(&w->kv_buf, &w->kv_len, &w->kv_cap, (uint32_t)t);
    if (r == 0)
        r = gguf_w_put_u64(&w->kv_buf, &w->kv_len, &w->kv_cap, n);
    if (r == 0)
        r = gguf_w_put(&w->kv_buf, &w->kv_len, &w->kv_cap, data, (size_t)bytes);
    return gguf_w_end_kv(w, mark, r);
}

int gguf_writer_add_arr_str(gguf_writer_t *w, const char *key, const char *const *strs,
                            const uint64_t *lens, uint64_t n)
{
    size_t mark;
    int r;

    if (!w || (n && (!strs || !lens)))
        return -EINVAL;
    if (key && strcmp(key, "general.alignment") == 0)
        return -EINVAL;
    for (uint64_t i = 0; i < n; i++)
        if (!strs[i] && lens[i])
            return -EINVAL;
    r = gguf_w_begin_kv(w, key, GGUF_TYPE_ARRAY, &mark);
    if (r < 0)
        return r;
    r = gguf_w_put_u32(&w->kv_buf, &w->kv_len, &w->kv_cap, GGUF_TYPE_STRING);
    if (r == 0)
        r = gguf_w_put_u64(&w->kv_buf, &w->kv_len, &w->kv_cap, n);
    for (uint64_t i = 0; i < n && r == 0; i++)
        r = gguf_w_put_str(&w->kv_buf, &w->kv_len, &w->kv_cap, strs[i], lens[i]);
    return gguf_w_end_kv(w, mark, r);
}

int gguf_writer_copy_kv(gguf_writer_t *w, const gguf_t *g, size_t i)
{
    const char *key = gguf_kv_key(g, i);
    enum gguf_type t = gguf_kv_type(g, i), et;
    const void *data;
    uint64_t n;
    const char **strs = NULL;
    uint64_t *lens = NULL;
    int r;

    if (!w || gguf_kv_value(g, i, &data, &n) < 0)
        return -EINVAL;
    if (t == GGUF_TYPE_STRING)
        return gguf_writer_add_str_len(w, key, data, n);
    if (t != GGUF_TYPE_ARRAY)
        return gguf_writer_add_scalar(w, key, t, data);
    r = gguf_get_arr(g, key, &et, &n, &data);
    if (r < 0)
        return r;
    if (et != GGUF_TYPE_STRING)
        return gguf_writer_add_arr(w, key, et, data, n);
    /* A string array is gathered as pointers and lengths; g keeps the bytes. */
    if (n > SIZE_MAX / sizeof(*lens))
        return -ENOMEM;
    strs = malloc((size_t)(n ? n : 1) * sizeof(*strs));
    lens = malloc((size_t)(n ? n : 1) * sizeof(*lens));
    r = strs && lens ? 0 : -ENOMEM;
    for (uint64_t k = 0; k < n && r == 0; k++) {
        r = gguf_get_arr_str(g, key, k, &strs[k]);
        if (r == 0)
            r = gguf_get_arr_str_len(g, key, k, &lens[k]);
    }
    if (r == 0)
        r = gguf_writer_add_arr_str(w, key, strs, lens, n);
    free(lens);
    free(strs);
    return r;
}

/* ---- tensor infos ---- */

int gguf_writer_add_tensor(gguf_writer_t *w, const char *name, uint32_t n_dims, const uint64_t *ne,
                           uint32_t type)
{
    const quant_traits_t *qt = quant_traits(type);
    size_t len = name ? strlen(name) : 0, mark;
    uint64_t rows = 1, row_bytes, size, rel, end;
    int r;

    if (!w)
        return -EINVAL;
    if (w->error)
        return w->error;
    if (w->state != GGUF_W_META || len == 0 || len > GGUF_MAX_NAME_LEN || n_dims < 1 ||
        n_dims > GGUF_MAX_DIMS || !ne || !qt || qt->block_size == 0)
        return -EINVAL;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] < 1 || ne[d] > INT64_MAX)
            return -EINVAL;
        if (d > 0 && __builtin_mul_overflow(rows, ne[d], &rows))
            return -EOVERFLOW;
    }
    if (ne[0] % qt->block_size)
        return -EINVAL;
    r = quant_row_size(type, ne[0], &row_bytes);
    if (r < 0)
        return r;
    rel = (w->next_rel + w->alignment - 1) & ~(uint64_t)(w->alignment - 1);
    if (rel < w->next_rel || __builtin_mul_overflow(row_bytes, rows, &size) ||
        __builtin_add_overflow(rel, size, &end))
        return -EOVERFLOW;
    for (size_t i = 0; i < w->n_tensors; i++)
        if (w->names[i].len == len && memcmp(w->ti_buf + w->names[i].off, name, len) == 0)
            return -EEXIST;
    if (gguf_grow((void **)&w->names, &w->names_cap, w->n_tensors + 1, sizeof(*w->names)) < 0 ||
        gguf_grow((void **)&w->tensors, &w->tensors_cap, w->n_tensors + 1, sizeof(*w->tensors)) <
            0)
        return -ENOMEM;
    mark = w->ti_len;
    r = gguf_w_put_str(&w->ti_buf, &w->ti_len, &w->ti_cap, name, len);
    if (r == 0)
        r = gguf_w_put_u32(&w->ti_buf, &w->ti_len, &w->ti_cap, n_dims);
    for (uint32_t d = 0; d < n_dims && r == 0; d++)
        r = gguf_w_put_u64(&w->ti_buf, &w->ti_len, &w->ti_cap, ne[d]);
    if (r == 0)
        r = gguf_w_put_u32(&w->ti_buf, &w->ti_len, &w->ti_cap, type);
    if (r == 0)
        r = gguf_w_put_u64(&w->ti_buf, &w->ti_len, &w->ti_cap, rel);
    if (r < 0) {
        w->ti_len = mark;
        return r;
    }
    w->names[w->n_tensors] = (struct gguf_w_name){mark + 8, len};
    w->tensors[w->n_tensors] = (struct gguf_w_tensor){rel, size};
    w->n_tensors++;
    w->next_rel = end;
    return 0;
}

/* ---- data ---- */

int gguf_writer_begin_data(gguf_writer_t *w)
{
    uint8_t head[24];
    uint32_t version = 3;
    uint64_t n_tensors, n_kv;
    int r;

    if (!w)
        return -EINVAL;
    if (w->error)
        return w->error;
    if (w->state != GGUF_W_META)
        return -EINVAL;
    if (!w->has_alignment_kv && w->alignment != GGUF_DEFAULT_ALIGNMENT) {
        r = gguf_writer_add_u32(w, "general.alignment", w->alignment);
        if (r < 0)
            return r;
    }
    n_tensors = w->n_tensors;
    n_kv = w->n_kv;
    memcpy(head, "GGUF", 4);
    memcpy(head + 4, &version, 4);
    memcpy(head + 8, &n_tensors, 8);
    memcpy(head + 16, &n_kv, 8);
    r = gguf_w_emit(w, head, sizeof(head));
    if (r == 0)
        r = gguf_w_emit(w, w->kv_buf, w->kv_len);
    if (r == 0)
        r = gguf_w_emit(w, w->ti_buf, w->ti_len);
    if (r == 0)
        r = gguf_w_pad(w);
    if (r < 0)
        return r;
    w->data_start = w->pos;
    w->state = GGUF_W_DATA;
    /* The header is out: only sizes and offsets are needed from here on. */
    free(w->kv_buf);
    free(w->ti_buf);
    free(w->keys);
    free(w->names);
    w->kv_buf = w->ti_buf = NULL;
    w->keys = w->names = NULL;
    w->kv_len = w->kv_cap = w->ti_len = w->ti_cap = w->keys_cap = w->names_cap = 0;
    return 0;
}

int gguf_writer_tensor_offset(const gguf_writer_t *w, size_t i, uint64_t *ret)
{
    if (!w || w->state != GGUF_W_DATA || i >= w->n_tensors)
        return -EINVAL;
    *ret = w->data_start + w->tensors[i].rel;
    return 0;
}

int gguf_writer_write(gguf_writer_t *w, const void *data, size_t len)
{
    int r;

    if (!w)
        return -EINVAL;
    if (w->error)
        return w->error;
    if (w->state != GGUF_W_DATA || w->cur >= w->n_tensors || (!data && len) ||
        len > w->tensors[w->cur].size - w->cur_done)
        return -EINVAL;
    r = gguf_w_emit(w, data, len);
    if (r < 0)
        return r;
    w->cur_done += len;
    if (w->cur_done == w->tensors[w->cur].size) {
        /* Pad after every tensor, the last included, as ggml's writer does. */
        r = gguf_w_pad(w);
        if (r < 0)
            return r;
        w->cur++;
        w->cur_done = 0;
    }
    return 0;
}

int gguf_writer_finish(gguf_writer_t *w)
{
    int r = 0;

    if (!w)
        return -EINVAL;
    if (w->state == GGUF_W_META)
        r = gguf_writer_begin_data(w);
    if (r == 0 && w->error)
        r = w->error;
    if (r == 0 && w->cur != w->n_tensors)
        r = -EINVAL; /* some tensor did not get all its bytes */
    if (r == 0)
        r = gguf_w_flush(w);
    if (r == 0) {
        r = close(w->fd) < 0 ? -errno : 0;
        w->fd = -1;
    }
    if (r == 0 && rename(w->tmp_path, w->path) < 0)
        r = -errno;
    if (r == 0) {
        free(w->tmp_path); /* renamed: nothing left to unlink */
        w->tmp_path = NULL;
    }
    gguf_writer_free(w);
    return r;
}
