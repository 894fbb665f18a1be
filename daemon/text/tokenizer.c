/* Tokenizer front end: splits input text around special tokens (llama.cpp's
 * tokenizer_st_partition) and hands the text fragments to the BPE (tokenizer-bpe.c) or SPM
 * (tokenizer-spm.c) back end, adding BOS/EOS as the metadata asks; plus the pieces and
 * accessors. The tables come from tokenizer-vocab.c. The rules are llama.cpp's
 * (src/llama-vocab.cpp, llama_vocab::impl::tokenize / token_to_piece) because the ids must
 * match the ones the model was trained and converted with; where this code differs it says
 * so. Invariant: after tokenizer_new nothing in a tokenizer_t changes, so any number of
 * threads may encode with it at once (each call allocates its own scratch).
 * Callers: the engine/API (prompts), tools/moe-tokenize.c, tests/text. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer-private.h"

/* Inputs are bounded so every offset fits in 32 bits (and counts in an int). */
#define TOK_MAX_INPUT ((size_t)INT32_MAX)

/* ---- small helpers ---- */

int idvec_push(idvec_t *o, int32_t id)
{
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 256;
        int32_t *v = realloc(o->v, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        o->v = v;
        o->cap = cap;
    }
    o->v[o->n++] = id;
    return 0;
}

