/* Vocabulary loading: reads tokenizer.ggml.* from a GGUF into the immutable tables of a
 * tokenizer_t (token texts, scores, attributes, a text->id hash, BPE merge ranks, special
 * ids, the end-of-generation set, the special-token list for partitioning, decoded pieces).
 * The defaults and by-name fix-ups are llama.cpp's (src/llama-vocab.cpp,
 * llama_vocab::impl::load) so that the same file gives the same tokenizer; every size taken
 * from the file is bounded before anything is allocated for it. Encoding is tokenizer.c. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer-private.h"

/* Upper bounds on sizes taken from the file: no real vocabulary comes near them, and they
 * keep every offset in 32 bits. */
#define TOK_MAX_VOCAB (1u << 22)
#define TOK_MAX_MERGES (1u << 23)
#define TOK_MAX_TEXT (1u << 30)

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- strmap ---- */

static uint64_t fnv1a(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

#define FNV_INIT 0xcbf29ce484222325ull

int strmap_init(strmap_t *m, uint32_t n, const char *blob, const uint32_t *off,
                const uint32_t *len)
{
    uint32_t cap = 16;
    while (cap < 2 * (uint64_t)n + 16)
        cap <<= 1;
    m->slot = calloc(cap, sizeof(*m->slot));
    if (!m->slot)
        return -ENOMEM;
    m->mask = cap - 1;
    m->blob = blob;
    m->off = off;
    m->len = len;
    return 0;
}

void strmap_done(strmap_t *m)
{
    free(m->slot);
    m->slot = NULL;
}

void strmap_insert(strmap_t *m, uint32_t i)
{
    const char *k = m->blob + m->off[i];
    uint32_t h = (uint32_t)fnv1a(FNV_INIT, k, m->len[i]) & m->mask;
    for (;; h = (h + 1) & m->mask) {
        uint32_t s = m->slot[h];
        if (!s) {
            m->slot[h] = i + 1;
            return;
        }
        if (m->len[s - 1] == m->len[i] && !memcmp(m->blob + m->off[s - 1], k, m->len[i]))
            return; /* first one wins */
    }
}

int32_t strmap_find(const strmap_t *m, const char *a, size_t na, const char *b, size_t nb)
{
    uint64_t hh = fnv1a(FNV_INIT, a, na);
    size_t n = na;
    if (b) {
        hh = fnv1a(fnv1a(hh, " ", 1), b, nb);
        n += 1 + nb;
    }
    for (uint32_t h = (uint32_t)hh & m->mask;; h = (h + 1) & m->mask) {
        uint32_t s = m->slot[h];
        if (!s)
            return -1;
        if (m->len[s - 1] != n)
            continue;
        const char *k = m->blob + m->off[s - 1];
        if (memcmp(k, a, na))
            continue;
        if (b && (k[na] != ' ' || memcmp(k + na + 1, b, nb)))
            continue;
        return (int32_t)(s - 1);
    }
}

static int32_t find_cstr(const tokenizer_t *t, const char *s)
{
    return strmap_find(&t->vocab, s, strlen(s), NULL, 0);
}

/* ---- loading ---- */

/* Reads element i of a numeric GGUF array as a double (scores, types), whatever its type. */
static double arr_num(enum gguf_type type, const void *data, uint64_t i)
{
    const uint8_t *p = data;
    switch (type) {
    case GGUF_TYPE_FLOAT32: {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    case GGUF_TYPE_INT32: {
        int32_t v;
        memcpy(&v, p + 4 * i, 4);
        return v;
    }
    case GGUF_TYPE_UINT32: {
        uint32_t v;
        memcpy(&v, p + 4 * i, 4);
        return v;
    }
    case GGUF_TYPE_INT8:
        return (int8_t)p[i];
    case GGUF_TYPE_UINT8:
        return p[i];
    default:
        return 0;
    }
}

static int load_tokens(tokenizer_t *t, const gguf_t *g, char *err, size_t errlen)
{
    enum gguf_type type;
    uint64_t n;
    const void *data;
    int r = gguf_get_arr(g, "tokenizer.ggml.tokens", &type, &n, &data);
    if (r < 0 || type != GGUF_TYPE_STRING) {
        seterr(err, errlen, "tokenizer.ggml.tokens: %s", r < 0 ? "missing" : "not strings");
        return r == -ENOENT || r >= 0 ? -EINVAL : r;
    }
    if (n == 0 || n > TOK_MAX_VOCAB) {
        seterr(err, errlen, "tokenizer.ggml.tokens: %llu tokens (1..%u allowed)",
               (unsigned long long)n, TOK_MAX_VOCAB);
        return -EINVAL;
    }
    t->n_vocab = (uint32_t)n;
    uint64_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t len;
        if ((r = gguf_get_arr_str_len(g, "tokenizer.ggml.tokens", i, &len)) < 0)
            return r;
        total += len ? len : 32; /* "[EMPTY_i]" */
        if (total > TOK_MAX_TEXT) {
            seterr(err, errlen, "tokenizer.ggml.tokens: more than %u bytes of text",
                   TOK_MAX_TEXT);
            return -EINVAL;
        }
    }
    t->text = malloc(total + 1);
    t->text_off = calloc(n, sizeof(uint32_t));
    t->text_len = calloc(n, sizeof(uint32_t));
    t->score = calloc(n, sizeof(float));
    t->attr = calloc(n, 1);
    t->eog = calloc(n, 1);
    if (!t->text || !t->text_off || !t->text_len || !t->score || !t->attr || !t->eog)
        return -ENOMEM;
    uint32_t pos = 0;
    for (uint64_t i = 0; i < n; i++) {
        const char *s;
        uint64_t len;
        if ((r = gguf_get_arr_str(g, "tokenizer.ggml.tokens", i, &s)) < 0 ||
            (r = gguf_get_arr_str_len(g, "tokenizer.ggml.tokens", i, &len)) < 0)
            return r;
        t->text_off[i] = pos;
        if (len == 0) /* llama.cpp names empty tokens so they stay addressable */
            len = (uint64_t)snprintf(t->text + pos, 32, "[EMPTY_%llu]", (unsigned long long)i);
        else
            memcpy(t->text + pos, s, len);
        t->text_len[i] = (uint32_t)len;
        pos += (uint32_t)len;
    }
    t->text[pos] = 0;

    /* scores: float32 or int32 per llama.cpp; at least n of them */
    if (gguf_get_arr(g, "tokenizer.ggml.scores", &type, &n, &data) == 0) {
        if ((type != GGUF_TYPE_FLOAT32 && type != GGUF_TYPE_INT32) || n < t->n_vocab) {
            seterr(err, errlen, "tokenizer.ggml.scores: wrong type or too few (%llu)",
                   (unsigned long long)n);
            return -EINVAL;
        }
        for (uint32_t i = 0; i < t->n_vocab; i++)
            t->score[i] = (float)arr_num(type, data, i);
    }
    /* token types: 1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte */
    static const uint8_t type_attr[7] = {
        TOKENIZER_ATTR_UNDEFINED, TOKENIZER_ATTR_NORMAL,       TOKENIZER_ATTR_UNKNOWN,
        TOKENIZER_ATTR_CONTROL,   TOKENIZER_ATTR_USER_DEFINED, TOKENIZER_ATTR_UNUSED,
        TOKENIZER_ATTR_BYTE,
    };
    if (gguf_get_arr(g, "tokenizer.ggml.token_type", &type, &n, &data) == 0) {
        if ((type != GGUF_TYPE_INT32 && type != GGUF_TYPE_UINT32) || n < t->n_vocab) {
            seterr(err, errlen, "tokenizer.ggml.token_type: wrong type or too few (%llu)",
                   (unsigned long long)n);
            return -EINVAL;
        }
        for (uint32_t i = 0; i < t->n_vocab; i++) {
            double v = arr_num(type, data, i);
            t->attr[i] = v >= 0 && v < 7 ? type_attr[(int)v] : TOKENIZER_ATTR_UNDEFINED;
        }
    } else {
        memset(t->attr, TOKENIZER_ATTR_NORMAL, t->n_vocab);
    }

    if ((r = strmap_init(&t->vocab, t->n_vocab, t->text, t->text_off, t->text_len)) < 0)
        return r;
    for (uint32_t i = 0; i < t->n_vocab; i++)
        strmap_insert(&t->vocab, i);
    return 0;
}

static int load_merges(tokenizer_t *t, const gguf_t *g, char *err, size_t errlen)
{
    enum gguf_type type;
    uint64_t n;
    const void *data;
    int r = gguf_get_arr(g, "tokenizer.ggml.merges", &type, &n, &data);
    if (r == -ENOENT) {
        seterr(err, errlen, "tokenizer.ggml.merges: missing (BPE needs merges)");
        return -EINVAL;
    }
    if (r < 0 || type != GGUF_TYPE_STRING || n > TOK_MAX_MERGES) {
        seterr(err, errlen, "tokenizer.ggml.merges: not a string array of at most %u",
               TOK_MAX_MERGES);
        return r < 0 ? r : -EINVAL;
    }
    uint64_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t len;
        if ((r = gguf_get_arr_str_len(g, "tokenizer.ggml.merges", i, &len)) < 0)
            return r;
        if ((total += len) > TOK_MAX_TEXT) {
            seterr(err, errlen, "tokenizer.ggml.merges: more than %u bytes", TOK_MAX_TEXT);
            return -EINVAL;
        }
    }
    t->n_merges = (uint32_t)n;
    t->merge_text = malloc(total + 1);
    t->merge_off = calloc(n + 1, sizeof(uint32_t));
    t->merge_len = calloc(n + 1, sizeof(uint32_t));
    if (!t->merge_text || !t->merge_off || !t->merge_len)
        return -ENOMEM;
    uint32_t pos = 0;
    for (uint64_t i = 0; i < n; i++) {
        const char *s;
        uint64_t len;
        if ((r = gguf_get_arr_str(g, "tokenizer.ggml.merges", i, &s)) < 0 ||
            (r = gguf_get_arr_str_len(g, "tokenizer.ggml.merges", i, &len)) < 0)
            return r;
        memcpy(t->merge_text + pos, s, len);
        t->merge_off[i] = pos;
        t->merge_len[i] = (uint32_t)len;
        pos += (uint32_t)len;
    }
    if ((r = strmap_init(&t->merges, t->n_merges, t->merge_text, t->merge_off,
                         t->merge_len)) < 0)
        return r;
    /* The rank of merge "a b" is its index. llama.cpp splits at the first space after
     * position 0; a lookup joins left + ' ' + right, which finds the same entry whenever
     * left holds no space (always true for byte-level text, where a space is U+0120). */
    for (uint32_t i = 0; i < t->n_merges; i++)
        strmap_insert(&t->merges, i);
    return 0;
}

