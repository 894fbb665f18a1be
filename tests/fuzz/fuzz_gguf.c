/* libFuzzer harness for the GGUF reader: every input is parsed from memory (no temp files)
 * twice, once as a whole file and once as the header of a file 1 MiB longer (tensor data
 * past the buffer), and whatever is accepted is walked through every accessor while its
 * invariants are checked: a refusal must carry a reason, an accepted tensor lies inside
 * the file, aligned, findable by name; every key finds itself. A broken invariant traps. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "model/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            __builtin_trap();                                                                      \
    } while (0)

static void walk_kv(const gguf_t *g, size_t i)
{
    const char *key = gguf_kv_key(g, i), *s;
    enum gguf_type t = gguf_kv_type(g, i), et;
    const void *v;
    uint64_t n, len, u64;
    uint32_t u32;
    int32_t i32;
    float f;
    bool b;
    volatile uint8_t sink = 0;

    CHECK(key && key[0]);
    CHECK(gguf_find_kv(g, key) == (int)i);
    CHECK(gguf_kv_value(g, i, &v, &n) == 0);
    /* Getters must answer without crashing whatever the type. */
    (void)gguf_get_u32(g, key, &u32);
    (void)gguf_get_i32(g, key, &i32);
    (void)gguf_get_u64(g, key, &u64);
    (void)gguf_get_f32(g, key, &f);
    (void)gguf_get_bool(g, key, &b);
    if (t == GGUF_TYPE_STRING) {
        CHECK(gguf_get_str(g, key, &s) == 0 && s == v);
        CHECK(((const char *)v)[n] == 0);
    } else if (t == GGUF_TYPE_ARRAY) {
        CHECK(gguf_get_arr(g, key, &et, &len, &v) == 0 && len == n);
        if (et == GGUF_TYPE_STRING) {
            for (uint64_t k = 0; k < n; k++) {
                CHECK(gguf_get_arr_str(g, key, k, &s) == 0);
                CHECK(gguf_get_arr_str_len(g, key, k, &len) == 0);
                CHECK(s[len] == 0);
                if (len)
                    sink ^= (uint8_t)s[len - 1];
            }
            CHECK(gguf_get_arr_str(g, key, n, &s) == -ERANGE);
        } else {
            size_t es = gguf_type_size(et);

            CHECK(es > 0);
            /* Touch the last byte: ASan reports it if the array is shorter than claimed. */
            if (n)
                sink ^= ((const uint8_t *)v)[n * es - 1];
        }
    } else {
        CHECK(n == gguf_type_size(t) && n > 0);
    }
    (void)sink;
}

static void walk(const gguf_t *g, uint64_t file_size)
{
    uint32_t a = gguf_alignment(g);

    CHECK(a && !(a & (a - 1)));
    CHECK(gguf_data_offset(g) % a == 0);
    CHECK(gguf_version(g) == 2 || gguf_version(g) == 3);
    CHECK(gguf_file_size(g) == file_size);
    for (size_t i = 0; i < gguf_n_kv(g); i++)
        walk_kv(g, i);
    for (size_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor_t *t = gguf_tensor(g, i);

        CHECK(t && t->name[0]);
        CHECK(gguf_find_tensor(g, t->name) == t);
        CHECK(t->n_dims >= 1 && t->n_dims <= GGUF_MAX_DIMS);
        CHECK(t->size > 0 && t->offset >= gguf_data_offset(g));
        CHECK(t->offset % a == 0);
        CHECK(t->offset + t->size <= file_size && t->offset + t->size > t->offset);
        for (int d = 0; d < GGUF_MAX_DIMS; d++)
            CHECK(t->ne[d] >= 1);
    }
    CHECK(gguf_tensor(g, gguf_n_tensors(g)) == NULL);
}

static void one(const uint8_t *data, size_t size, uint64_t file_size)
{
    char err[256];
    gguf_t *g = NULL;
    int r;

    err[0] = 0;
    r = gguf_open_memory(data, size, file_size, &g, err, sizeof(err));
    if (r < 0) {
        CHECK(g == NULL && err[0] && memchr(err, 0, sizeof(err)));
        return;
    }
    walk(g, file_size);
    gguf_free(g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    one(data, size, size);
    one(data, size, (uint64_t)size + (1u << 20));
    return 0;
}
