/* Incremental detokenizer: token ids in, text out, always whole UTF-8 code points. Byte-
 * level BPE and SPM byte fallback spread one code point over several tokens (an emoji is
 * often three or four byte tokens), so a streaming API that sent each token's bytes as they
 * come would send broken UTF-8. A detok_t keeps the unfinished tail (at most 3 bytes) and
 * releases it when the code point completes; bytes that can never complete one come out as
 * U+FFFD. Invariant: everything returned so far, concatenated, is valid UTF-8, and equals
 * the concatenated pieces wherever those were valid UTF-8. Used by the API's streaming path,
 * `moe detokenize` and the tests. No malloc per token once the output buffer has grown to
 * the longest piece. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer-private.h"

struct detok {
    const tokenizer_t *t;
    unsigned flags;
    bool started; /* a non-empty piece has been seen (for DETOK_STRIP_SPACE) */
    uint8_t held[4];
    size_t nheld;
    char *out; /* returned to the caller; valid until the next call */
    size_t cap;
};

int detok_new(const tokenizer_t *t, unsigned flags, detok_t **ret)
{
    detok_t *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->t = t;
    d->flags = flags;
    *ret = d;
    return 0;
}

detok_t *detok_free(detok_t *d)
{
    if (d)
        free(d->out);
    free(d);
    return NULL;
}

void detok_reset(detok_t *d)
{
    d->started = false;
    d->nheld = 0;
}

/* Expected length of the sequence starting with c, 0 for a byte that cannot start one. */
static size_t seq_len(uint8_t c)
{
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return 2;
    if (c >= 0xe0 && c <= 0xef)
        return 3;
    if (c >= 0xf0 && c <= 0xf4)
        return 4;
    return 0;
}

/* Whether s[1..n) can continue the sequence led by s[0] (strict UTF-8: the second byte's
 * range depends on the lead, which excludes overlongs, surrogates and > U+10FFFF). */
static bool cont_ok(const uint8_t *s, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        uint8_t lo = 0x80, hi = 0xbf;
        if (i == 1) {
            if (s[0] == 0xe0)
                lo = 0xa0;
            else if (s[0] == 0xed)
                hi = 0x9f;
            else if (s[0] == 0xf0)
                lo = 0x90;
            else if (s[0] == 0xf4)
                hi = 0x8f;
        }
        if (s[i] < lo || s[i] > hi)
            return false;
    }
    return true;
}

size_t tokenizer_utf8_complete(const char *str, size_t len)
{
    const uint8_t *s = (const uint8_t *)str;
    /* look back at most 3 bytes for a lead byte whose sequence is unfinished */
    for (size_t back = 1; back <= 3 && back <= len; back++) {
        uint8_t c = s[len - back];
        if ((c & 0xc0) == 0x80)
            continue;
        size_t need = seq_len(c);
        if (need > back && cont_ok(s + len - back, back))
            return len - back;
        break;
    }
    return len;
}

static int reserve(detok_t *d, size_t n)
{
    if (n <= d->cap)
        return 0;
    size_t cap = d->cap ? d->cap : 64;
    while (cap < n)
        cap *= 2;
    char *o = realloc(d->out, cap);
    if (!o)
        return -ENOMEM;
    d->out = o;
    d->cap = cap;
    return 0;
}

/* Appends bytes b[0..n) to the output, validating; holds an unfinished tail when !final. */
static size_t feed(detok_t *d, size_t o, const uint8_t *b, size_t n, bool final)
{
    for (size_t i = 0; i < n;) {
        size_t need = seq_len(b[i]);
        size_t have = n - i < need ? n - i : need;
        if (need && cont_ok(b + i, have)) {
            if (have == need) {
                memcpy(d->out + o, b + i, need);
                o += need;
                i += need;
                continue;
            }
            if (!final) { /* valid so far, cut by the token boundary: keep for later */
                memcpy(d->held, b + i, have);
                d->nheld = have;
                return o;
            }
        }
        memcpy(d->out + o, "\xef\xbf\xbd", 3);
        o += 3;
        i++;
    }
    return o;
}

static int emit(detok_t *d, const char *p, size_t n, bool final, const char **ret_text,
                size_t *ret_len)
{
    /* worst case every byte becomes U+FFFD */
    int r = reserve(d, 3 * (n + d->nheld) + 4);
    if (r < 0)
        return r;
    uint8_t tmp[4];
    size_t nh = d->nheld, o = 0;
    memcpy(tmp, d->held, nh);
    d->nheld = 0;
    if (nh) {
        /* complete the held sequence with the first bytes of p, then go on with p */
        size_t need = seq_len(tmp[0]), take = need - nh;
        if (take > n)
            take = n;
        memcpy(tmp + nh, p, take);
        if (!cont_ok(tmp, nh + take)) {
            memcpy(d->out, "\xef\xbf\xbd", 3); /* the held lead is dead; re-scan the rest */
            o = feed(d, 3, tmp + 1, nh - 1, true);
        } else if (nh + take == need) {
            memcpy(d->out, tmp, need);
            o = need;
            p += take;
            n -= take;
        } else if (!final) {
            memcpy(d->held, tmp, nh + take);
            d->nheld = nh + take;
            *ret_text = d->out;
            *ret_len = 0;
            return 0;
        } else {
            o = feed(d, 0, tmp, nh + take, true);
            p += take;
            n -= take;
        }
    }
    o = feed(d, o, (const uint8_t *)p, n, final);
    *ret_text = d->out;
    *ret_len = o;
    return 0;
}

int detok_push(detok_t *d, int32_t id, const char **ret_text, size_t *ret_len)
{
    const char *p;
    size_t n;
    int r = tokenizer_piece(d->t, id, &p, &n);
    if (r < 0)
        return r;
    if (!(d->flags & DETOK_SPECIAL) && tokenizer_is_control(d->t, id))
        n = 0;
    if (n && !d->started) {
        d->started = true;
        if ((d->flags & DETOK_STRIP_SPACE) && d->t->add_space_prefix && p[0] == ' ') {
            p++;
            n--;
        }
    }
    return emit(d, p, n, false, ret_text, ret_len);
}

int detok_flush(detok_t *d, const char **ret_text, size_t *ret_len)
{
    return emit(d, "", 0, true, ret_text, ret_len);
}

int tokenizer_decode_alloc(const tokenizer_t *t, const int32_t *ids, size_t n, unsigned flags,
                           char **ret, size_t *ret_len)
{
    detok_t *d = NULL;
    char *s = NULL;
    size_t len = 0, cap = 0;
    const char *p;
    size_t pn;
    int r = detok_new(t, flags, &d);
    if (r < 0)
        return r;
    for (size_t i = 0; i <= n; i++) {
        r = i < n ? detok_push(d, ids[i], &p, &pn) : detok_flush(d, &p, &pn);
        if (r < 0)
            goto fail;
        if (len + pn + 1 > cap) {
            size_t nc = cap ? cap : 256;
            while (nc < len + pn + 1)
                nc *= 2;
            char *ns = realloc(s, nc);
            if (!ns) {
                r = -ENOMEM;
                goto fail;
            }
            s = ns;
            cap = nc;
        }
        memcpy(s + len, p, pn);
        len += pn;
    }
    s[len] = 0;
    detok_free(d);
    *ret = s;
    *ret_len = len;
    return 0;
fail:
    free(s);
    detok_free(d);
    return r;
}