static void special_id(const gguf_t *g, const tokenizer_t *t, const char *key, int32_t *id)
{
    uint32_t v;
    if (*id >= 0 && (uint32_t)*id >= t->n_vocab)
        *id = -1; /* a default past the vocabulary is disabled */
    if (gguf_get_u32(g, key, &v) == 0 && v < t->n_vocab)
        *id = (int32_t)v; /* an out-of-range id in the file keeps the default */
}

/* The by-name fix-ups llama.cpp applies after reading the types (llama-vocab.cpp, "auto-
 * detect special tokens by text"): EOT/EOM and the end-of-generation set. */
static void mark_eog(tokenizer_t *t)
{
    static const char *const eot_names[] = {
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
        "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd\x9c>",
        "<end_of_utterance>",
    };
    static const char *const eog_names[] = {
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>",
        "<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>",
        "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>", "<end_of_utterance>", "<eos>",
        "<turn|>", "<|tool_response>",
        "<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd\x9c>", "[e~[",
    };
    /* llama.cpp walks an unordered map here, so which of several EOT-looking tokens wins
     * is unspecified there; this takes the first name of the list that exists. */
    for (size_t i = 0; t->special_eot < 0 && i < sizeof(eot_names) / sizeof(*eot_names); i++)
        t->special_eot = find_cstr(t, eot_names[i]);
    if (t->special_eom < 0)
        t->special_eom = find_cstr(t, "<|eom_id|>");
    for (size_t i = 0; i < sizeof(eog_names) / sizeof(*eog_names); i++) {
        int32_t id = find_cstr(t, eog_names[i]);
        if (id >= 0) {
            t->eog[id] = 1;
            t->attr[id] |= TOKENIZER_ATTR_CONTROL;
        }
    }
    if (t->special_eot >= 0)
        t->attr[t->special_eot] |= TOKENIZER_ATTR_CONTROL;
    /* gpt-oss (harmony): these structure tokens are always rendered */
    static const char *const harmony[] = {"<|channel|>", "<|message|>", "<|start|>",
                                          "<|constrain|>"};
    for (size_t i = 0; i < sizeof(harmony) / sizeof(*harmony); i++) {
        int32_t id = find_cstr(t, harmony[i]);
        if (id >= 0)
            t->attr[id] = TOKENIZER_ATTR_USER_DEFINED;
    }
    const int32_t ends[] = {t->special_eos, t->special_eot, t->special_eom};
    for (size_t i = 0; i < 3; i++)
        if (ends[i] >= 0)
            t->eog[ends[i]] = 1;
    /* harmony and solar-open end a message with <|end|> but a turn with <|return|>/<|call|>:
     * there <|end|> is not an end of generation */
    int32_t end = find_cstr(t, "<|end|>");
    int32_t ret = find_cstr(t, "<|return|>"), call = find_cstr(t, "<|call|>");
    int32_t calls = find_cstr(t, "<|calls|>"), flush = find_cstr(t, "<|flush|>");
    if (end >= 0 && ((ret >= 0 && call >= 0) || (calls >= 0 && flush >= 0))) {
        t->eog[end] = 0;
        t->attr[end] = TOKENIZER_ATTR_USER_DEFINED;
    }
    int32_t tool_resp = find_cstr(t, "<|tool_response>"), s_end = find_cstr(t, "</s>");
    if (tool_resp >= 0 && s_end >= 0) {
        t->eog[s_end] = 0;
        t->attr[s_end] = TOKENIZER_ATTR_NORMAL;
    }
}

