/* GGUF reader: parses the header (metadata and tensor infos) of a GGUF v2/v3 file with
 * ordinary reads, never mapping or reading tensor data, and validates everything against
 * the file size before allocating. The spec is ggml/docs/gguf.md in the ggml repository.
 * A gguf_t is immutable after gguf_open*, so concurrent readers are fine. No logging:
 * a refusal is a negative errno plus a one-line reason (key or tensor, byte offset, what):
 * -EINVAL for a malformed file, -ENOMEM, or -EIO/-errno when reading fails. Beyond the
 * spec it refuses nested arrays (as ggml does), bool values other than 0 and 1, empty or
 * NUL-containing keys and tensor names, and overlapping tensors. Name look-ups are hashed. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum gguf_type {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT_,
};

#define GGUF_MAX_DIMS          4
#define GGUF_DEFAULT_ALIGNMENT 32

typedef struct gguf_tensor {
    const char *name;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the row length (innermost); unused dims are 1 */
    uint32_t type;              /* enum ggml_type */
    uint64_t offset;            /* absolute offset in the file (data section + rel. offset) */
    uint64_t size;              /* bytes */
} gguf_tensor_t;

typedef struct gguf gguf_t;

/* Opens and validates path. On failure returns -errno and, when err is not NULL, writes a
 * one-line reason into err (errlen bytes, always NUL-terminated). */
int gguf_open(const char *path, gguf_t **ret, char *err, size_t errlen);
/* The same on an in-memory copy of a file's first len bytes, with file_size the size the
 * whole file has (>= len; tensor data past len is fine). Used by fuzzing and tests. */
int gguf_open_memory(const void *buf, size_t len, uint64_t file_size, gguf_t **ret, char *err,
                     size_t errlen);
gguf_t *gguf_free(gguf_t *g);

uint32_t gguf_version(const gguf_t *g);
uint32_t gguf_alignment(const gguf_t *g);
uint64_t gguf_data_offset(const gguf_t *g); /* absolute offset of the data section */
uint64_t gguf_file_size(const gguf_t *g);

/* Metadata by index, 0 <= i < gguf_n_kv. */
size_t gguf_n_kv(const gguf_t *g);
const char *gguf_kv_key(const gguf_t *g, size_t i);
enum gguf_type gguf_kv_type(const gguf_t *g, size_t i);
int gguf_find_kv(const gguf_t *g, const char *key); /* index, or -ENOENT */
/* Raw value of kv i, for copying and dumping: scalars give their little-endian bytes and
 * *ret_n = their size; STRING gives the bytes (NUL-terminated) and *ret_n = length; ARRAY
 * gives the packed elements (NULL for string arrays) and *ret_n = count. -ENOENT if i is
 * out of range. Pointers live as long as g. */
int gguf_kv_value(const gguf_t *g, size_t i, const void **ret_data, uint64_t *ret_n);

/* Typed look-ups: 0, -ENOENT (missing) or -EINVAL (wrong type). Integer getters accept
 * any integer type whose value fits (-ERANGE when it does not); gguf_get_f32 accepts
 * FLOAT32 and FLOAT64. ret_* is written only on success. */
int gguf_get_u32(const gguf_t *g, const char *key, uint32_t *ret);
int gguf_get_i32(const gguf_t *g, const char *key, int32_t *ret);
int gguf_get_u64(const gguf_t *g, const char *key, uint64_t *ret);
int gguf_get_f32(const gguf_t *g, const char *key, float *ret);
int gguf_get_bool(const gguf_t *g, const char *key, bool *ret);
int gguf_get_str(const gguf_t *g, const char *key, const char **ret); /* NUL-terminated */
/* Arrays: element type and count. For numeric arrays *ret_data points at n packed
 * little-endian elements of the element type; for string arrays use gguf_get_arr_str. */
int gguf_get_arr(const gguf_t *g, const char *key, enum gguf_type *ret_type, uint64_t *ret_n,
                 const void **ret_data);
int gguf_get_arr_str(const gguf_t *g, const char *key, uint64_t i, const char **ret);
/* Length in bytes of string i of a string array (strings may contain NUL bytes). */
int gguf_get_arr_str_len(const gguf_t *g, const char *key, uint64_t i, uint64_t *ret_len);

