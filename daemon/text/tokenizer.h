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

/* Builds the tokenizer of g. -ENOTSUP (unknown tokenizer model or pre-tokenizer),
 * -EINVAL (inconsistent metadata), with a one-line reason in err. */
int tokenizer_new(const gguf_t *g, tokenizer_t **ret, char *err, size_t errlen);
tokenizer_t *tokenizer_free(tokenizer_t *t);

/* Encodes len bytes of text. Returns the number of ids the full encoding has (which may be
 * larger than max_ids: then only max_ids were written; call again with more room) or
 * -errno. */
int tokenizer_encode(const tokenizer_t *t, const char *text, size_t len, unsigned flags,
                     int32_t *ids, size_t max_ids);

/* Raw bytes of token id (byte-level and byte-fallback tokens decoded, SPM's U+2581 made a
 * space). Returns the byte length (may exceed len: nothing is truncated mid-way then, call
 * again) or -EINVAL for an id out of range. Special tokens render their text. */
int tokenizer_token_to_piece(const tokenizer_t *t, int32_t id, char *buf, size_t len);

uint32_t tokenizer_n_vocab(const tokenizer_t *t);
int32_t tokenizer_bos(const tokenizer_t *t); /* -1 when none */
int32_t tokenizer_eos(const tokenizer_t *t); /* -1 when none */
/* End of generation: EOS, EOT, <|im_end|> and the like. */
bool tokenizer_is_eog(const tokenizer_t *t, int32_t id);
