/* libFuzzer harness for the tokenizers: arbitrary bytes (valid UTF-8 or not) through
 * tokenizer_encode, with and without TOKENIZER_PARSE_SPECIAL, then back through the
 * detokenizer, both whole (tokenizer_decode_alloc) and one id at a time (detok_push) as a
 * stream does. The vocabularies are llama.cpp's test files, loaded once:
 * $MOE_SHARED_DATA/vocab/ggml-vocab-gpt-2.gguf (byte-level BPE) and, when present,
 * ggml-vocab-phi-3.gguf (SentencePiece). Invariants (a broken one traps):
 *   - encode never fails on any input; the count it returns is what encode_alloc gives,
 *     and every id is inside the vocabulary;
 *   - detokenized text is always valid UTF-8 (strictly: no overlong forms, no surrogates,
 *     nothing past U+10FFFF), and the streamed pieces add up to the whole decode;
 *   - gpt-2: valid UTF-8 input comes back byte for byte (without PARSE_SPECIAL: any input;
 *     with it, when special tokens are rendered back with DETOK_SPECIAL).
 * The first byte chooses vocabulary and flags; the rest is the text. */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf.h"
#include "text/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            __builtin_trap();                                                                      \
    } while (0)

static tokenizer_t *vocab[2]; /* gpt-2, phi-3 (NULL when its file is missing) */

static tokenizer_t *load(const char *name)
{
    const char *dir = getenv("MOE_SHARED_DATA");
    char path[4096], err[256] = "";
    gguf_t *g = NULL;
    tokenizer_t *t = NULL;
    /* the environment, else the checkout's sibling seen from the source or build root */
    const char *dirs[] = {dir, "../shared/data", "../../shared/data"};

    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]) && !g; i++) {
        if (!dirs[i])
            continue;
        snprintf(path, sizeof(path), "%s/vocab/ggml-vocab-%s.gguf", dirs[i], name);
        if (gguf_open(path, &g, err, sizeof(err)) < 0)
            g = NULL;
    }
    if (!g)
        return NULL;
    if (tokenizer_new(g, &t, err, sizeof(err)) < 0) {
        fprintf(stderr, "fuzz_tokenizer: %s: %s\n", name, err);
        t = NULL;
    }
    gguf_free(g);
    return t;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    vocab[0] = load("gpt-2");
    vocab[1] = load("phi-3");
    if (!vocab[0]) {
        fprintf(stderr, "fuzz_tokenizer: ggml-vocab-gpt-2.gguf not found: set MOE_SHARED_DATA "
                        "to the shared data folder\n");
        exit(1);
    }
    return 0;
}

/* Length of the strictly valid UTF-8 sequence at s (1..4), or 0. */
static size_t utf8_seq(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    size_t len;
    uint32_t cp, min;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, cp = c & 0x1f, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, cp = c & 0x0f, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, cp = c & 0x07, min = 0x10000;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

static bool utf8_valid(const char *s, size_t n)
{
    const uint8_t *p = (const uint8_t *)s;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(p + i, n - i);
        if (!k)
            return false;
        i += k;
    }
    return true;
}

/* Decodes ids one at a time as a stream does; returns the concatenation (malloc'ed). */
static char *stream_decode(const tokenizer_t *t, const int32_t *ids, size_t n, unsigned flags,
                           size_t *ret_len)
{
    detok_t *d = NULL;
    CHECK(detok_new(t, flags, &d) == 0);
    size_t cap = 64, len = 0;
    char *out = malloc(cap);
    CHECK(out);
    for (size_t i = 0; i <= n; i++) {
        const char *piece;
        size_t pl;
        if (i < n)
            CHECK(detok_push(d, ids[i], &piece, &pl) == 0);
        else
            CHECK(detok_flush(d, &piece, &pl) == 0);
        /* each piece alone is whole code points */
        CHECK(utf8_valid(piece, pl));
        while (len + pl > cap)
            cap *= 2;
        out = realloc(out, cap);
        CHECK(out);
        memcpy(out + len, piece, pl);
        len += pl;
    }
    detok_free(d);
    *ret_len = len;
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned sel = data[0];
    const tokenizer_t *t = vocab[(sel & 1) && vocab[1] ? 1 : 0];
    bool gpt2 = t == vocab[0];
    unsigned flags =
        (sel & 2 ? TOKENIZER_PARSE_SPECIAL : 0) | (sel & 4 ? TOKENIZER_ADD_SPECIAL : 0);
    size_t len = size - 1;
    char *text = malloc(len ? len : 1); /* exact size: ASan sees a read past the end */
    CHECK(text);
    memcpy(text, data + 1, len);

    int32_t *ids = NULL;
    size_t n = 0;
    CHECK(tokenizer_encode_alloc(t, text, len, flags, &ids, &n) == 0);
    uint32_t nv = tokenizer_n_vocab(t);
    for (size_t i = 0; i < n; i++)
        CHECK(ids[i] >= 0 && (uint32_t)ids[i] < nv);
    /* encode into a buffer that is too small: the count is the full one, nothing overflows */
    if (n > 1) {
        size_t room = n / 2;
        int32_t *part = malloc(room * sizeof(*part));
        CHECK(part);
        CHECK(tokenizer_encode(t, text, len, flags, part, room) == (int)n);
        CHECK(!memcmp(part, ids, room * sizeof(*part)));
        free(part);
    }

    /* special tokens come back as their text when the input was parsed for them */
    unsigned dflags =
        (flags & TOKENIZER_PARSE_SPECIAL ? DETOK_SPECIAL : 0) | (sel & 8 ? DETOK_STRIP_SPACE : 0);
    char *whole = NULL, *streamed;
    size_t wl = 0, sl = 0;
    CHECK(tokenizer_decode_alloc(t, ids, n, dflags, &whole, &wl) == 0);
    CHECK(whole[wl] == 0);
    CHECK(utf8_valid(whole, wl));
    CHECK(tokenizer_utf8_complete(whole, wl) == wl);
    streamed = stream_decode(t, ids, n, dflags, &sl);
    CHECK(sl == wl && !memcmp(streamed, whole, wl));

    if (gpt2 && !(flags & TOKENIZER_ADD_SPECIAL) && utf8_valid(text, len))
        CHECK(wl == len && !memcmp(whole, text, len));

    free(streamed);
    free(whole);
    free(ids);
    free(text);
    return 0;
}
