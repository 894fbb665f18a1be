/* Writes a seed corpus for fuzz_gguf into the folder given as argv[1]: small valid GGUF
 * files made with the project's writer (every metadata type, tensors of several types at
 * alignments 32 and 64, a vocabulary-like header, an MoE-model-like header, a v2 file), so
 * the fuzzer starts from deep inside the format instead of guessing the magic. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/gguf.h"
#include "model/quant.h"

static int seed_types(gguf_writer_t *w)
{
    uint8_t u8 = 7, bools[3] = {1, 0, 1};
    int16_t i16 = -3;
    int64_t i64 = -1;
    double f64 = 2.5;
    uint16_t au16[3] = {1, 2, 3};
    float af32[2] = {0.5f, -1.0f};
    int64_t ai64[2] = {-5, 5};
    const char *strs[3] = {"a", "", "x\0y"};
    uint64_t lens[3] = {1, 0, 3};
    int r = 0;

    r |= gguf_writer_add_scalar(w, "u8", GGUF_TYPE_UINT8, &u8);
    r |= gguf_writer_add_scalar(w, "i16", GGUF_TYPE_INT16, &i16);
    r |= gguf_writer_add_u32(w, "u32", 123456);
    r |= gguf_writer_add_i32(w, "i32", -7);
    r |= gguf_writer_add_f32(w, "f32", 1.5f);
    r |= gguf_writer_add_bool(w, "bool", true);
    r |= gguf_writer_add_str(w, "str", "hello");
    r |= gguf_writer_add_u64(w, "u64", 1ull << 40);
    r |= gguf_writer_add_scalar(w, "i64", GGUF_TYPE_INT64, &i64);
    r |= gguf_writer_add_scalar(w, "f64", GGUF_TYPE_FLOAT64, &f64);
    r |= gguf_writer_add_arr(w, "a.u16", GGUF_TYPE_UINT16, au16, 3);
    r |= gguf_writer_add_arr(w, "a.f32", GGUF_TYPE_FLOAT32, af32, 2);
    r |= gguf_writer_add_arr(w, "a.i64", GGUF_TYPE_INT64, ai64, 2);
    r |= gguf_writer_add_arr(w, "a.bool", GGUF_TYPE_BOOL, bools, 3);
    r |= gguf_writer_add_arr_str(w, "a.str", strs, lens, 3);
    return r ? -EINVAL : 0;
}

static int add_tensors(gguf_writer_t *w, const char *const *names, const uint32_t *n_dims,
                       const uint64_t (*ne)[4], const uint32_t *types, size_t n)
{
    static uint8_t zeros[4096];
    uint64_t sizes[16];
    int r;

    for (size_t i = 0; i < n; i++) {
        uint64_t rows = 1, row;

        for (uint32_t d = 1; d < n_dims[i]; d++)
            rows *= ne[i][d];
        r = quant_row_size(types[i], ne[i][0], &row);
        if (r < 0)
            return r;
        sizes[i] = row * rows;
        if (sizes[i] > sizeof(zeros))
            return -EINVAL;
        r = gguf_writer_add_tensor(w, names[i], n_dims[i], ne[i], types[i]);
        if (r < 0)
            return r;
    }
    r = gguf_writer_begin_data(w);
    for (size_t i = 0; i < n && r == 0; i++)
        r = gguf_writer_write(w, zeros, (size_t)sizes[i]);
    return r;
}

static int seed_tensors(gguf_writer_t *w)
{
    static const char *const names[] = {"token_embd.weight", "blk.0.attn_norm.weight",
                                        "blk.0.ffn_up_exps.weight", "output.weight", "four"};
    static const uint32_t n_dims[] = {2, 1, 3, 2, 4};
    static const uint64_t ne[][4] = {{8, 4}, {8}, {32, 2, 2}, {256, 1}, {2, 1, 2, 1}};
    static const uint32_t types[] = {GGML_TYPE_F16, GGML_TYPE_F32, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K,
                                     GGML_TYPE_BF16};
    int r = gguf_writer_add_str(w, "general.architecture", "test");

    return r < 0 ? r : add_tensors(w, names, n_dims, ne, types, 5);
}

static int seed_vocab(gguf_writer_t *w)
{
    const char *toks[24];
    uint64_t lens[24];
    float scores[24];
    int32_t types[24];
    char buf[24][8];
    const char *merges[3] = {"a b", "ab c", "\xc4\xa0 t"};
    uint64_t mlens[3] = {3, 4, 4};
    int r = 0;

    for (int i = 0; i < 24; i++) {
        snprintf(buf[i], sizeof(buf[i]), i < 3 ? "<%d>" : "t%d", i);
        toks[i] = buf[i];
        lens[i] = strlen(buf[i]);
        scores[i] = -(float)i;
        types[i] = i < 3 ? 3 : 1;
    }
    r |= gguf_writer_add_str(w, "general.architecture", "llama");
    r |= gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2");
    r |= gguf_writer_add_str(w, "tokenizer.ggml.pre", "qwen2");
    r |= gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, lens, 24);
    r |= gguf_writer_add_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores, 24);
    r |= gguf_writer_add_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, 24);
    r |= gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", merges, mlens, 3);
    r |= gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 1);
    r |= gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", false);
    r |= gguf_writer_add_str(w, "tokenizer.chat_template", "{{ messages }}");
    return r ? -EINVAL : 0;
}

static int seed_moe(gguf_writer_t *w)
{
    static const char *const names[] = {"blk.0.ffn_gate_inp.weight", "blk.0.ffn_gate_exps.weight",
                                        "blk.0.ffn_up_exps.weight", "blk.0.ffn_down_exps.weight"};
    static const uint32_t n_dims[] = {2, 3, 3, 3};
    static const uint64_t ne[][4] = {{32, 4}, {32, 8, 4}, {32, 8, 4}, {32, 8, 4}};
    static const uint32_t types[] = {GGML_TYPE_F32, GGML_TYPE_Q4_0, GGML_TYPE_Q4_0, GGML_TYPE_Q8_0};
    int r = 0;

    r |= gguf_writer_add_str(w, "general.architecture", "qwen3moe");
    r |= gguf_writer_add_u32(w, "qwen3moe.block_count", 1);
    r |= gguf_writer_add_u32(w, "qwen3moe.embedding_length", 32);
    r |= gguf_writer_add_u32(w, "qwen3moe.expert_count", 4);
    r |= gguf_writer_add_u32(w, "qwen3moe.expert_used_count", 2);
    r |= gguf_writer_add_f32(w, "qwen3moe.rope.freq_base", 1e6f);
    r |= gguf_writer_add_u32(w, "general.file_type", 2);
    if (r)
        return -EINVAL;
    return add_tensors(w, names, n_dims, ne, types, 4);
}

static int write_seed(const char *dir, const char *name, uint32_t alignment,
                      int (*fill)(gguf_writer_t *))
{
    char path[4096];
    gguf_writer_t *w = NULL;
    int r;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    r = gguf_writer_new(path, alignment, &w);
    if (r < 0)
        return r;
    r = fill(w);
    if (r < 0) {
        fprintf(stderr, "seed %s: %s\n", name, strerror(-r));
        gguf_writer_free(w);
        return r;
    }
    return gguf_writer_finish(w);
}

static int empty(gguf_writer_t *w)
{
    (void)w;
    return 0;
}

/* The same bytes as v3 with the version field set to 2 (the layouts are the same). */
static int write_v2(const char *dir, const char *from, const char *name)
{
    char src[4096], dst[4096], buf[8192];
    ssize_t n;
    int fd, r = 0;

    snprintf(src, sizeof(src), "%s/%s", dir, from);
    snprintf(dst, sizeof(dst), "%s/%s", dir, name);
    fd = open(src, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    n = read(fd, buf, sizeof(buf));
    close(fd);
    if (n < 8)
        return -EIO;
    buf[4] = 2;
    fd = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    if (write(fd, buf, (size_t)n) != n)
        r = -EIO;
    close(fd);
    return r;
}

int main(int argc, char **argv)
{
    const char *dir;
    int r = 0;

    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    dir = argv[1];
    r = r ? r : write_seed(dir, "empty.gguf", 0, empty);
    r = r ? r : write_seed(dir, "types.gguf", 0, seed_types);
    r = r ? r : write_seed(dir, "tensors32.gguf", 32, seed_tensors);
    r = r ? r : write_seed(dir, "tensors64.gguf", 64, seed_tensors);
    r = r ? r : write_seed(dir, "vocab.gguf", 0, seed_vocab);
    r = r ? r : write_seed(dir, "moe.gguf", 32, seed_moe);
    r = r ? r : write_v2(dir, "tensors32.gguf", "tensors32-v2.gguf");
    if (r < 0) {
        fprintf(stderr, "%s: writing seeds into %s: %s\n", argv[0], dir, strerror(-r));
        return 1;
    }
    return 0;
}