static int cmp_special(const void *a, const void *b, void *ctx)
{
    /* longest first; ties by id so the order is reproducible (llama.cpp's std::sort
     * leaves ties unspecified) */
    const tokenizer_t *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    uint32_t lx = t->text_len[x], ly = t->text_len[y];
    if (lx != ly)
        return lx > ly ? -1 : 1;
    return (x > y) - (x < y);
}

static int build_special(tokenizer_t *t, const gguf_t *g)
{
    t->special = calloc(t->n_vocab, sizeof(int32_t));
    if (!t->special)
        return -ENOMEM;
    for (uint32_t i = 0; i < t->n_vocab; i++)
        if (t->attr[i] &
            (TOKENIZER_ATTR_CONTROL | TOKENIZER_ATTR_USER_DEFINED | TOKENIZER_ATTR_UNKNOWN))
            t->special[t->n_special++] = (int32_t)i;
    qsort_r(t->special, t->n_special, sizeof(int32_t), cmp_special, t);

    /* Phi-3: special tokens swallow the whitespace after them (llama.cpp sets RSTRIP by
     * general.name), except <unk>, <s>, <|endoftext|>; </s> does too. */
    const char *name = NULL;
    char lower[256] = "";
    if (gguf_get_str(g, "general.name", &name) == 0) {
        size_t i = 0;
        for (; name[i] && i + 1 < sizeof(lower); i++)
            lower[i] = (char)tolower((unsigned char)name[i]);
        lower[i] = 0;
    }
    if (strstr(lower, "phi-3") || strstr(lower, "phi3")) {
        for (uint32_t i = 0; i < t->n_special; i++)
            t->attr[t->special[i]] |= TOKENIZER_ATTR_RSTRIP;
        int32_t id = find_cstr(t, "</s>");
        if (id >= 0)
            t->attr[id] |= TOKENIZER_ATTR_RSTRIP;
        static const char *const keep[] = {"<unk>", "<s>", "<|endoftext|>"};
        for (size_t i = 0; i < 3; i++)
            if ((id = find_cstr(t, keep[i])) >= 0)
                t->attr[id] &= (uint8_t)~TOKENIZER_ATTR_RSTRIP;
    }
    return 0;
}