size_t tok_utf8_put(char *dst, uint32_t cp)
{
    if (cp < 0x80) {
        dst[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        dst[0] = (char)(0xc0 | (cp >> 6));
        dst[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        dst[0] = (char)(0xe0 | (cp >> 12));
        dst[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        dst[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    dst[0] = (char)(0xf0 | (cp >> 18));
    dst[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    dst[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    dst[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* ---- encoding ---- */

/* A run of the input: a token already decided (id >= 0) or text still to tokenize. */
typedef struct frag {
    int32_t id;
    uint32_t off, len;
} frag_t;

typedef struct fragvec {
    frag_t *v;
    size_t n, cap;
} fragvec_t;

static int frag_push(fragvec_t *f, int32_t id, size_t off, size_t len)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 16;
        frag_t *v = realloc(f->v, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        f->v = v;
        f->cap = cap;
    }
    f->v[f->n++] = (frag_t){id, (uint32_t)off, (uint32_t)len};
    return 0;
}

static bool is_space_c(char c)
{
    /* C isspace in the "C" locale, as llama.cpp's strip uses */
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* llama.cpp's tokenizer_st_partition: for each special token, longest first, every text
 * fragment is cut around each occurrence. Control and unknown tokens only count with
 * parse_special; user-defined ones always do (as Hugging Face tokenizers do). */
static int partition(const tokenizer_t *t, const char *text, size_t len, bool parse_special,
                     fragvec_t *out)
{
    fragvec_t cur = {0}, next = {0};
    int r = frag_push(&cur, -1, 0, len);
    if (r < 0)
        goto done;
    for (uint32_t s = 0; s < t->n_special; s++) {
        int32_t id = t->special[s];
        uint8_t a = t->attr[id];
        if (!parse_special && (a & (TOKENIZER_ATTR_CONTROL | TOKENIZER_ATTR_UNKNOWN)))
            continue;
        const char *tok = t->text + t->text_off[id];
        size_t tl = t->text_len[id];
        bool any = false;
        next.n = 0;
        for (size_t i = 0; i < cur.n; i++) {
            frag_t f = cur.v[i];
            const char *m;
            if (f.id >= 0 || !(m = memmem(text + f.off, f.len, tok, tl))) {
                if ((r = frag_push(&next, f.id, f.off, f.len)) < 0)
                    goto done;
                continue;
            }
            any = true;
            size_t off = f.off, end = (size_t)f.off + f.len;
            while (m) {
                size_t at = (size_t)(m - text), left = at - off;
                if (a & TOKENIZER_ATTR_LSTRIP)
                    while (left > 0 && is_space_c(text[off + left - 1]))
                        left--;
                if (left > 0 && (r = frag_push(&next, -1, off, left)) < 0)
                    goto done;
                if ((r = frag_push(&next, id, at, tl)) < 0)
                    goto done;
                off = at + tl;
                if (a & TOKENIZER_ATTR_RSTRIP)
                    while (off < end && is_space_c(text[off]))
                        off++;
                m = off < end ? memmem(text + off, end - off, tok, tl) : NULL;
            }
            if (off < end && (r = frag_push(&next, -1, off, end - off)) < 0)
                goto done;
        }
        if (any) {
            fragvec_t tmp = cur;
            cur = next;
            next = tmp;
        }
    }
    *out = cur;
    cur.v = NULL;
done:
    free(cur.v);
    free(next.v);
    return r;
}

/* SPM: each text fragment gets a leading space when it starts the input or follows a
 * special token (llama.cpp: add_space_prefix && is_prev_special), then spaces become
 * U+2581 and the fragment is merged by score. */
static int encode_spm(const tokenizer_t *t, const char *text, const fragvec_t *fr,
                      idvec_t *out)
{
    bool prev_special = true;
    char *buf = NULL;
    size_t cap = 0;
    int r = 0;
    for (size_t i = 0; i < fr->n; i++) {
        const frag_t *f = &fr->v[i];
        if (f->id >= 0) {
            if ((r = idvec_push(out, f->id)) < 0)
                break;
            prev_special = true;
            continue;
        }
        size_t need = 3 * ((size_t)f->len + 1);
        if (need > cap) {
            char *nb = realloc(buf, need);
            if (!nb) {
                r = -ENOMEM;
                break;
            }
            buf = nb;
            cap = need;
        }
        size_t n = 0;
        if (t->add_space_prefix && prev_special) {
            memcpy(buf, "\xe2\x96\x81", 3);
            n = 3;
        }
        for (uint32_t j = 0; j < f->len; j++) {
            char c = text[f->off + j];
            if (c == ' ') {
                memcpy(buf + n, "\xe2\x96\x81", 3);
                n += 3;
            } else {
                buf[n++] = c;
            }
        }
        if ((r = tokenizer_spm_encode(t, buf, n, out)) < 0)
            break;
        prev_special = false;
    }
    free(buf);
    return r;
}

static int encode_vec(const tokenizer_t *t, const char *text, size_t len, unsigned flags,
                      idvec_t *out)
{
    if (len > TOK_MAX_INPUT)
        return -E2BIG;
    fragvec_t fr = {0};
    int r = 0;
    bool add = flags & TOKENIZER_ADD_SPECIAL;
    if (len > 0 && (r = partition(t, text, len, flags & TOKENIZER_PARSE_SPECIAL, &fr)) < 0)
        return r;
    if (add && t->add_bos && (r = idvec_push(out, t->special_bos)) < 0)
        goto done;
    if (t->kind == TOKENIZER_SPM) {
        if ((r = encode_spm(t, text, &fr, out)) < 0)
            goto done;
    } else {
        for (size_t i = 0; i < fr.n; i++) {
            const frag_t *f = &fr.v[i];
            r = f->id >= 0 ? idvec_push(out, f->id)
                           : tokenizer_bpe_encode(t, text + f->off, f->len, out);
            if (r < 0)
                goto done;
        }
    }
    if (add && t->add_eos && (r = idvec_push(out, t->special_eos)) < 0)
        goto done;
done:
    free(fr.v);
    return r;
}

int tokenizer_encode_alloc(const tokenizer_t *t, const char *text, size_t len, unsigned flags,
                           int32_t **ret_ids, size_t *ret_n)
{
    idvec_t out = {0};
    int r = encode_vec(t, text, len, flags, &out);
    if (r < 0) {
        free(out.v);
        return r;
    }
    if (!out.v && !(out.v = malloc(sizeof(int32_t)))) /* never hand back NULL */
        return -ENOMEM;
    *ret_ids = out.v;
    *ret_n = out.n;
    return 0;
}

int tokenizer_encode(const tokenizer_t *t, const char *text, size_t len, unsigned flags,
                     int32_t *ids, size_t max_ids)
{
    idvec_t out = {0};
    int r = encode_vec(t, text, len, flags, &out);
    if (r >= 0) {
        if (out.n > INT32_MAX)
            r = -E2BIG;
        else {
            size_t k = out.n < max_ids ? out.n : max_ids;
            if (k) /* out.v is NULL for an empty encoding */
                memcpy(ids, out.v, k * sizeof(int32_t));
            r = (int)out.n;
        }
    }
    free(out.v);
    return r;
}

/* ---- pieces and accessors ---- */

int tokenizer_piece(const tokenizer_t *t, int32_t id, const char **ret, size_t *ret_len)
{
    if (id < 0 || (uint32_t)id >= t->n_vocab)
        return -EINVAL;
    *ret = t->piece + t->piece_off[id];
    *ret_len = t->piece_off[id + 1] - t->piece_off[id];
    return 0;
}

int tokenizer_token_to_piece(const tokenizer_t *t, int32_t id, char *buf, size_t len)
{
    const char *p;
    size_t n;
    int r = tokenizer_piece(t, id, &p, &n);
    if (r < 0)
        return r;
    if (n && n <= len)
        memcpy(buf, p, n);
    return (int)n;
}

int tokenizer_token_text(const tokenizer_t *t, int32_t id, const char **ret, size_t *ret_len)
{
    if (id < 0 || (uint32_t)id >= t->n_vocab)
        return -EINVAL;
    *ret = t->text + t->text_off[id];
    *ret_len = t->text_len[id];
    return 0;
}

int32_t tokenizer_find(const tokenizer_t *t, const char *text, size_t len)
{
    int32_t id = strmap_find(&t->vocab, text, len, NULL, 0);
    return id < 0 ? -ENOENT : id;
}

unsigned tokenizer_token_attr(const tokenizer_t *t, int32_t id)
{
    return id >= 0 && (uint32_t)id < t->n_vocab ? t->attr[id] : 0;
}

uint32_t tokenizer_n_vocab(const tokenizer_t *t) { return t->n_vocab; }
enum tokenizer_kind tokenizer_kind(const tokenizer_t *t) { return t->kind; }
const char *tokenizer_pre_name(const tokenizer_t *t) { return t->pre; }
int32_t tokenizer_bos(const tokenizer_t *t) { return t->special_bos; }
int32_t tokenizer_eos(const tokenizer_t *t) { return t->special_eos; }
int32_t tokenizer_eot(const tokenizer_t *t) { return t->special_eot; }
bool tokenizer_add_bos(const tokenizer_t *t) { return t->add_bos; }
bool tokenizer_add_eos(const tokenizer_t *t) { return t->add_eos; }

bool tokenizer_is_eog(const tokenizer_t *t, int32_t id)
{
    return id >= 0 && (uint32_t)id < t->n_vocab && t->eog[id];
}

bool tokenizer_is_control(const tokenizer_t *t, int32_t id)
{
    return tokenizer_token_attr(t, id) & (TOKENIZER_ATTR_CONTROL | TOKENIZER_ATTR_UNKNOWN);
}

