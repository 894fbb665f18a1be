/* Internals shared by tokenizer.c (loading, special tokens, pieces), tokenizer-bpe.c
 * (pre-tokenizer regexes and rank merges) and tokenizer-spm.c (score merges). Not a
 * public header: only daemon/text/ includes it. */
#pragma once
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdint.h>

#include "text/tokenizer.h"

/* Open-addressing hash from byte strings to small integers. Keys live in a caller-owned
 * blob (key i is blob[off[i] .. off[i] + len[i])); the value of key i is i. Insertion keeps
 * the first of equal keys, as llama.cpp's map emplace does. */
typedef struct strmap {
    uint32_t *slot; /* [mask + 1]: key index + 1, 0 = empty */
    uint32_t mask;
    const char *blob;
    const uint32_t *off, *len;
} strmap_t;

int strmap_init(strmap_t *m, uint32_t n, const char *blob, const uint32_t *off,
                const uint32_t *len);
void strmap_done(strmap_t *m);
void strmap_insert(strmap_t *m, uint32_t i);
/* Index of the key equal to a[0..na) (+ ' ' + b[0..nb) when b is not NULL), or -1. */
int32_t strmap_find(const strmap_t *m, const char *a, size_t na, const char *b, size_t nb);

#define TOK_MAX_REGEX 8

struct tokenizer {
    enum tokenizer_kind kind;
    uint32_t n_vocab;
    char *text;          /* all token texts back to back */
    uint32_t *text_off;  /* [n_vocab] */
    uint32_t *text_len;  /* [n_vocab] */
    float *score;        /* [n_vocab] */
    uint8_t *attr;       /* [n_vocab] enum tokenizer_attr */
    uint8_t *eog;        /* [n_vocab] 1 = ends generation */
    char *piece;         /* decoded pieces back to back (special text rendered) */
    uint32_t *piece_off; /* [n_vocab + 1] */
    strmap_t vocab;      /* text -> id */

    /* BPE merges: "left right" strings -> rank */
    char *merge_text;
    uint32_t *merge_off, *merge_len;
    uint32_t n_merges;
    strmap_t merges;

    int32_t special_bos, special_eos, special_eot, special_eom, special_unk, special_pad;
    bool add_bos, add_eos, add_space_prefix, ignore_merges, escape_whitespace, byte_encode;
    bool spm_word_split; /* no token has U+2581 after another character (tokenizer-spm.c) */

    /* ids of control/user-defined/unknown tokens, longest text first (partitioning) */
    int32_t *special;
    uint32_t n_special;

    char pre[64]; /* tokenizer.ggml.pre */
    pcre2_code *re[TOK_MAX_REGEX];
    unsigned n_re;

    int32_t byte_token[256]; /* SPM: id of <0xXX> (or the 1-byte token), -1 when none */
    int16_t bytelevel_dec[324]; /* GPT-2 byte-level code point -> byte */
};

/* A growable id vector; every tokenizer path appends to one. */
typedef struct idvec {
    int32_t *v;
    size_t n, cap;
} idvec_t;

int idvec_push(idvec_t *o, int32_t id);

/* A sub-range of the text being tokenized. */
typedef struct span {
    uint32_t off, len;
} span_t;

/* tokenizer-bpe.c */
int tokenizer_bpe_setup(tokenizer_t *t, const char *pre, char *err, size_t errlen);
void tokenizer_bpe_teardown(tokenizer_t *t);
int tokenizer_bpe_encode(const tokenizer_t *t, const char *text, size_t len, idvec_t *out);
uint32_t tokenizer_bytelevel_cp(uint8_t b);

/* tokenizer-spm.c: text is already escaped (spaces as U+2581). */
int tokenizer_spm_encode(const tokenizer_t *t, const char *text, size_t len, idvec_t *out);

/* UTF-8 helpers (tokenizer.c) */
static inline size_t tok_utf8_len(uint8_t c)
{
    /* llama.cpp's unicode_len_utf8: by the top four bits; a stray continuation byte is 1 */
    static const uint8_t lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[c >> 4];
}
size_t tok_utf8_put(char *dst, uint32_t cp);
