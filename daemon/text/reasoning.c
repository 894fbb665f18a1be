/* Streaming reasoning/answer splitter. State machine, one transition per marker found:
 *
 *     CONTENT --open marker--> REASONING --close marker--> CONTENT
 *
 * (reasoning_feed performs both). In each state only that state's markers are looked for
 * (plus, for harmony, the header that starts the final answer, which is dropped). Text
 * after a marker has its leading whitespace dropped ("<think>\n", "</think>\n\n"), as
 * llama.cpp's reasoning parsers trim it. Invariant: the held tail is always a proper prefix
 * of a marker of the current state, so held text is never longer than the longest marker,
 * and everything else fed so far has been reported exactly once, in order. Markers for
 * each format come from the models' chat templates (see chat.c). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "text/chat.h"
#include "text/reasoning.h"

#define MAX_MARKERS 3

struct reasoning {
    enum reasoning_format fmt;
    bool inside;
    bool skip_ws; /* drop whitespace until the next other character */
    const char *open[MAX_MARKERS], *close[MAX_MARKERS], *drop[MAX_MARKERS];
    char *held; /* a possible marker start, from the last feed */
    size_t nheld, heldcap;
    char *buf; /* the parts' text */
    size_t nbuf, bufcap;
    reasoning_part_t *parts;
    size_t *partoff; /* [partcap] where each part starts in buf (buf may move) */
    size_t nparts, partcap;
};

int reasoning_new(enum reasoning_format fmt, bool start_inside, reasoning_t **ret)
{
    reasoning_t *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->fmt = fmt;
    switch (fmt) {
    case REASONING_NONE:
        break;
    case REASONING_THINK:
        r->open[0] = "<think>";
        r->close[0] = "</think>";
        break;
    case REASONING_SEED:
        r->open[0] = "<seed:think>";
        r->close[0] = "</seed:think>";
        break;
    case REASONING_HARMONY:
        r->open[0] = "<|channel|>analysis<|message|>";
        r->close[0] = "<|end|>";
        r->drop[0] = "<|start|>assistant<|channel|>final<|message|>";
        r->drop[1] = "<|channel|>final<|message|>";
        r->drop[2] = "<|start|>assistant";
        break;
    case REASONING_MAGISTRAL:
        r->open[0] = "[THINK]";
        r->close[0] = "[/THINK]";
        break;
    default:
        free(r);
        return -EINVAL;
    }
    r->inside = start_inside && fmt != REASONING_NONE;
    r->skip_ws = r->inside;
    *ret = r;
    return 0;
}

reasoning_t *reasoning_free(reasoning_t *r)
{
    if (!r)
        return NULL;
    free(r->held);
    free(r->buf);
    free(r->parts);
    free(r->partoff);
    free(r);
    return NULL;
}

bool reasoning_inside(const reasoning_t *r) { return r->inside; }

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    void *np = realloc(*p, c * elem);
    if (!np)
        return -ENOMEM;
    *p = np;
    *cap = c;
    return 0;
}

/* Records text as a part of the current kind (whitespace skipped after a marker). The
 * parts get their pointers into buf at the end of the call, once buf has stopped moving. */