/* Piece of one token: the bytes it stands for in text. */
static size_t make_piece(const tokenizer_t *t, uint32_t id, char *dst)
{
    const char *s = t->text + t->text_off[id];
    uint32_t n = t->text_len[id];
    uint8_t a = t->attr[id];
    if (a & (TOKENIZER_ATTR_UNKNOWN | TOKENIZER_ATTR_CONTROL | TOKENIZER_ATTR_USER_DEFINED)) {
        memcpy(dst, s, n);
        return n;
    }
    if (a & TOKENIZER_ATTR_NORMAL) {
        size_t o = 0;
        if (t->kind == TOKENIZER_BPE && t->byte_encode) {
            /* byte-level: each code point stands for one byte (GPT-2 bytes_to_unicode) */
            for (uint32_t i = 0; i < n;) {
                size_t l = tok_utf8_len((uint8_t)s[i]);
                if (l > n - i)
                    l = n - i;
                uint32_t cp = (uint8_t)s[i];
                if (l == 2)
                    cp = ((cp & 0x1f) << 6) | ((uint8_t)s[i + 1] & 0x3f);
                if (l <= 2 && cp < 324 && t->bytelevel_dec[cp] >= 0) {
                    dst[o++] = (char)t->bytelevel_dec[cp];
                } else { /* not a byte-level char: keep it as it is */
                    memcpy(dst + o, s + i, l);
                    o += l;
                }
                i += (uint32_t)l;
            }
            return o;
        }
        /* SPM (and SPM-style BPE): U+2581 stands for a space */
        for (uint32_t i = 0; i < n;) {
            if (i + 3 <= n && !memcmp(s + i, "\xe2\x96\x81", 3)) {
                dst[o++] = ' ';
                i += 3;
            } else {
                dst[o++] = s[i++];
            }
        }
        return o;
    }
    if (a & TOKENIZER_ATTR_BYTE) {
        unsigned v;
        char tail;
        if (n == 6 && sscanf(s, "<0x%2x%c", &v, &tail) == 2 && tail == '>') {
            dst[0] = (char)v;
            return 1;
        }
        memcpy(dst, s, n);
        return n;
    }
    return 0; /* unused / undefined types render as nothing, as in llama.cpp */
}

