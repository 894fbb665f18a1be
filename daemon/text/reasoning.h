/* Reasoning split: a streaming filter that takes a reasoning model's output text piece by
 * piece and reports which parts are reasoning (between <think> and </think>, or the
 * model's equivalent markers) and which are the answer, with the markers removed. A marker
 * may arrive cut across pieces (tokens): text that could still be the start of a marker is
 * held back until it is known. Models whose prompt already opened the block (see
 * chat_starts_in_reasoning) start inside it. One per stream; not shared between threads. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

enum reasoning_format {
    REASONING_NONE,     /* no split: everything is content */
    REASONING_THINK,    /* <think> ... </think> (DeepSeek-R1, Qwen3, GLM-4.5, Kimi K2, ...) */
    REASONING_SEED,     /* <seed:think> ... </seed:think> (Seed-OSS) */
    REASONING_HARMONY,  /* gpt-oss: <|channel|>analysis<|message|> ... <|end|>, answer after
                         * <|start|>assistant<|channel|>final<|message|> */
    REASONING_MAGISTRAL, /* [THINK] ... [/THINK] */
};

enum reasoning_kind {
    REASONING_PART_CONTENT,
    REASONING_PART_REASONING,
};

typedef struct reasoning_part {
    enum reasoning_kind kind;
    const char *text; /* not NUL-terminated */
    size_t len;
} reasoning_part_t;

typedef struct reasoning reasoning_t;

/* start_inside: the output begins inside the reasoning block (the prompt opened it). */
int reasoning_new(enum reasoning_format fmt, bool start_inside, reasoning_t **ret);
reasoning_t *reasoning_free(reasoning_t *r);

/* Feeds len bytes; *ret_parts (*ret_n of them, in order, adjacent parts of the same kind
 * merged) stay valid until the next call on r. -ENOMEM. */
int reasoning_feed(reasoning_t *r, const char *text, size_t len,
                   const reasoning_part_t **ret_parts, size_t *ret_n);
/* End of stream: releases held text (a marker that never completed is plain text). */
int reasoning_flush(reasoning_t *r, const reasoning_part_t **ret_parts, size_t *ret_n);
bool reasoning_inside(const reasoning_t *r); /* currently inside the reasoning block */

/* The format a template family's models use (REASONING_THINK where unsure: harmless when
 * the markers never appear). */
enum reasoning_format reasoning_format_for_family(int chat_family);
int reasoning_format_from_name(const char *name, enum reasoning_format *ret);