/* Tensors. */
size_t gguf_n_tensors(const gguf_t *g);
const gguf_tensor_t *gguf_tensor(const gguf_t *g, size_t i);
const gguf_tensor_t *gguf_find_tensor(const gguf_t *g, const char *name); /* NULL if none */

const char *gguf_type_name(enum gguf_type t);
/* Bytes of one value of a fixed-size type; 0 for STRING, ARRAY and unknown types. */
size_t gguf_type_size(enum gguf_type t);

/* Limits the reader enforces (refusing the file with a reason). */
#define GGUF_MAX_NAME_LEN     (64u * 1024u)       /* keys and tensor names, bytes */
#define GGUF_MAX_HEADER_BYTES ((uint64_t)1 << 30) /* magic to end of tensor infos */

/* ---- Writer (mkmodel, tests): streams a file with bounded memory. ----
 * Usage: gguf_writer_new, add every kv and every tensor info (name, dims, type), then
 * gguf_writer_begin_data writes the header; then tensor data is written in the order the
 * infos were added, each exactly its size (gguf_writer_write may be called several times
 * per tensor); gguf_writer_finish pads and closes. Offsets follow general.alignment.
 * Details: the file is written as PATH.tmp-XXXXXX (mode 0644) and renamed to PATH by
 * gguf_writer_finish, so PATH never holds a partial file. alignment 0 means 32; any other
 * value must be a power of two, and general.alignment is written when it is not 32 (adding
 * general.alignment yourself is accepted only as a uint32 equal to it). Memory: the
 * serialized metadata and tensor infos until begin_data, then a 1 MiB output buffer.
 * Errors: -EINVAL for bad arguments or calls out of order (the writer stays usable),
 * -EEXIST for a duplicate key or tensor name, -errno from the file system (sticky: every
 * later call returns it; free the writer). A single gguf_writer_write must not run past the
 * end of the current tensor (-EINVAL): each tensor gets exactly its bytes. */
typedef struct gguf_writer gguf_writer_t;
int gguf_writer_new(const char *path, uint32_t alignment, gguf_writer_t **ret);
int gguf_writer_add_u32(gguf_writer_t *w, const char *key, uint32_t v);
int gguf_writer_add_i32(gguf_writer_t *w, const char *key, int32_t v);
int gguf_writer_add_u64(gguf_writer_t *w, const char *key, uint64_t v);
int gguf_writer_add_f32(gguf_writer_t *w, const char *key, float v);
int gguf_writer_add_bool(gguf_writer_t *w, const char *key, bool v);
int gguf_writer_add_str(gguf_writer_t *w, const char *key, const char *v);
/* Any fixed-size scalar type t (not STRING/ARRAY); v points at a value of that C type. */
int gguf_writer_add_scalar(gguf_writer_t *w, const char *key, enum gguf_type t, const void *v);
/* A string value of len bytes (may contain NUL). */
int gguf_writer_add_str_len(gguf_writer_t *w, const char *key, const char *v, uint64_t len);
/* Numeric array of n elements of type t (packed little-endian). */
int gguf_writer_add_arr(gguf_writer_t *w, const char *key, enum gguf_type t, const void *data,
                        uint64_t n);
/* String array: n strings with explicit lengths (may contain NUL). */
int gguf_writer_add_arr_str(gguf_writer_t *w, const char *key, const char *const *strs,
                            const uint64_t *lens, uint64_t n);
/* Copies kv i of g (any type, arrays included) into w under the same key. */
int gguf_writer_copy_kv(gguf_writer_t *w, const gguf_t *g, size_t i);
int gguf_writer_add_tensor(gguf_writer_t *w, const char *name, uint32_t n_dims, const uint64_t *ne,
                           uint32_t type);
int gguf_writer_begin_data(gguf_writer_t *w);
int gguf_writer_write(gguf_writer_t *w, const void *data, size_t len);
/* Absolute file offset at which tensor i's data will start (valid after begin_data). */
int gguf_writer_tensor_offset(const gguf_writer_t *w, size_t i, uint64_t *ret);
int gguf_writer_finish(gguf_writer_t *w);          /* pads, fsyncs nothing, closes; frees w */
gguf_writer_t *gguf_writer_free(gguf_writer_t *w); /* abandons (unlinks) an unfinished file */
