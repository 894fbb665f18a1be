/* Tokenizers read from GGUF metadata (tokenizer.ggml.*): byte-level BPE (gpt2 and the
 * pre-tokenizer variants named by tokenizer.ggml.pre) and SentencePiece-style (llama).
 * Semantics are llama.cpp's (src/llama-vocab.cpp) so ids match the model's own tokenizer.
 * A tokenizer_t is immutable after tokenizer_new and safe to share between threads. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/gguf.h"

typedef struct tokenizer tokenizer_t;

enum tokenizer_flags {
    TOKENIZER_ADD_SPECIAL = 1 << 0,   /* add BOS/EOS as the model's metadata asks */
    TOKENIZER_PARSE_SPECIAL = 1 << 1, /* match special/control token text in the input */
};

/* Token attributes (from tokenizer.ggml.token_type, plus llama.cpp's by-name fix-ups). */
enum tokenizer_attr {
    TOKENIZER_ATTR_UNDEFINED = 0,
    TOKENIZER_ATTR_UNKNOWN = 1 << 0,
    TOKENIZER_ATTR_UNUSED = 1 << 1,
    TOKENIZER_ATTR_NORMAL = 1 << 2,
    TOKENIZER_ATTR_CONTROL = 1 << 3,
    TOKENIZER_ATTR_USER_DEFINED = 1 << 4,
    TOKENIZER_ATTR_BYTE = 1 << 5,
    TOKENIZER_ATTR_LSTRIP = 1 << 6, /* whitespace before the token is dropped when parsed */
    TOKENIZER_ATTR_RSTRIP = 1 << 7, /* whitespace after the token is dropped when parsed */
};

enum tokenizer_kind {
    TOKENIZER_SPM, /* tokenizer.ggml.model "llama" */
    TOKENIZER_BPE, /* tokenizer.ggml.model "gpt2" */
};

/* Builds the tokenizer of g. -ENOTSUP (unknown tokenizer model or pre-tokenizer),
 * -EINVAL (inconsistent metadata), with a one-line reason in err. */
int tokenizer_new(const gguf_t *g, tokenizer_t **ret, char *err, size_t errlen);
tokenizer_t *tokenizer_free(tokenizer_t *t);

/* Encodes len bytes of text. Returns the number of ids the full encoding has (which may be
 * larger than max_ids: then only max_ids were written; call again with more room) or
 * -errno. */
int tokenizer_encode(const tokenizer_t *t, const char *text, size_t len, unsigned flags,
                     int32_t *ids, size_t max_ids);

/* The same into a buffer it allocates (*ret_ids, free() it; *ret_n ids). */
int tokenizer_encode_alloc(const tokenizer_t *t, const char *text, size_t len, unsigned flags,
                           int32_t **ret_ids, size_t *ret_n);

/* Raw bytes of token id (byte-level and byte-fallback tokens decoded, SPM's U+2581 made a
 * space). Returns the byte length (may exceed len: nothing is truncated mid-way then, call
 * again) or -EINVAL for an id out of range. Special tokens render their text. */
int tokenizer_token_to_piece(const tokenizer_t *t, int32_t id, char *buf, size_t len);

/* The same without copying: *ret points into t (not NUL-terminated), valid while t lives. */
int tokenizer_piece(const tokenizer_t *t, int32_t id, const char **ret, size_t *ret_len);

/* The vocabulary text of id as stored in the file (byte-level or U+2581 form). */
int tokenizer_token_text(const tokenizer_t *t, int32_t id, const char **ret, size_t *ret_len);
/* Id whose vocabulary text is exactly text[0..len), or -ENOENT. */
int32_t tokenizer_find(const tokenizer_t *t, const char *text, size_t len);
unsigned tokenizer_token_attr(const tokenizer_t *t, int32_t id); /* 0 when out of range */

uint32_t tokenizer_n_vocab(const tokenizer_t *t);
enum tokenizer_kind tokenizer_kind(const tokenizer_t *t);
const char *tokenizer_pre_name(const tokenizer_t *t); /* "" for SPM */
/* The tokenizer.ggml.pre values this build knows, as space-separated names of group i
 * (names in one group share one pre-tokenizer); NULL past the last group. */
const char *tokenizer_pre_group(size_t i);
int32_t tokenizer_bos(const tokenizer_t *t); /* -1 when none */
int32_t tokenizer_eos(const tokenizer_t *t); /* -1 when none */
int32_t tokenizer_eot(const tokenizer_t *t); /* -1 when none */
bool tokenizer_add_bos(const tokenizer_t *t); /* TOKENIZER_ADD_SPECIAL adds a BOS */
bool tokenizer_add_eos(const tokenizer_t *t);
/* End of generation: EOS, EOT, <|im_end|> and the like. */
bool tokenizer_is_eog(const tokenizer_t *t, int32_t id);
/* True for control and unknown tokens: the ones a text stream does not show. */
bool tokenizer_is_control(const tokenizer_t *t, int32_t id);

/* ---- Incremental detokenizer ----
 * Fed token ids one at a time, it returns the text they add, always whole UTF-8 code points:
 * the bytes of a code point cut across tokens (byte-fallback or byte-level pieces) are held
 * until it is complete. Bytes that can never form a valid code point come out as U+FFFD, so
 * the output is always valid UTF-8 (what a JSON stream needs). One per stream; not shared. */
typedef struct detok detok_t;

enum detok_flags {
    DETOK_SPECIAL = 1 << 0,     /* render control tokens' text (default: they add nothing) */
    DETOK_STRIP_SPACE = 1 << 1, /* SPM: drop the one space the encoder puts before the text
                                 * (set when the stream starts at the start of a prompt) */
};

int detok_new(const tokenizer_t *t, unsigned flags, detok_t **ret);
detok_t *detok_free(detok_t *d);
/* Adds token id. *ret_text (not NUL-terminated; may be length 0) stays valid until the next
 * call on d. -EINVAL for an id out of range, -ENOMEM. */
int detok_push(detok_t *d, int32_t id, const char **ret_text, size_t *ret_len);
/* End of stream: what is still held (an unfinished code point) as U+FFFD. */
int detok_flush(detok_t *d, const char **ret_text, size_t *ret_len);
/* Forgets the held bytes and the leading-space state, as a new stream. */
void detok_reset(detok_t *d);

/* Whole-sequence convenience: the text of n ids (same rules as a detok stream with flags),
 * NUL-terminated, malloc'ed into *ret (free() it), length in *ret_len. */
int tokenizer_decode_alloc(const tokenizer_t *t, const int32_t *ids, size_t n, unsigned flags,
                           char **ret, size_t *ret_len);

/* Length of the longest prefix of s[0..len) made of whole UTF-8 code points, holding back
 * a trailing sequence that is valid so far but incomplete (at most 3 bytes). */
size_t tokenizer_utf8_complete(const char *s, size_t len);