static int emit(reasoning_t *r, const char *s, size_t n)
{
    if (r->skip_ws) {
        while (n && (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t')) {
            s++;
            n--;
        }
        if (!n)
            return 0;
        r->skip_ws = false;
    }
    if (!n)
        return 0;
    enum reasoning_kind k = r->inside ? REASONING_PART_REASONING : REASONING_PART_CONTENT;
    int e = grow((void **)&r->buf, &r->bufcap, r->nbuf + n, 1);
    if (e < 0)
        return e;
    memcpy(r->buf + r->nbuf, s, n);
    if (r->nparts && r->parts[r->nparts - 1].kind == k) {
        r->parts[r->nparts - 1].len += n;
    } else {
        size_t cap = r->partcap;
        if ((e = grow((void **)&r->parts, &cap, r->nparts + 1, sizeof(*r->parts))) < 0)
            return e;
        cap = r->partcap;
        if ((e = grow((void **)&r->partoff, &cap, r->nparts + 1, sizeof(*r->partoff))) < 0)
            return e;
        r->partcap = cap;
        r->partoff[r->nparts] = r->nbuf;
        r->parts[r->nparts++] = (reasoning_part_t){k, NULL, n};
    }
    r->nbuf += n;
    return 0;
}

/* The earliest complete marker of the current state in s[0..n): its index in *ret_at,
 * length in *ret_len, and whether it switches state. */
static bool find_marker(const reasoning_t *r, const char *s, size_t n, size_t *ret_at,
                        size_t *ret_len, bool *ret_switch)
{
    const char *const *sets[2] = {r->inside ? r->close : r->open, r->inside ? NULL : r->drop};
    bool found = false;
    for (int k = 0; k < 2; k++) {
        if (!sets[k])
            continue;
        for (int i = 0; i < MAX_MARKERS && sets[k][i]; i++) {
            size_t ml = strlen(sets[k][i]);
            const char *m = memmem(s, n, sets[k][i], ml);
            if (m && (!found || (size_t)(m - s) < *ret_at)) {
                found = true;
                *ret_at = (size_t)(m - s);
                *ret_len = ml;
                *ret_switch = k == 0;
            }
        }
    }
    return found;
}

/* Length of the longest suffix of s[0..n) that is a proper prefix of a current marker. */
static size_t partial_tail(const reasoning_t *r, const char *s, size_t n)
{
    const char *const *sets[2] = {r->inside ? r->close : r->open, r->inside ? NULL : r->drop};
    size_t best = 0;
    for (int k = 0; k < 2; k++) {
        if (!sets[k])
            continue;
        for (int i = 0; i < MAX_MARKERS && sets[k][i]; i++) {
            size_t ml = strlen(sets[k][i]);
            for (size_t l = ml - 1 < n ? ml - 1 : n; l > best; l--)
                if (!memcmp(s + n - l, sets[k][i], l)) {
                    best = l;
                    break;
                }
        }
    }
    return best;
}

static int finish(reasoning_t *r, const reasoning_part_t **ret_parts, size_t *ret_n)
{
    for (size_t i = 0; i < r->nparts; i++)
        r->parts[i].text = r->buf + r->partoff[i];
    *ret_parts = r->parts;
    *ret_n = r->nparts;
    return 0;
}

int reasoning_feed(reasoning_t *r, const char *text, size_t len,
                   const reasoning_part_t **ret_parts, size_t *ret_n)
{
    r->nbuf = r->nparts = 0;
    int e;
    if (r->fmt == REASONING_NONE) {
        if ((e = emit(r, text, len)) < 0)
            return e;
        return finish(r, ret_parts, ret_n);
    }
    /* work on held + text */
    if ((e = grow((void **)&r->held, &r->heldcap, r->nheld + len, 1)) < 0)
        return e;
    if (len)
        memcpy(r->held + r->nheld, text, len);
    size_t n = r->nheld + len, pos = 0;
    r->nheld = 0;
    const char *s = r->held;
    for (;;) {
        size_t at, ml;
        bool sw;
        if (!find_marker(r, s + pos, n - pos, &at, &ml, &sw))
            break;
        if ((e = emit(r, s + pos, at)) < 0)
            return e;
        pos += at + ml;
        if (sw)
            r->inside = !r->inside;
        r->skip_ws = true;
    }
    size_t keep = partial_tail(r, s + pos, n - pos);
    if ((e = emit(r, s + pos, n - pos - keep)) < 0)
        return e;
    if (keep)
        memmove(r->held, s + n - keep, keep);
    r->nheld = keep;
    return finish(r, ret_parts, ret_n);
}

int reasoning_flush(reasoning_t *r, const reasoning_part_t **ret_parts, size_t *ret_n)
{
    r->nbuf = r->nparts = 0;
    int e = emit(r, r->held, r->nheld);
    r->nheld = 0;
    if (e < 0)
        return e;
    return finish(r, ret_parts, ret_n);
}

enum reasoning_format reasoning_format_for_family(int family)
{
    switch (family) {
    case CHAT_GPT_OSS:
        return REASONING_HARMONY;
    case CHAT_MISTRAL_V7_TEKKEN:
        return REASONING_MAGISTRAL;
    default:
        return REASONING_THINK;
    }
}

int reasoning_format_from_name(const char *name, enum reasoning_format *ret)
{
    static const struct {
        const char *name;
        enum reasoning_format fmt;
    } names[] = {{"none", REASONING_NONE},       {"think", REASONING_THINK},
                 {"deepseek", REASONING_THINK},  {"seed", REASONING_SEED},
                 {"harmony", REASONING_HARMONY}, {"gpt-oss", REASONING_HARMONY},
                 {"magistral", REASONING_MAGISTRAL}};
    for (size_t i = 0; i < sizeof(names) / sizeof(*names); i++)
        if (!strcmp(name, names[i].name)) {
            *ret = names[i].fmt;
            return 0;
        }
    return -ENOENT;
}