static int build_pieces(tokenizer_t *t)
{
    size_t total = 0;
    for (uint32_t i = 0; i < t->n_vocab; i++)
        total += t->text_len[i]; /* a piece is never longer than its text */
    t->piece = malloc(total + 1);
    t->piece_off = calloc(t->n_vocab + 1, sizeof(uint32_t));
    if (!t->piece || !t->piece_off)
        return -ENOMEM;
    uint32_t pos = 0;
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        t->piece_off[i] = pos;
        pos += (uint32_t)make_piece(t, i, t->piece + pos);
    }
    t->piece_off[t->n_vocab] = pos;
    return 0;
}

/* Whether some token has a U+2581 (SPM's space) after a character that is not one. */
static bool mark_inside_token(const tokenizer_t *t)
{
    for (uint32_t id = 0; id < t->n_vocab; id++) {
        const char *s = t->text + t->text_off[id];
        uint32_t n = t->text_len[id];
        bool other = false;
        for (uint32_t i = 0; i < n; i++) {
            bool mark = i + 3 <= n && !memcmp(s + i, "\xe2\x96\x81", 3);
            if (mark && other)
                return true;
            if (mark)
                i += 2;
            else
                other = true;
        }
    }
    return false;
}

int tokenizer_new(const gguf_t *g, tokenizer_t **ret, char *err, size_t errlen)
{
    const char *model = NULL, *pre = NULL;
    int r;
    if (gguf_get_str(g, "tokenizer.ggml.model", &model) < 0) {
        seterr(err, errlen, "tokenizer.ggml.model: missing");
        return -EINVAL;
    }
    tokenizer_t *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->special_eot = t->special_eom = t->special_pad = -1;
    if (!strcmp(model, "llama")) {
        t->kind = TOKENIZER_SPM;
        t->special_bos = 1;
        t->special_eos = 2;
        t->special_unk = 0;
        t->add_space_prefix = t->add_bos = true;
        t->escape_whitespace = true;
    } else if (!strcmp(model, "gpt2")) {
        t->kind = TOKENIZER_BPE;
        t->special_bos = t->special_eos = 11;
        t->special_unk = -1;
        t->byte_encode = true;
    } else {
        seterr(err, errlen, "tokenizer.ggml.model '%.40s' is not supported (llama, gpt2 are)",
               model);
        r = -ENOTSUP;
        goto fail;
    }
    if ((r = load_tokens(t, g, err, errlen)) < 0)
        goto fail;
    for (unsigned b = 0; b < 256; b++) {
        char hex[8];
        snprintf(hex, sizeof(hex), "<0x%02X>", b);
        int32_t id = find_cstr(t, hex);
        if (id < 0) {
            char one = (char)b;
            id = strmap_find(&t->vocab, &one, 1, NULL, 0);
        }
        t->byte_token[b] = id;
    }
    for (unsigned i = 0; i < 324; i++)
        t->bytelevel_dec[i] = -1;
    for (unsigned b = 0; b < 256; b++)
        t->bytelevel_dec[tokenizer_bytelevel_cp((uint8_t)b)] = (int16_t)b;
    t->spm_word_split = t->kind == TOKENIZER_SPM && !mark_inside_token(t);
    if (t->kind == TOKENIZER_BPE) {
        if ((r = load_merges(t, g, err, errlen)) < 0)
            goto fail;
        if (gguf_get_str(g, "tokenizer.ggml.pre", &pre) < 0)
            pre = "default"; /* llama.cpp warns and uses its default regexes */
        snprintf(t->pre, sizeof(t->pre), "%s", pre);
        if ((r = tokenizer_bpe_setup(t, pre, err, errlen)) < 0)
            goto fail;
    }
    bool b;
    if (gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &b) == 0)
        t->add_space_prefix = b;
    special_id(g, t, "tokenizer.ggml.bos_token_id", &t->special_bos);
    special_id(g, t, "tokenizer.ggml.eos_token_id", &t->special_eos);
    special_id(g, t, "tokenizer.ggml.eot_token_id", &t->special_eot);
    special_id(g, t, "tokenizer.ggml.eom_token_id", &t->special_eom);
    special_id(g, t, "tokenizer.ggml.unknown_token_id", &t->special_unk);
    special_id(g, t, "tokenizer.ggml.padding_token_id", &t->special_pad);
    if (gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b) == 0)
        t->add_bos = b;
    if (gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &b) == 0)
        t->add_eos = b;
    if ((t->add_bos && t->special_bos < 0) || (t->add_eos && t->special_eos < 0)) {
        seterr(err, errlen, "tokenizer.ggml.add_%s_token is true but there is no such token",
               t->add_bos && t->special_bos < 0 ? "bos" : "eos");
        r = -EINVAL;
        goto fail;
    }
    mark_eog(t);
    if ((r = build_special(t, g)) < 0 || (r = build_pieces(t)) < 0)
        goto fail;
    *ret = t;
    return 0;
fail:
    if (r == -ENOMEM)
        seterr(err, errlen, "out of memory reading the vocabulary");
    tokenizer_free(t);
    return r;
}

tokenizer_t *tokenizer_free(tokenizer_t *t)
{
    if (!t)
        return NULL;
    tokenizer_bpe_teardown(t);
    strmap_done(&t->merges);
    strmap_done(&t->vocab);
    free(t->merge_text);
    free(t->merge_off);
    free(t->merge_len);
    free(t->special);
    free(t->piece);
    free(t->piece_off);
    free(t->text);
    free(t->text_off);
    free(t->text_len);
    free(t->score);
    free(t->attr);
    free(t->eog);
    free(t);
    return NULL;
}

