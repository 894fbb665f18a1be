/* Byte-level BPE (tokenizer.ggml.model "gpt2"): the pre-tokenizer named by
 * tokenizer.ggml.pre splits text into words with a list of regexes (each one applied to
 * the pieces the previous one left: matches and the text between them are all pieces, as
 * in llama.cpp's unicode_regex_split), each word's bytes are mapped to GPT-2's printable
 * byte alphabet, and adjacent symbols are merged lowest merge rank first until no listed
 * merge applies (llama.cpp's llm_tokenizer_bpe_session). The regexes are llama.cpp's
 * (src/llama-vocab.cpp, llm_tokenizer_bpe), which are the ones of each model's
 * tokenizer.json; PCRE2 runs them in UTF mode with Unicode properties (\p{L}, \p{N}, \s).
 * Merging uses a binary heap of candidate pairs keyed (rank, left position), with stale
 * pairs skipped on pop, so a word of n symbols costs O(n log n), not O(n^2).
 * Input that is not valid UTF-8 has each bad byte replaced by U+FFFD first, as llama.cpp's
 * unicode_cpts_from_utf8 does. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer-private.h"

/* ---- pre-tokenizers ---- */

/* Shared pieces of the common patterns. The contraction group is spelled case by case
 * because llama.cpp rewrote tokenizer.json's (?i:'s|...) that way; PCRE2 would take either. */
#define CONTR "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
#define GPT2_RE "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define LLAMA3_RE                                                                         \
    CONTR "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"     \
          "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define QWEN2_RE                                                                          \
    CONTR "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"          \
          "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
/* o200k (gpt-4o, gpt-oss, llama4): upper-then-lower letter runs, written with lookaheads
 * as llama.cpp does */
