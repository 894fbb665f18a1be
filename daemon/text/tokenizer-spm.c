/* SentencePiece-style BPE (tokenizer.ggml.model "llama"): the text (spaces already U+2581,
 * the leading space already added by tokenizer.c) is cut into UTF-8 characters, and the
 * adjacent pair whose concatenation is a vocabulary token with the highest score is merged
 * first (ties: leftmost), until no pair forms a token. A final symbol that is not a token
 * (only single characters can be: merged ones always are) becomes its bytes' <0xXX> tokens
 * (byte fallback). Semantics: llama.cpp src/llama-vocab.cpp, llm_tokenizer_spm_session
 * (tokenize, try_add_bigram, resegment). The candidate pairs sit in a binary heap keyed
 * (score desc, left asc); stale pairs are skipped on pop. One call per text fragment;
 * scratch is per call, so concurrent calls on one tokenizer are fine. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer-private.h"

typedef struct spm_sym {
    int32_t prev, next;
    uint32_t off, n; /* n == 0 once merged into the symbol on its left */
} spm_sym_t;

typedef struct spm_pair {
    float score;
    int32_t left, right;
    uint32_t size;
} spm_pair_t;

typedef struct spm_heap {
    spm_pair_t *v;
    size_t n, cap;
} spm_heap_t;

static bool before(const spm_pair_t *a, const spm_pair_t *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static int push(spm_heap_t *h, spm_pair_t p)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 256;
        spm_pair_t *v = realloc(h->v, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        h->v = v;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0 && before(&p, &h->v[(i - 1) / 2])) {
        h->v[i] = h->v[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->v[i] = p;
    return 0;
}

static spm_pair_t pop(spm_heap_t *h)
{
    spm_pair_t top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && before(&h->v[c + 1], &h->v[c]))
            c++;
        if (!before(&h->v[c], &last))
            break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n)
        h->v[i] = last;
    return top;
}

static int try_pair(const tokenizer_t *t, const char *text, const spm_sym_t *sym,
                    spm_heap_t *h, int32_t l, int32_t r)
{
    if (l < 0 || r < 0)
        return 0;
    uint32_t size = sym[l].n + sym[r].n;
    int32_t id = strmap_find(&t->vocab, text + sym[l].off, size, NULL, 0);
    if (id < 0)
        return 0;
    return push(h, (spm_pair_t){t->score[id], l, r, size});
}

typedef struct spm_scratch {
    spm_sym_t *sym;
    size_t cap;
    spm_heap_t h;
} spm_scratch_t;

static int encode_chunk(const tokenizer_t *t, spm_scratch_t *s, const char *text, size_t len,
                        idvec_t *out)
{
    int r;
    if (len > s->cap) {
        spm_sym_t *sy = realloc(s->sym, len * sizeof(*sy));
        if (!sy)
            return -ENOMEM;
        s->sym = sy;
        s->cap = len;
    }
    spm_sym_t *sym = s->sym;
    spm_heap_t *h = &s->h;
    h->n = 0;
    int32_t n = 0;
    for (size_t off = 0; off < len; n++) {
        size_t l = tok_utf8_len((uint8_t)text[off]);
        if (l > len - off)
            l = len - off;
        sym[n] = (spm_sym_t){n - 1, off + l == len ? -1 : n + 1, (uint32_t)off, (uint32_t)l};
        off += l;
    }
    for (int32_t i = 1; i < n; i++)
        if ((r = try_pair(t, text, sym, h, i - 1, i)) < 0)
            return r;
    while (h->n) {
        spm_pair_t p = pop(h);
        spm_sym_t *a = &sym[p.left], *b = &sym[p.right];
        if (!a->n || !b->n || a->n + b->n != p.size)
            continue; /* stale */
        a->n += b->n;
        b->n = 0;
        a->next = b->next;
        if (b->next >= 0)
            sym[b->next].prev = p.left;
        if ((r = try_pair(t, text, sym, h, a->prev, p.left)) < 0 ||
            (r = try_pair(t, text, sym, h, p.left, a->next)) < 0)
            return r;
    }
    for (int32_t i = 0; i >= 0; i = sym[i].next) {
        int32_t id = strmap_find(&t->vocab, text + sym[i].off, sym[i].n, NULL, 0);
        if (id >= 0) {
            if ((r = idvec_push(out, id)) < 0)
                return r;
            continue;
        }
        /* byte fallback; a byte without a token becomes <unk> (llama.cpp would throw) */
        for (uint32_t j = 0; j < sym[i].n; j++) {
            int32_t b = t->byte_token[(uint8_t)text[sym[i].off + j]];
            if (b < 0)
                b = t->special_unk;
            if (b >= 0 && (r = idvec_push(out, b)) < 0)
                return r;
        }
    }
    return 0;
}

static bool is_mark(const char *p) { return !memcmp(p, "\xe2\x96\x81", 3); }

int tokenizer_spm_encode(const tokenizer_t *t, const char *text, size_t len, idvec_t *out)
{
    if (!len)
        return 0;
    if (len > UINT32_MAX)
        return -E2BIG;
    spm_scratch_t s = {0};
    int r = 0;
    size_t start = 0;
    /* When no token has a U+2581 after another character (t->spm_word_split), no merge
     * can join the text before a word's U+2581 to it, so each word merges on its own with
     * the same result as the whole text, and the heap stays small and in cache. */
    if (t->spm_word_split) {
        /* step symbol by symbol exactly as encode_chunk cuts them */
        bool prev_mark = true;
        for (size_t i = 0, l; i < len; i += l) {
            l = tok_utf8_len((uint8_t)text[i]);
            bool mark = l == 3 && i + 3 <= len && is_mark(text + i);
            if (mark && !prev_mark) {
                if ((r = encode_chunk(t, &s, text + start, i - start, out)) < 0)
                    goto done;
                start = i;
            }
            prev_mark = mark;
        }
    }
    r = encode_chunk(t, &s, text + start, len - start, out);
done:
    free(s.sym);
    free(s.h.v);
    return r;
}