#define GPT4O_RE                                                                          \
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+" CONTR "?"      \
    "|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*" CONTR "?"     \
    "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define DEEPSEEK3_RE                                                                      \
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?"  \
    "[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
/* Kimi-K2: Moonshot's own tiktoken pat_str (the model's tokenizer, the authority here):
 * Han runs alone, other letters split as o200k does. llama.cpp runs a hand-written version
 * (unicode.cpp, unicode_regex_split_custom_kimi_k2) that keeps camelCase words whole
 * ("getUserName"), where the pattern splits them ("get" "User" "Name"). PCRE2 has no class
 * intersection, so "[\p{L}&&[^\p{Han}]]" becomes "(?!\p{Han})[\p{L}]". */
#define KIMI_LU "(?:(?!\\p{Han})[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}])"
#define KIMI_LL "(?:(?!\\p{Han})[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}])"
#define KIMI_RE                                                                           \
    "\\p{Han}+|[^\\r\\n\\p{L}\\p{N}]?" KIMI_LU "*" KIMI_LL "+" CONTR "?"                  \
    "|[^\\r\\n\\p{L}\\p{N}]?" KIMI_LU "+" KIMI_LL "*" CONTR "?"                           \
    "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

struct pre_def {
    const char *names; /* space-separated tokenizer.ggml.pre values */
    const char *re[5];
    bool ignore_merges, add_bos, no_bos;
};

/* Source: llama.cpp src/llama-vocab.cpp (pre-type names in llama_vocab::impl::load, regexes
 * in llm_tokenizer_bpe). Only the defaults that differ from plain BPE are flagged. */
static const struct pre_def pre_defs[] = {
    {"default",
     {"[\\p{P}\\$\\+<=>\\^~\\|]+", GPT2_RE, "\\p{N}+", "[0-9][0-9][0-9]"}, false, false, false},
    {"llama3 llama-v3 llama-bpe falcon3 falcon-h1 pixtral midm-2.0 lfm2", {LLAMA3_RE}, true,
     true, false},
    {"dbrx smaug-bpe", {LLAMA3_RE}, false, false, false},
    {"gpt-2 phi-2 jina-es jina-de gigachat jina-v2-es jina-v2-de a.x-4.0 mellum modern-bert "
     "jina-v1-en jina-v2-code roberta-bpe mpt olmo jais trillion granite-docling exaone4",
     {GPT2_RE}, false, false, false},
    {"starcoder refact command-r smollm codeshell exaone minerva-7b mellum2",
     {"\\p{N}", GPT2_RE}, false, false, false},
    {"falcon", {"[\\p{P}\\$\\+<=>\\^~\\|`]+", GPT2_RE, "[0-9][0-9][0-9]"}, false, false, false},
    {"qwen2 deepseek-r1-qwen kormo f2llmv2 megrez stablelm2 hunyuan solar-open", {QWEN2_RE},
     false, false, false},
    {"qwen35",
     {CONTR "|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*"
            "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     false, false, false},
    {"deepseek-llm",
     {"[\r\n]",
      "\\s?[A-Za-z\xc2\xb5\xc3\x80-\xc3\x96\xc3\x98-\xc3\xb6\xc3\xb8-\xc6\xba\xc6\xbc-\xc6\xbf"
      "\xc7\x84-\xca\x93\xca\x95-\xca\xaf\xcd\xb0-\xcd\xb3\xcd\xb6\xcd\xb7\xcd\xbb-\xcd\xbd"
      "\xcd\xbf\xce\x86\xce\x88-\xce\x8a\xce\x8c\xce\x8e-\xce\xa1\xce\xa3-\xcf\xb5\xcf\xb7-"
      "\xd2\x81\xd2\x8a-\xd4\xaf\xd4\xb1-\xd5\x96\xe1\x82\xa0-\xe1\x83\x85\xe1\x8e\xa0-"
      "\xe1\x8f\xb5\xe1\x8f\xb8-\xe1\x8f\xbd\xe1\xb2\x90-\xe1\xb2\xba\xe1\xb2\xbd-\xe1\xb2\xbf"
      "\xe1\xb4\x80-\xe1\xb4\xab\xe1\xb5\xab-\xe1\xb5\xb7\xe1\xb5\xb9-\xe1\xb6\x9a\xe1\xb8\x80-"
      "\xe1\xbc\x95\xe1\xbc\x98-\xe1\xbc\x9d\xe1\xbc\xa0-\xe1\xbd\x85\xe1\xbd\x88-\xe1\xbd\x8d"
      "\xe1\xbd\x90-\xe1\xbd\x97\xe1\xbd\x99\xe1\xbd\x9b\xe1\xbd\x9d\xe1\xbd\x9f-\xe1\xbd\xbd"
      "\xe1\xbe\x80-\xe1\xbe\xb4\xe1\xbe\xb6-\xe1\xbe\xbc\xe1\xbe\xbe\xe1\xbf\x82-\xe1\xbf\x84"
      "\xe1\xbf\x86-\xe1\xbf\x8c\xe1\xbf\x90-\xe1\xbf\x93\xe1\xbf\x96-\xe1\xbf\x9b\xe1\xbf\xa0-"
      "\xe1\xbf\xac\xe1\xbf\xb2-\xe1\xbf\xb4\xe1\xbf\xb6-\xe1\xbf\xbc\xe2\x84\x82\xe2\x84\x87"
      "\xe2\x84\x8a-\xe2\x84\x93\xe2\x84\x95\xe2\x84\x99-\xe2\x84\x9d\xe2\x84\xa4\xe2\x84\xa6"
      "\xe2\x84\xa8\xe2\x84\xaa-\xe2\x84\xad\xe2\x84\xaf-\xe2\x84\xb4\xe2\x84\xb9\xe2\x84\xbc-"
      "\xe2\x84\xbf\xe2\x85\x85-\xe2\x85\x89\xe2\x85\x8e\xe2\x86\x83\xe2\x86\x84\xe2\xb0\x80-"
      "\xe2\xb1\xbb\xe2\xb1\xbe-\xe2\xb3\xa4\xe2\xb3\xab-\xe2\xb3\xae\xe2\xb3\xb2\xe2\xb3\xb3"
      "\xea\x99\x80-\xea\x99\xad\xea\x9a\x80-\xea\x9a\x9b\xea\x9c\xa2-\xea\x9d\xaf\xea\x9d\xb1-"
      "\xea\x9e\x87\xea\x9e\x8b-\xea\x9e\x8e\xea\xad\xb0-\xea\xae\xbf\xef\xac\x80-\xef\xac\x86"
      "\xef\xac\x93-\xef\xac\x97\xef\xbc\xa1-\xef\xbc\xba\xef\xbd\x81-\xef\xbd\x9a\xf0\x90\x90"
      "\x80-\xf0\x90\x91\x8f\xf0\x90\x92\xb0-\xf0\x90\x93\x93\xf0\x90\x93\x98-\xf0\x90\x93\xbb"
      "\xf0\x90\xb2\x80-\xf0\x90\xb2\xb2\xf0\x90\xb3\x80-\xf0\x90\xb3\xb2\xf0\x91\xa2\xa0-"
      "\xf0\x91\xa3\x9f\xf0\x9e\xa4\x80-\xf0\x9e\xa5\x83]+",
      "\\s?[!-/:-~\xef\xbc\x81-\xef\xbc\x8f\xef\xbc\x9a-\xef\xbd\x9e\xe2\x80\x98-\xe2\x80\x9f"
      "\xe3\x80\x80-\xe3\x80\x82]+",
      "\\s+$", "[\xe4\xb8\x80-\xe9\xbe\xa5\xe0\xa0\x80-\xe4\xb8\x80\xea\xb0\x80-\xed\x9f\xbf]+"},
     false, false, false},
    {"deepseek-coder",
     {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+",
      "[\xe4\xb8\x80-\xe9\xbe\xa5\xe0\xa0\x80-\xe4\xb8\x80\xea\xb0\x80-\xed\x9f\xbf]+", "\\p{N}"},
     false, false, false},
    {"deepseek-v3 hunyuan-dense joyai-llm hy_v4",
     {"\\p{N}{1,3}", "[\xe4\xb8\x80-\xe9\xbe\xa5\xe3\x81\x80-\xe3\x82\x9f\xe3\x82\xa0-"
                     "\xe3\x83\xbf]+",
      DEEPSEEK3_RE},
     false, false, false},
    {"poro-chat bloom gpt3-finnish",
     {" ?[^(\\s|.,!?\xe2\x80\xa6\xe3\x80\x82\xef\xbc\x8c\xe3\x80\x81\xe0\xa5\xa4\xdb\x94\xd8\x8c)]+"},
     false, false, false},
    {"viking",
     {" ?[^(\\s|.,!?\xe2\x80\xa6\xe3\x80\x82\xef\xbc\x8c\xe3\x80\x81\xe0\xa5\xa4\xdb\x94\xd8\x8c)]+",
      "\\p{N}"},
     false, false, false},
    {"glm4 chatglm-bpe", {LLAMA3_RE}, false, false, true},
    {"tekken",
     {"[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+"
      "|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*"
      "|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     true, true, false},
    {"chameleon",
     {"<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\\t\\n]|    |  )",
      "\\p{N}", "[\\p{P}!-/:-@\\[-`{-~]"},
     false, true, false},
    {"gpt-4o llama4 kanana2 talkie minimax-m2", {GPT4O_RE}, false, false, false},
    {"bailingmoe bailingmoe2 llada-moe",
     {"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"
      "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"},
     false, false, false},
    {"seed-coder",
     {CONTR "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+"
            "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     false, false, false},
    {"grok-2", {QWEN2_RE}, false, false, false},
    {"ufakzeka",
     {"[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+"
      "|\\s+(?!\\S)|\\s+"},
     false, false, false},
    {"exaone-moe",
     {CONTR "|[^\\r\\n\\p{L}\\p{N}]?(?:\\p{L}\\p{M}*(?: \\p{L}\\p{M}*)*)+|\\p{N}"
            "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]?|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"},
     false, false, false},
    {"minicpm5",
     {"\\p{N}{1,3}", CONTR "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
                           "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     true, false, false},
    {"superbpe", {"\\p{N}+", "(?=(\\d{3})+(?!\\d))"}, false, false, false},
    {"kimi-k2", {KIMI_RE}, false, false, false},
};

const char *tokenizer_pre_group(size_t i)
{
    return i < sizeof(pre_defs) / sizeof(*pre_defs) ? pre_defs[i].names : NULL;
}

static bool name_in(const char *names, const char *pre)
{
    size_t n = strlen(pre);
    for (const char *p = names; *p;) {
        const char *e = strchr(p, ' ');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == n && !memcmp(p, pre, n))
            return true;
        if (!e)
            break;
        p = e + 1;
    }
    return false;
}

int tokenizer_bpe_setup(tokenizer_t *t, const char *pre, char *err, size_t errlen)
{
    const struct pre_def *d = NULL;
    for (size_t i = 0; i < sizeof(pre_defs) / sizeof(*pre_defs) && !d; i++)
        if (name_in(pre_defs[i].names, pre))
            d = &pre_defs[i];
    if (!d) {
        snprintf(err, errlen,
                 "tokenizer.ggml.pre '%.40s' is not supported (a pre-tokenizer llama.cpp "
                 "knows but this build does not, or a new one)", pre);
        return -ENOTSUP;
    }
    t->ignore_merges = d->ignore_merges;
    if (d->add_bos)
        t->add_bos = true;
    if (d->no_bos)
        t->special_bos = -1;
    for (unsigned i = 0; i < 5 && d->re[i]; i++) {
        int code;
        PCRE2_SIZE at;
        /* UCP: \s, \d, \w and POSIX classes follow Unicode; DOLLAR_ENDONLY: "$" is the end
         * of the piece as in ECMAScript regexes, not also before a final newline */
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)d->re[i], PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY |
                                           PCRE2_NO_UTF_CHECK,
                                       &code, &at, NULL);
        if (!re) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(code, msg, sizeof(msg));
            snprintf(err, errlen, "pre-tokenizer '%.40s' regex %u at %zu: %s", pre, i,
                     (size_t)at, (const char *)msg);
            return -EINVAL;
        }
        (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* the interpreter also works */
        t->re[t->n_re++] = re;
    }
    return 0;
}

void tokenizer_bpe_teardown(tokenizer_t *t)
{
    for (unsigned i = 0; i < t->n_re; i++)
        pcre2_code_free(t->re[i]);
    t->n_re = 0;
}

/* GPT-2's bytes_to_unicode: printable bytes stand for themselves, the other 68 bytes map,
 * in byte order, to U+0100 onwards (so a space is U+0120 'Ġ', a newline U+010A 'Ċ'). */
uint32_t tokenizer_bytelevel_cp(uint8_t b)
{
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174)
        return b;
    if (b <= 32)
        return 256u + b;
    if (b <= 160)
        return 256u + 33 + (b - 127u);
    return 256u + 33 + 34; /* 173 */
}

/* Length of the valid UTF-8 sequence at s (strict: no overlongs, surrogates or code points
 * past U+10FFFF, which PCRE2 would refuse), 0 when the byte at s starts none. */
static size_t utf8_valid(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    if (c < 0x80)
        return 1;
    size_t l = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
    if (!l || c > 0xf4 || l > n)
        return 0;
    for (size_t i = 1; i < l; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if (l == 3 && ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f)))
        return 0;
    if (l == 4 && ((c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] > 0x8f)))
        return 0;
    return l;
}

/* ---- splitting ---- */

typedef struct spanvec {
    span_t *v;
    size_t n, cap;
} spanvec_t;

static int span_push(spanvec_t *s, size_t off, size_t len)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        span_t *v = realloc(s->v, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = (span_t){(uint32_t)off, (uint32_t)len};
    return 0;
}

/* Splits one piece with one regex: matches and the gaps between them become pieces. */
static int split_one(const pcre2_code *re, const char *text, span_t sp, spanvec_t *out,
                     pcre2_match_data *md, pcre2_match_context *mc)
{
    PCRE2_SPTR subj = (PCRE2_SPTR)(text + sp.off);
    size_t n = sp.len, pos = 0, start = 0;
    int r;
    while (pos <= n) {
        int rc = pcre2_match(re, subj, n, pos, PCRE2_NO_UTF_CHECK, md, mc);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) /* resource limits (JIT stack, heap): refuse rather than guess */
            return rc == PCRE2_ERROR_NOMEMORY ? -ENOMEM : -E2BIG;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (ms > start && (r = span_push(out, sp.off + start, ms - start)) < 0)
            return r;
        if (me > ms && (r = span_push(out, sp.off + ms, me - ms)) < 0)
            return r;
        start = me > start ? me : start;
        if (me == ms) { /* an empty match only cuts; step past one character */
            if (ms >= n)
                break;
            pos = ms + tok_utf8_len(subj[ms]);
        } else {
            pos = me;
        }
    }
    if (start < n && (r = span_push(out, sp.off + start, n - start)) < 0)
        return r;
    return 0;
}

/* ---- merging ---- */

typedef struct sym {
    int32_t prev, next;
    uint32_t off, n; /* bytes of the encoded word; n == 0 once merged away */
} sym_t;

typedef struct pair {
    int32_t left, right, rank;
    uint32_t size;
} pair_t;

typedef struct bpe_scratch {
    char *w; /* the current word in byte-level form */
    size_t wcap;
    sym_t *sym;
    size_t symcap;
    pair_t *heap;
    size_t nheap, heapcap;
} bpe_scratch_t;

static bool pair_before(const pair_t *a, const pair_t *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static int heap_push(bpe_scratch_t *s, pair_t p)
{
    if (s->nheap == s->heapcap) {
        size_t cap = s->heapcap ? s->heapcap * 2 : 64;
        pair_t *h = realloc(s->heap, cap * sizeof(*h));
        if (!h)
            return -ENOMEM;
        s->heap = h;
        s->heapcap = cap;
    }
    size_t i = s->nheap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pair_before(&p, &s->heap[parent]))
            break;
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = p;
    return 0;
}

static pair_t heap_pop(bpe_scratch_t *s)
{
    pair_t top = s->heap[0], last = s->heap[--s->nheap];
    size_t i = 0, n = s->nheap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && pair_before(&s->heap[c + 1], &s->heap[c]))
            c++;
        if (!pair_before(&s->heap[c], &last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n)
        s->heap[i] = last;
    return top;
}

static int add_pair(const tokenizer_t *t, bpe_scratch_t *s, int32_t l, int32_t r)
{
    if (l < 0 || r < 0)
        return 0;
    const sym_t *a = &s->sym[l], *b = &s->sym[r];
    int32_t rank = strmap_find(&t->merges, s->w + a->off, a->n, s->w + b->off, b->n);
    if (rank < 0)
        return 0;
    return heap_push(s, (pair_t){l, r, rank, a->n + b->n});
}

static int emit_symbol(const tokenizer_t *t, const char *p, size_t n, idvec_t *out)
{
    int32_t id = strmap_find(&t->vocab, p, n, NULL, 0);
    if (id >= 0)
        return idvec_push(out, id);
    /* not in the vocabulary: llama.cpp falls back to one token per byte of the symbol,
     * dropping bytes that have none */
    for (size_t j = 0; j < n; j++) {
        char hex[8];
        if (t->byte_encode)
            id = strmap_find(&t->vocab, p + j, 1, NULL, 0);
        else {
            snprintf(hex, sizeof(hex), "<0x%02X>", (uint8_t)p[j]);
            id = strmap_find(&t->vocab, hex, 6, NULL, 0);
        }
        int r;
        if (id >= 0 && (r = idvec_push(out, id)) < 0)
            return r;
    }
    return 0;
}

static int bpe_word(const tokenizer_t *t, bpe_scratch_t *s, const char *word, size_t len,
                    idvec_t *out)
{
    int r;
    if (!len)
        return 0;
    /* byte-level form: at most 2 UTF-8 bytes per input byte */
    if (2 * len > s->wcap) {
        char *w = realloc(s->w, 2 * len);
        if (!w)
            return -ENOMEM;
        s->w = w;
        s->wcap = 2 * len;
    }
    size_t n = 0;
    if (t->byte_encode) {
        for (size_t i = 0; i < len; i++)
            n += tok_utf8_put(s->w + n, tokenizer_bytelevel_cp((uint8_t)word[i]));
    } else {
        memcpy(s->w, word, len);
        n = len;
    }
    if (t->ignore_merges) { /* llama3 and others: a word that is a token stays whole */
        int32_t id = strmap_find(&t->vocab, s->w, n, NULL, 0);
        if (id >= 0)
            return idvec_push(out, id);
    }
    if (n > s->symcap) {
        sym_t *sy = realloc(s->sym, n * sizeof(*sy));
        if (!sy)
            return -ENOMEM;
        s->sym = sy;
        s->symcap = n;
    }
    int32_t nsym = 0;
    for (size_t off = 0; off < n; nsym++) {
        size_t l = tok_utf8_len((uint8_t)s->w[off]);
        if (l > n - off)
            l = n - off;
        s->sym[nsym] = (sym_t){nsym - 1, off + l == n ? -1 : nsym + 1, (uint32_t)off,
                               (uint32_t)l};
        off += l;
    }
    s->nheap = 0;
    for (int32_t i = 1; i < nsym; i++)
        if ((r = add_pair(t, s, i - 1, i)) < 0)
            return r;
    while (s->nheap) {
        pair_t p = heap_pop(s);
        sym_t *a = &s->sym[p.left], *b = &s->sym[p.right];
        /* stale: one side was merged away or grew since the pair was queued */
        if (!a->n || !b->n || a->n + b->n != p.size)
            continue;
        a->n += b->n;
        b->n = 0;
        a->next = b->next;
        if (b->next >= 0)
            s->sym[b->next].prev = p.left;
        if ((r = add_pair(t, s, a->prev, p.left)) < 0 ||
            (r = add_pair(t, s, p.left, a->next)) < 0)
            return r;
    }
    for (int32_t i = 0; i >= 0 && nsym; i = s->sym[i].next)
        if ((r = emit_symbol(t, s->w + s->sym[i].off, s->sym[i].n, out)) < 0)
            return r;
    return 0;
}

/* Replaces every byte that does not start a valid UTF-8 sequence with U+FFFD. */
static char *sanitize(const char *text, size_t len, size_t *ret_len)
{
    char *o = malloc(3 * len + 1);
    if (!o)
        return NULL;
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        size_t l = utf8_valid((const uint8_t *)text + i, len - i);
        if (l) {
            memcpy(o + n, text + i, l);
            n += l;
            i += l;
        } else {
            memcpy(o + n, "\xef\xbf\xbd", 3);
            n += 3;
            i++;
        }
    }
    *ret_len = n;
    return o;
}

int tokenizer_bpe_encode(const tokenizer_t *t, const char *text, size_t len, idvec_t *out)
{
    char *clean = NULL;
    spanvec_t a = {0}, b = {0};
    bpe_scratch_t s = {0};
    pcre2_match_data *md = NULL;
    pcre2_match_context *mc = NULL;
    pcre2_jit_stack *js = NULL;
    int r = -ENOMEM;

    for (size_t i = 0, l; i < len; i += l)
        if (!(l = utf8_valid((const uint8_t *)text + i, len - i))) {
            if (!(clean = sanitize(text, len, &len)))
                goto done;
            text = clean;
            break;
        }
    if (len > UINT32_MAX) {
        r = -E2BIG;
        goto done;
    }
    md = pcre2_match_data_create(1, NULL);
    mc = pcre2_match_context_create(NULL);
    /* the lookahead groups of the o200k-style patterns recurse per character in JIT code;
     * a private stack lets a long word through instead of failing at the 32 KiB default */
    js = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
    if (!md || !mc || !js)
        goto done;
    pcre2_jit_stack_assign(mc, NULL, js);
    if ((r = span_push(&a, 0, len)) < 0)
        goto done;
    for (unsigned k = 0; k < t->n_re; k++) {
        b.n = 0;
        for (size_t i = 0; i < a.n; i++)
            if ((r = split_one(t->re[k], text, a.v[i], &b, md, mc)) < 0)
                goto done;
        spanvec_t tmp = a;
        a = b;
        b = tmp;
    }
    for (size_t i = 0; i < a.n; i++)
        if ((r = bpe_word(t, &s, text + a.v[i].off, a.v[i].len, out)) < 0)
            goto done;
    r = 0;
done:
    pcre2_jit_stack_free(js);
    pcre2_match_context_free(mc);
    pcre2_match_data_free(md);
    free(s.w);
    free(s.sym);
    free(s.heap);
    free(a.v);
    free(b.v);
    free(clean);
    return r;
}
